"""Castellan's OpenID Provider (/cas/oidc/...) from a relying party's side.

Plain `requests` for the front channel (OidcBrowser walks authorize -> CAS
login form -> callback -> redirect_uri without following the last hop) and
the back channel (token, userinfo, introspection, revocation, logout); every
JWT is verified independently with PyJWT against /oidc/jwks.

The clients' redirect_uris, post_logout_redirect_uris and back-channel
logout URIs live on the `recorder` (plain HTTP, records every request), so
back-channel logout tokens and CAS single-logout POSTs can be inspected.
Tests that need short lifetimes (code_ttl, access_token_ttl) or two nodes
start their own servers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import jwt
import pytest
import requests

from conftest import (
    APP,
    OIDC_BCL_EVENT,
    PASSWORD,
    Castellan,
    Oidc,
    OidcBrowser,
    OidcClient,
    free_port,
    half_hash,
    login_token_flow,
    oauth_error,
    parse_login_form,
    pkce_pair,
    ticket_from,
    token_json,
    unique_path,
)

SAML2P = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
EVIL = "https://evil.example.test/cb"

# the [oidc] table of the module's server (the documented defaults, written out)
OIDC_CONFIG = {"code_ttl": "60s", "access_token_ttl": "5m", "id_token_ttl": "5m", "refresh_token_ttl": "8h",
               "pairwise_salt": "e2e-pairwise-salt-0123456789abcdef"}


# --------------------------------------------------------------------------
# clients and servers
# --------------------------------------------------------------------------


class Clients:
    """The relying parties registered on every server of this module."""

    def __init__(self, recorder) -> None:
        self.recorder = recorder
        # confidential, with back-channel logout
        self.conf = OidcClient("rp-conf", recorder.url("/rp-conf/cb"), "conf-secret-0123456789")
        self.conf_bye = recorder.url("/rp-conf/bye")
        self.conf_bcl = "/rp-conf/bclogout"
        # public (PKCE S256 required), no back-channel logout
        self.pub = OidcClient("rp-public", recorder.url("/rp-public/cb"))
        self.pub_bye = recorder.url("/rp-public/bye")
        # another confidential client
        self.other = OidcClient("rp-other", recorder.url("/rp-other/cb"), "other-secret-9876543210")
        # pairwise subjects: two clients in two sectors (hosts of their first redirect_uri)
        self.pw = OidcClient("rp-pairwise", recorder.url("/rp-pairwise/cb"), "pairwise-secret-0123456789")
        self.pw_bcl = "/rp-pairwise/bclogout"
        self.pw2 = OidcClient("rp-pairwise-2", "https://sector2.example.test/cb", "pairwise2-secret-0123456789")

    def services(self) -> list[dict]:
        return [
            self.conf.service(
                post_logout_redirect_uris=[self.conf_bye],
                scopes=["openid", "profile", "email", "offline_access", "memberOf"],
                release=["mail", "cn", "memberOf"],
                backchannel_logout_uri=self.recorder.url(self.conf_bcl),
            ),
            self.pub.service(
                post_logout_redirect_uris=[self.pub_bye],
                scopes=["openid", "profile", "email"],
                release=["mail", "cn"],
            ),
            self.other.service(
                scopes=["openid", "profile", "email"],
                release=["mail", "cn"],
            ),
            self.pw.service(
                scopes=["openid", "email"],
                release=["mail"],
                subject="pairwise",
                backchannel_logout_uri=self.recorder.url(self.pw_bcl),
            ),
            self.pw2.service(
                scopes=["openid", "email"],
                release=["mail"],
                subject="pairwise",
            ),
        ]


@pytest.fixture(scope="module")
def clients(recorder) -> Clients:
    return Clients(recorder)


@pytest.fixture(scope="module")
def cas(castellan_factory, services, clients) -> Castellan:
    """The module's Castellan: the standard CAS services plus the OIDC clients."""
    c = castellan_factory("oidc-protocol", services=services + clients.services(), oidc=OIDC_CONFIG).start()
    yield c
    c.stop()


@pytest.fixture
def oidc(cas) -> Oidc:
    return Oidc(cas)


@pytest.fixture
def ob(cas) -> OidcBrowser:
    """A fresh browser (no cookies) for the module's Castellan."""
    return OidcBrowser(cas)


@pytest.fixture(scope="module")
def short_cas(castellan_factory, services, clients) -> Castellan:
    """Codes and access tokens living 2 s."""
    c = castellan_factory("oidc-short-ttl", services=services + clients.services(),
                          oidc={**OIDC_CONFIG, "code_ttl": "2s", "access_token_ttl": "2s"}).start()
    yield c
    c.stop()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def base_of(url: str) -> str:
    """scheme://host:port/path of a URL (no query, no fragment)."""
    return urlparse(url)._replace(query="", fragment="").geturl()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query, keep_blank_values=True).items()}


def assert_code_redirect(res, client: OidcClient, oidc: Oidc, state: str = "st-1") -> str:
    assert res.location, f"authorization did not end in a redirect:\n{res.trace()}"
    assert base_of(res.location) == client.redirect_uri, f"redirected to {res.location!r}\n{res.trace()}"
    p = res.params
    assert p.get("code") and "error" not in p, f"no code in {res.location!r}\n{res.trace()}"
    assert p.get("state") == state, f"state not echoed: {res.location!r}"
    assert p.get("iss") == oidc.issuer, f"iss (RFC 9207) {p.get('iss')!r} != {oidc.issuer!r}"
    return p["code"]


def assert_error_redirect(res, client: OidcClient, error: str, state: str = "st-1") -> None:
    assert res.location, f"expected a redirect to the client with error={error}:\n{res.trace()}"
    assert base_of(res.location) == client.redirect_uri, f"redirected to {res.location!r}\n{res.trace()}"
    p = res.params
    assert p.get("error") == error, f"expected error={error}, got {res.location!r}\n{res.trace()}"
    assert "code" not in p, res.location
    assert p.get("state") == state, f"state not echoed with the error: {res.location!r}"


def assert_token_error(r: requests.Response, error: str | tuple, status: int | tuple = 400) -> None:
    errors = (error,) if isinstance(error, str) else error
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses and oauth_error(r) in errors, (
        f"expected {'/'.join(map(str, statuses))} {'|'.join(errors)}, got {r.status_code}: {r.text[:500]}")
    assert "access_token" not in r.text


def aud_list(claims: dict) -> list:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


