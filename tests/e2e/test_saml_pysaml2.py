"""Castellan's SAML 2.0 Identity Provider (/cas/idp/...) with pysaml2 as the
service provider.

Every SP is a real `saml2.client.Saml2Client` (saml_sp.ServiceProvider) with
its own key and certificate; its metadata, written by pysaml2, is registered
in Castellan as a `protocol = "saml"` service, and its client trusts the IdP
metadata fetched from /cas/idp/metadata.  A requests session (SamlBrowser)
carries the AuthnRequest (HTTP-Redirect or HTTP-POST binding) to Castellan,
fills the CAS login form and stops at the auto-submit page; the SAMLResponse
taken from that form goes to pysaml2's parse_authn_request_response, which
checks the signature (against the metadata certificate, with its XML schema
and xmldsig profile checks), Destination, Audience, InResponseTo and times.
The tests add their own assertions on the XML (SAML 2.0 core, bindings and
profiles) and verify signatures once more with xmlsec1 --verify.

The SP endpoints (https://<name>.sp.example.test/...) are never contacted;
SOAP single logout to an SP goes to the `recorder` (plain HTTP).
"""

from __future__ import annotations

import base64
import datetime
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlparse

import pytest
import requests
from lxml import etree

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP
from saml2.response import StatusNoPassive

from conftest import (
    APP,
    PASSWORD,
    WEIRD_VALUE,
    Castellan,
    free_port,
    parse_login_form,
    ticket_from,
    toml_table,
    unique_path,
)
from saml_sp import (
    ATTRNAME_BASIC,
    ATTRNAME_URI,
    BEARER,
    ENVELOPED,
    EXC_C14N,
    INVALID_NAMEID_POLICY,
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    NAMEID_UNSPECIFIED,
    NSMAP,
    OIDS,
    PASSWORD_PROTECTED_TRANSPORT,
    RSA_SHA256,
    SAML,
    SAMLP,
    SHA256,
    SOAPENV,
    STATUS_NO_PASSIVE,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
    STATUS_SUCCESS,
    TOP_LEVEL_STATUS,
    Flow,
    IdpMetadata,
    SamlBrowser,
    ServiceProvider,
    deflate_b64,
    inflate,
    make_keypair,
    parse_xml,
    redirect_query,
    saml_forms,
    signature_of,
    signature_summary,
    status_codes,
    utc,
    verify_redirect_signature,
    xmlsec_verify,
)

