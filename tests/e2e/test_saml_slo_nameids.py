"""SAML single logout reaches every SP with the NameID it actually holds
(issue 11, "SAML single logout works for every SP").

Castellan keeps, with each SP's sign-in, the NameID it issued (value, format,
qualifiers) and the SessionIndex, and uses that both to match an SP's own
LogoutRequest and to build every LogoutRequest it sends.  Before, it derived
the NameID again from the SP's configured format: emailAddress and transient
SPs were skipped, and an SP configured persistent that asked for transient
NameIDs (NameIDPolicy) could not log out by its own request and was sent the
persistent value when the logout started elsewhere.

* a logout started at a real Shibboleth SP reaches a pysaml2 SP using
  emailAddress NameIDs (browser chain, HTTP-Redirect) and one using transient
  NameIDs (SOAP, on the `recorder`);
* a pysaml2 SP configured persistent that asks for transient NameIDs logs out
  by its own request (Success, session over), and is sent its transient
  NameID when the logout starts at another SP;
* a CAS /logout in a browser visits a SAML SP that has only browser SLO
  endpoints, then goes on to the registered `service`; an OIDC RP-initiated
  logout does the same, then goes on to the post_logout_redirect_uri.

pysaml2 SPs are never served: the test takes the LogoutRequest out of the
redirect, checks it with the SP's client (signature, NameID against the one
the SP holds) and carries the SP's signed LogoutResponse back.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from lxml import etree

from saml2 import BINDING_HTTP_REDIRECT

from conftest import APP, OidcClient, parse_login_form, ticket_from, unique_path
from saml_shib import SamlCastellan, ShibBrowser, ShibbolethSp, redirect_message, shibboleth_available
from saml_sp import (
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    NSMAP,
    RSA_SHA256,
    SOAPENV,
    STATUS_SUCCESS,
    IdpMetadata,
    SamlBrowser,
    ServiceProvider,
    inflate,
    parse_xml,
    status_codes,
    verify_redirect_signature,
)
from test_saml_shibboleth import cas_login_shows_form, login as shib_login


class Sps:
    def __init__(self, workdir: Path, recorder) -> None:
        self.soap_path = unique_path("/saml-soap-transient")
        # emailAddress NameIDs, browser SLO only (HTTP-Redirect)
        self.email = ServiceProvider(workdir, "slo-email", name_id_format=NAMEID_EMAIL, slo=("redirect",),
                                     service={"release": ["mail"]})
        # transient NameIDs, SOAP SLO only
        self.transient = ServiceProvider(workdir, "slo-transient", name_id_format=NAMEID_TRANSIENT, slo=(),
                                         soap_slo_url=recorder.url(self.soap_path), service={"release": ["mail"]})
        # configured persistent at Castellan, asks for transient NameIDs (NameIDPolicy); browser SLO only
        self.asks = ServiceProvider(workdir, "slo-asks-transient", name_id_format=NAMEID_TRANSIENT,
                                    slo=("redirect",),
                                    service={"release": ["mail"], "name_id_format": NAMEID_PERSISTENT})
        # a plain persistent SP, browser SLO only: starts logouts, and is the front-channel-only SP
        self.main = ServiceProvider(workdir, "slo-main", name_id_format=NAMEID_PERSISTENT, slo=("redirect",),
                                    service={"release": ["mail"]})

    def all(self) -> list[ServiceProvider]:
        return [self.email, self.transient, self.asks, self.main]


@pytest.fixture(scope="module")
def sps(tmp_path_factory, recorder) -> Sps:
    s = Sps(tmp_path_factory.mktemp("slo-sps"), recorder)
    for sp in s.all():
        sp.write_metadata()
    return s


@pytest.fixture(scope="module")
def shib():
    reason = shibboleth_available()
    if reason:
        pytest.fail(reason)
    sp = ShibbolethSp(name="shib-sp")  # the name gives its expectations in test_saml_shibboleth
    yield sp
    sp.cleanup()


# An OIDC relying party of the same Castellan (it starts logouts only).
RP = OidcClient("slo-rp", "https://rp.example.test/cb", "slo-rp-secret-0123456789")
RP_BYE = "https://rp.example.test/bye"


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, services, sps, shib):
    rp = RP.service(post_logout_redirect_uris=[RP_BYE], scopes=["openid"])
    c = SamlCastellan(tmp_path_factory.mktemp("slo-castellan"), label="slo-castellan", ssl_cert_file=pki.ca_pem,
                      services=services + [shib.service()] + [sp.service() for sp in sps.all()] + [rp],
                      saml={"clock_skew": "60s"}).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def idp(cas, sps, tmp_path_factory) -> IdpMetadata:
    md = IdpMetadata.fetch(cas.url("/idp/metadata"), tmp_path_factory.mktemp("slo-idp-md") / "idp.xml")
    for sp in sps.all():
        sp.attach(md)
    return md


def sign_in(b: SamlBrowser, sp: ServiceProvider):
    """SSO at `sp` in the browser's session; returns the SP's NameID object and SessionIndex."""
    flow = b.sso(sp)
    assert flow.final.status_code == 200, flow.trace()
    resp = sp.accept(flow.form.saml_response, flow.request_id)
    assert resp is not None and resp.name_id is not None
    a = resp.assertion
    index = a.authn_statement[0].session_index
    return resp.name_id, index


def visit(sp: ServiceProvider, idp: IdpMetadata, location: str, holds, index: str) -> str:
    """The browser arrived at `sp`'s SLO endpoint with the IdP's LogoutRequest: pysaml2 checks it
    and it must name what the SP holds; returns the URL carrying the SP's LogoutResponse back."""
    assert location.startswith(sp.slo_redirect + "?"), location
    ok, params = verify_redirect_signature(location, idp.public_key(), "SAMLRequest")
    assert ok, f"the LogoutRequest to {sp.name} does not verify: {params}"
    req = sp.client.parse_logout_request(params["SAMLRequest"], BINDING_HTTP_REDIRECT)
    assert req is not None
    got = req.message.name_id
    assert (got.text, got.format) == (holds.text, holds.format), (
        f"{sp.name} holds {holds.text!r} ({holds.format}), the IdP named {got.text!r} ({got.format})")
    assert [i.text for i in req.message.session_index] == [index]
    answer = sp.client.create_logout_response(req.message, [BINDING_HTTP_REDIRECT])
    back = sp.client.apply_binding(BINDING_HTTP_REDIRECT, answer, idp.slo[BINDING_HTTP_REDIRECT],
                                   params.get("RelayState", ""), response=True, sign=True, sigalg=RSA_SHA256)
    return dict(back["headers"])["Location"]