def assert_invalid_token_at_userinfo(oidc: Oidc, at: str, why: str) -> None:
    r = oidc.userinfo(at)
    assert r.status_code == 401, f"userinfo with {why}: expected 401, got {r.status_code}: {r.text[:300]}"
    www = r.headers.get("WWW-Authenticate", "")
    assert www.lower().startswith("bearer") and re.search(r'error="?invalid_token"?', www), (
        f"userinfo with {why}: WWW-Authenticate {www!r}")
    assert "casuser@example.org" not in r.text


def assert_inactive(oidc: Oidc, client: OidcClient, token: str, why: str) -> None:
    r = oidc.introspect(client, token)
    assert r.status_code == 200, f"introspection of {why}: {r.status_code} {r.text[:300]}"
    assert r.json() == {"active": False}, f"introspection of {why}: {r.json()}"


def recorded_logout_tokens(recorder, path: str) -> list[tuple[object, str]]:
    """(record, logout_token) for every back-channel logout POST at `path`."""
    out = []
    for rec in recorder.for_url(recorder.url(path)):
        tok = rec.form().get("logout_token", [None])[0]
        out.append((rec, tok))
    return out


def wait_logout_token(recorder, path: str, sid: str, timeout: float = 10.0):
    """The back-channel logout POST at `path` whose token carries `sid`."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        seen = recorded_logout_tokens(recorder, path)
        for rec, tok in seen:
            if tok:
                try:
                    claims = jwt.decode(tok, options={"verify_signature": False})
                except jwt.PyJWTError:
                    continue
                if claims.get("sid") == sid:
                    return rec, tok
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no back-channel logout token with sid={sid!r} POSTed to {path} within {timeout}s; "
                f"got {len(seen)} POSTs there: {[(r.method, r.body[:300]) for r, _ in seen]}")
        time.sleep(0.1)


def check_logout_token(oidc: Oidc, rec, token: str, client: OidcClient, sid: str, sub: str) -> dict:
    """OIDC Back-Channel Logout 1.0 §2.4 / §2.6 on a received logout token."""
    assert rec.method == "POST", rec
    assert rec.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"), rec.headers
    claims = oidc.verify(token, audience=client.client_id, require=("iss", "aud", "iat", "exp", "jti", "events"))
    assert claims["events"] == {OIDC_BCL_EVENT: {}}, f"events: {claims['events']}"
    assert claims.get("sid") == sid, claims
    assert claims.get("sub") == sub, claims
    assert "nonce" not in claims, f"a logout token must not have a nonce: {claims}"
    assert claims["exp"] > claims["iat"], claims
    return claims


def shows_login_form(r: requests.Response) -> bool:
    return r.status_code == 200 and ticket_from(r) is None and parse_login_form(r) is not None


def assert_session_over(cas: Castellan, ob: OidcBrowser, client: OidcClient, old_tgc: str) -> None:
    """The browser's SSO session is over: no CASTGC kept, a CAS login shows the
    form (also with the old cookie replayed by hand), prompt=none gives login_required."""
    assert not ob.tgc, f"CASTGC still set after the logout: {ob.tgc!r}"
    assert shows_login_form(ob.get_login(APP)), "a CAS login after the logout did not show the form"
    r = requests.get(cas.url("/login"), params={"service": APP}, cookies={"CASTGC": old_tgc},
                     allow_redirects=False, timeout=15)
    assert shows_login_form(r), f"the old CASTGC still works: {r.status_code} {r.headers.get('Location')!r}"
    verifier, _ = pkce_pair()
    res = ob.authorize(client, prompt="none", verifier=verifier, login=False)
    assert_error_redirect(res, client, "login_required")


def tamper_payload(token: str, **changes) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


def flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()).rstrip(b"=").decode()
    return f"{head}.{payload}."


# --------------------------------------------------------------------------
# discovery, keys, the plain code flow
# --------------------------------------------------------------------------


def test_discovery_document(oidc):
    d = oidc.discovery()
    iss = oidc.issuer
    assert d["issuer"] == iss, d
    expected = {
        "authorization_endpoint": "/authorize",
        "token_endpoint": "/token",
        "userinfo_endpoint": "/userinfo",
        "jwks_uri": "/jwks",
        "introspection_endpoint": "/introspect",
        "revocation_endpoint": "/revoke",
        "end_session_endpoint": "/logout",
    }
    for key, path in expected.items():
        assert d.get(key) == iss + path, f"{key}: {d.get(key)!r}, expected {iss + path!r}"
    assert d.get("backchannel_logout_supported") is True, d
    assert d.get("code_challenge_methods_supported") == ["S256"], d
    assert "code" in d.get("response_types_supported", []), d
    assert {"query", "form_post"} <= set(d.get("response_modes_supported", [])), d
    assert {"client_secret_basic", "client_secret_post"} <= set(d.get("token_endpoint_auth_methods_supported", [])), d
    assert "RS256" in d.get("id_token_signing_alg_values_supported", []), d
    assert "public" in d.get("subject_types_supported", []), d
    assert "openid" in d.get("scopes_supported", ["openid"]), d

    keys = oidc.jwks()["keys"]
    assert keys, "empty JWKS"
    for k in keys:
        assert k.get("kid") and k.get("use", "sig") == "sig", k
        assert not ({"d", "p", "q", "dp", "dq", "qi"} & set(k)), f"private key material in the JWKS: {sorted(k)}"
        jwt.PyJWK.from_dict(k)  # parses as a key
    assert any(k.get("kty") == "RSA" for k in keys), keys


def test_code_flow_confidential_client(cas, oidc, ob, clients):
    c = clients.conf
    verifier, _ = pkce_pair()
    res = ob.authorize(c, scope="openid profile email", state="st-1", nonce="nonce-abc", verifier=verifier)
    # authorize -> CAS login (service = the provider's callback) -> the form -> ...
    first = res.hops[0]
    assert first.status_code in (302, 303), res.trace()
    login = urljoin(first.url, first.headers["Location"])
    assert base_of(login) in (cas.url("/login"), cas.public_url + "/login"), res.trace()
    assert query_of(login).get("service", "").startswith(cas.public_url + "/oidc/callback"), res.trace()
    assert res.forms_seen == 1, res.trace()
    code = assert_code_redirect(res, c, oidc)
    assert ob.tgc, "no CASTGC after the login"

    t0 = int(time.time())
    r = oidc.redeem(c, code, verifier)
    tokens = token_json(r)
    assert tokens.get("id_token") and tokens.get("refresh_token"), tokens
    assert isinstance(tokens.get("expires_in"), int) and 0 < tokens["expires_in"] <= 300, tokens
    assert "openid" in tokens.get("scope", "").split(), tokens

    idt = oidc.verify(tokens["id_token"], audience=c.client_id,
                      require=("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid"))
    assert idt["sub"] == "casuser", idt
    assert idt.get("azp", c.client_id) == c.client_id, idt
    assert idt["nonce"] == "nonce-abc", idt
    assert idt["at_hash"] == half_hash(tokens["access_token"]), idt
    assert "acr" in idt, idt
    assert idt["auth_time"] <= t0 + 5 and idt["exp"] > t0, idt
    assert idt.get("name") == "CAS User", idt
    assert idt.get("preferred_username") == "casuser", idt
    assert idt.get("email") == "casuser@example.org", idt
    assert isinstance(idt.get("email_verified"), bool), idt
    for never in ("memberOf", "secret", "weird", "mail", "cn"):
        assert never not in idt, f"{never} in the ID token: {idt}"

    at = oidc.verify(tokens["access_token"], typ="at+jwt", require=("iss", "sub", "aud", "exp", "iat", "jti"))
    assert at["sub"] == "casuser" and at.get("client_id") == c.client_id, at
    assert set(at.get("scope", "").split()) >= {"openid", "profile", "email"}, at

    ui = oidc.userinfo(tokens["access_token"])
    assert ui.status_code == 200, f"userinfo: {ui.status_code} {ui.text[:300]}"
    claims = ui.json()
    assert claims.get("sub") == "casuser", claims
    assert claims.get("email") == "casuser@example.org" and claims.get("name") == "CAS User", claims
    assert claims.get("preferred_username") == "casuser", claims
    assert "secret" not in claims and "memberOf" not in claims, claims
    assert oidc.userinfo(tokens["access_token"], method="POST").json().get("sub") == "casuser"

    r = oidc.introspect(c, tokens["access_token"])
    assert r.status_code == 200, r.text
    intro = r.json()
    assert intro.get("active") is True, intro
    assert intro.get("sub") == "casuser" and intro.get("client_id") == c.client_id, intro
    assert set(intro.get("scope", "").split()) >= {"openid", "profile", "email"}, intro
    assert intro.get("exp") == at["exp"], (intro, at)
    # introspection needs client authentication
    r = requests.post(oidc.url("/introspect"), data={"token": tokens["access_token"]}, timeout=15)
    assert r.status_code == 401 and "casuser" not in r.text, f"unauthenticated introspection: {r.status_code} {r.text[:200]}"


def test_code_flow_client_secret_post(oidc, ob, clients):
    c = clients.other
    res = ob.authorize(c)  # a confidential client may leave PKCE out
    code = assert_code_redirect(res, c, oidc)
    tokens = token_json(oidc.redeem(c, code, auth="post"))
    idt = oidc.verify(tokens["id_token"], audience=c.client_id)
    assert idt["sub"] == "casuser" and idt["nonce"] == "n-1", idt


def test_public_client_with_pkce(oidc, ob, clients):
    c = clients.pub
    verifier, _ = pkce_pair()
    res = ob.authorize(c, verifier=verifier)
    code = assert_code_redirect(res, c, oidc)
    tokens = token_json(oidc.redeem(c, code, verifier))  # client_id only, no secret
    idt = oidc.verify(tokens["id_token"], audience=c.client_id)
    assert idt["sub"] == "casuser" and idt.get("email") == "casuser@example.org", idt


def test_custom_scope_releases_the_attribute(oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c, scope="openid memberOf")
    idt = oidc.verify(tokens["id_token"], audience=c.client_id)
    ui = oidc.userinfo(tokens["access_token"]).json()
    for where, claims in (("id token", idt), ("userinfo", ui)):
        assert sorted(claims.get("memberOf") or []) == ["faculty", "staff"], f"{where}: {claims}"
        assert "email" not in claims and "name" not in claims, f"{where}: scope claims not asked for: {claims}"


def test_oauth2_without_openid_has_no_id_token(oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c, scope="profile")
    assert "id_token" not in tokens, tokens
    assert "openid" not in tokens.get("scope", "").split(), tokens
    at = oidc.verify(tokens["access_token"], typ="at+jwt")
    assert at["sub"] == "casuser", at


def test_unsupported_response_type(ob, clients):
    c = clients.conf
    res = ob.authorize(c, response_type="token", login=False)
    assert_error_redirect(res, c, "unsupported_response_type")


# --------------------------------------------------------------------------
# single sign-on across protocols, prompt
# --------------------------------------------------------------------------


def test_cas_login_gives_oidc_code_without_form(oidc, ob, clients):
    st = ob.ticket_for(APP)  # logged in at a CAS service
    assert st
    c = clients.conf
    verifier, _ = pkce_pair()
    res = ob.authorize(c, verifier=verifier, login=False)
    assert res.forms_seen == 0, f"the login form was shown despite the SSO session:\n{res.trace()}"
    code = assert_code_redirect(res, c, oidc)
    idt = oidc.verify(token_json(oidc.redeem(c, code, verifier))["id_token"], audience=c.client_id)
    assert idt["sub"] == "casuser", idt


def test_oidc_login_gives_cas_ticket_without_form(cas, oidc, ob, clients):
    login_token_flow(ob, clients.conf)
    r = ob.get_login(APP)
    t = ticket_from(r)
    assert r.status_code == 302 and t, f"CAS login after an OIDC login: {r.status_code} {r.text[:300]}"
    assert cas.validate("/p3/serviceValidate", APP, t).user == "casuser"


def test_prompt_none_with_session_gives_code(oidc, ob, clients):
    ob.ticket_for(APP)
    c = clients.pub
    verifier, _ = pkce_pair()
    res = ob.authorize(c, prompt="none", verifier=verifier, login=False)
    assert res.forms_seen == 0, res.trace()
    code = assert_code_redirect(res, c, oidc)
    token_json(oidc.redeem(c, code, verifier))


def test_prompt_none_without_session_is_login_required(ob, clients):
    c = clients.pub
    verifier, _ = pkce_pair()
    res = ob.authorize(c, prompt="none", verifier=verifier, login=False)
    assert res.forms_seen == 0, f"prompt=none showed a login form:\n{res.trace()}"
    assert_error_redirect(res, c, "login_required")
    assert not ob.tgc


def test_prompt_login_shows_the_form_despite_the_session(oidc, ob, clients):
    ob.ticket_for(APP)
    c = clients.conf
    verifier, _ = pkce_pair()
    time.sleep(1.1)  # so that a new auth_time differs from the first login's
    t_relogin = int(time.time())
    res = ob.authorize(c, prompt="login", verifier=verifier, login=False)
    assert res.forms_seen == 1 and res.code is None, f"prompt=login did not show the form:\n{res.trace()}"
    res = ob.walk(res.final)  # now log in
    code = assert_code_redirect(res, c, oidc)
    idt = oidc.verify(token_json(oidc.redeem(c, code, verifier))["id_token"], audience=c.client_id)
    assert idt["auth_time"] >= t_relogin, f"auth_time {idt['auth_time']} is from before the new login ({t_relogin})"


# --------------------------------------------------------------------------
# logout
# --------------------------------------------------------------------------


def test_oidc_logout_ends_session_and_notifies_cas_and_oidc_clients(cas, oidc, ob, clients, recorder):
    c = clients.conf
    slo_service = recorder.url(unique_path("/slo"))
    st = ob.ticket_for(slo_service)
    assert cas.validate("/p3/serviceValidate", slo_service, st).success
    tokens, res = login_token_flow(ob, c)
    assert res.forms_seen == 0, res.trace()
    idt = oidc.verify(tokens["id_token"], audience=c.client_id)
    sid = idt["sid"]
    tgc = ob.tgc

    r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": tokens["id_token"],
                                              "post_logout_redirect_uri": clients.conf_bye, "state": "bye-1"},
                 allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303), f"RP-initiated logout: {r.status_code} {r.text[:400]}"
    loc = r.headers["Location"]
    assert base_of(loc) == clients.conf_bye and query_of(loc) == {"state": "bye-1"}, loc

    assert_session_over(cas, ob, clients.pub, tgc)

    # CAS back-channel single logout to the CAS service of the session
    got = recorder.wait_for(urlparse(slo_service).path, count=1, timeout=10)
    assert len(got) == 1, f"expected one CAS logout request at {slo_service}, got {got}"
    xml = got[0].form().get("logoutRequest", [""])[0]
    root = ET.fromstring(xml)
    assert root.tag == f"{{{SAML2P}}}LogoutRequest", xml
    assert root.findtext(f"{{{SAML2}}}NameID") == "casuser", xml
    assert root.findtext(f"{{{SAML2P}}}SessionIndex") == st, xml

    # OIDC back-channel logout to the client of the session
    rec, token = wait_logout_token(recorder, clients.conf_bcl, sid)
    check_logout_token(oidc, rec, token, c, sid, idt["sub"])
    time.sleep(1)
    same = [t for _, t in recorded_logout_tokens(recorder, clients.conf_bcl)
            if t and jwt.decode(t, options={"verify_signature": False}).get("sid") == sid]
    assert len(same) == 1, f"{len(same)} logout tokens for sid {sid}"


def test_cas_logout_sends_oidc_backchannel_logout(cas, oidc, ob, clients, recorder):
    c = clients.conf
    tokens, res = login_token_flow(ob, c)
    assert res.forms_seen == 1, res.trace()
    idt = oidc.verify(tokens["id_token"], audience=c.client_id)
    tgc = ob.tgc
    r = ob.s.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    assert r.status_code < 400, r.status_code
    rec, token = wait_logout_token(recorder, clients.conf_bcl, idt["sid"])
    check_logout_token(oidc, rec, token, c, idt["sid"], "casuser")
    assert_session_over(cas, ob, clients.pub, tgc)


def test_logout_of_one_session_leaves_the_others(cas, oidc, clients, recorder):
    """Two browsers, two sessions of the same user: the OIDC logout of one
    notifies only that session's sid, and the other session goes on."""
    c = clients.conf
    a, b = OidcBrowser(cas), OidcBrowser(cas)
    ta, _ = login_token_flow(a, c)
    tb, _ = login_token_flow(b, c)
    sid_a = oidc.verify(ta["id_token"], audience=c.client_id)["sid"]
    sid_b = oidc.verify(tb["id_token"], audience=c.client_id)["sid"]
    assert sid_a != sid_b, "two SSO sessions share a sid"
    r = a.s.get(oidc.url("/logout"), params={"id_token_hint": ta["id_token"]}, allow_redirects=False, timeout=15)
    assert r.status_code < 400, r.status_code
    wait_logout_token(recorder, clients.conf_bcl, sid_a)
    time.sleep(1)
    assert not [t for _, t in recorded_logout_tokens(recorder, clients.conf_bcl)
                if t and jwt.decode(t, options={"verify_signature": False}).get("sid") == sid_b]
    res = b.authorize(clients.pub, verifier=pkce_pair()[0], prompt="none", login=False)
    assert res.code, f"the other session ended too:\n{res.trace()}"


