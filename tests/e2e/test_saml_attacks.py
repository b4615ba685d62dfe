"""Attacks on the SAML IdP's bindings (security issue: a forged
HTTP-Redirect message passing as signed; unbounded RelayState/target).

The HTTP-Redirect binding signs the URL-encoded query (bindings §3.4.4.1).
An IdP that checks the signature over one copy of a parameter and acts on
another lets an attacker put a forged message in front of a genuine signed
query: `SAML%52equest=<forged>&<signed query>`.  Castellan must parse the
query once, refuse any name that appears twice once decoded, and act only
on what the signature covers.

python-requests rewrites `%52` to `R` (requote_uri), so the forged queries
go out through http.client, which sends the request target as given.

The service providers are pysaml2 clients (saml_sp.ServiceProvider); the
genuine signed queries are pysaml2's own, or signed here with the SP's key.
"""

from __future__ import annotations

import base64
import datetime
import http.client
from urllib.parse import quote, urlencode, urlparse

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import APP, ticket_from
from saml_sp import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    NSMAP,
    RSA_SHA256,
    SAML,
    SAMLP,
    IdpMetadata,
    SamlBrowser,
    ServiceProvider,
    deflate_b64,
    make_keypair,
    new_id,
)
from test_saml_pysaml2 import SAML_CONFIG, SamlCastellan, check_refused, check_success

LONG = 257  # one byte over the limit
FITS = 200


class Sps:
    def __init__(self, workdir) -> None:
        # persistent NameID, SLO by Redirect and POST, requests may be unsigned
        self.main = ServiceProvider(workdir, "atk-main", name_id_format=NAMEID_PERSISTENT,
                                    service={"release": ["mail"]})
        # Castellan's config requires signed requests
        self.strict = ServiceProvider(workdir, "atk-strict", service={"release": ["mail"],
                                                                      "require_signed_requests": True})
        # transient NameID: a LogoutRequest's NameID cannot be matched, only its SessionIndex
        self.transient = ServiceProvider(workdir, "atk-transient", name_id_format=NAMEID_TRANSIENT,
                                         service={"release": ["mail"]})

    def all(self) -> list[ServiceProvider]:
        return [self.main, self.strict, self.transient]


@pytest.fixture(scope="module")
def sps(tmp_path_factory) -> Sps:
    s = Sps(tmp_path_factory.mktemp("saml-atk-sps"))
    for sp in s.all():
        sp.write_metadata()
    return s


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, services, sps) -> SamlCastellan:
    key, cert = make_keypair(tmp_path_factory.mktemp("saml-atk-idp-key"), "idp", "Castellan e2e SAML IdP")
    c = SamlCastellan(tmp_path_factory.mktemp("castellan-saml-atk"), label="castellan-saml-attacks",
                      services=services + [sp.service() for sp in sps.all()], ssl_cert_file=pki.ca_pem,
                      saml={**SAML_CONFIG, "signing_key": str(key), "signing_certificate": str(cert)})
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def idp(cas, sps, tmp_path_factory) -> IdpMetadata:
    md = IdpMetadata.fetch(cas.url("/idp/metadata"), tmp_path_factory.mktemp("saml-atk-md") / "idp.xml")
    for sp in sps.all():
        sp.attach(md)
    return md


@pytest.fixture
def b(cas, idp) -> SamlBrowser:
    return SamlBrowser(cas)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class Raw:
    """An HTTP answer read by http.client."""

    def __init__(self, status: int, headers: dict, text: str) -> None:
        self.status, self.headers, self.text = status, headers, text

    def __repr__(self) -> str:
        return f"HTTP {self.status} Location={self.headers.get('location')!r} body={self.text[:600]!r}"