CLOCK_SKEW = datetime.timedelta(seconds=60)
ASSERTION_TTL = datetime.timedelta(minutes=5)
SAML_CONFIG = {"clock_skew": "60s", "request_max_age": "5m", "assertion_ttl": "5m"}
# a RelayState with characters that must survive URL and HTML encoding (<= 80 bytes, bindings §3.4.3)
ODD_RELAY_STATE = "rs/1?a=b&c=<d>\"e'f\"#g %h"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def iso(dt: datetime.datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------
# servers and service providers
# --------------------------------------------------------------------------


class SamlCastellan(Castellan):
    """A Castellan whose config also has a [saml] table."""

    def __init__(self, *args, saml: dict | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.saml_table = saml

    def config_text(self) -> str:
        text = super().config_text()
        if self.saml_table is not None and "\n[saml]\n" not in "\n" + text:
            text += toml_table("saml", self.saml_table)
        return text


class Sps:
    """The service providers of this module."""

    def __init__(self, workdir: Path, recorder) -> None:
        w = workdir
        self.soap_slo_path = unique_path("/saml-soap-slo")
        # persistent NameID, mail/cn/memberOf, assertion signed (default), SLO Redirect+POST
        self.main = ServiceProvider(w, "sp-main", name_id_format=NAMEID_PERSISTENT,
                                    service={"release": ["mail", "cn", "memberOf"]})
        # AuthnRequestsSigned="true" in its metadata; persistent; SLO only by HTTP-POST
        self.signed = ServiceProvider(w, "sp-signed", authn_requests_signed=True, name_id_format=NAMEID_PERSISTENT,
                                      slo=("post",), service={"release": ["mail"]})
        # metadata says nothing, Castellan's config requires signed requests
        self.strict = ServiceProvider(w, "sp-strict", service={"release": ["mail"], "require_signed_requests": True})
        # EncryptedAssertion for its encryption key; unspecified NameID (= username)
        self.enc = ServiceProvider(w, "sp-enc", encryption=True,
                                   service={"release": ["mail", "cn"], "encrypt_assertions": True})
        # emailAddress NameID; "weird" has no OID, so it goes out with NameFormat basic
        self.email = ServiceProvider(w, "sp-email", name_id_format=NAMEID_EMAIL,
                                     service={"release": ["mail", "weird"]})
        # transient NameID, basic attribute names
        self.transient = ServiceProvider(w, "sp-transient", name_id_format=NAMEID_TRANSIENT,
                                         service={"release": ["mail", "cn"], "attribute_name_format": "basic"})
        # sign = "response" / "both"
        self.resp = ServiceProvider(w, "sp-resp", want_assertions_signed=False, want_response_signed=True,
                                    service={"release": ["mail"], "sign": "response"})
        self.both = ServiceProvider(w, "sp-both", want_assertions_signed=True, want_response_signed=True,
                                    service={"release": ["mail"], "sign": "both"})
        # a SOAP SingleLogoutService on the recorder (back-channel SAML logout target)
        self.soap = ServiceProvider(w, "sp-soap", name_id_format=NAMEID_PERSISTENT, slo=(),
                                    soap_slo_url=recorder.url(self.soap_slo_path), service={"release": ["mail"]})
        # not registered in Castellan
        self.unknown = ServiceProvider(w, "sp-unknown", registered=False)
        # sp-signed's entityID and endpoints, another key
        self.impostor = ServiceProvider(w, "sp-impostor", authn_requests_signed=True).impersonate(self.signed)

    def all(self) -> list[ServiceProvider]:
        return [self.main, self.signed, self.strict, self.enc, self.email, self.transient, self.resp, self.both,
                self.soap, self.unknown, self.impostor]

    def registered(self) -> list[ServiceProvider]:
        return [sp for sp in self.all() if sp.registered]


@pytest.fixture(scope="module")
def sps(tmp_path_factory, recorder) -> Sps:
    s = Sps(tmp_path_factory.mktemp("saml-sps"), recorder)
    for sp in s.all():
        sp.write_metadata()
    return s


@pytest.fixture(scope="module")
def idp_keypair(tmp_path_factory) -> tuple[Path, Path]:
    return make_keypair(tmp_path_factory.mktemp("saml-idp-key"), "idp", "Castellan e2e SAML IdP")


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, services, sps, idp_keypair) -> SamlCastellan:
    key, cert = idp_keypair
    c = SamlCastellan(tmp_path_factory.mktemp("castellan-saml"), label="castellan-saml",
                      services=services + [sp.service() for sp in sps.registered()], ssl_cert_file=pki.ca_pem,
                      saml={**SAML_CONFIG, "signing_key": str(key), "signing_certificate": str(cert)})
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def idp(cas, sps, tmp_path_factory) -> IdpMetadata:
    d = tmp_path_factory.mktemp("saml-idp-md")
    md = IdpMetadata.fetch(cas.url("/idp/metadata"), d / "idp-metadata.xml")
    for sp in sps.all():
        sp.attach(md)
    return md


@pytest.fixture
def b(cas, idp) -> SamlBrowser:
    return SamlBrowser(cas)


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def saml_attributes(assertion) -> dict[str, dict]:
    out = {}
    for a in assertion.iterfind("saml:AttributeStatement/saml:Attribute", NSMAP):
        out[a.get("Name")] = {
            "format": a.get("NameFormat"),
            "friendly": a.get("FriendlyName"),
            "values": [v.text or "" for v in a.findall("saml:AttributeValue", NSMAP)],
        }
    return out


def check_signature_element(sig, signed_id: str, what: str) -> None:
    """The xmldsig profile of SAML core §5.4 plus the algorithms of the spec."""
    assert sig is not None, f"{what}: no ds:Signature"
    s = signature_summary(sig)
    assert s["refs"] == [f"#{signed_id}"], f"{what}: references {s['refs']}, expected ['#{signed_id}']"
    assert s["sig_alg"] == RSA_SHA256, f"{what}: SignatureMethod {s['sig_alg']}"
    assert s["c14n"] == EXC_C14N, f"{what}: CanonicalizationMethod {s['c14n']}"
    assert ENVELOPED in s["transforms"][0] and set(s["transforms"][0]) <= {ENVELOPED, EXC_C14N}, \
        f"{what}: transforms {s['transforms']}"
    assert s["digest"] == [SHA256], f"{what}: DigestMethod {s['digest']}"


def check_page(flow: Flow, sp: ServiceProvider, acs: str | None = None):
    """The auto-submit page: one form, method post, action = the ACS,
    hidden SAMLResponse, a visible submit button, JavaScript to submit it."""
    r = flow.final
    assert r.status_code == 200, f"expected the auto-submit page:\n{flow.trace()}"
    assert "text/html" in r.headers.get("Content-Type", ""), r.headers
    form = flow.form
    assert form.method == "post", f"form method {form.method!r}"
    assert form.action == (acs or sp.acs), f"form action {form.action!r}, expected {acs or sp.acs!r}"
    assert form.types.get("SAMLResponse") == "hidden", form.types
    assert form.has_submit, f"no visible Continue (submit) button in the form:\n{r.text[:1500]}"
    assert "<script" in r.text.lower(), "no script auto-submitting the form"
    return form


def check_success(flow: Flow, sp: ServiceProvider, idp: IdpMetadata, *, acs: str | None = None,
                  unsolicited: bool = False, encrypted: bool = False):
    """A successful SSO answer, checked by pysaml2 and by hand.
    Returns (pysaml2 AuthnResponse, Response element, Assertion element)."""
    acs = acs or sp.acs
    form = check_page(flow, sp, acs)
    if flow.relay_state is None:
        assert "RelayState" not in form.fields, \
            f"RelayState {form.relay_state!r} in the response though the request had none (bindings §3.4.3/§3.5.3)"
    else:
        assert form.relay_state == flow.relay_state, f"RelayState {form.relay_state!r} != sent {flow.relay_state!r}"
    root = form.tree()
    t0 = now()
    assert root.tag == f"{{{SAMLP}}}Response", root.tag
    assert root.get("Version") == "2.0" and root.get("ID"), etree.tostring(root)[:400]
    assert root.get("Destination") == acs, f"Destination {root.get('Destination')!r} != {acs!r}"
    if unsolicited:
        assert root.get("InResponseTo") is None, f"InResponseTo {root.get('InResponseTo')!r} on an unsolicited response"
    else:
        assert root.get("InResponseTo") == flow.request_id, (root.get("InResponseTo"), flow.request_id)
    assert root.findtext("saml:Issuer", namespaces=NSMAP) == idp.entity_id
    assert abs(utc(root.get("IssueInstant")) - t0) < CLOCK_SKEW, root.get("IssueInstant")
    assert status_codes(root) == [STATUS_SUCCESS], status_codes(root)

    # pysaml2's verdict (raises on a bad signature, audience, destination, time, InResponseTo)
    resp = sp.accept(form.saml_response, None if unsolicited else flow.request_id, unsolicited=unsolicited)
    assert resp is not None, "pysaml2 returned no response"
    assert resp.status_ok()
    assert resp.assertion is not None, "pysaml2 found no assertion"
    if sp.want_assertions_signed:
        assert resp.assertion.signature is not None, "pysaml2's assertion carries no signature"

    if encrypted:
        assert root.find("saml:Assertion", NSMAP) is None, "a plaintext Assertion next to the encrypted one"
        encs = root.findall("saml:EncryptedAssertion", NSMAP)
        assert len(encs) == 1 and encs[0].find("xenc:EncryptedData", NSMAP) is not None, etree.tostring(root)[:800]
        assertion = parse_xml(str(resp.assertion))
    else:
        assert root.find("saml:EncryptedAssertion", NSMAP) is None
        found = root.findall("saml:Assertion", NSMAP)
        assert len(found) == 1, f"{len(found)} assertions"
        assertion = found[0]
        xml = form.xml()
        if sp.want_assertions_signed:
            check_signature_element(signature_of(assertion), assertion.get("ID"), "assertion")
            ok, out = xmlsec_verify(xml, idp.cert_pem,
                                    "/*[local-name()='Response']/*[local-name()='Assertion']/*[local-name()='Signature']")
            assert ok, f"xmlsec1 does not verify the assertion signature:\n{out}"

    check_assertion(assertion, sp, idp, acs, None if unsolicited else flow.request_id)
    return resp, root, assertion


def check_assertion(a, sp: ServiceProvider, idp: IdpMetadata, acs: str, request_id: str | None) -> None:
    t0 = now()
    assert a.tag == f"{{{SAML}}}Assertion" and a.get("Version") == "2.0" and a.get("ID"), a.tag
    assert a.findtext("saml:Issuer", namespaces=NSMAP) == idp.entity_id
    issued = utc(a.get("IssueInstant"))
    assert abs(issued - t0) < CLOCK_SKEW, a.get("IssueInstant")
    # Subject: NameID and a bearer SubjectConfirmation (profiles §4.1.4.2)
    assert a.find("saml:Subject/saml:NameID", NSMAP) is not None, "no NameID"
    scs = [sc for sc in a.findall("saml:Subject/saml:SubjectConfirmation", NSMAP) if sc.get("Method") == BEARER]
    assert scs, "no bearer SubjectConfirmation"
    scd = scs[0].find("saml:SubjectConfirmationData", NSMAP)
    assert scd is not None, "no SubjectConfirmationData"
    assert scd.get("Recipient") == acs, f"Recipient {scd.get('Recipient')!r} != {acs!r}"
    assert scd.get("InResponseTo") == request_id, (scd.get("InResponseTo"), request_id)
    assert scd.get("NotBefore") is None, "a bearer SubjectConfirmationData MUST NOT have NotBefore (profiles §4.1.4.2)"
    assert t0 < utc(scd.get("NotOnOrAfter")) <= t0 + ASSERTION_TTL + CLOCK_SKEW, scd.get("NotOnOrAfter")
    # Conditions
    cond = a.find("saml:Conditions", NSMAP)
    assert cond is not None, "no Conditions"
    assert utc(cond.get("NotBefore")) <= t0 + datetime.timedelta(seconds=2), cond.get("NotBefore")
    assert t0 < utc(cond.get("NotOnOrAfter")) <= issued + ASSERTION_TTL + CLOCK_SKEW, cond.get("NotOnOrAfter")
    audiences = [x.text for x in cond.findall("saml:AudienceRestriction/saml:Audience", NSMAP)]
    assert audiences == [sp.entity_id], f"audiences {audiences}"
    # AuthnStatement
    st = a.findall("saml:AuthnStatement", NSMAP)
    assert len(st) == 1, f"{len(st)} AuthnStatements"
    assert st[0].get("SessionIndex"), "no SessionIndex"
    assert st[0].get("AuthnInstant"), "no AuthnInstant"
    assert st[0].findtext("saml:AuthnContext/saml:AuthnContextClassRef", namespaces=NSMAP) == \
        PASSWORD_PROTECTED_TRANSPORT


def name_id(assertion) -> tuple[str, str | None]:
    n = assertion.find("saml:Subject/saml:NameID", NSMAP)
    return (n.text or "").strip(), n.get("Format")


def check_refused(flow: Flow, sp: ServiceProvider, *, http: tuple[int, ...] = (400,),
                  top: tuple[str, ...] = (STATUS_REQUESTER,)) -> list[str] | None:
    """Never a Success: either an error page (status in `http`, nothing to
    post) or a Response with a non-success top-level status in `top`, without
    any assertion, posted to one of the SP's ACS URLs (and refused by pysaml2)."""
    r = flow.final
    assert r.status_code < 500, f"server error:\n{flow.trace()}"
    forms = flow.post_forms
    if r.status_code in http:
        assert not forms and "SAMLResponse" not in r.text, f"an error page with a SAML form:\n{r.text[:1500]}"
        print(f"refused: HTTP {r.status_code} after {len(flow.hops)} hop(s), {flow.forms_seen} login form(s)")
        return None
    assert r.status_code == 200 and len(forms) == 1, \
        f"expected HTTP {http} or a non-success Response posted to the ACS, got:\n{flow.trace()}"
    form = forms[0]
    assert form.action in (sp.acs, sp.acs2), f"error Response posted to {form.action!r}"
    root = form.tree()
    codes = status_codes(root)
    assert codes and codes[0] != STATUS_SUCCESS, f"Success for a request that must be refused: {codes}"
    assert codes[0] in top, f"top-level status {codes}, expected one of {top}"
    assert root.find("saml:Assertion", NSMAP) is None and root.find("saml:EncryptedAssertion", NSMAP) is None, \
        "an assertion in an error Response"
    with pytest.raises(Exception):  # pysaml2 does not take it either (StatusError, or unsolicited without InResponseTo)
        sp.accept(form.saml_response, flow.request_id)
    print(f"refused: {codes} {root.findtext('samlp:Status/samlp:StatusMessage', namespaces=NSMAP)!r} "
          f"InResponseTo={root.get('InResponseTo')!r} after {flow.forms_seen} login form(s)")
    return codes


def login_redirect(flow: Flow, cas: Castellan) -> dict:
    """The query of the IdP's redirect to /cas/login (the first hop going there)."""
    for r in flow.hops:
        loc = r.headers.get("Location", "")
        if urlparse(loc).path.endswith("/cas/login"):
            return {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}
    raise AssertionError(f"no redirect to /cas/login:\n{flow.trace()}")


# --------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------


def test_idp_metadata(cas, idp, idp_keypair):
    from saml_sp import cert_der_b64

    assert idp.entity_id == cas.public_url + "/idp"
    root = parse_xml(idp.xml)
    d = root.find("md:IDPSSODescriptor", NSMAP)
    assert SAMLP in d.get("protocolSupportEnumeration", "").split()
    assert idp.signing_certs == [cert_der_b64(idp_keypair[1])], "the metadata does not carry the configured certificate"
    base = cas.public_url + "/idp/profile/SAML2"
    assert idp.sso == {BINDING_HTTP_REDIRECT: base + "/Redirect/SSO", BINDING_HTTP_POST: base + "/POST/SSO"}, idp.sso
    assert idp.slo == {BINDING_HTTP_REDIRECT: base + "/Redirect/SLO", BINDING_HTTP_POST: base + "/POST/SLO"}, idp.slo
    assert set(idp.name_id_formats) >= {NAMEID_UNSPECIFIED, NAMEID_EMAIL, NAMEID_PERSISTENT, NAMEID_TRANSIENT}, \
        idp.name_id_formats
    # pysaml2 found the IdP in it
    assert idp.entity_id in idp_clients_know(cas)


def idp_clients_know(cas) -> set:
    # a fresh pysaml2 metadata store loading the served document
    from saml2.config import SPConfig
    from saml2.mdstore import MetadataStore

    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".xml", delete=False) as f:
        f.write(requests.get(cas.url("/idp/metadata"), timeout=15).content)
    conf = SPConfig().load({"entityid": "urn:x", "xmlsec_binary": "/usr/bin/xmlsec1", "service": {"sp": {}}})
    store = MetadataStore(conf.attribute_converters, conf)
    store.load("local", f.name)
    Path(f.name).unlink()
    return set(store.with_descriptor("idpsso"))