def test_refresh_tokens_die_with_the_session_unless_offline(cas, oidc, ob, clients):
    c = clients.conf
    online, _ = login_token_flow(ob, c, scope="openid profile")
    offline, _ = login_token_flow(ob, c, scope="openid offline_access")
    assert online.get("refresh_token") and offline.get("refresh_token"), (online, offline)
    r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": online["id_token"]}, allow_redirects=False,
                 timeout=15)
    assert r.status_code < 400, r.status_code
    assert_token_error(oidc.refresh(c, online["refresh_token"]), "invalid_grant")
    token_json(oidc.refresh(c, offline["refresh_token"]), "refresh of an offline_access token after logout")


def test_logout_does_not_redirect_to_unregistered_uri(cas, oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    # not registered at all, and registered for another client than the hint's
    for target in ("https://evil.example.test/bye", clients.pub_bye):
        r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": tokens["id_token"],
                                                  "post_logout_redirect_uri": target, "state": "x"},
                     allow_redirects=False, timeout=15)
        assert r.status_code in (200, 400), f"{target}: {r.status_code} Location={r.headers.get('Location')!r}"
        assert "Location" not in r.headers or not r.headers["Location"].startswith(target), r.headers
        assert not re.search(r'http-equiv=["\']?refresh', r.text, re.I) or target not in r.text, r.text[:500]


