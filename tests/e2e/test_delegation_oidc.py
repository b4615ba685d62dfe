"""Delegated authentication to an upstream OpenID Provider and to a plain
OAuth2 provider: npm's oidc-provider (OpenID Certified), run by
upstream_op/op.mjs.

The downstream Castellan lists the upstreams on its login page;
/login?client_name=partner sends the browser to the provider's authorization
endpoint (code flow, PKCE S256, state, nonce, redirect_uri =
{public_url}/delegated/partner/callback).  The browser logs in and consents
on oidc-provider's own pages (devInteractions: the tests parse and submit its
forms), comes back to the callback with code and state, Castellan redeems the
code (client_secret_basic), verifies the ID token (OIDC Core §3.1.3.7),
fetches userinfo when configured to, maps the claims (principal template,
renames) and opens its own SSO session.  python-cas then validates the
downstream's ticket like any CAS client.

The "forge" upstream speaks plain OAuth2 (RFC 6749) to the same provider:
authorization endpoint, token endpoint and, as its profile URL, the
provider's userinfo endpoint (Bearer access token, a JSON object).

Upstreams of the module's downstream:
  partner      oidc, claims from userinfo (oidc-provider keeps scope claims
               out of a code-flow ID token, OIDC Core §5.4), principal
               "partner:{id}", email -> mail, name -> cn
  partner-idt  oidc, a provider putting the claims in the ID token, no userinfo
  forge        oauth2, /auth + /token + /me, id from the profile's "sub"
  flaky        oidc, and flaky-forge, oauth2: a provider the tests pause and stop
Its own [[services]] include an OIDC client ("rp"): a code flow at the
downstream's /oidc/authorize that signs in through the upstream gives an
ID token for "partner:u-42".

A misbehaving provider (op.mjs /__test/tamper) checks that the ID token is
verified: signature (JWKS, kid), alg, iss, aud, exp, nonce; and that a
userinfo answer for another subject is not used (OIDC Core §5.3.2).
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlencode, urlparse

import pytest
import requests
from cas import CASClient

from conftest import (
    APP,
    Castellan,
    Oidc,
    OidcBrowser,
    OidcClient,
    free_port,
    parse_login_form,
    pkce_pair,
    ticket_from,
    token_json,
    toml_table,
)
from upstream_op import (
    ACCOUNT,
    ACCOUNT_EMAIL,
    ACCOUNT_NAME,
    NO_MAIL_ACCOUNT,
    OAUTH2_CLIENT,
    OIDC_CLIENT,
    UpstreamOp,
    walk_op,
)

B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class Downstream(Castellan):
    def __init__(self, *args, upstreams: list[dict], **kw) -> None:
        super().__init__(*args, **kw)
        self.upstreams = upstreams

    def config_text(self) -> str:
        text = super().config_text()
        for u in self.upstreams:
            text += toml_table("upstreams", u, array=True)
        return text


def oidc_upstream(name: str, op: UpstreamOp, **extra) -> dict:
    u = {
        "name": name,
        "protocol": "oidc",
        "issuer": op.issuer,
        "client_id": OIDC_CLIENT[0],
        "client_secret": OIDC_CLIENT[1],
        "scopes": ["openid", "email", "profile"],
    }
    u.update(extra)
    return u


def oauth2_upstream(name: str, op: UpstreamOp, **extra) -> dict:
    """A plain OAuth2 upstream on the provider: /auth, /token, and userinfo as the profile."""
    u = {
        "name": name,
        "protocol": "oauth2",
        "authorize_url": op.authorization_endpoint,
        "token_url": op.token_endpoint,
        "profile_url": op.userinfo_endpoint,
        "client_id": OAUTH2_CLIENT[0],
        "client_secret": OAUTH2_CLIENT[1],
        "scopes": ["openid", "email"],
        "id_attribute": "sub",
    }
    u.update(extra)
    return u


@dataclass
class Env:
    down: Castellan
    op: UpstreamOp  # partner and forge
    op_idt: UpstreamOp  # partner-idt: claims in the ID token
    op_flaky: UpstreamOp  # flaky: paused and stopped by the tests
    rp: OidcClient  # an OIDC client of the downstream

    def callback(self, name: str) -> str:
        return self.down.url(f"/delegated/{name}/callback")


@pytest.fixture(scope="module")
def env(tmp_path_factory, services):
    down_port = free_port()
    base = f"http://127.0.0.1:{down_port}/cas"

    def cb(name: str) -> str:
        return f"{base}/delegated/{name}/callback"

    opdir = tmp_path_factory.mktemp("upstream-op")
    op = UpstreamOp(opdir, [cb("partner"), cb("forge")], label="upstream-op")
    op_idt = UpstreamOp(opdir, [cb("partner-idt")], id_token_claims=True, label="upstream-op-idt")
    op_flaky = UpstreamOp(opdir, [cb("flaky"), cb("flaky-forge")], label="upstream-op-flaky")
    rp = OidcClient("rp", "http://127.0.0.1:9/rp/callback", "rp-secret-0123456789")
    started: list = []
    try:
        for o in (op, op_idt, op_flaky):
            started.append(o.start())
        down = Downstream(
            tmp_path_factory.mktemp("downstream-oidc"), label="downstream",
            services=services + [rp.service(scopes=["openid", "profile", "email"], release=["mail", "cn"])],
            upstreams=[
                oidc_upstream("partner", op, display_name="Partner", principal="partner:{id}",
                              rename={"email": "mail", "name": "cn"}, userinfo=True),
                oidc_upstream("partner-idt", op_idt, display_name="Partner (ID token)", principal="idt:{id}",
                              rename={"email": "mail"}),
                oauth2_upstream("forge", op, display_name="Forge", principal="forge:{id}",
                                rename={"email": "mail"}),
                oidc_upstream("flaky", op_flaky, display_name="Flaky partner", principal="flaky:{id}"),
                oauth2_upstream("flaky-forge", op_flaky, display_name="Flaky forge"),
            ])
        down.port = down_port
        down.base = base
        down.public_url = base
        down.start()
        started.append(down)
        yield Env(down, op, op_idt, op_flaky, rp)
    finally:
        for p in reversed(started):
            p.stop()


@pytest.fixture(autouse=True)
def _no_pending_tamper(request):
    yield
    if "env" in request.fixturenames:
        e = request.getfixturevalue("env")
        for o in (e.op, e.op_idt):
            if o.alive():
                o.tamper(None)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query, keep_blank_values=True).items()}


def start_login(s: requests.Session, down: Castellan, upstream: str, service: str | None = APP,
                **params) -> requests.Response:
    q = {"client_name": upstream, **params}
    if service is not None:
        q["service"] = service
    r = s.get(down.url("/login"), params=q, allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"/login?client_name={upstream}: {r.status_code} {r.text[:500]}"
    return r


def to_callback(s: requests.Session, env: Env, upstream: str, op: UpstreamOp | None = None,
                service: str | None = APP, login: str = ACCOUNT, **params) -> tuple[str, dict]:
    """/login?client_name=UPSTREAM, then the provider's login and consent pages:
    (the callback URL the provider sends the browser back to, the authorization
    request's parameters)."""
    op = op or env.op
    r = start_login(s, env.down, upstream, service, **params)
    authz = query(r.headers["Location"])
    w = walk_op(s, op, r, login=login)
    assert w.location, f"the provider did not send the browser back:\n{w.trace()}"
    assert w.location.startswith(env.callback(upstream) + "?"), w.trace()
    assert "code" in w.params, f"no code in the provider's answer {w.params}:\n{w.trace()}"
    return w.location, authz


def assert_refused(r: requests.Response, statuses=range(400, 500), what: str = "callback") -> None:
    """A failure page: given status, no redirect, a way back, no SSO session opened."""
    assert r.status_code in statuses, f"{what}: {r.status_code} {r.headers.get('Location')} {r.text[:500]}"
    assert "Location" not in r.headers, f"{what}: redirects to {r.headers['Location']}"
    assert "Back to sign-in" in r.text, f"{what}: no way back on the page: {r.text[:500]}"
    set_cookie = r.headers.get("Set-Cookie", "")
    assert not re.search(r"CASTGC=[^;]", set_cookie), f"{what}: an SSO session was opened: {set_cookie}"


def main_text(r: requests.Response) -> str:
    """The visible text of a page's <main> (for assertion messages)."""
    m = re.search(r"<main[^>]*>(.*?)</main>", r.text, re.S)
    text = re.sub(r"<[^>]+>", " ", m.group(1) if m else r.text)
    return re.sub(r"\s+", " ", text).strip()[:600]


def tgc(s: requests.Session) -> str | None:
    for c in s.cookies:
        if c.name == "CASTGC" and c.value:
            return c.value
    return None


def forget_downstream_session(s: requests.Session) -> None:
    """Drop the downstream's CASTGC cookie, keeping the provider's session cookies."""
    for c in [c for c in s.cookies if c.name == "CASTGC"]:
        s.cookies.clear(c.domain, c.path, c.name)
    assert not tgc(s)


def cas_validate(down: Castellan, st: str, service: str = APP) -> tuple[str, dict]:
    client = CASClient(version=3, server_url=down.base + "/", service_url=service)
    user, attributes, _ = client.verify_ticket(st)
    return user, attributes or {}


def finish(s: requests.Session, callback: str, service: str = APP) -> str:
    """GET the callback; assert the redirect to `service` with a service ticket."""
    r = s.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 302, f"callback: {r.status_code} {r.text[:800]}"
    assert r.headers["Location"].startswith(service), r.headers["Location"]
    st = ticket_from(r)
    assert st and st.startswith("ST-"), r.headers["Location"]
    return st


# --------------------------------------------------------------------------
# the login page and the authorization request
# --------------------------------------------------------------------------


def test_login_page_offers_the_upstreams(env):
    r = requests.get(env.down.url("/login"), params={"service": APP}, timeout=15)
    assert r.status_code == 200
    links = [html.unescape(l) for l in re.findall(r'href="(login\?client_name=[^"]+)"', r.text)]
    for name in ("partner", "forge"):
        assert any(query("/cas/" + l) == {"client_name": name, "service": APP} for l in links), links
    assert "Partner" in r.text and "Forge" in r.text


def test_the_authorization_request(env):
    """OIDC Core §3.1.2.1 + RFC 7636: code flow, the registered redirect URI,
    PKCE S256, fresh state and nonce per request, no secret in the URL."""
    disc = env.op.discovery()
    seen = []
    for _ in range(2):
        s = requests.Session()
        r = start_login(s, env.down, "partner")
        loc = r.headers["Location"]
        assert loc.split("?")[0] == disc["authorization_endpoint"], loc
        q = query(loc)
        assert q.get("response_type") == "code", q
        assert q.get("client_id") == OIDC_CLIENT[0], q
        assert q.get("redirect_uri") == env.callback("partner"), q
        assert {"openid", "email", "profile"} <= set(q.get("scope", "").split()), q
        assert q.get("code_challenge_method") == "S256", q
        assert len(q.get("code_challenge", "")) == 43 and B64URL.match(q["code_challenge"]), q
        assert len(q.get("state", "")) >= 16, q
        assert len(q.get("nonce", "")) >= 16, q
        assert OIDC_CLIENT[1] not in loc and "client_secret" not in q, loc
        assert "prompt" not in q or q["prompt"] != "none", q
        seen.append(q)
    for k in ("state", "nonce", "code_challenge"):
        assert seen[0][k] != seen[1][k], f"{k} repeats across requests: {seen[0][k]}"


def test_oauth2_authorization_request(env):
    s = requests.Session()
    r = start_login(s, env.down, "forge")
    loc = r.headers["Location"]
    assert loc.split("?")[0] == env.op.authorization_endpoint, loc
    q = query(loc)
    assert q.get("response_type") == "code", q
    assert q.get("client_id") == OAUTH2_CLIENT[0], q
    assert q.get("redirect_uri") == env.callback("forge"), q
    assert set(q.get("scope", "").split()) == {"openid", "email"}, q
    assert len(q.get("state", "")) >= 16, q
    # RFC 9700 §2.1.1: PKCE for every client (and this provider insists on it)
    assert q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) == 43, q
    assert OAUTH2_CLIENT[1] not in loc and "client_secret" not in q, loc


