"""Apache httpd + mod_auth_openidc (Debian's libapache2-mod-auth-openidc) as
a relying party of Castellan's OpenID provider.

mod_auth_openidc reads everything from Castellan's discovery document
(OIDCProviderMetadataURL), uses the code flow with PKCE S256 and
client_secret_basic, and puts the claims into the CGI environment as
OIDC_CLAIM_*; REMOTE_USER is preferred_username.  Its redirect URI
(/secured/redirect_uri) is also its back-channel logout endpoint
(?logout=backchannel), registered as the client's backchannel_logout_uri.
All plain http on loopback (mod_auth_openidc only warns about that).

The browser is a requests.Session following redirects; only the CAS login
form is filled in by hand (conftest.parse_login_form).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from conftest import (
    APP,
    PASSWORD,
    ApacheOidc,
    Browser,
    Oidc,
    OidcBrowser,
    OidcClient,
    free_port,
    parse_login_form,
    pkce_pair,
    ticket_from,
)


@pytest.fixture(scope="module")
def apache_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def cas(castellan_factory, services, apache_port):
    reason = ApacheOidc.available()
    if reason:
        pytest.fail(reason)  # tests/run.sh installs it: missing is a failure, not a skip
    c = castellan_factory("apache-oidc-castellan", services=services + [ApacheOidc.service(apache_port)]).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apache(cas, apache_port):
    a = ApacheOidc(cas, port=apache_port)
    a.start()
    yield a
    a.cleanup()


def parse_env_page(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def apache_client(apache: ApacheOidc) -> OidcClient:
    return OidcClient(ApacheOidc.CLIENT_ID, apache.redirect_uri, ApacheOidc.CLIENT_SECRET)


def first_hop(apache: ApacheOidc, s: requests.Session) -> str:
    """GET the protected page without a session: mod_auth_openidc sends the
    browser to Castellan's authorization endpoint.  Returns that URL."""
    r = s.get(apache.base + "/secured/env.cgi", allow_redirects=False, timeout=30)
    assert r.status_code == 302, f"apache did not redirect to the OP: {r.status_code} {r.text[:500]}\n{apache.log_tail(30)}"
    loc = r.headers["Location"]
    assert loc.startswith(apache.cas.url("/oidc/authorize?")), loc
    q = {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}
    assert q.get("client_id") == ApacheOidc.CLIENT_ID, q
    assert q.get("redirect_uri") == apache.redirect_uri, q
    assert q.get("response_type") == "code", q
    assert set(q.get("scope", "").split()) == {"openid", "email", "profile"}, q
    assert q.get("code_challenge_method") == "S256" and q.get("code_challenge"), q
    assert q.get("state") and q.get("nonce"), q
    return loc


def login_through_apache(apache: ApacheOidc, s: requests.Session) -> requests.Response:
    """Apache -> Castellan authorize -> CAS login form -> POST -> callback ->
    Apache's redirect_uri (code exchanged in the back channel) -> the page."""
    loc = first_hop(apache, s)
    page = s.get(loc, allow_redirects=True, timeout=30)
    form = parse_login_form(page)
    assert page.status_code == 200 and form, f"expected the login form, got {page.status_code} at {page.url}: {page.text[:500]}"
    data = dict(form.fields, username="casuser", password=PASSWORD)
    return s.post(form.action, data=data, allow_redirects=True, timeout=30)


def assert_protected_page(apache: ApacheOidc, r: requests.Response) -> dict[str, str]:
    assert r.status_code == 200 and r.url.startswith(apache.base + "/secured/env.cgi"), (
        f"expected the protected page, got {r.status_code} at {r.url}: {r.text[:800]}\n"
        f"apache log:\n{apache.log_tail(60)}")
    env = parse_env_page(r.text)
    assert env.get("REMOTE_USER") == "casuser", r.text
    return env


def test_login_shows_user_and_claims(apache):
    s = requests.Session()
    env = assert_protected_page(apache, login_through_apache(apache, s))
    assert env.get("OIDC_CLAIM_sub") == "casuser", env
    assert env.get("OIDC_CLAIM_preferred_username") == "casuser", env
    assert env.get("OIDC_CLAIM_email") == "casuser@example.org", env
    assert env.get("OIDC_CLAIM_name") == "CAS User", env
    assert env.get("OIDC_CLAIM_iss") == Oidc(apache.cas).issuer, env
    assert env.get("OIDC_CLAIM_aud") == ApacheOidc.CLIENT_ID, env
    # not released to / not asked for by this client
    for never in ("OIDC_CLAIM_memberOf", "OIDC_CLAIM_secret", "OIDC_CLAIM_weird"):
        assert never not in env, env
    assert "do-not-release" not in s.get(apache.base + "/secured/env.cgi", timeout=30).text
    # the mod_auth_openidc session holds: the page again without any redirect
    r = s.get(apache.base + "/secured/env.cgi", allow_redirects=False, timeout=30)
    assert r.status_code == 200 and parse_env_page(r.text).get("REMOTE_USER") == "casuser", r.status_code