def test_logout_redirect_without_state(oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": tokens["id_token"],
                                              "post_logout_redirect_uri": clients.conf_bye},
                 allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303) and r.headers["Location"] == clients.conf_bye, (r.status_code, r.headers)


# --------------------------------------------------------------------------
# bad authorization requests
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["other-host", "suffix", "extra-query"])
def test_unregistered_redirect_uri_is_never_redirected_to(ob, clients, kind):
    c = clients.conf
    bad = {"other-host": EVIL, "suffix": c.redirect_uri + "x", "extra-query": c.redirect_uri + "?next=" + EVIL}[kind]
    res = ob.authorize(c, redirect_uri=bad, verifier=pkce_pair()[0], login=False)
    r = res.hops[0]
    assert r.status_code == 400, f"redirect_uri {bad!r}: expected 400, got {r.status_code}\n{res.trace()}"
    assert "Location" not in r.headers, r.headers
    assert "html" in r.headers.get("Content-Type", ""), r.headers
    assert parse_login_form(r) is None


def test_unknown_client_id(cas, ob, clients):
    ghost = OidcClient("no-such-client", clients.conf.redirect_uri, "x")
    res = ob.authorize(ghost, verifier=pkce_pair()[0], login=False)
    r = res.hops[0]
    assert r.status_code == 400, res.trace()
    assert "Location" not in r.headers, r.headers
    assert parse_login_form(r) is None