# --------------------------------------------------------------------------
# the flows
# --------------------------------------------------------------------------


def test_delegated_oidc_login_gives_a_cas_ticket_python_cas_validates(env):
    s = requests.Session()
    r = start_login(s, env.down, "partner")
    w = walk_op(s, env.op, r)
    assert w.prompts == ["login", "consent"], w.trace()
    assert w.location and w.location.startswith(env.callback("partner") + "?"), w.trace()
    assert w.params.get("iss") == env.op.issuer and w.params.get("state") == query(r.headers["Location"])["state"]
    grants_before = len(env.op.events("grant.success"))
    st = finish(s, w.location)
    assert tgc(s), "no CASTGC after the delegated login"
    user, attributes = cas_validate(env.down, st)
    assert user == f"partner:{ACCOUNT}", (user, attributes)
    assert attributes.get("mail") == ACCOUNT_EMAIL, attributes
    assert attributes.get("cn") == ACCOUNT_NAME, attributes
    # the code was redeemed once, by the right client, with client_secret_basic,
    # and the userinfo endpoint was asked with the access token
    grants = env.op.events("grant.success")[grants_before:]
    assert [(g["client"], g["auth"]) for g in grants] == [(OIDC_CLIENT[0], "client_secret_basic")], grants
    assert any(e["path"] == "/me" and e["status"] == 200 and e.get("auth") == "Bearer"
               for e in env.op.events("http")), "userinfo was not fetched"
    # SSO at the downstream: another service needs no trip to the provider
    r = s.get(env.down.url("/login"), params={"service": APP + "/again"}, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), r.text[:300]
    assert r.headers["Location"].startswith(APP + "/again")