# --------------------------------------------------------------------------
# SP-initiated SSO
# --------------------------------------------------------------------------


def test_sso_redirect_binding(cas, idp, sps, b):
    sp = sps.main
    flow = b.sso(sp, binding=BINDING_HTTP_REDIRECT, relay_state=ODD_RELAY_STATE)
    assert flow.forms_seen == 1, f"expected the CAS login form once:\n{flow.trace()}"
    q = login_redirect(flow, cas)
    assert q.get("service", "").startswith(cas.public_url + "/idp/callback"), q
    assert "renew" not in q and "gateway" not in q, q
    resp, root, a = check_success(flow, sp, idp)
    assert b.tgc, "no CASTGC after the login"

    # NameID: persistent, opaque
    value, fmt = name_id(a)
    assert fmt == NAMEID_PERSISTENT, fmt
    assert value and "casuser" not in value.lower(), value
    assert resp.name_id.text == value and resp.name_id.format == NAMEID_PERSISTENT

    # attributes as released, with OIDs as names (attribute_name_format "uri")
    attrs = saml_attributes(a)
    assert set(attrs) == {OIDS["mail"], OIDS["cn"], OIDS["memberOf"]}, attrs
    for friendly in ("mail", "cn", "memberOf"):
        at = attrs[OIDS[friendly]]
        assert at["format"] == ATTRNAME_URI and at["friendly"] == friendly, at
    assert attrs[OIDS["mail"]]["values"] == ["casuser@example.org"]
    assert attrs[OIDS["cn"]]["values"] == ["CAS User"]
    assert sorted(attrs[OIDS["memberOf"]]["values"]) == ["faculty", "staff"]
    # and as pysaml2 maps them (memberOf's OID is pysaml2's isMemberOf)
    assert resp.ava["mail"] == ["casuser@example.org"] and resp.ava["cn"] == ["CAS User"], resp.ava
    assert sorted(resp.ava["isMemberOf"]) == ["faculty", "staff"], resp.ava
    assert set(resp.ava) == {"mail", "cn", "isMemberOf"}, resp.ava
    # unreleased attributes are nowhere
    xml = flow.form.xml().decode("utf-8")
    assert "do-not-release" not in xml and "secret" not in xml and "weird" not in xml


def test_sso_post_binding(cas, idp, sps, b):
    sp = sps.main
    flow = b.sso(sp, binding=BINDING_HTTP_POST, relay_state="post-rs-1")
    assert flow.hops[0].request.method == "POST" and flow.hops[0].url == idp.sso[BINDING_HTTP_POST]
    assert flow.forms_seen == 1, flow.trace()
    resp, root, a = check_success(flow, sp, idp)
    assert resp.ava["mail"] == ["casuser@example.org"]


def test_sso_without_relay_state(idp, sps, b):
    flow = b.sso(sps.main, relay_state=None)
    check_success(flow, sps.main, idp)  # asserts no RelayState in the answer


def test_sso_second_registered_acs_by_url_and_index(idp, sps, b):
    sp = sps.main
    flow = b.sso(sp, assertion_consumer_service_url=sp.acs2)
    check_success(flow, sp, idp, acs=sp.acs2)
    flow = b.sso(sp, assertion_consumer_service_index="1")
    check_success(flow, sp, idp, acs=sp.acs2)


def test_signed_authn_request_redirect(idp, sps, b):
    sp = sps.signed
    flow = b.sso(sp, binding=BINDING_HTTP_REDIRECT, relay_state="signed-redirect")
    q = parse_qs(urlparse(flow.hops[0].url).query)
    assert "Signature" in q and q["SigAlg"] == [RSA_SHA256], "pysaml2 did not sign the query"
    check_success(flow, sp, idp)


def test_signed_authn_request_post(idp, sps, b):
    sp = sps.signed
    reqid, xml = sp.authn_request(binding=BINDING_HTTP_POST)
    assert parse_xml(xml).find("ds:Signature", NSMAP) is not None, "pysaml2 did not sign the request"
    flow = b.send_authn(sp, xml, binding=BINDING_HTTP_POST, relay_state="signed-post")
    flow.request_id = reqid
    check_success(flow, sp, idp)


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_unsigned_request_refused_when_signing_required(idp, sps, b, binding):
    # sp-signed: AuthnRequestsSigned="true" in its metadata; sp-strict: require_signed_requests = true
    for sp in (sps.signed, sps.strict):
        flow = b.sso(sp, binding=binding, sign=False)
        check_refused(flow, sp)
    # sp-strict with a signature is fine
    flow = b.sso(sps.strict, binding=binding, sign=True)
    check_success(flow, sps.strict, idp)


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_request_signed_with_another_key_refused(idp, sps, b, binding):
    # Issuer and endpoints of sp-signed, signed with a key not in its metadata
    flow = b.sso(sps.impostor, binding=binding, relay_state="impostor")
    check_refused(flow, sps.signed)