def raw_request(cas, method: str, url: str, *, tgc: str | None = None, body: str | None = None) -> Raw:
    """Send `url`'s path and query exactly as written (no requoting)."""
    u = urlparse(url)
    target = u.path + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection("127.0.0.1", cas.port, timeout=30)
    headers = {}
    if tgc:
        headers["Cookie"] = f"CASTGC={tgc}"
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, target, body=body, headers=headers)
        r = conn.getresponse()
        return Raw(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def sign_query(sp: ServiceProvider, param: str, xml: str, relay_state: str | None) -> str:
    """A Redirect-binding query signed with the SP's key (bindings §3.4.4.1)."""
    signed = f"{param}={quote(deflate_b64(xml.encode()), safe='')}"
    if relay_state is not None:
        signed += f"&RelayState={quote(relay_state, safe='')}"
    signed += f"&SigAlg={quote(RSA_SHA256, safe='')}"
    key = serialization.load_pem_private_key(sp.key_file.read_bytes(), None)
    sig = base64.b64encode(key.sign(signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())).decode()
    return signed + "&Signature=" + quote(sig, safe="")


def logout_request(sp: ServiceProvider, idp: IdpMetadata, binding: str, *, name_id: str | None = None,
                   name_id_format: str | None = None, session_index: str | None = None) -> str:
    """A hand-made LogoutRequest of `sp` (NameID and SessionIndex optional)."""
    instant = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    nid = ""
    if name_id is not None:
        fmt = f' Format="{name_id_format}"' if name_id_format else ""
        nid = f"<saml:NameID{fmt}>{name_id}</saml:NameID>"
    sidx = f"<samlp:SessionIndex>{session_index}</samlp:SessionIndex>" if session_index else ""
    return (f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{new_id()}" Version="2.0" '
            f'IssueInstant="{instant}" Destination="{idp.slo[binding]}">'
            f"<saml:Issuer>{sp.entity_id}</saml:Issuer>{nid}{sidx}</samlp:LogoutRequest>")


def session_alive(b: SamlBrowser, tgc: str) -> bool:
    """Whether the SSO session of `tgc` still gives a CAS ticket without a form."""
    assert b.tgc == tgc, "the CASTGC cookie was changed"
    r = b.get_login(APP)
    return r.status_code in (302, 303) and ticket_from(r) is not None


class SignedIn:
    """The browser's login at an SP: its CASTGC, the NameID (text and
    pysaml2's object) and the SessionIndex the SP got."""

    def __init__(self, b: SamlBrowser, sp: ServiceProvider, idp: IdpMetadata) -> None:
        resp, _, a = check_success(b.sso(sp), sp, idp)
        n = a.find("saml:Subject/saml:NameID", NSMAP)
        self.tgc = b.tgc
        self.name_id = (n.text or "").strip()
        self.pysaml2_name_id = resp.name_id
        self.session_index = a.find("saml:AuthnStatement", NSMAP).get("SessionIndex")


def refused_as_duplicate(r: Raw) -> None:
    assert r.status == 400, f"expected 400 for a parameter given twice, got {r!r}"
    assert "more than once" in r.text, r.text[:800]
    assert "SAMLResponse" not in r.text and "location" not in r.headers, r


# --------------------------------------------------------------------------
# a forged message in front of a genuine signed query
# --------------------------------------------------------------------------


def test_forged_logout_request_before_a_signed_query_ends_nothing(cas, idp, sps, b):
    """`SAML%52equest=<forged LogoutRequest, no NameID, no SessionIndex>&<a
    signed query of the SP>` sent by the victim's browser: refused, the
    victim's session survives."""
    sp = sps.main
    tgc = SignedIn(b, sp, idp).tgc
    # any genuine signed query of that SP will do: here one of its AuthnRequests
    _, authn = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
    genuine = urlparse(sp.redirect_url(authn, "atk", sign=True)).query
    assert "Signature=" in genuine and genuine.startswith("SAMLRequest=")
    forged = deflate_b64(logout_request(sp, idp, BINDING_HTTP_REDIRECT).encode())
    url = f"{idp.slo[BINDING_HTTP_REDIRECT]}?SAML%52equest={quote(forged, safe='')}&{genuine}"
    r = raw_request(cas, "GET", url, tgc=tgc)
    assert session_alive(b, tgc), f"a forged LogoutRequest ended the victim's session: {r!r}"
    refused_as_duplicate(r)


def test_forged_authn_request_for_an_sp_requiring_signatures_is_refused(cas, idp, sps, b):
    """The same trick with an AuthnRequest for an SP with
    require_signed_requests: refused before any login."""
    sp = sps.strict
    _, genuine_xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
    genuine = urlparse(sp.redirect_url(genuine_xml, "atk", sign=True)).query
    _, forged_xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT, force_authn="true",
                                     assertion_consumer_service_url=sp.acs2)
    forged = deflate_b64(forged_xml.encode())
    for where in ("before", "after"):
        part = f"SAML%52equest={quote(forged, safe='')}"
        query = f"{part}&{genuine}" if where == "before" else f"{genuine}&{part}"
        r = raw_request(cas, "GET", f"{idp.sso[BINDING_HTTP_REDIRECT]}?{query}")
        refused_as_duplicate(r)
    # the genuine query alone still works (the check is not just "refuse everything")
    flow = b.send_redirect(f"{idp.sso[BINDING_HTTP_REDIRECT]}?{genuine}")
    assert flow.forms_seen == 1, flow.trace()