def test_cas_session_gives_apache_access_without_form(apache):
    """A CAS login (a CAS service) first: Apache's OIDC login then needs no form."""
    b = Browser(apache.cas)
    t = b.ticket_for(APP)
    assert t
    r = b.s.get(apache.base + "/secured/env.cgi", allow_redirects=True, timeout=30)
    assert parse_login_form(r) is None, f"login form shown despite the CAS session: {r.url}"
    assert_protected_page(apache, r)


def test_logout_through_mod_auth_openidc_ends_the_cas_session(apache):
    cas = apache.cas
    s = requests.Session()
    assert_protected_page(apache, login_through_apache(apache, s))
    tgc = next((c.value for c in s.cookies if c.name == "CASTGC"), None)
    assert tgc, "no CASTGC after the login"

    r = s.get(apache.redirect_uri, params={"logout": apache.logged_out_url}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, f"mod_auth_openidc logout: {r.status_code} {r.text[:300]}\n{apache.log_tail(30)}"
    loc = r.headers["Location"]
    assert loc.startswith(cas.url("/oidc/logout?")), f"mod_auth_openidc did not go to end_session_endpoint: {loc}"
    q = {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}
    assert q.get("id_token_hint") and q.get("post_logout_redirect_uri") == apache.logged_out_url, q

    r = s.get(loc, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), f"Castellan's logout: {r.status_code} {r.text[:300]}"
    back = r.headers["Location"]
    assert back.split("?", 1)[0] == apache.logged_out_url, back
    r = s.get(back, timeout=30)
    assert r.status_code == 200 and "logged out of apache" in r.text, (r.status_code, r.text[:200])

    # the CAS session is over ...
    assert not any(c.name == "CASTGC" and c.value for c in s.cookies), "CASTGC still set"
    b = OidcBrowser(cas)
    b.s = s
    r = b.get_login(APP)
    assert r.status_code == 200 and ticket_from(r) is None and parse_login_form(r), (
        f"CAS login after the logout: {r.status_code} {r.headers.get('Location')!r}")
    r = requests.get(cas.url("/login"), params={"service": APP}, cookies={"CASTGC": tgc},
                     allow_redirects=False, timeout=15)
    assert ticket_from(r) is None and parse_login_form(r), "the old CASTGC still gives tickets"
    res = b.authorize(apache_client(apache), prompt="none", verifier=pkce_pair()[0], login=False)
    assert res.error == "login_required", res.trace()
    assert res.location.startswith(apache.redirect_uri), res.location
    # ... and so is Apache's: the page needs a new login (the form, not SSO)
    loc = first_hop(apache, s)
    page = s.get(loc, allow_redirects=True, timeout=30)
    assert page.status_code == 200 and parse_login_form(page), f"no login form after the logout: {page.url}"


def test_cas_logout_ends_the_apache_session_by_back_channel(apache):
    """Castellan's /cas/logout sends mod_auth_openidc an OIDC back-channel
    logout token; mod_auth_openidc verifies it (signature, iss, aud, events,
    sid) and drops its session, so the page needs a login again."""
    cas = apache.cas
    s = requests.Session()
    assert_protected_page(apache, login_through_apache(apache, s))
    r = s.get(apache.base + "/secured/env.cgi", allow_redirects=False, timeout=30)
    assert r.status_code == 200

    # log out at Castellan with the browser's CASTGC only (not via Apache)
    r = requests.get(cas.url("/logout"), cookies={c.name: c.value for c in s.cookies if c.name == "CASTGC"},
                     allow_redirects=False, timeout=15)
    assert r.status_code < 400, r.status_code

    deadline = time.monotonic() + 10
    while True:
        r = s.get(apache.base + "/secured/env.cgi", allow_redirects=False, timeout=30)
        if r.status_code == 302:
            break
        assert time.monotonic() < deadline, (
            f"Apache's session still alive 10 s after the CAS logout ({r.status_code})\n{apache.log_tail(60)}")
        time.sleep(0.2)
    assert r.headers["Location"].startswith(cas.url("/oidc/authorize?")), r.headers
    # it was the back channel that did it, and mod_auth_openidc accepted the token
    access = (apache.root / "logs" / "access.log").read_text(errors="replace")
    calls = [line for line in access.splitlines() if "/secured/redirect_uri?logout=backchannel" in line]
    assert calls and all('"POST ' in line and '" 200 ' in line for line in calls), (
        f"back-channel logout calls at Apache: {calls}\n{apache.log_tail(60)}")