def test_encrypted_assertion(idp, sps, b):
    sp = sps.enc
    flow = b.sso(sp, relay_state="enc")
    resp, root, a = check_success(flow, sp, idp, encrypted=True)
    xml = flow.form.xml().decode("utf-8")
    assert "casuser@example.org" not in xml and "CAS User" not in xml, "attribute values in clear text"
    enc = root.find("saml:EncryptedAssertion/xenc:EncryptedData", NSMAP)
    assert enc.get("Type") in (None, "http://www.w3.org/2001/04/xmlenc#Element"), enc.get("Type")
    # decrypted by pysaml2 with the SP's encryption key; the assertion inside is signed
    assert resp.ava == {"mail": ["casuser@example.org"], "cn": ["CAS User"]}, resp.ava
    check_signature_element(signature_of(a), a.get("ID"), "decrypted assertion")
    value, fmt = name_id(a)
    assert value == "casuser", f"unspecified NameID {value!r} is not the username"
    assert fmt in (None, NAMEID_UNSPECIFIED), fmt


def test_persistent_nameid_stable_per_sp(cas, idp, sps):
    ids = []
    for _ in range(2):
        fresh = SamlBrowser(cas)  # a new session each time
        _, _, a = check_success(fresh.sso(sps.main), sps.main, idp)
        ids.append(name_id(a))
    assert ids[0] == ids[1], f"persistent NameID changed between two logins: {ids}"
    assert ids[0][1] == NAMEID_PERSISTENT
    _, _, a = check_success(fresh.sso(sps.signed), sps.signed, idp)
    other = name_id(a)
    assert other[1] == NAMEID_PERSISTENT
    assert other[0] != ids[0][0], "the same persistent NameID for two SPs"
    for value, _ in (ids[0], other):
        assert "casuser" not in value.lower() and "example.org" not in value, value
    # qualifiers, when given, name the IdP and the SP (core §8.3.7)
    n = a.find("saml:Subject/saml:NameID", NSMAP)
    assert n.get("NameQualifier") in (None, idp.entity_id), n.get("NameQualifier")
    assert n.get("SPNameQualifier") in (None, sps.signed.entity_id), n.get("SPNameQualifier")


def test_email_nameid_and_basic_name_for_unknown_attribute(idp, sps, b):
    sp = sps.email
    resp, _, a = check_success(b.sso(sp), sp, idp)
    assert name_id(a) == ("casuser@example.org", NAMEID_EMAIL), name_id(a)
    attrs = saml_attributes(a)
    assert attrs[OIDS["mail"]]["format"] == ATTRNAME_URI
    assert attrs["weird"]["format"] == ATTRNAME_BASIC, attrs["weird"]
    assert attrs["weird"]["values"] == [WEIRD_VALUE], attrs["weird"]
    assert resp.ava["weird"] == [WEIRD_VALUE] and resp.ava["mail"] == ["casuser@example.org"], resp.ava


def test_transient_nameid_differs_each_time(idp, sps, b):
    sp = sps.transient
    seen = []
    for i in range(2):
        resp, _, a = check_success(b.sso(sp, relay_state=f"t{i}"), sp, idp)
        seen.append(name_id(a))
        # attribute_name_format = "basic"
        attrs = saml_attributes(a)
        assert set(attrs) == {"mail", "cn"}, attrs
        assert all(v["format"] == ATTRNAME_BASIC for v in attrs.values()), attrs
        assert resp.ava["mail"] == ["casuser@example.org"], resp.ava
    assert seen[0][1] == seen[1][1] == NAMEID_TRANSIENT, seen
    assert seen[0][0] != seen[1][0], f"the same transient NameID twice: {seen}"
    assert all(v and "casuser" not in v.lower() for v, _ in seen), seen


def test_unspecified_nameid_over_post(idp, sps, b):
    # sp-enc has no name_id_format: unspecified = the username (checked after decryption)
    _, _, a = check_success(b.sso(sps.enc, binding=BINDING_HTTP_POST), sps.enc, idp, encrypted=True)
    assert name_id(a)[0] == "casuser"


@pytest.mark.parametrize("fmt", [NAMEID_TRANSIENT, NAMEID_EMAIL,
                                 "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"],
                         ids=["transient", "emailAddress", "X509SubjectName"])
def test_name_id_policy_format_honoured_or_refused(idp, sps, b, fmt):
    """core §3.4.1.1: with a NameIDPolicy Format (other than unspecified/encrypted)
    the NameID of any assertion returned MUST have exactly that Format; an IdP
    that cannot or will not comply answers InvalidNameIDPolicy (§3.2.2.2)."""
    sp = sps.main  # configured for persistent NameIDs
    flow = b.sso(sp, nameid_format=fmt, relay_state="nameid-policy")
    form = check_page(flow, sp)
    root = form.tree()
    codes = status_codes(root)
    if codes == [STATUS_SUCCESS]:
        got = name_id(root.find("saml:Assertion", NSMAP))
        assert got[1] == fmt, f"NameIDPolicy Format {fmt} asked, NameID {got} returned (core §3.4.1.1)"
    else:
        assert codes[0] in (STATUS_REQUESTER, STATUS_RESPONDER) and INVALID_NAMEID_POLICY in codes[1:], codes


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_signed_request_for_another_destination_refused(idp, sps, b, binding):
    """bindings §3.4.5.2/§3.5.5.2: the Destination of a signed message MUST be
    checked against the endpoint it arrived at."""
    flow = b.sso(sps.signed, binding=binding, destination="https://other-idp.example.test/idp/SSO")
    check_refused(flow, sps.signed)