def test_relay_state_given_twice_is_refused(cas, idp, sps, b):
    """`Relay%53tate=https://evil.test/` next to a genuine signed request:
    refused rather than answered with the attacker's RelayState."""
    sp = sps.strict
    b.login()
    _, xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
    genuine = urlparse(sp.redirect_url(xml, "genuine-rs", sign=True)).query
    evil = "Relay%53tate=" + quote("https://evil.test/", safe="")
    for query in (f"{evil}&{genuine}", f"{genuine}&{evil}"):
        r = raw_request(cas, "GET", f"{idp.sso[BINDING_HTTP_REDIRECT]}?{query}", tgc=b.tgc)
        refused_as_duplicate(r)
        assert "evil.test" not in r.text


@pytest.mark.parametrize("name", ["SAMLRequest", "RelayState", "SigAlg", "Signature"])
def test_any_binding_parameter_twice_is_refused(cas, idp, sps, name):
    sp = sps.strict
    _, xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
    genuine = urlparse(sp.redirect_url(xml, "rs", sign=True)).query
    # the same name, spelt with one letter percent-encoded
    spelt = f"{name[:-1]}%{ord(name[-1]):02X}"
    for endpoint in (idp.sso[BINDING_HTTP_REDIRECT], idp.slo[BINDING_HTTP_REDIRECT]):
        r = raw_request(cas, "GET", f"{endpoint}?{genuine}&{spelt}=x")
        refused_as_duplicate(r)


# --------------------------------------------------------------------------
# HTTP-POST binding
# --------------------------------------------------------------------------


def test_post_binding_duplicates_are_refused(cas, idp, sps, b):
    sp = sps.main
    _, xml = sp.authn_request(binding=BINDING_HTTP_POST)
    msg = quote(base64.b64encode(xml.encode()).decode(), safe="")
    for body in (f"SAMLRequest={msg}&RelayState=a&RelayState=b",
                 f"SAMLRequest={msg}&SAML%52equest={msg}",
                 f"Relay%53tate=https%3A%2F%2Fevil.test%2F&SAMLRequest={msg}&RelayState=a"):
        refused_as_duplicate(raw_request(cas, "POST", idp.sso[BINDING_HTTP_POST], body=body))
    # a genuine signed LogoutRequest (pysaml2's) with a second RelayState ends nothing
    login = SignedIn(b, sp, idp)
    tgc = login.tgc
    _, lxml, _ = sp.logout_request(login.pysaml2_name_id, BINDING_HTTP_POST)
    lmsg = quote(base64.b64encode(lxml.encode()).decode(), safe="")
    body = f"SAMLRequest={lmsg}&RelayState=a&Relay%53tate=https%3A%2F%2Fevil.test%2F"
    refused_as_duplicate(raw_request(cas, "POST", idp.slo[BINDING_HTTP_POST], tgc=tgc, body=body))
    assert session_alive(b, tgc)
    # and the same without the duplicate does end it (the LogoutRequest itself is fine)
    body = f"SAMLRequest={lmsg}&RelayState=a"
    r = raw_request(cas, "POST", idp.slo[BINDING_HTTP_POST], tgc=tgc, body=body)
    assert r.status in (200, 302, 303), r
    assert not session_alive_raw(cas, tgc)


def session_alive_raw(cas, tgc: str) -> bool:
    r = raw_request(cas, "GET", cas.url("/login") + "?service=" + quote(APP, safe=""), tgc=tgc)
    return r.status in (302, 303) and "ticket=" in r.headers.get("location", "")


# --------------------------------------------------------------------------
# LogoutRequests that name nobody
# --------------------------------------------------------------------------


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_signed_logout_request_without_name_id_is_refused(cas, idp, sps, b, binding):
    """Core §3.7.1: a LogoutRequest names its principal. A validly signed one
    with neither NameID nor SessionIndex is malformed and ends nothing."""
    sp = sps.main
    login = SignedIn(b, sp, idp)
    tgc = login.tgc
    for kw in ({}, {"session_index": login.session_index}):
        xml = logout_request(sp, idp, binding, **kw)
        if binding == BINDING_HTTP_REDIRECT:
            r = raw_request(cas, "GET", f"{idp.slo[binding]}?{sign_query(sp, 'SAMLRequest', xml, 'rs')}", tgc=tgc)
        else:
            signed = sign_post(sp, xml)
            body = urlencode({"SAMLRequest": base64.b64encode(signed.encode()).decode(), "RelayState": "rs"})
            r = raw_request(cas, "POST", idp.slo[binding], tgc=tgc, body=body)
        assert r.status == 400, r
        assert session_alive(b, tgc), f"a LogoutRequest without NameID ({kw}) ended the session"