def test_public_client_without_pkce(ob, clients):
    c = clients.pub
    res = ob.authorize(c)  # no code_challenge
    assert_error_redirect(res, c, "invalid_request")


def test_plain_code_challenge_method_refused(ob, clients):
    for c in (clients.pub, clients.conf):
        verifier, _ = pkce_pair()
        res = ob.authorize(c, challenge=verifier, method="plain")
        assert_error_redirect(res, c, "invalid_request")


def test_form_post_response_mode(oidc, ob, clients):
    c = clients.conf
    verifier, _ = pkce_pair()
    res = ob.authorize(c, verifier=verifier, response_mode="form_post", state="fp-state")
    r = res.final
    assert res.location is None and r.status_code == 200, f"form_post:\n{res.trace()}"
    assert "html" in r.headers.get("Content-Type", ""), r.headers
    page = _PageParser()
    page.feed(r.text)
    forms = [f for f in page.forms if f["attrs"].get("action") == c.redirect_uri]
    assert len(forms) == 1, f"no form posting to {c.redirect_uri}: {page.forms}\n{r.text[:800]}"
    form = forms[0]
    assert form["attrs"].get("method", "").lower() == "post", form
    fields = form["inputs"]
    assert fields.get("state") == "fp-state" and fields.get("code"), fields
    assert "error" not in fields, fields
    assert fields.get("iss", oidc.issuer) == oidc.issuer, fields
    assert "code=" not in (r.headers.get("Location") or ""), r.headers
    assert_auto_submits(r, page)
    token_json(oidc.redeem(c, fields["code"], verifier), "redeeming the form_post code")


def test_form_post_escapes_the_state(oidc, ob, clients):
    c = clients.conf
    evil = '"><script>alert(1)</script><x y=\''
    verifier, _ = pkce_pair()
    res = ob.authorize(c, verifier=verifier, response_mode="form_post", state=evil)
    r = res.final
    assert r.status_code == 200, res.trace()
    assert "<script>alert(1)" not in r.text, "the state is reflected unescaped into the form_post page"
    page = _PageParser()
    page.feed(r.text)
    form = next(f for f in page.forms if f["attrs"].get("action") == c.redirect_uri)
    assert form["inputs"].get("state") == evil, form["inputs"]


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.scripts: list[dict] = []
        self.onload: list[str] = []
        self._form = None
        self._script = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if "onload" in a:
            self.onload.append(a["onload"])
        if tag == "form":
            self._form = {"attrs": a, "inputs": {}}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form["inputs"][a["name"]] = a.get("value", "")
        elif tag == "script":
            self._script = {"attrs": a, "text": ""}
            self.scripts.append(self._script)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script["text"] += data


def _csp_script_sources(csp: str) -> list[str] | None:
    directives = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    for name in ("script-src-elem", "script-src", "default-src"):
        if name in directives:
            return directives[name]
    return None  # no restriction


def assert_auto_submits(r: requests.Response, page: _PageParser) -> None:
    """The form_post page submits itself in a browser honouring the page's own
    Content-Security-Policy: by a script from 'self', or an inline script the
    policy allows (nonce, hash, or 'unsafe-inline' without nonce/hash)."""
    sources = _csp_script_sources(r.headers.get("Content-Security-Policy", ""))
    allowed = []
    for s in page.scripts:
        src = s["attrs"].get("src")
        if src:
            js = requests.get(urljoin(r.url, src), timeout=15)
            if js.status_code == 200 and "submit" in js.text:
                same_origin = urlparse(urljoin(r.url, src)).netloc == urlparse(r.url).netloc
                if sources is None or ("'self'" in sources and same_origin) or urljoin(r.url, src) in sources:
                    allowed.append(f"script {src}")
        elif "submit" in s["text"]:
            digest = base64.b64encode(hashlib.sha256(s["text"].encode()).digest()).decode()
            nonce = s["attrs"].get("nonce")
            ok = (sources is None
                  or (nonce and f"'nonce-{nonce}'" in sources)
                  or f"'sha256-{digest}'" in sources
                  or ("'unsafe-inline'" in sources and not any(x.startswith(("'nonce-", "'sha")) for x in sources)))
            if ok:
                allowed.append("inline script")
    for handler in page.onload:
        if "submit" in handler and (sources is None or "'unsafe-inline'" in sources):
            allowed.append("onload handler")
    assert allowed, (
        f"the form_post page does not submit itself under its own CSP "
        f"({r.headers.get('Content-Security-Policy')!r}); scripts: {page.scripts}, onload: {page.onload}")


# --------------------------------------------------------------------------
# bad token requests
# --------------------------------------------------------------------------


def test_code_replay_revokes_the_first_redemption(oidc, ob, clients):
    c = clients.conf
    verifier, _ = pkce_pair()
    code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
    first = token_json(oidc.redeem(c, code, verifier))
    assert oidc.userinfo(first["access_token"]).status_code == 200
    assert oidc.introspect(c, first["access_token"]).json().get("active") is True

    again = oidc.redeem(c, code, verifier)
    assert_token_error(again, "invalid_grant")
    assert_inactive(oidc, c, first["access_token"], "the access token of a replayed code")
    assert_invalid_token_at_userinfo(oidc, first["access_token"], "the access token of a replayed code")
    assert_token_error(oidc.refresh(c, first["refresh_token"]), "invalid_grant")


def test_wrong_client_secret(oidc, ob, clients):
    c = clients.conf
    code = assert_code_redirect(ob.authorize(c), c, oidc)
    wrong = OidcClient(c.client_id, c.redirect_uri, "not-the-secret")
    for auth in ("basic", "post"):
        r = oidc.redeem(wrong, code, auth=auth)
        assert_token_error(r, "invalid_client", 401)
        assert r.headers.get("WWW-Authenticate"), f"401 without WWW-Authenticate ({auth}): {r.headers}"
    ghost = OidcClient("no-such-client", c.redirect_uri, "x")
    assert_token_error(oidc.redeem(ghost, code), "invalid_client", 401)
    # a confidential client must authenticate
    r = requests.post(oidc.url("/token"), data={"grant_type": "authorization_code", "code": code,
                                                 "redirect_uri": c.redirect_uri, "client_id": c.client_id},
                      timeout=15)
    assert_token_error(r, "invalid_client", 401)