def test_redirect_signature_checked_over_raw_query(idp, sps, b):
    """bindings §3.4.4.1: URL-encoding is not canonical; the IdP verifies over
    the query string as received ('/' left unencoded, %20 for a space here -
    what pysaml2 itself would encode as %2F and +)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    sp = sps.signed
    reqid, xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
    enc = quote(deflate_b64(xml.encode("utf-8")), safe="/")
    signed = f"SAMLRequest={enc}&RelayState={quote('raw query rs')}&SigAlg={quote(RSA_SHA256, safe='')}"
    key = serialization.load_pem_private_key(sp.key_file.read_bytes(), None)
    sig = base64.b64encode(key.sign(signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())).decode()
    url = idp.sso[BINDING_HTTP_REDIRECT] + "?" + signed + "&Signature=" + quote(sig, safe="")
    flow = b.send_redirect(url)
    assert flow.hops[0].request.url == url, "the client changed the query string"
    flow.request_id, flow.relay_state = reqid, "raw query rs"
    check_success(flow, sp, idp)
    # and a changed byte in the signed string is refused
    flow = b.send_redirect(url.replace("RelayState=raw", "RelayState=rew"))
    flow.request_id = reqid
    check_refused(flow, sp)


# --------------------------------------------------------------------------
# IdP-initiated SSO
# --------------------------------------------------------------------------


def test_idp_initiated_sso(cas, idp, sps, b):
    sp = sps.main
    r = b.s.get(cas.url("/idp/profile/SAML2/Unsolicited/SSO"),
                params={"providerId": sp.entity_id, "target": "idp-init-target"}, allow_redirects=False, timeout=15)
    flow = b.walk(r)
    flow.relay_state = "idp-init-target"
    assert flow.forms_seen == 1, flow.trace()
    resp, root, a = check_success(flow, sp, idp, unsolicited=True)
    assert resp.ava["mail"] == ["casuser@example.org"]
    # the strict client (no unsolicited responses) says no: InResponseTo really is checked by pysaml2
    with pytest.raises(Exception):
        sp.accept(flow.form.saml_response, "id-never-sent")


def test_idp_initiated_unknown_provider(cas, sps, b):
    r = b.s.get(cas.url("/idp/profile/SAML2/Unsolicited/SSO"),
                params={"providerId": sps.unknown.entity_id}, allow_redirects=False, timeout=15)
    flow = b.walk(r)
    check_refused(flow, sps.unknown, http=(400,), top=())


# --------------------------------------------------------------------------
# one SSO session across protocols
# --------------------------------------------------------------------------


def test_cas_session_gives_saml_response_without_form(cas, idp, sps, b):
    r = b.login()  # a plain CAS login, no service
    assert r.status_code in (200, 302, 303) and b.tgc, r.status_code
    flow = b.sso(sps.main, relay_state="sso-after-cas")
    assert flow.forms_seen == 0, f"login form shown despite the CAS session:\n{flow.trace()}"
    check_success(flow, sps.main, idp)


def test_saml_session_gives_cas_ticket_without_form(cas, idp, sps, b):
    check_success(b.sso(sps.main), sps.main, idp)
    r = b.get_login(APP)
    assert r.status_code in (302, 303) and ticket_from(r), f"no ticket after the SAML login: {r.status_code}"
    assert cas.validate("/p3/serviceValidate", APP, ticket_from(r)).user == "casuser"


def test_force_authn_shows_login_form(cas, idp, sps, b):
    check_success(b.sso(sps.main), sps.main, idp)
    time.sleep(2.5)  # the first login is now > 2 s old
    before = now().replace(microsecond=0)
    flow = b.sso(sps.main, force_authn="true", relay_state="forced")
    assert flow.forms_seen == 1, f"ForceAuthn did not show the login form:\n{flow.trace()}"
    assert login_redirect(flow, cas).get("renew") == "true", login_redirect(flow, cas)
    _, _, a = check_success(flow, sps.main, idp)
    instant = utc(a.find("saml:AuthnStatement", NSMAP).get("AuthnInstant"))
    assert instant >= before, f"AuthnInstant {instant} is older than the forced login at {before}"


def test_is_passive_without_session_gives_no_passive(cas, idp, sps, b):
    sp = sps.main
    flow = b.sso(sp, is_passive="true", login=False, relay_state="passive")
    assert flow.forms_seen == 0, f"IsPassive showed the login form:\n{flow.trace()}"
    assert login_redirect(flow, cas).get("gateway") == "true", login_redirect(flow, cas)
    form = check_page(flow, sp)
    assert form.relay_state == "passive"
    root = form.tree()
    codes = status_codes(root)
    assert codes[0] in TOP_LEVEL_STATUS and codes[0] != STATUS_SUCCESS, \
        f"top-level StatusCode {codes[0]} (core §3.2.2.2 allows only {TOP_LEVEL_STATUS})"
    # core §3.2.2.2: NoPassive is a second-level code (under Responder, or Requester)
    assert codes[0] in (STATUS_RESPONDER, STATUS_REQUESTER) and STATUS_NO_PASSIVE in codes[1:], codes
    assert root.get("InResponseTo") == flow.request_id and root.get("Destination") == sp.acs
    assert root.find("saml:Assertion", NSMAP) is None
    with pytest.raises(StatusNoPassive):
        sp.accept(form.saml_response, flow.request_id)
    assert not b.tgc


def test_is_passive_with_session(cas, idp, sps, b):
    b.login()
    flow = b.sso(sps.main, is_passive="true", login=False)
    assert flow.forms_seen == 0
    check_success(flow, sps.main, idp)


# --------------------------------------------------------------------------
# single logout
# --------------------------------------------------------------------------


def cas_slo_service(recorder, b, cas) -> str:
    """Log the browser in to the CAS service with back-channel logout."""
    svc = recorder.url(unique_path("/slo"))
    st = b.ticket_for(svc)
    assert cas.validate("/p3/serviceValidate", svc, st).success
    return svc


def check_session_over(cas, b: SamlBrowser, old_tgc: str) -> None:
    assert not b.tgc, "CASTGC still in the browser after the logout"
    r = b.get_login(APP)
    assert r.status_code == 200 and ticket_from(r) is None and parse_login_form(r) is not None, \
        f"CAS /login did not show the form after the logout: {r.status_code} {r.headers.get('Location')}"
    r = requests.get(cas.url("/login"), params={"service": APP}, cookies={"CASTGC": old_tgc},
                     allow_redirects=False, timeout=15)
    assert ticket_from(r) is None and parse_login_form(r) is not None, "the old TGC still works"


def check_cas_back_channel(recorder, svc: str) -> None:
    got = recorder.wait_for(urlparse(svc).path, count=1, timeout=10)
    assert len(got) == 1, f"expected one CAS back-channel logout request at {svc}, got {got}"
    form = got[0].form()
    assert got[0].method == "POST" and "logoutRequest" in form, got[0]
    root = xml_of(form["logoutRequest"][0])
    assert root.tag == f"{{{SAMLP}}}LogoutRequest" and root.findtext(f"{{{SAML}}}NameID") == "casuser"


def xml_of(s: str):
    return parse_xml(s.encode("utf-8"))


def test_slo_redirect_binding(cas, idp, sps, b, recorder):
    sp = sps.main
    svc = cas_slo_service(recorder, b, cas)
    resp, _, a = check_success(b.sso(sp), sp, idp)
    old_tgc = b.tgc
    nid = resp.name_id
    session_index = a.find("saml:AuthnStatement", NSMAP).get("SessionIndex")

    reqid, url, rs = sp.logout_request(nid, BINDING_HTTP_REDIRECT)
    sent = parse_xml(inflate(parse_qs(urlparse(url).query)["SAMLRequest"][0]))
    assert sent.findtext("samlp:SessionIndex", namespaces=NSMAP) == session_index
    flow = b.send_redirect(url)
    # the LogoutResponse goes back by HTTP-Redirect (the SP has a Redirect SLO endpoint)
    assert flow.location and flow.location.startswith(sp.slo_redirect + "?"), \
        f"expected a redirect to {sp.slo_redirect}:\n{flow.trace()}"
    ok, params = verify_redirect_signature(flow.location, idp.public_key())
    assert "SAMLResponse" in params, params
    assert params.get("RelayState", "") == rs, (params.get("RelayState"), rs)
    assert ok, f"the LogoutResponse's query signature does not verify with the IdP certificate: {params}"
    assert params["SigAlg"] in (RSA_SHA256, "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"), params["SigAlg"]
    root = parse_xml(inflate(params["SAMLResponse"]))
    assert root.tag == f"{{{SAMLP}}}LogoutResponse"
    assert root.get("InResponseTo") == reqid and root.get("Destination") == sp.slo_redirect
    assert root.findtext("saml:Issuer", namespaces=NSMAP) == idp.entity_id
    assert status_codes(root) == [STATUS_SUCCESS], status_codes(root)
    lr = sp.client.parse_logout_request_response(params["SAMLResponse"], BINDING_HTTP_REDIRECT)
    assert lr is not None and lr.status_ok() and lr.in_response_to == reqid

    check_session_over(cas, b, old_tgc)
    check_cas_back_channel(recorder, svc)


def test_slo_post_binding(cas, idp, sps, b, recorder):
    sp = sps.signed  # SLO endpoint: HTTP-POST only
    svc = cas_slo_service(recorder, b, cas)
    resp, _, _ = check_success(b.sso(sp), sp, idp)
    old_tgc = b.tgc
    reqid, xml, rs = sp.logout_request(resp.name_id, BINDING_HTTP_POST)
    assert parse_xml(xml).find("ds:Signature", NSMAP) is not None, "pysaml2 did not sign the LogoutRequest"
    fields = {"SAMLRequest": base64.b64encode(xml.encode("utf-8")).decode("ascii"), "RelayState": rs}
    flow = b.send_post(idp.slo[BINDING_HTTP_POST], fields)
    assert flow.final.status_code == 200, flow.trace()
    forms = saml_forms(flow.final)
    assert len(forms) == 1, f"expected a form posting the LogoutResponse:\n{flow.trace()}"
    form = forms[0]
    assert form.action == sp.slo_post and form.method == "post", (form.action, form.method)
    assert form.relay_state == rs
    root = form.tree()
    assert root.tag == f"{{{SAMLP}}}LogoutResponse"
    assert root.get("InResponseTo") == reqid and root.get("Destination") == sp.slo_post
    assert status_codes(root) == [STATUS_SUCCESS], status_codes(root)
    check_signature_element(signature_of(root), root.get("ID"), "LogoutResponse")
    ok, out = xmlsec_verify(form.xml(), idp.cert_pem)
    assert ok, f"xmlsec1 does not verify the LogoutResponse:\n{out}"
    lr = sp.client.parse_logout_request_response(form.saml_response, BINDING_HTTP_POST)
    assert lr is not None and lr.status_ok() and lr.in_response_to == reqid
    assert lr.response.signature is not None

    check_session_over(cas, b, old_tgc)
    check_cas_back_channel(recorder, svc)


def test_slo_soap_back_channel_to_other_sp(cas, idp, sps, b, recorder):
    resp_soap, _, a_soap = check_success(b.sso(sps.soap), sps.soap, idp)
    resp_main, _, _ = check_success(b.sso(sps.main), sps.main, idp)
    soap_nid = name_id(a_soap)
    soap_idx = a_soap.find("saml:AuthnStatement", NSMAP).get("SessionIndex")
    reqid, url, _ = sps.main.logout_request(resp_main.name_id, BINDING_HTTP_REDIRECT)
    flow = b.send_redirect(url)
    assert flow.location and flow.location.startswith(sps.main.slo_redirect), flow.trace()

    got = recorder.wait_for(sps.soap_slo_path, count=1, timeout=10)
    assert len(got) == 1, f"expected one SOAP LogoutRequest at {sps.soap_slo_path}, got {got}"
    req = got[0]
    assert req.method == "POST" and "xml" in req.headers.get("content-type", ""), req.headers
    env = parse_xml(req.body)
    assert env.tag == f"{{{SOAPENV}}}Envelope", env.tag
    lreq = env.find("soap:Body/samlp:LogoutRequest", NSMAP)
    assert lreq is not None, req.body[:800]
    assert lreq.findtext("saml:Issuer", namespaces=NSMAP) == idp.entity_id
    n = lreq.find("saml:NameID", NSMAP)
    assert n is not None and ((n.text or "").strip(), n.get("Format")) == soap_nid, (etree.tostring(n), soap_nid)
    assert lreq.findtext("samlp:SessionIndex", namespaces=NSMAP) == soap_idx
    assert lreq.get("Destination") in (None, sps.soap.soap_slo_url)
    # profiles §4.4.4.1: the requester MUST authenticate itself - over plain HTTP only a signature does that
    check_signature_element(signature_of(lreq), lreq.get("ID"), "SOAP LogoutRequest")
    ok, out = xmlsec_verify(req.body, idp.cert_pem,
                            "//*[local-name()='LogoutRequest']/*[local-name()='Signature']")
    assert ok, f"xmlsec1 does not verify the SOAP LogoutRequest's signature:\n{out}"
    # pysaml2 checks it too - handed the LogoutRequest as sent: its own SOAP unwrapping
    # re-serializes the element with new namespace prefixes, which exclusive c14n does
    # not forgive, so it could verify no correctly signed SOAP message at all
    standalone = etree.tostring(lreq).decode("utf-8")
    parsed = sps.soap.client.parse_logout_request(standalone, None)
    assert parsed is not None and parsed.message.id == lreq.get("ID")
    assert parsed.message.signature is not None
    with pytest.raises(Exception):  # and it does check: a changed SessionIndex breaks the signature
        sps.soap.client.parse_logout_request(standalone.replace(soap_idx, soap_idx + "x"), None)
    # and the initiating SP got no SOAP call of its own, nothing else came
    time.sleep(0.5)
    assert len(recorder.matching(sps.soap_slo_path)) == 1


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_slo_with_bad_signature_ends_nothing(cas, idp, sps, b, binding):
    """A LogoutRequest whose signature does not verify is refused (profiles
    §4.4.4.1: the requester MUST authenticate itself): the session survives."""
    sp = sps.main if binding == BINDING_HTTP_REDIRECT else sps.signed
    resp, _, a = check_success(b.sso(sp), sp, idp)
    tgc = b.tgc
    reqid, msg, rs = sp.logout_request(resp.name_id, binding)
    if binding == BINDING_HTTP_REDIRECT:
        tampered = msg.replace("RelayState=", "RelayState=x", 1)
        assert tampered != msg
        flow = b.send_redirect(tampered)
    else:
        sidx = a.find("saml:AuthnStatement", NSMAP).get("SessionIndex")
        tampered = msg.replace(sidx, sidx + "x")
        assert tampered != msg
        flow = b.send_post(idp.slo[BINDING_HTTP_POST],
                           {"SAMLRequest": base64.b64encode(tampered.encode()).decode(), "RelayState": rs})
    assert flow.final.status_code < 500, flow.trace()
    if flow.location:  # a LogoutResponse by Redirect: it must not say Success
        ok, params = verify_redirect_signature(flow.location, idp.public_key())
        assert status_codes(parse_xml(inflate(params["SAMLResponse"])))[0] != STATUS_SUCCESS
    for form in flow.post_forms:
        assert status_codes(form.tree())[0] != STATUS_SUCCESS
    assert b.tgc == tgc, "the CASTGC cookie was changed by a forged LogoutRequest"
    r = b.get_login(APP)
    assert r.status_code in (302, 303) and ticket_from(r), "the SSO session ended on a LogoutRequest with a bad signature"


# --------------------------------------------------------------------------
# refused requests
# --------------------------------------------------------------------------


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_unknown_sp_gets_400(idp, sps, b, binding):
    flow = b.sso(sps.unknown, binding=binding)
    assert flow.forms_seen == 0, f"login form for an unknown SP:\n{flow.trace()}"
    check_refused(flow, sps.unknown, http=(400,), top=())
    assert flow.final.status_code == 400


@pytest.mark.parametrize("how", ["url", "index"])
def test_acs_not_in_metadata_gets_400(idp, sps, b, how):
    sp = sps.main
    b.login()  # even with a session nothing may be posted anywhere
    if how == "url":
        flow = b.sso(sp, assertion_consumer_service_url="https://evil.example.test/acs")
    else:
        flow = b.sso(sp, assertion_consumer_service_index="7")
    assert flow.final.status_code == 400, f"expected 400:\n{flow.trace()}"
    assert not flow.post_forms and "SAMLResponse" not in flow.final.text
    assert "evil.example.test" not in flow.final.headers.get("Location", "")


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_tampered_signed_request(idp, sps, b, binding):
    sp = sps.signed
    reqid, xml = sp.authn_request(binding=binding)
    assert f'AssertionConsumerServiceURL="{sp.acs}"' in xml
    if binding == BINDING_HTTP_REDIRECT:
        url = sp.redirect_url(xml, "tamper", sign=True)
        tampered_xml = xml.replace(f'AssertionConsumerServiceURL="{sp.acs}"', f'AssertionConsumerServiceURL="{sp.acs2}"')
        q = parse_qs(urlparse(url).query)
        q["SAMLRequest"] = [deflate_b64(tampered_xml.encode("utf-8"))]
        tampered = url.split("?", 1)[0] + "?" + urlencode({k: v[0] for k, v in q.items()})
        flow = b.send_redirect(tampered)
    else:
        tampered_xml = xml.replace(f'AssertionConsumerServiceURL="{sp.acs}"', f'AssertionConsumerServiceURL="{sp.acs2}"')
        assert tampered_xml != xml
        flow = b.send_authn(sp, tampered_xml, binding=BINDING_HTTP_POST, relay_state="tamper")
    flow.request_id = reqid
    check_refused(flow, sp)


@pytest.mark.parametrize("shift", [-3600, 3600], ids=["past", "future"])
def test_issue_instant_out_of_range(idp, sps, b, shift):
    sp = sps.main
    stamp = iso(now() + datetime.timedelta(seconds=shift))
    flow = b.sso(sp, issue_instant=stamp, relay_state="old")
    assert f'IssueInstant="{stamp}"' in flow.sent_xml
    codes = check_refused(flow, sp, http=())
    assert codes[0] == STATUS_REQUESTER


def test_request_older_than_max_age_but_within_day(idp, sps, b):
    # request_max_age = 5m: 6 minutes is too old, 1 minute is fine
    sp = sps.main
    check_refused(b.sso(sp, issue_instant=iso(now() - datetime.timedelta(minutes=6))), sp, http=())
    check_success(b.sso(sp, issue_instant=iso(now() - datetime.timedelta(minutes=1))), sp, idp)


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_replayed_request_id(idp, sps, b, binding):
    sp = sps.main
    reqid, xml = sp.authn_request(binding=binding)
    first = b.send_authn(sp, xml, binding=binding, relay_state="replay")
    first.request_id = reqid
    check_success(first, sp, idp)
    again = b.send_authn(sp, xml, binding=binding, relay_state="replay")
    again.request_id = reqid
    check_refused(again, sp)
    # a new request still works
    check_success(b.sso(sp, binding=binding), sp, idp)


def xxe_request(sp: ServiceProvider, binding: str, dtd: str, id_value: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{dtd}\n"
        f'<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{id_value}" Version="2.0" '
        f'IssueInstant="{iso(now())}" Destination="{sp.idp.sso[binding]}" '
        f'ProtocolBinding="{BINDING_HTTP_POST}" AssertionConsumerServiceURL="{sp.acs}">'
        f"<saml:Issuer>{sp.entity_id}</saml:Issuer></samlp:AuthnRequest>"
    )


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST], ids=["redirect", "post"])
def test_xxe_refused(idp, sps, b, recorder, tmp_path, binding):
    sp = sps.main
    b.login()
    marker = "_xxeleak" + uuid.uuid4().hex
    secret = tmp_path / "secret.txt"
    secret.write_text(marker)
    ssrf_path = unique_path("/xxe-fetch")
    cases = {
        "file": f'<!DOCTYPE samlp:AuthnRequest [<!ENTITY xxe SYSTEM "file://{secret}">]>',
        "http": f'<!DOCTYPE samlp:AuthnRequest [<!ENTITY xxe SYSTEM "{recorder.url(ssrf_path)}">]>',
        "param": f'<!DOCTYPE samlp:AuthnRequest [<!ENTITY % p SYSTEM "{recorder.url(ssrf_path)}"> %p;]>',
        "laughs": '<!DOCTYPE samlp:AuthnRequest [<!ENTITY a "' + "x" * 64 + '">'
                  + "".join(f'<!ENTITY {c} "' + f"&{p};" * 16 + '">' for p, c in zip("abcdef", "bcdefg"))
                  + "]>",
    }
    for name, dtd in cases.items():
        id_value = "&g;" if name == "laughs" else ("_x" if name == "param" else "&xxe;")
        xml = xxe_request(sp, binding, dtd, id_value)
        t0 = time.monotonic()
        flow = b.send_authn(sp, xml, binding=binding, relay_state="xxe", login=False)
        assert time.monotonic() - t0 < 10, f"{name}: took {time.monotonic() - t0:.1f}s"
        for r in flow.hops:
            assert marker not in r.text and marker not in r.headers.get("Location", ""), f"{name}: file content leaked"
        for form in flow.post_forms:
            assert marker not in form.xml().decode("utf-8", "replace"), f"{name}: file content leaked into the Response"
        check_refused(flow, sp, http=(400,), top=(STATUS_REQUESTER,))
    time.sleep(0.3)
    assert recorder.matching(ssrf_path) == [], "the IdP fetched an external entity"


def wrap(signed_xml: str, evil_acs: str, same_id: bool, move_signature: bool) -> bytes:
    """XML signature wrapping: a new root AuthnRequest (other ACS) that carries
    the genuine signed request (or its signature) along."""
    orig = parse_xml(signed_xml)
    evil = parse_xml(signed_xml)
    for child in list(evil):
        if child.tag != f"{{{SAML}}}Issuer":
            evil.remove(child)
    evil.set("AssertionConsumerServiceURL", evil_acs)
    if not same_id:
        evil.set("ID", "_evil" + uuid.uuid4().hex)
    ext = etree.SubElement(evil, f"{{{SAMLP}}}Extensions")
    if move_signature:
        sig = orig.find("ds:Signature", NSMAP)
        orig.remove(sig)
        evil.insert(1, sig)  # Issuer, Signature, Extensions
    ext.append(orig)
    return etree.tostring(evil, xml_declaration=True, encoding="UTF-8")


XSW_VARIANTS = {
    # name: (ACS of the wrapper, wrapper keeps the signed request's ID, signature moved into the wrapper)
    "embedded-signed": ("acs2", False, False),
    "moved-signature": ("acs2", False, True),
    "same-id": ("acs2", True, True),
    # the wrapper asks for nothing the signed request does not: still not a signed AuthnRequest
    "embedded-signed-same-acs": ("acs", False, False),
    "moved-signature-same-acs": ("acs", False, True),
}


@pytest.mark.parametrize("variant", list(XSW_VARIANTS))
def test_signature_wrapping_refused(idp, sps, b, variant):
    """The root AuthnRequest is not signed (its signature, if any, does not
    reference it: core §5.4.2 wants an enveloped signature whose Reference is
    the ID of the enclosing element), and sp-signed's requests must be signed:
    whatever the wrapper asks for, it is refused."""
    sp = sps.signed
    acs_attr, same_id, move = XSW_VARIANTS[variant]
    reqid, xml = sp.authn_request(binding=BINDING_HTTP_POST)
    # the genuine request is accepted
    ok = b.send_authn(sp, xml, binding=BINDING_HTTP_POST, relay_state="xsw")
    ok.request_id = reqid
    check_success(ok, sp, idp)
    reqid2, xml2 = sp.authn_request(binding=BINDING_HTTP_POST)
    wrapped = wrap(xml2, getattr(sp, acs_attr), same_id=same_id, move_signature=move)
    flow = b.send_authn(sp, wrapped, binding=BINDING_HTTP_POST, relay_state="xsw")
    for form in flow.post_forms:
        root = form.tree()
        codes = status_codes(root)
        assert codes and codes[0] != STATUS_SUCCESS, (
            f"{variant}: Success (InResponseTo={root.get('InResponseTo')!r}, posted to {form.action}) for an "
            f"AuthnRequest whose root element {parse_xml(wrapped).get('ID')!r} is not signed")
    check_refused(flow, sp)


def test_oversized_request(cas, idp, sps, b):
    sp = sps.main
    reqid, xml = sp.authn_request(binding=BINDING_HTTP_POST)
    close = xml.rindex("</")  # before </samlp:AuthnRequest>
    big = xml[:close] + "<!--" + "p" * (80 * 1024) + "-->" + xml[close:]
    assert len(big) > 64 * 1024 and parse_xml(big) is not None
    # HTTP-POST: SAMLRequest itself > 64 KiB
    r = b.s.post(idp.sso[BINDING_HTTP_POST], data={"SAMLRequest": base64.b64encode(big.encode()).decode()},
                 allow_redirects=False, timeout=30)
    assert r.status_code in (400, 413), f"oversized POST SAMLRequest: {r.status_code} {r.text[:300]}"
    assert "SAMLResponse" not in r.text
    # HTTP-Redirect: small on the wire, > 64 KiB (here 4 MiB) once inflated
    bomb = xml[:close] + " " * (4 * 1024 * 1024) + xml[close:]
    url = redirect_query(idp.sso[BINDING_HTTP_REDIRECT], "SAMLRequest", bomb.encode(), "bomb")
    assert len(url) < 16 * 1024
    t0 = time.monotonic()
    flow = b.send_redirect(url, login=False)
    assert time.monotonic() - t0 < 10
    check_refused(flow, sp, http=(400, 413), top=(STATUS_REQUESTER,))
    assert cas.alive()


# --------------------------------------------------------------------------
# where the signatures are
# --------------------------------------------------------------------------


def test_default_signs_assertion_not_response(idp, sps, b):
    sp = sps.main
    flow = b.sso(sp)
    _, root, a = check_success(flow, sp, idp)
    assert signature_of(root) is None, "the Response is signed though sign = \"assertion\" (the default)"
    assert len(root.findall(".//ds:Signature", NSMAP)) == 1
    xml = flow.form.xml()
    ok, out = xmlsec_verify(xml, idp.cert_pem)
    assert ok, out
    # the check can fail: a changed NameID breaks the signature
    value = name_id(a)[0]
    bad = xml.replace(f">{value}<".encode(), f">{value}x<".encode())
    assert bad != xml
    assert not xmlsec_verify(bad, idp.cert_pem)[0], "xmlsec1 verified a tampered assertion"


def test_sign_response(idp, sps, b):
    sp = sps.resp
    flow = b.sso(sp)
    _, root, a = check_success(flow, sp, idp)
    sig = signature_of(root)
    check_signature_element(sig, root.get("ID"), "Response")
    assert root.index(sig) == 1 and root[0].tag == f"{{{SAML}}}Issuer", "Signature must follow Issuer (core §3.2.2)"
    assert signature_of(a) is None, "the assertion is signed though sign = \"response\""
    assert len(root.findall(".//ds:Signature", NSMAP)) == 1
    xml = flow.form.xml()
    ok, out = xmlsec_verify(xml, idp.cert_pem, "/*[local-name()='Response']/*[local-name()='Signature']")
    assert ok, f"xmlsec1 does not verify the Response signature:\n{out}"
    bad = xml.replace(b"casuser@example.org", b"mallory@example.org")
    assert bad != xml and not xmlsec_verify(bad, idp.cert_pem)[0]
    with pytest.raises(Exception):
        sp.accept(base64.b64encode(bad).decode(), flow.request_id)


def test_sign_both(idp, sps, b):
    sp = sps.both
    flow = b.sso(sp)
    _, root, a = check_success(flow, sp, idp)
    check_signature_element(signature_of(root), root.get("ID"), "Response")
    check_signature_element(signature_of(a), a.get("ID"), "assertion")
    assert len(root.findall(".//ds:Signature", NSMAP)) == 2
    xml = flow.form.xml()
    for xp in ("/*[local-name()='Response']/*[local-name()='Signature']",
               "/*[local-name()='Response']/*[local-name()='Assertion']/*[local-name()='Signature']"):
        ok, out = xmlsec_verify(xml, idp.cert_pem, xp)
        assert ok, f"xmlsec1 does not verify {xp}:\n{out}"


# --------------------------------------------------------------------------
# the default key
# --------------------------------------------------------------------------


def test_default_signing_key_generated_and_kept(tmp_path_factory, pki, services, sps):
    """Without signing_key the IdP makes an RSA-2048 key and certificate in
    data_dir at the first start and keeps using it after a restart."""
    c = SamlCastellan(tmp_path_factory.mktemp("castellan-saml-default"), label="castellan-saml-default",
                      services=[sps.main.service()], ssl_cert_file=pki.ca_pem)
    d = tmp_path_factory.mktemp("saml-default-md")
    try:
        c.start()
        md1 = IdpMetadata.fetch(c.url("/idp/metadata"), d / "1.xml")
        assert len(md1.signing_certs) == 1
        key = md1.public_key()
        assert key.key_size >= 2048, key.key_size
        c.stop()
        c.start()
        md2 = IdpMetadata.fetch(c.url("/idp/metadata"), d / "2.xml")
        assert md2.signing_certs == md1.signing_certs, "a new key after a restart"
        # and a response of this server verifies with that certificate
        sp = ServiceProvider(d, "sp-main")
        sp.impersonate(sps.main)
        sp.attach(md2)
        fresh = SamlBrowser(c)
        flow = fresh.sso(sp)
        check_success(flow, sp, md2)
    finally:
        c.stop()


def test_slo_front_channel_chain_visits_the_other_sp(cas, idp, sps, b, recorder):
    """An SP's logout reaches another SP of the session that has only browser
    SLO endpoints: the browser carries a signed LogoutRequest there first, the
    SP's LogoutResponse brings it back, and only then does the requester get
    its LogoutResponse."""
    other, main = sps.resp, sps.main  # sp-resp: Redirect and POST SLO, no SOAP
    resp_other, _, a_other = check_success(b.sso(other), other, idp)
    resp_main, _, _ = check_success(b.sso(main), main, idp)
    old_tgc = b.tgc
    other_index = a_other.find("saml:AuthnStatement", NSMAP).get("SessionIndex")

    reqid, url, rs = main.logout_request(resp_main.name_id, BINDING_HTTP_REDIRECT)
    flow = b.send_redirect(url)
    # 1. to the other SP, with a LogoutRequest signed over the query
    assert flow.location and flow.location.startswith(other.slo_redirect + "?"), flow.trace()
    ok, params = verify_redirect_signature(flow.location, idp.public_key(), "SAMLRequest")
    assert ok, f"the LogoutRequest to the other SP does not verify: {params}"
    chain_relay = params.get("RelayState", "")
    assert chain_relay and chain_relay != rs
    lreq = parse_xml(inflate(params["SAMLRequest"]))
    assert lreq.tag == f"{{{SAMLP}}}LogoutRequest"
    assert lreq.get("Destination") == other.slo_redirect
    assert lreq.findtext("samlp:SessionIndex", namespaces=NSMAP) == other_index
    n = lreq.find("saml:NameID", NSMAP)
    assert (n.text or "").strip() == name_id(a_other)[0], etree.tostring(n)
    # pysaml2 (the other SP) accepts it and answers
    req = other.client.parse_logout_request(params["SAMLRequest"], BINDING_HTTP_REDIRECT)
    assert req is not None and req.message.id == lreq.get("ID")
    answer = other.client.create_logout_response(req.message, [BINDING_HTTP_REDIRECT])
    back = other.client.apply_binding(BINDING_HTTP_REDIRECT, answer, idp.slo[BINDING_HTTP_REDIRECT],
                                      chain_relay, response=True, sign=True, sigalg=RSA_SHA256)
    back_url = dict(back["headers"])["Location"]
    assert "SAMLResponse=" in back_url
    # 2. back at the IdP, on to the requester with its LogoutResponse
    flow = b.send_redirect(back_url)
    assert flow.location and flow.location.startswith(main.slo_redirect + "?"), flow.trace()
    ok, params = verify_redirect_signature(flow.location, idp.public_key())
    assert ok and params.get("RelayState", "") == rs, params
    lr = main.client.parse_logout_request_response(params["SAMLResponse"], BINDING_HTTP_REDIRECT)
    assert lr is not None and lr.status_ok() and lr.in_response_to == reqid
    check_session_over(cas, b, old_tgc)
    # A replayed chain RelayState leads nowhere.
    r = b.send_redirect(back_url)
    assert r.location is None or not r.location.startswith(main.slo_redirect), r.trace()


def test_two_nodes_on_one_redis_serve_one_saml_flow(tmp_path, pki, services, sps, idp_keypair):
    """The AuthnRequest reaches node 1, the login and the callback happen on
    node 2: the pending request lives in the shared store, and a replay of
    the same request on node 2 is refused."""
    from test_multinode import Node, RedisProc

    class SamlNode(Node):
        def __init__(self, *args, saml: dict, **kw) -> None:
            super().__init__(*args, **kw)
            self.saml_table = saml

        def config_text(self) -> str:
            return super().config_text() + toml_table("saml", self.saml_table)

    key, cert = idp_keypair
    redis = RedisProc(tmp_path / "redis").start()
    public = f"http://127.0.0.1:{free_port()}/cas"
    nodes = []
    try:
        for i in (1, 2):
            n = SamlNode(tmp_path / f"node{i}", data_dir=tmp_path / "shared-data", label=f"saml-node{i}", public_url=public,
                              services=services + [sps.main.service()], ssl_cert_file=pki.ca_pem,
                              tickets={"store": "redis", "redis_url": redis.url},
                              saml={**SAML_CONFIG, "signing_key": str(key), "signing_certificate": str(cert),
                                    "persistent_id_secret": "two-nodes-share-this-secret"})
            nodes.append(n.start())
        n1, n2 = nodes
        md = IdpMetadata.fetch(n1.url("/idp/metadata"), tmp_path / "idp.xml")
        sp = ServiceProvider(tmp_path, "sp-main").impersonate(sps.main)
        sp.attach(md)

        def on(node, url: str) -> str:
            url = urljoin(public + "/", url)
            assert url.startswith(public), url
            return node.base + url[len(public):]

        s = requests.Session()
        reqid, xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
        url = sp.redirect_url(xml, "two-nodes")
        r = s.get(on(n1, url), allow_redirects=False, timeout=15)
        assert r.status_code == 302, f"SSO on node 1: {r.status_code} {r.text[:300]}"
        page = s.get(on(n2, r.headers["Location"]), allow_redirects=False, timeout=15)
        form = parse_login_form(page)
        assert page.status_code == 200 and form, f"login page on node 2: {page.status_code}"
        r = s.post(on(n2, form.action) if not form.action.startswith("http") else form.action,
                   data=dict(form.fields, username="casuser", password=PASSWORD), allow_redirects=False, timeout=15)
        assert r.status_code == 302 and ticket_from(r), f"login POST on node 2: {r.status_code}"
        r = s.get(on(n2, r.headers["Location"]), allow_redirects=False, timeout=15)
        forms = saml_forms(r)
        assert r.status_code == 200 and len(forms) == 1, f"callback on node 2: {r.status_code} {r.text[:300]}"
        assert forms[0].relay_state == "two-nodes"
        resp = sp.accept(forms[0].saml_response, reqid)
        assert resp.name_id.text.strip() and resp.ava.get("mail") == ["casuser@example.org"], resp.ava
        # The same AuthnRequest again, now on node 2: a replay.
        r = s.get(on(n2, url), allow_redirects=False, timeout=15)
        forms = saml_forms(r)
        assert r.status_code == 200 and len(forms) == 1, f"replay on node 2: {r.status_code}"
        assert status_codes(forms[0].tree())[0] == STATUS_REQUESTER, status_codes(forms[0].tree())
    finally:
        for n in nodes:
            n.stop()
        redis.stop()