def test_claims_from_the_id_token(env):
    """A provider that puts the claims in the ID token; no userinfo configured."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner-idt", env.op_idt)
    st = finish(s, callback)
    user, attributes = cas_validate(env.down, st)
    assert user == f"idt:{ACCOUNT}", (user, attributes)
    assert attributes.get("mail") == ACCOUNT_EMAIL, attributes


def test_delegated_oauth2_login(env):
    s = requests.Session()
    r = start_login(s, env.down, "forge")
    w = walk_op(s, env.op, r)
    assert w.location and w.location.startswith(env.callback("forge") + "?"), w.trace()
    grants_before = len(env.op.events("grant.success"))
    st = finish(s, w.location)
    assert tgc(s)
    user, attributes = cas_validate(env.down, st)
    assert user == f"forge:{ACCOUNT}", (user, attributes)
    assert attributes.get("mail") == ACCOUNT_EMAIL, attributes
    grants = env.op.events("grant.success")[grants_before:]
    assert [(g["client"], g["auth"]) for g in grants] == [(OAUTH2_CLIENT[0], "client_secret_basic")], grants
    assert any(e["path"] == "/me" and e["status"] == 200 and e.get("auth") == "Bearer"
               for e in env.op.events("http")), "the profile was not fetched"


def test_oauth2_id_comes_from_the_profile(env):
    """Another account at the provider: another principal, no mail (it has none)."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "forge", login=NO_MAIL_ACCOUNT)
    user, attributes = cas_validate(env.down, finish(s, callback))
    assert user == f"forge:{NO_MAIL_ACCOUNT}", (user, attributes)
    assert "mail" not in attributes, attributes