def test_pkce_mismatch(oidc, ob, clients):
    c = clients.pub
    verifier, _ = pkce_pair()
    code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
    assert_token_error(oidc.redeem(c, code, pkce_pair()[0]), "invalid_grant")
    code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
    assert_token_error(oidc.redeem(c, code, None), ("invalid_grant", "invalid_request"))
    # a confidential client that sent a challenge is held to it too
    c = clients.conf
    code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
    assert_token_error(oidc.redeem(c, code, pkce_pair()[0]), "invalid_grant")


def test_code_is_bound_to_client_and_redirect_uri(oidc, ob, clients):
    c = clients.conf
    code = assert_code_redirect(ob.authorize(c), c, oidc)
    assert_token_error(oidc.redeem(clients.other, code, redirect_uri=c.redirect_uri), "invalid_grant")
    code = assert_code_redirect(ob.authorize(c), c, oidc)
    assert_token_error(oidc.redeem(c, code, redirect_uri=clients.other.redirect_uri), "invalid_grant")
    assert_token_error(oidc.redeem(c, "bogus-code-" + "x" * 20), "invalid_grant")


def test_expired_code(short_cas, clients):
    oidc, ob = Oidc(short_cas), OidcBrowser(short_cas)
    c = clients.conf
    verifier, _ = pkce_pair()
    code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
    time.sleep(3)
    assert_token_error(oidc.redeem(c, code, verifier), "invalid_grant")


def test_tampered_access_token(oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    at = tokens["access_token"]
    assert oidc.userinfo(at).status_code == 200
    for why, bad in (("a changed payload", tamper_payload(at, sub="alice")),
                     ("a flipped signature bit", flip_signature(at)),
                     ("alg none", alg_none(at)),
                     ("garbage", "not-a-token")):
        assert_invalid_token_at_userinfo(oidc, bad, why)
        assert_inactive(oidc, c, bad, why)
    assert oidc.userinfo(at).status_code == 200  # the real one still works
    r = requests.get(oidc.url("/userinfo"), timeout=15)
    assert r.status_code == 401 and r.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), (
        r.status_code, r.headers)


def test_expired_access_token(short_cas, clients):
    oidc, ob = Oidc(short_cas), OidcBrowser(short_cas)
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    assert tokens["expires_in"] <= 2, tokens
    at = oidc.verify(tokens["access_token"], typ="at+jwt")
    assert at["exp"] - at["iat"] <= 2, at
    assert oidc.userinfo(tokens["access_token"]).status_code == 200
    time.sleep(3)
    assert_invalid_token_at_userinfo(oidc, tokens["access_token"], "an expired access token")
    assert_inactive(oidc, c, tokens["access_token"], "an expired access token")
    # its refresh token still works (8h) and gives a fresh access token
    fresh = token_json(oidc.refresh(c, tokens["refresh_token"]))
    assert oidc.userinfo(fresh["access_token"]).status_code == 200


def test_refresh_rotation_and_reuse_detection(oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    rt1 = tokens["refresh_token"]
    second = token_json(oidc.refresh(c, rt1), "first refresh")
    rt2 = second.get("refresh_token")
    assert rt2 and rt2 != rt1, "refresh tokens do not rotate"
    assert oidc.userinfo(second["access_token"]).status_code == 200
    if "id_token" in second:
        idt = oidc.verify(second["id_token"], audience=c.client_id)
        assert idt["sub"] == "casuser", idt
    third = token_json(oidc.refresh(c, rt2), "second refresh")
    rt3 = third.get("refresh_token")
    assert rt3 and rt3 not in (rt1, rt2)

    assert_token_error(oidc.refresh(c, rt1), "invalid_grant")  # reuse of a rotated token
    assert_token_error(oidc.refresh(c, rt3), "invalid_grant")  # ... revoked the whole grant
    # a refresh token is bound to its client
    t2, _ = login_token_flow(ob, c)
    assert_token_error(oidc.refresh(clients.other, t2["refresh_token"]), "invalid_grant")


def test_revocation(oidc, ob, clients):
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    r = oidc.revoke(c, tokens["access_token"], token_type_hint="access_token")
    assert r.status_code == 200, r.text
    assert_inactive(oidc, c, tokens["access_token"], "a revoked access token")
    assert_invalid_token_at_userinfo(oidc, tokens["access_token"], "a revoked access token")
    r = oidc.revoke(c, tokens["refresh_token"], token_type_hint="refresh_token")
    assert r.status_code == 200, r.text
    assert_token_error(oidc.refresh(c, tokens["refresh_token"]), "invalid_grant")
    # RFC 7009 §2.2: an unknown token is no error
    assert oidc.revoke(c, "no-such-token").status_code == 200


def test_client_credentials(oidc, clients):
    r = oidc.token(clients.pub, {"grant_type": "client_credentials"})
    assert (r.status_code, oauth_error(r)) in ((400, "unauthorized_client"), (401, "invalid_client")), (
        f"client_credentials by a public client: {r.status_code} {r.text[:300]}")
    assert "access_token" not in r.text
    body = token_json(oidc.token(clients.conf, {"grant_type": "client_credentials"}), "client_credentials")
    assert "id_token" not in body and "refresh_token" not in body, body
    at = oidc.verify(body["access_token"], typ="at+jwt")
    assert at.get("client_id") == clients.conf.client_id, at
    assert at.get("sub") != "casuser", at


def test_code_redeemed_after_the_session_ended(cas, oidc, ob, clients, recorder):
    """A code whose SSO session was logged out before redemption gives no
    tokens: the back-channel logout for that sid has gone out already, so an
    ID token issued now would open an RP session nothing can end (and the
    spec has tokens die with their SSO session)."""
    c = clients.conf
    verifier, _ = pkce_pair()
    code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
    r = ob.s.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    assert r.status_code < 400 and not ob.tgc, r.status_code
    r = oidc.redeem(c, code, verifier)
    assert_token_error(r, "invalid_grant")


def test_concurrent_redemptions_of_one_code(oidc, ob, clients):
    """Eight simultaneous redemptions of one code: exactly one gets tokens."""
    import threading

    c = clients.conf
    for _ in range(3):
        verifier, _ = pkce_pair()
        code = assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc)
        out: list[int] = []
        gate = threading.Barrier(8)

        def redeem():
            gate.wait(10)
            out.append(oidc.redeem(c, code, verifier).status_code)

        threads = [threading.Thread(target=redeem) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(out) == [200] + [400] * 7, f"statuses of 8 concurrent redemptions: {sorted(out)}"


def test_concurrent_use_of_one_refresh_token(oidc, ob, clients):
    import threading

    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    out: list[tuple[int, str | None]] = []
    gate = threading.Barrier(8)

    def refresh():
        gate.wait(10)
        r = oidc.refresh(c, tokens["refresh_token"])
        out.append((r.status_code, r.json().get("refresh_token") if r.status_code == 200 else None))

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [rt for status, rt in out if status == 200]
    assert len(winners) <= 1, f"{len(winners)} of 8 concurrent refreshes with one token succeeded: {out}"
    assert len(out) == 8 and all(status in (200, 400) for status, _ in out), out
    for rt in winners:  # the losers were reuses: the grant is revoked
        assert_token_error(oidc.refresh(c, rt), "invalid_grant")


def test_id_token_is_not_an_access_token(oidc, ob, clients, recorder):
    """Same keys sign ID tokens, access tokens and logout tokens: only an
    at+jwt is a bearer token (RFC 9068 §4)."""
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    assert_invalid_token_at_userinfo(oidc, tokens["id_token"], "an ID token")
    assert_inactive(oidc, c, tokens["id_token"], "an ID token")
    sid = oidc.verify(tokens["id_token"], audience=c.client_id)["sid"]
    r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": tokens["id_token"]}, allow_redirects=False, timeout=15)
    assert r.status_code < 400
    _, logout_token = wait_logout_token(recorder, clients.conf_bcl, sid)
    assert_invalid_token_at_userinfo(oidc, logout_token, "a logout token")


def test_a_client_cannot_revoke_another_clients_token(oidc, ob, clients):
    """RFC 7009 §2.1: the server checks the token was issued to the revoking client."""
    c = clients.conf
    tokens, _ = login_token_flow(ob, c)
    r = oidc.revoke(clients.other, tokens["refresh_token"])
    assert r.status_code in (200, 400), r.status_code
    r = oidc.revoke(clients.other, tokens["access_token"])
    assert r.status_code in (200, 400), r.status_code
    assert oidc.introspect(c, tokens["access_token"]).json().get("active") is True
    token_json(oidc.refresh(c, tokens["refresh_token"]), "refresh after another client tried to revoke")


def test_logout_hint_and_client_id_must_agree(oidc, ob, clients):
    """RP-Initiated Logout 1.0 §2: with both id_token_hint and client_id, they
    must name the same client; the other client's registered URI is no target."""
    tokens, _ = login_token_flow(ob, clients.conf)
    r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": tokens["id_token"], "client_id": clients.pub.client_id,
                                              "post_logout_redirect_uri": clients.pub_bye, "state": "x"},
                 allow_redirects=False, timeout=15)
    assert not r.headers.get("Location", "").startswith(clients.pub_bye), (r.status_code, r.headers)
    assert r.status_code in (200, 400), r.status_code
    # client_id alone names the client whose URIs count
    r = ob.s.get(oidc.url("/logout"), params={"client_id": clients.pub.client_id,
                                              "post_logout_redirect_uri": clients.pub_bye, "state": "y"},
                 allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303) and r.headers["Location"] == clients.pub_bye + "?state=y", (
        r.status_code, r.headers.get("Location"))


