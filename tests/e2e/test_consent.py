"""Attribute release consent (`consent = true` on a service).

* CAS through Apache + mod_auth_cas (CAS 3.0 /p3/serviceValidate, so the
  attributes reach the CGI page): accept -> the page with the attributes;
  decline -> "nothing was shared", no ticket ever reaches Apache.
* The decision is remembered: a new browser logs in without the page; a
  change of `release` (server restarted with the new config) asks again; a
  decision older than `consent_ttl` asks again; SSO to a consent service
  asks once, then grants.
* SAML through pysaml2: accept -> a Success Response pysaml2 accepts, with the
  attributes; decline -> Responder / RequestDenied, which pysaml2 reports as
  StatusRequestDenied.

OIDC (openid-client) is in tests/oidc-client/consent.test.mjs.
"""

from __future__ import annotations

import re
import time
import warnings
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from conftest import PASSWORD, Apache, Browser, free_port, parse_login_form, ticket_from
from mfa_helpers import MfaCastellan
from saml_sp import (
    NAMEID_PERSISTENT,
    STATUS_RESPONDER,
    STATUS_SUCCESS,
    IdpMetadata,
    SamlBrowser,
    ServiceProvider,
    make_keypair,
    status_codes,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from saml2.response import StatusRequestDenied

REQUEST_DENIED = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
APP = "https://consent-app.example.test/home"
SHORT = "https://short-app.example.test/home"


def consent_page(r: requests.Response) -> str | None:
    """The consent page's one-time flow id, when `r` is that page."""
    if r.status_code != 200 or 'id="consent-form"' not in r.text:
        return None
    m = re.search(r'name="flow" value="([^"]+)"', r.text)
    assert m, r.text[:1500]
    return m.group(1)


def decide(session: requests.Session, cas, flow: str, decision: str) -> requests.Response:
    return session.post(cas.url("/login/consent"), data={"flow": flow, "decision": decision},
                        allow_redirects=False, timeout=15)


def services(ports: str, sp: ServiceProvider, release: list[str]) -> list[dict]:
    return [
        {"name": "apache", "protocol": "cas", "service": rf"^http://127\.0\.0\.1:({ports})/.*$",
         "release": ["mail", "cn"], "consent": True},
        {"name": "consent-app", "protocol": "cas", "service": r"^https://consent-app\.example\.test/.*$",
         "release": release, "consent": True},
        {"name": "short-app", "protocol": "cas", "service": r"^https://short-app\.example\.test/.*$",
         "release": ["mail"], "consent": True, "consent_ttl": "2s"},
        sp.service(),
    ]


@pytest.fixture(scope="module")
def sp(tmp_path_factory) -> ServiceProvider:
    s = ServiceProvider(tmp_path_factory.mktemp("consent-sp"), "sp-consent", name_id_format=NAMEID_PERSISTENT,
                        service={"release": ["mail", "cn"], "consent": True})
    s.write_metadata()
    return s


@pytest.fixture(scope="module")
def apache_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, sp, apache_port) -> MfaCastellan:
    key, cert = make_keypair(tmp_path_factory.mktemp("consent-idp-key"), "idp", "Castellan e2e consent IdP")
    c = MfaCastellan(tmp_path_factory.mktemp("castellan-consent"), label="castellan-consent",
                     services=services(str(apache_port), sp, ["mail", "cn"]), ssl_cert_file=pki.ca_pem,
                     saml={"clock_skew": "60s", "request_max_age": "5m", "assertion_ttl": "5m",
                           "signing_key": str(key), "signing_certificate": str(cert)})
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apache(cas, pki, apache_port):
    reason = Apache.available()
    if reason:
        pytest.fail(reason)
    a = Apache(pki, cas, port=apache_port, validate_path="/p3/serviceValidate", saml=False,
               label="apache consent")
    a.start()
    yield a
    a.cleanup()


@pytest.fixture(scope="module")
def idp(cas, sp, tmp_path_factory) -> IdpMetadata:
    md = IdpMetadata.fetch(cas.url("/idp/metadata"), tmp_path_factory.mktemp("consent-idp-md") / "idp.xml")
    sp.attach(md)
    return md


def env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def apache_login(apache: Apache, session: requests.Session, username: str, password: str) -> requests.Response:
    """Apache -> /login -> password; the answer of Castellan to the POST."""
    protected = apache.base + "/secured/env.cgi"
    r = session.get(protected, allow_redirects=False, timeout=15)
    assert r.status_code == 302, r.text[:300]
    page = session.get(r.headers["Location"], allow_redirects=False, timeout=15)
    b = Browser(apache.cas)
    b.s = session
    return b.submit(page, username, password)


# --------------------------------------------------------------------------
# CAS: mod_auth_cas
# --------------------------------------------------------------------------