def test_without_service_the_login_ends_on_a_signed_in_page(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner", service=None)
    r = s.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 200 and "Location" not in r.headers, (r.status_code, r.text[:500])
    assert f"partner:{ACCOUNT}" in r.text, r.text[:800]
    assert tgc(s)


def test_provider_sso_and_renew(env):
    """With a session at the provider, a second delegated login needs no page
    there; renew=true asks the provider for a fresh login (prompt=login)."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    finish(s, callback)
    forget_downstream_session(s)
    # SSO at the provider: straight back
    r = start_login(s, env.down, "partner")
    w = walk_op(s, env.op, r)
    assert w.prompts == [] and w.location and "code" in w.params, w.trace()
    user, _ = cas_validate(env.down, finish(s, w.location))
    assert user == f"partner:{ACCOUNT}"
    # renew: the provider must ask again (OIDC Core §3.1.2.1 prompt=login)
    r = start_login(s, env.down, "partner", renew="true")
    q = query(r.headers["Location"])
    assert "login" in q.get("prompt", "").split() or q.get("max_age") == "0", q
    w = walk_op(s, env.op, r)
    assert w.prompts == ["login"], w.trace()
    r = s.get(w.location, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:500])


def test_gateway_does_not_ask_the_provider_for_credentials(env):
    """CAS gateway: no credentials are asked for.  The provider is asked with
    prompt=none; without a session there it answers login_required and the
    browser goes back to the service without a ticket."""
    s = requests.Session()
    r = start_login(s, env.down, "partner", gateway="true")
    q = query(r.headers["Location"])
    assert q.get("prompt") == "none", f"no prompt=none in {r.headers['Location']}"
    w = walk_op(s, env.op, r, max_prompts=0)
    assert w.prompts == [] and w.location, f"the provider asked for credentials:\n{w.trace()}"
    assert w.params.get("error") == "login_required", w.trace()
    r = s.get(w.location, allow_redirects=False, timeout=30)
    assert r.status_code == 302, (r.status_code, r.text[:500])
    assert r.headers["Location"].startswith(APP) and not ticket_from(r), r.headers["Location"]
    assert not tgc(s)


def test_cas_logout_at_the_downstream_ends_its_session(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    finish(s, callback)
    s.get(env.down.url("/logout"), timeout=15)
    r = s.get(env.down.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code == 200 and parse_login_form(r) is not None


def test_oidc_relying_party_of_the_downstream_signs_in_through_the_upstream(env):
    """The downstream is an OpenID Provider too: its client's code flow goes
    through the upstream's login and yields an ID token for partner:u-42."""
    ob = OidcBrowser(env.down)
    verifier, _ = pkce_pair()
    res = ob.authorize(env.rp, scope="openid profile email", state="rp-state", nonce="rp-nonce",
                       verifier=verifier, login=False)
    page = res.final
    assert page.status_code == 200 and parse_login_form(page) is not None, res.trace()
    links = [html.unescape(l) for l in re.findall(r'href="(login\?client_name=[^"]*)"', page.text)]
    links = [l for l in links if query("/cas/" + l).get("client_name") == "partner"]
    assert links and "service=" in links[0], page.text[:1500]
    r = ob.s.get(urljoin(page.url, links[0]), allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(env.op.authorization_endpoint), r.text[:500]
    w = walk_op(ob.s, env.op, r)
    assert w.location and w.location.startswith(env.callback("partner") + "?"), w.trace()
    r = ob.s.get(w.location, allow_redirects=False, timeout=30)
    assert r.status_code == 302, (f"the callback did not go on to the service of the sign-in link {links[0]}: "
                                  f"{r.status_code} {main_text(r)}")
    done = ob.walk(r, login=False)
    assert done.location and done.location.startswith(env.rp.redirect_uri + "?"), done.trace()
    assert done.params.get("state") == "rp-state" and done.code, done.trace()
    oidc = Oidc(env.down)
    tokens = token_json(oidc.redeem(env.rp, done.code, verifier))
    idt = oidc.verify(tokens["id_token"], audience=env.rp.client_id, require=("iss", "sub", "aud", "exp", "iat", "nonce"))
    assert idt["sub"] == f"partner:{ACCOUNT}", idt
    assert idt["nonce"] == "rp-nonce", idt
    assert idt.get("email") == ACCOUNT_EMAIL, idt
    assert idt.get("name") == ACCOUNT_NAME, idt


# --------------------------------------------------------------------------
# state: missing, wrong, replayed, foreign
# --------------------------------------------------------------------------


def test_missing_or_made_up_state(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    code = query(callback)["code"]
    r = s.get(env.callback("partner"), params={"code": code}, allow_redirects=False, timeout=15)
    assert_refused(r, (400,), "callback without state")
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    q = query(callback)
    r = s.get(env.callback("partner"), params={**q, "state": "DS-1-" + "x" * 32}, allow_redirects=False, timeout=15)
    assert_refused(r, (400,), "callback with a made-up state")
    assert not tgc(s)


def test_replayed_state(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    finish(s, callback)
    r = s.get(callback, allow_redirects=False, timeout=15)
    assert_refused(r, (400,), "replayed callback")


def test_callback_in_another_browser(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    r = requests.get(callback, allow_redirects=False, timeout=15)
    assert_refused(r, (400,), "callback without the binding cookie")
    # and the state is gone: the right browser cannot use it afterwards
    r = s.get(callback, allow_redirects=False, timeout=15)
    assert_refused(r, (400,), "callback after another browser used the state")


def test_state_of_another_upstream(env):
    """A partner login's code and state delivered to the forge callback."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    r = s.get(env.callback("forge") + "?" + urlparse(callback).query, allow_redirects=False, timeout=15)
    assert_refused(r, (400,), "partner state at the forge callback")


# --------------------------------------------------------------------------
# what the provider answers: refusals, bad codes
# --------------------------------------------------------------------------


def test_denied_consent(env):
    """The user cancels at the provider: error=access_denied comes back."""
    s = requests.Session()
    r = start_login(s, env.down, "partner")
    w = walk_op(s, env.op, r, consent=False)
    assert w.params.get("error") == "access_denied" and w.location.startswith(env.callback("partner")), w.trace()
    r = s.get(w.location, allow_redirects=False, timeout=15)
    assert_refused(r, what="access_denied callback")
    assert not tgc(s)


def test_crafted_access_denied_with_a_valid_state(env):
    s = requests.Session()
    r = start_login(s, env.down, "partner")
    state = query(r.headers["Location"])["state"]
    evil = "<script>alert(1)</script>"
    r = s.get(env.callback("partner"), params={"error": "access_denied", "error_description": evil,
                                               "state": state, "iss": env.op.issuer},
              allow_redirects=False, timeout=15)
    assert_refused(r, what="access_denied callback")
    assert evil not in r.text, "error_description reflected unescaped"


def test_oauth2_access_denied(env):
    s = requests.Session()
    r = start_login(s, env.down, "forge")
    w = walk_op(s, env.op, r, cancel_at="login")
    assert w.params.get("error") == "access_denied", w.trace()
    assert_refused(s.get(w.location, allow_redirects=False, timeout=15), what="oauth2 access_denied callback")


def test_tampered_code(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    q = query(callback)
    code = q["code"]
    q["code"] = code[:-4] + ("AAAA" if not code.endswith("AAAA") else "BBBB")
    errors_before = len(env.op.events("grant.error"))
    t0 = time.monotonic()
    r = s.get(env.callback("partner") + "?" + urlencode(q), allow_redirects=False, timeout=30)
    assert_refused(r, what="tampered code")
    assert time.monotonic() - t0 < 10
    errors = env.op.events("grant.error")[errors_before:]
    assert [e["error"] for e in errors] == ["invalid_grant"], f"the provider saw {errors}"


def test_oauth2_tampered_code(env):
    s = requests.Session()
    callback, _ = to_callback(s, env, "forge")
    q = query(callback)
    # a changed first character, never the same one (a code may start with "x")
    q["code"] = ("y" if q["code"].startswith("x") else "x") + q["code"][1:]
    assert_refused(s.get(env.callback("forge") + "?" + urlencode(q), allow_redirects=False, timeout=30),
                   what="oauth2 tampered code")


def test_code_injected_into_another_browsers_login(env):
    """An attacker's code (from the attacker's own login) delivered with the
    victim's state: PKCE (and the nonce) bind the code to the login that asked
    for it, so the redemption must fail (RFC 7636 §1, RFC 9700 §4.5)."""
    attacker = requests.Session()
    attacker_cb, _ = to_callback(attacker, env, "partner", login=NO_MAIL_ACCOUNT)
    victim = requests.Session()
    victim_cb, _ = to_callback(victim, env, "partner")
    q = query(victim_cb)
    q["code"] = query(attacker_cb)["code"]
    r = victim.get(env.callback("partner") + "?" + urlencode(q), allow_redirects=False, timeout=30)
    assert_refused(r, what="injected code")
    assert not tgc(victim)


# --------------------------------------------------------------------------
# a misbehaving provider: the ID token and userinfo must be checked
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["payload", "foreign-key", "alg-none", "iss", "aud", "expired", "nonce", "no-nonce"])
def test_id_token_that_does_not_verify(env, mode):
    """OIDC Core §3.1.3.7: signature with the provider's JWKS, iss, aud, exp,
    and the nonce of this login.  Every tampered token is refused."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    env.op.tamper(mode)
    r = s.get(callback, allow_redirects=False, timeout=30)
    assert env.op.pending_tamper() is None, "Castellan did not redeem the code"
    assert_refused(r, what=f"ID token tampered ({mode})")
    assert not tgc(s)


def test_userinfo_of_another_subject_is_not_used(env):
    """OIDC Core §5.3.2: a userinfo sub that differs from the ID token's means
    its values must not be used.  Refusing the login, or signing in as the ID
    token's subject without those values, are both right."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner")
    env.op.tamper("userinfo-sub")
    r = s.get(callback, allow_redirects=False, timeout=30)
    assert env.op.pending_tamper() is None, "userinfo was not fetched"
    if r.status_code == 302:
        st = ticket_from(r)
        assert st, r.headers["Location"]
        user, attributes = cas_validate(env.down, st)
        assert user == f"partner:{ACCOUNT}", (user, attributes)
        assert attributes.get("mail") != "attacker@evil.example", attributes
    else:
        assert_refused(r, what="userinfo for another subject")


def test_provider_key_rotation(env):
    """The provider restarts with new signing keys (op.mjs makes fresh ones
    each run): an ID token with a kid Castellan has not seen makes it fetch
    the JWKS again (OIDC Core §10.1.1), and the login works."""
    s = requests.Session()
    finish(s, to_callback(s, env, "partner-idt", env.op_idt)[0])  # the old keys are known
    old_kids = {k["kid"] for k in requests.get(env.op_idt.url("/jwks"), timeout=10).json()["keys"]}
    env.op_idt.stop()
    env.op_idt.start()
    new_kids = {k["kid"] for k in requests.get(env.op_idt.url("/jwks"), timeout=10).json()["keys"]}
    assert not old_kids & new_kids, (old_kids, new_kids)
    s = requests.Session()
    callback, _ = to_callback(s, env, "partner-idt", env.op_idt)
    user, attributes = cas_validate(env.down, finish(s, callback))
    assert user == f"idt:{ACCOUNT}" and attributes.get("mail") == ACCOUNT_EMAIL, (user, attributes)


# --------------------------------------------------------------------------
# an unreachable provider
# --------------------------------------------------------------------------


def test_provider_that_hangs_before_the_callback(env):
    """The provider accepts connections but never answers: a 502 page within
    Castellan's own upstream time limit, not a hang."""
    s = requests.Session()
    callback, _ = to_callback(s, env, "flaky", env.op_flaky)
    env.op_flaky.pause()
    try:
        t0 = time.monotonic()
        r = s.get(callback, allow_redirects=False, timeout=60)
        took = time.monotonic() - t0
    finally:
        env.op_flaky.resume()
    assert_refused(r, (502, 504), "callback while the provider hangs")
    assert took < 25, f"the callback took {took:.1f}s"


def test_provider_stopped_before_the_callback(env):
    """Nothing listens any more when the code is to be redeemed: 502 at once
    (the provider could not be reached; it did not refuse anybody)."""
    flows = []
    for upstream in ("flaky", "flaky-forge"):
        s = requests.Session()
        callback, _ = to_callback(s, env, upstream, env.op_flaky)
        flows.append((upstream, s, callback))
    env.op_flaky.stop()
    answers = []
    for upstream, s, callback in flows:
        t0 = time.monotonic()
        r = s.get(callback, allow_redirects=False, timeout=60)
        answers.append((upstream, r, time.monotonic() - t0))
    for upstream, r, took in answers:
        assert r.status_code == 502, [(u, a.status_code, main_text(a)) for u, a, _ in answers]
        assert_refused(r, (502,), f"{upstream} callback with the provider down")
        assert took < 5, f"the {upstream} callback took {took:.1f}s"
    # and a new login through it fails cleanly too (or goes out and fails at the callback)
    s = requests.Session()
    t0 = time.monotonic()
    r = s.get(env.down.url("/login"), params={"client_name": "flaky", "service": APP}, allow_redirects=False,
              timeout=60)
    assert time.monotonic() - t0 < 5
    if r.status_code == 302:
        assert r.headers["Location"].startswith(env.op_flaky.issuer + "/"), r.headers["Location"]
    else:
        assert_refused(r, (502,), "/login through a provider that is down")
    # the other upstreams are unaffected
    assert start_login(requests.Session(), env.down, "partner").status_code == 302


def test_unknown_upstream(env):
    r = requests.get(env.down.url("/login"), params={"client_name": "nope", "service": APP},
                     allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers


def test_provider_down_from_the_start(tmp_path, services):
    """An OIDC upstream whose discovery document cannot be fetched: Castellan
    still starts and serves its other logins; that upstream's login is a 502 page."""
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = Downstream(tmp_path / "down", label="downstream-nowhere", services=services, upstreams=[{
        "name": "nowhere", "protocol": "oidc", "issuer": nowhere, "client_id": "castellan",
        "client_secret": "change-me", "scopes": ["openid"], "display_name": "Nowhere",
    }])
    down.start()
    try:
        r = requests.get(down.url("/login"), params={"service": APP}, timeout=15)
        assert r.status_code == 200 and parse_login_form(r) is not None
        t0 = time.monotonic()
        r = requests.get(down.url("/login"), params={"client_name": "nowhere", "service": APP},
                         allow_redirects=False, timeout=60)
        assert time.monotonic() - t0 < 5
        assert_refused(r, (502,), "/login through an unreachable provider")
    finally:
        down.stop()