def sign_post(sp: ServiceProvider, xml: str) -> str:
    """The LogoutRequest signed (enveloped) by pysaml2 with the SP's key."""
    from saml2 import samlp
    from saml2.sigver import pre_signature_part

    req = samlp.logout_request_from_string(xml)
    req.signature = pre_signature_part(req.id, sp.client.sec.my_cert, 1,
                                       sign_alg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                                       digest_alg="http://www.w3.org/2001/04/xmlenc#sha256")
    return sp.client.sec.sign_statement(str(req), "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest",
                                        node_id=req.id)


def test_transient_name_id_logout_needs_the_session_index(cas, idp, sps, b):
    """A transient NameID cannot be matched to the session: without a
    SessionIndex naming it, a signed LogoutRequest ends nothing; with it, it
    does."""
    sp = sps.transient
    login = SignedIn(b, sp, idp)
    tgc, nid, index = login.tgc, login.name_id, login.session_index
    xml = logout_request(sp, idp, BINDING_HTTP_REDIRECT, name_id="someone-else", name_id_format=NAMEID_TRANSIENT)
    r = raw_request(cas, "GET", f"{idp.slo[BINDING_HTTP_REDIRECT]}?{sign_query(sp, 'SAMLRequest', xml, None)}",
                    tgc=tgc)
    assert r.status < 500, r
    assert session_alive(b, tgc), "a LogoutRequest with neither a matching NameID nor SessionIndex ended the session"
    xml = logout_request(sp, idp, BINDING_HTTP_REDIRECT, name_id=nid, name_id_format=NAMEID_TRANSIENT,
                         session_index=index)
    r = raw_request(cas, "GET", f"{idp.slo[BINDING_HTTP_REDIRECT]}?{sign_query(sp, 'SAMLRequest', xml, None)}",
                    tgc=tgc)
    assert r.status in (302, 303) and r.headers["location"].startswith(sp.slo_redirect), r
    assert not session_alive_raw(cas, tgc), "the matching LogoutRequest did not end the session"


# --------------------------------------------------------------------------
# RelayState and target size
# --------------------------------------------------------------------------


def relay(n: int) -> str:
    base = "https://sp.example.test/app/page?x="
    return base + "r" * (n - len(base))


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_relay_state_size_on_sso(cas, idp, sps, b, binding):
    sp = sps.main
    flow = b.sso(sp, binding=binding, relay_state=relay(FITS))
    check_success(flow, sp, idp)
    flow = b.sso(sp, binding=binding, relay_state=relay(LONG))
    check_refused(flow, sp, http=(400,), top=())
    assert flow.final.status_code == 400 and "RelayState is too long" in flow.final.text
    assert flow.forms_seen == 0


def test_target_size_on_unsolicited_sso(cas, idp, sps, b):
    sp = sps.main
    url = cas.url("/idp/profile/SAML2/Unsolicited/SSO")
    r = b.s.get(url, params={"providerId": sp.entity_id, "target": relay(FITS)}, allow_redirects=False, timeout=15)
    flow = b.walk(r)
    flow.relay_state = relay(FITS)
    check_success(flow, sp, idp, unsolicited=True)
    for key in ("target", "RelayState"):
        r = b.s.get(url, params={"providerId": sp.entity_id, key: relay(LONG)}, allow_redirects=False, timeout=15)
        assert r.status_code == 400 and "too long" in r.text, (key, r.status_code, r.text[:500])


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_relay_state_size_on_slo(cas, idp, sps, b, binding):
    sp = sps.main
    login = SignedIn(b, sp, idp)
    tgc = login.tgc
    xml = logout_request(sp, idp, binding, name_id=login.name_id, name_id_format=NAMEID_PERSISTENT,
                         session_index=login.session_index)

    def send(relay_state: str) -> Raw:
        if binding == BINDING_HTTP_REDIRECT:
            return raw_request(cas, "GET", f"{idp.slo[binding]}?{sign_query(sp, 'SAMLRequest', xml, relay_state)}",
                               tgc=tgc)
        body = urlencode({"SAMLRequest": base64.b64encode(sign_post(sp, xml).encode()).decode(),
                          "RelayState": relay_state})
        return raw_request(cas, "POST", idp.slo[binding], tgc=tgc, body=body)

    r = send(relay(LONG))
    assert r.status == 400 and "RelayState is too long" in r.text, r
    assert session_alive(b, tgc)
    r = send(relay(FITS))
    assert r.status in (200, 302, 303), r
    assert relay(FITS) in (r.headers.get("location", "") + r.text) or quote(relay(FITS), safe="") in \
        r.headers.get("location", ""), r
    assert not session_alive_raw(cas, tgc)