def test_max_age(oidc, ob, clients):
    c = clients.pub
    ob.ticket_for(APP)
    time.sleep(2.2)
    res = ob.authorize(c, verifier=pkce_pair()[0], max_age="3600", login=False)
    assert res.forms_seen == 0 and res.code, f"max_age=3600 after 2 s asked to log in again:\n{res.trace()}"
    res = ob.authorize(c, verifier=pkce_pair()[0], prompt="none", max_age="1", login=False)
    assert_error_redirect(res, c, "login_required")
    verifier, _ = pkce_pair()
    t_relogin = int(time.time())
    res = ob.authorize(c, verifier=verifier, max_age="1", login=False)
    assert res.forms_seen == 1 and not res.code, f"max_age=1 after 2 s did not ask to log in:\n{res.trace()}"
    code = assert_code_redirect(ob.walk(res.final), c, oidc)
    idt = oidc.verify(token_json(oidc.redeem(c, code, verifier))["id_token"], audience=c.client_id,
                      require=("auth_time",))
    assert idt["auth_time"] >= t_relogin, idt


def test_pairwise_subjects(oidc, ob, clients, recorder):
    c, c2 = clients.pw, clients.pw2
    tokens, _ = login_token_flow(ob, c, scope="openid email")
    idt = oidc.verify(tokens["id_token"], audience=c.client_id)
    sub = idt["sub"]
    assert sub != "casuser" and "casuser" not in sub, idt
    assert oidc.userinfo(tokens["access_token"]).json().get("sub") == sub
    assert oidc.verify(tokens["access_token"], typ="at+jwt")["sub"] == sub
    assert oidc.introspect(c, tokens["access_token"]).json().get("sub") == sub
    again, _ = login_token_flow(ob, c, scope="openid")
    assert oidc.verify(again["id_token"], audience=c.client_id)["sub"] == sub, "pairwise sub is not stable"
    other, _ = login_token_flow(ob, c2, scope="openid")
    sub2 = oidc.verify(other["id_token"], audience=c2.client_id)["sub"]
    assert sub2 not in (sub, "casuser"), "two sectors got the same subject"
    public, _ = login_token_flow(ob, clients.conf, scope="openid")
    assert oidc.verify(public["id_token"], audience=clients.conf.client_id)["sub"] == "casuser"
    # the logout token names the user by the client's own pairwise sub
    r = ob.s.get(oidc.url("/logout"), params={"id_token_hint": tokens["id_token"]}, allow_redirects=False, timeout=15)
    assert r.status_code < 400
    rec, token = wait_logout_token(recorder, clients.pw_bcl, idt["sid"])
    check_logout_token(oidc, rec, token, c, idt["sid"], sub)