def test_mod_auth_cas_accept_shows_the_values_then_releases_them(apache):
    s = requests.Session()
    r = apache_login(apache, s, "casuser", PASSWORD)
    flow = consent_page(r)
    assert flow, f"expected the consent page, got {r.status_code}: {r.text[:800]}"
    assert ticket_from(r) is None
    # The names and the values about to be released; nothing else.
    assert "casuser@example.org" in r.text and "CAS User" in r.text, r.text
    assert "do-not-release" not in r.text and "memberOf" not in r.text
    # The decision is one-time and bound to this browser.
    other = requests.Session()
    assert decide(other, apache.cas, flow, "accept").status_code == 403
    r = decide(s, apache.cas, flow, "accept")
    assert r.status_code == 302, r.text[:500]
    assert r.headers["Location"].startswith(apache.base + "/secured/env.cgi?ticket=ST-")
    final = s.get(r.headers["Location"], allow_redirects=True, timeout=30)
    env = env_of(final.text)
    assert final.status_code == 200 and env.get("REMOTE_USER") == "casuser", final.text[:500]
    assert env.get("HTTP_CAS_MAIL") == "casuser@example.org", final.text
    assert decide(s, apache.cas, flow, "accept").status_code == 403, "a decision is not replayed"

    # Remembered: a new browser (no SSO session) logs in without the page.
    s2 = requests.Session()
    r = apache_login(apache, s2, "casuser", PASSWORD)
    assert consent_page(r) is None, r.text[:500]
    assert ticket_from(r), r.headers


def test_mod_auth_cas_decline_sends_no_ticket(apache):
    s = requests.Session()
    r = apache_login(apache, s, "alice", "Wonderland-42")
    flow = consent_page(r)
    assert flow, r.text[:800]
    r = decide(s, apache.cas, flow, "decline")
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.headers)
    assert "Nothing was shared" in r.text
    assert "ST-" not in r.text
    # Nothing of the sign-in exists: no SSO session, Apache lets nobody in
    # and sends the browser to the login form again.
    assert not any(c.name == "CASTGC" for c in s.cookies)
    r = s.get(apache.base + "/secured/env.cgi", allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(apache.cas.url("/login"))
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert parse_login_form(r) is not None, r.text[:500]


# --------------------------------------------------------------------------
# remembered, asked again
# --------------------------------------------------------------------------


def test_sso_asks_once_then_grants(cas):
    b = Browser(cas)
    r = b.login()  # no service: a session only
    assert r.status_code == 200 and b.tgc
    r = b.get_login(APP)
    flow = consent_page(r)
    assert flow, r.text[:500]
    r = decide(b.s, cas, flow, "accept")
    ticket = ticket_from(r)
    assert ticket, r.headers
    result = cas.validate("/p3/serviceValidate", APP, ticket)
    assert result.success and result.user == "casuser", result
    # Asked once: the next ticket comes straight away.
    assert ticket_from(b.get_login(APP))
    # gateway asks nothing: a user without a decision goes back ticketless.
    b2 = Browser(cas)
    b2.login(username="alice", password="Wonderland-42")
    r = b2.get_login(APP, gateway="true")
    assert r.status_code == 302 and r.headers["Location"] == APP, r.headers


def test_a_decision_expires_after_consent_ttl(cas):
    b = Browser(cas)
    r = b.login(SHORT)
    flow = consent_page(r)
    assert flow
    assert ticket_from(decide(b.s, cas, flow, "accept"))
    assert ticket_from(Browser(cas).login(SHORT)), "remembered within the ttl"
    time.sleep(3.2)
    assert consent_page(Browser(cas).login(SHORT)), "asked again after consent_ttl (2s)"


def test_a_change_of_release_asks_again(tmp_path_factory, pki, sp, apache_port):
    def start(release):
        c = MfaCastellan(workdir, label="castellan-consent-release",
                         services=services(str(apache_port), sp, release), ssl_cert_file=pki.ca_pem)
        return c.start()

    workdir = tmp_path_factory.mktemp("castellan-consent-release")
    c = start(["mail"])
    try:
        b = Browser(c)
        flow = consent_page(b.login(APP))
        assert flow
        assert ticket_from(decide(b.s, c, flow, "accept"))
        assert consent_page(Browser(c).login(APP)) is None, "remembered"
    finally:
        c.stop()
    # Same data directory (the same SQLite store), one more attribute released.
    c = start(["mail", "cn"])
    try:
        r = Browser(c).login(APP)
        assert consent_page(r), "a new attribute is asked about"
        assert "CAS User" in r.text
    finally:
        c.stop()


# --------------------------------------------------------------------------
# SAML: pysaml2
# --------------------------------------------------------------------------


def test_saml_accept_gives_a_response_with_the_attributes(cas, idp, sp):
    b = SamlBrowser(cas)
    flow = b.sso(sp, username="casuser", password=PASSWORD)
    consent = consent_page(flow.final)
    assert consent, flow.trace()
    r = decide(b.s, cas, consent, "accept")
    nxt = b.walk(r, login=False)
    root = nxt.form.tree()
    assert status_codes(root) == [STATUS_SUCCESS], nxt.trace()
    resp = sp.accept(nxt.form.saml_response, flow.request_id)
    names = {k.lower() for k in resp.ava}
    assert {"mail", "cn"} <= names or len(resp.ava) >= 2, resp.ava


def test_saml_decline_is_request_denied(cas, idp, sp):
    b = SamlBrowser(cas)
    flow = b.sso(sp, username="alice", password="Wonderland-42")
    consent = consent_page(flow.final)
    assert consent, flow.trace()
    r = decide(b.s, cas, consent, "decline")
    nxt = b.walk(r, login=False)
    root = nxt.form.tree()
    assert status_codes(root) == [STATUS_RESPONDER, REQUEST_DENIED], nxt.trace()
    with pytest.raises(StatusRequestDenied):
        sp.accept(nxt.form.saml_response, flow.request_id)