def check_session_over(cas, b) -> None:
    r = b.s.get(cas.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code == 200 and ticket_from(r) is None and parse_login_form(r) is not None, (
        f"the CAS session is still there: {r.status_code} {r.headers.get('Location')}")


def test_shibboleth_logout_reaches_pysaml2_sps_with_email_and_transient_nameids(cas, idp, sps, shib, recorder):
    if not shib.alive():
        shib.stop()
        shib.start(cas)
    b = SamlBrowser(cas)
    shib_login(shib, cas, ShibBrowser(b.s))  # Shibboleth's own walk, in the same browser
    email_nid, email_idx = sign_in(b, sps.email)
    transient_nid, transient_idx = sign_in(b, sps.transient)
    assert email_nid.text == "casuser@example.org" and email_nid.format == NAMEID_EMAIL
    assert transient_nid.format == NAMEID_TRANSIENT

    # the logout starts at Shibboleth: its signed LogoutRequest goes to Castellan
    r = b.s.get(shib.handler + "/Logout", params={"return": shib.logged_out_url}, allow_redirects=False,
                timeout=30)
    assert r.status_code == 302 and r.headers["Location"].startswith(cas.url("/idp/profile/SAML2/Redirect/SLO?")), (
        r.status_code, r.headers.get("Location"), shib.log_tail(30))
    lreq = redirect_message(r.headers["Location"])
    r = b.s.get(r.headers["Location"], allow_redirects=False, timeout=30)

    # 1. the browser is sent to the emailAddress SP first, with the NameID it holds
    assert r.status_code == 302, f"{r.status_code}: {r.text[:800]}"
    back = visit(sps.email, idp, r.headers["Location"], email_nid, email_idx)

    # 2. back at the IdP, Shibboleth gets its LogoutResponse and accepts it
    r = b.s.get(back, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].startswith(shib.slo_redirect + "?"), (
        r.status_code, r.headers.get("Location"))
    resp = redirect_message(r.headers["Location"])
    assert status_codes(resp.doc)[:1] == [STATUS_SUCCESS]
    assert resp.doc.get("InResponseTo") == lreq.doc.get("ID")
    r = b.s.get(r.headers["Location"], allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers.get("Location") == shib.logged_out_url, (
        r.status_code, r.headers.get("Location"), shib.log_tail(30))
    cas_login_shows_form(cas, ShibBrowser(b.s))

    # 3. the transient SP got a signed SOAP LogoutRequest naming its transient NameID
    got = recorder.wait_for(sps.soap_path, count=1, timeout=10)
    assert len(got) == 1, f"no SOAP LogoutRequest for the transient SP: {got}"
    env = parse_xml(got[0].body)
    assert env.tag == f"{{{SOAPENV}}}Envelope"
    el = env.find("soap:Body/samlp:LogoutRequest", NSMAP)
    parsed = sps.transient.client.parse_logout_request(etree.tostring(el).decode("utf-8"), None)
    assert parsed is not None and parsed.message.signature is not None
    n = parsed.message.name_id
    assert (n.text, n.format) == (transient_nid.text, NAMEID_TRANSIENT), (n.text, transient_nid.text)
    assert n.sp_name_qualifier == sps.transient.entity_id
    assert [i.text for i in parsed.message.session_index] == [transient_idx]


def test_sp_asking_for_transient_nameids_logs_out_by_its_own_request(cas, idp, sps):
    b = SamlBrowser(cas)
    nid, _ = sign_in(b, sps.asks)
    assert nid.format == NAMEID_TRANSIENT, "the IdP honours the SP's NameIDPolicy"
    reqid, url, rs = sps.asks.logout_request(nid, BINDING_HTTP_REDIRECT)
    flow = b.send_redirect(url)
    assert flow.location and flow.location.startswith(sps.asks.slo_redirect + "?"), flow.trace()
    ok, params = verify_redirect_signature(flow.location, idp.public_key())
    assert ok, params
    doc = parse_xml(inflate(params["SAMLResponse"]))
    assert status_codes(doc)[:1] == [STATUS_SUCCESS], status_codes(doc)
    lr = sps.asks.client.parse_logout_request_response(params["SAMLResponse"], BINDING_HTTP_REDIRECT)
    assert lr is not None and lr.status_ok() and lr.in_response_to == reqid
    assert not b.tgc, "CASTGC still in the browser after the logout"
    check_session_over(cas, b)


def test_sp_asking_for_transient_nameids_is_reached_by_a_logout_started_elsewhere(cas, idp, sps):
    b = SamlBrowser(cas)
    asks_nid, asks_idx = sign_in(b, sps.asks)
    main_nid, _ = sign_in(b, sps.main)
    reqid, url, rs = sps.main.logout_request(main_nid, BINDING_HTTP_REDIRECT)
    flow = b.send_redirect(url)
    assert flow.location, flow.trace()
    back = visit(sps.asks, idp, flow.location, asks_nid, asks_idx)
    flow = b.send_redirect(back)
    assert flow.location and flow.location.startswith(sps.main.slo_redirect + "?"), flow.trace()
    ok, params = verify_redirect_signature(flow.location, idp.public_key())
    assert ok and params.get("RelayState", "") == rs, params
    lr = sps.main.client.parse_logout_request_response(params["SAMLResponse"], BINDING_HTTP_REDIRECT)
    assert lr is not None and lr.status_ok() and lr.in_response_to == reqid
    check_session_over(cas, b)


def test_cas_logout_in_a_browser_reaches_a_front_channel_only_saml_sp(cas, idp, sps):
    b = SamlBrowser(cas)
    nid, idx = sign_in(b, sps.main)
    b.ticket_for(APP)  # and a CAS service in the same session
    r = b.s.get(cas.url("/logout"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"/logout answered {r.status_code}: {r.text[:500]}"
    assert not b.tgc, "CASTGC still in the browser after /logout"
    # the SAML SP first (it has only a browser SLO endpoint) ...
    back = visit(sps.main, idp, r.headers["Location"], nid, idx)
    # ... then the registered service /logout was given
    r = b.s.get(back, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"] == APP, (r.status_code, r.headers.get("Location"))
    check_session_over(cas, b)

    # without a service: the signed-out page at the end
    nid, idx = sign_in(b, sps.main)
    r = b.s.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    back = visit(sps.main, idp, r.headers.get("Location", ""), nid, idx)
    r = b.s.get(back, allow_redirects=False, timeout=15)
    assert r.status_code == 200 and "signed out" in r.text.lower(), (r.status_code, r.text[:500])


def test_oidc_logout_in_a_browser_reaches_a_front_channel_only_saml_sp(cas, idp, sps):
    b = SamlBrowser(cas)
    nid, idx = sign_in(b, sps.main)
    r = b.s.get(cas.url("/oidc/logout"), params={
        "client_id": RP.client_id, "post_logout_redirect_uri": RP_BYE, "state": "bye-1"},
        allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"/oidc/logout answered {r.status_code}: {r.text[:500]}"
    assert not b.tgc, "CASTGC still in the browser after /oidc/logout"
    # the SAML SP first (it has only a browser SLO endpoint) ...
    back = visit(sps.main, idp, r.headers["Location"], nid, idx)
    # ... then the relying party's post_logout_redirect_uri, with its state
    r = b.s.get(back, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"] == f"{RP_BYE}?state=bye-1", (
        r.status_code, r.headers.get("Location"))
    check_session_over(cas, b)