def test_code_ttl_above_60s_is_refused(tmp_path, services, clients):
    import subprocess

    from conftest import BINARY

    c = Castellan(tmp_path / "long-code", services=services + clients.services(), oidc={"code_ttl": "5m"})
    c.write_config()
    p = subprocess.run([str(BINARY), "serve", "--config", str(c.config_path)], capture_output=True, text=True,
                       timeout=20, env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"})
    assert p.returncode != 0, f"started with code_ttl = 5m:\n{p.stdout}{p.stderr}"
    assert "code_ttl" in p.stdout + p.stderr, p.stdout + p.stderr


# --------------------------------------------------------------------------
# two nodes, one Redis
# --------------------------------------------------------------------------


@pytest.fixture
def two_nodes(tmp_path, services, clients, pki):
    """Two nodes sharing a Redis store and a data_dir, both believing they are
    http://127.0.0.1:<lb>/cas (as behind a load balancer; nothing listens on
    <lb>: the test sends each request to the node it picks)."""
    from test_multinode import Node, RedisProc

    redis = RedisProc(tmp_path / "redis").start()
    public = f"http://127.0.0.1:{free_port()}/cas"
    nodes = []
    try:
        for i in (1, 2):
            n = Node(tmp_path / f"node{i}", data_dir=tmp_path / "shared-data", services=services + clients.services(),
                     ssl_cert_file=pki.ca_pem, oidc=OIDC_CONFIG, public_url=public, label=f"oidc-node{i}",
                     tickets={"store": "redis", "redis_url": redis.url})
            nodes.append(n)
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_two_nodes_serve_one_flow(two_nodes, clients):
    n1, n2 = two_nodes
    public = n1.public_url
    c = clients.pub

    def on(node, url: str) -> str:
        url = urljoin(public + "/", url)
        assert url.startswith(public), f"{url!r} is not under the public URL {public!r}"
        return node.base + url[len(public):]

    s = requests.Session()  # one browser; cookies (path /cas, host 127.0.0.1) go to both nodes
    verifier, _ = pkce_pair()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    r = s.get(n1.url("/oidc/authorize"), params={
        "response_type": "code", "client_id": c.client_id, "redirect_uri": c.redirect_uri,
        "scope": "openid profile email", "state": "mn-state", "nonce": "mn-nonce",
        "code_challenge": challenge, "code_challenge_method": "S256"}, allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303), f"authorize on node 1: {r.status_code} {r.text[:300]}"
    login_url = r.headers["Location"]

    # the login form on node 2 ...
    page = s.get(on(n2, login_url), allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    assert page.status_code == 200 and form, f"login page on node 2: {page.status_code} {page.text[:300]}"
    action = form.action if form.action.startswith(n2.base) else on(n2, form.action)
    r = s.post(action, data=dict(form.fields, username="casuser", password=PASSWORD),
               allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303), f"login POST on node 2: {r.status_code} {r.text[:300]}"
    callback = r.headers["Location"]
    assert ticket_from(r), callback
    # ... and the callback too
    r = s.get(on(n2, callback), allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303), f"callback on node 2: {r.status_code} {r.text[:300]}"
    loc = r.headers["Location"]
    assert base_of(loc) == c.redirect_uri, loc
    q = query_of(loc)
    assert q.get("state") == "mn-state" and q.get("code") and q.get("iss") == public + "/oidc", loc

    # the token on node 1
    o1, o2 = Oidc(n1), Oidc(n2)
    tokens = token_json(o1.redeem(c, q["code"], verifier), "token on node 1")
    for o in (o1, o2):  # both nodes publish the key that signed it
        idt = o.verify(tokens["id_token"], audience=c.client_id)
        assert idt["sub"] == "casuser" and idt["nonce"] == "mn-nonce", idt
    assert o2.userinfo(tokens["access_token"]).json().get("email") == "casuser@example.org"
    assert_token_error(o2.redeem(c, q["code"], verifier), "invalid_grant")  # replay on the other node
    # (a public client cannot introspect: userinfo tells)
    assert_invalid_token_at_userinfo(o1, tokens["access_token"], "the access token of a code replayed on node 2")
    # SSO: node 1 knows the session made on node 2
    r = s.get(n1.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.headers.get("Location"))


def test_two_nodes_refresh_rotation(two_nodes, clients):
    n1, n2 = two_nodes
    c = clients.conf
    ob = OidcBrowser(n1)
    tokens, _ = login_token_flow(ob, c)
    o1, o2 = Oidc(n1), Oidc(n2)
    t2 = token_json(o2.refresh(c, tokens["refresh_token"]), "refresh on node 2")
    t3 = token_json(o1.refresh(c, t2["refresh_token"]), "refresh on node 1")
    assert_token_error(o2.refresh(c, tokens["refresh_token"]), "invalid_grant")
    assert_token_error(o1.refresh(c, t3["refresh_token"]), "invalid_grant")


def test_two_nodes_concurrent_redemptions_of_one_code(two_nodes, clients):
    import threading

    n1, n2 = two_nodes
    c = clients.conf
    ob = OidcBrowser(n1)
    o1, o2 = Oidc(n1), Oidc(n2)
    for _ in range(3):
        verifier, _ = pkce_pair()
        res = ob.authorize(c, verifier=verifier)
        assert res.code, res.trace()
        out: list[int] = []
        gate = threading.Barrier(10)

        def redeem(o):
            gate.wait(10)
            out.append(o.redeem(c, res.code, verifier).status_code)

        threads = [threading.Thread(target=redeem, args=((o1, o2)[i % 2],)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(out) == [200] + [400] * 9, f"statuses of 10 concurrent redemptions on 2 nodes: {sorted(out)}"


def test_key_rotation_reaches_the_running_server(fresh_castellan, services, clients):
    """`castellan keys rotate` while serving: within seconds new tokens carry
    the new kids, and tokens signed before the rotation stay valid."""
    import subprocess

    from conftest import BINARY

    cas = fresh_castellan("oidc-rotation", services=services + clients.services(), oidc=OIDC_CONFIG).start()
    oidc, ob, c = Oidc(cas), OidcBrowser(cas), clients.conf
    verifier, _ = pkce_pair()
    before = token_json(oidc.redeem(c, assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc), verifier))
    old_kids = {k["kid"] for k in oidc.jwks()["keys"]}

    rotated = subprocess.run([str(BINARY), "keys", "rotate", "--config", str(cas.config_path)],
                             capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    new_kids = set(rotated.stdout.split(":", 1)[1].split())
    assert len(new_kids) == 2 and not new_kids & old_kids, rotated.stdout

    deadline = time.time() + 15
    while time.time() < deadline:
        published = {k["kid"] for k in oidc.jwks()["keys"]}
        if new_kids <= published:
            break
        time.sleep(0.5)
    assert new_kids | old_kids == published, f"JWKS after rotation: {published}"

    verifier, _ = pkce_pair()
    after = token_json(oidc.redeem(c, assert_code_redirect(ob.authorize(c, verifier=verifier), c, oidc), verifier))
    for token in ("id_token", "access_token"):
        kid = jwt.get_unverified_header(after[token])["kid"]
        assert kid in new_kids, f"{token} after rotation signed with {kid}"
        assert jwt.get_unverified_header(before[token])["kid"] in old_kids
    # Tokens of the old keys still verify, here and at the server.
    oidc.verify(before["id_token"], audience=c.client_id)
    assert oidc.userinfo(before["access_token"]).status_code == 200
    assert oidc.userinfo(after["access_token"]).status_code == 200
