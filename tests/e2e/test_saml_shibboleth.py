"""The real Shibboleth SP (Debian's libapache2-mod-shib 3.4 and shibd) as a
SAML 2.0 relying party of Castellan's IdP.

Four SPs of our own (`saml_shib.ShibbolethSp`: Apache + mod_shib + shibd in
a temp dir each), registered in one Castellan as `protocol = "saml"` services
with the SP metadata written by the test.  Castellan's [saml] table sets the
IdP signing key and certificate (made by the test, PKCS#8) and
sign_metadata = true.

* `sp`      — the plain one: unsigned AuthnRequests (HTTP-Redirect), signed
              assertion, persistent NameID (REMOTE_USER), release mail/cn/memberOf;
* `sp_md`   — like `sp`, but shibd verifies the signature of the IdP metadata
              (`sign_metadata = true`, the IdP key made by the test);
* `sp_enc`  — `encrypt_assertions = true` and `sign = "both"` (signed Response
              around an EncryptedAssertion of a signed Assertion); no HTTP-Redirect
              SingleLogoutService (SOAP and POST only);
* `sp_sig`  — signs its AuthnRequests (signing="true" in shibboleth2.xml and
              AuthnRequestsSigned="true" in its metadata); `sign = "response"`
              (WantAssertionsSigned="false"), emailAddress NameID (REMOTE_USER),
              and `weird` released too (XML special characters, non-ASCII).

Shibboleth loads Castellan's /cas/idp/metadata (schema-validated) and checks
everything an SP checks: the signature against the metadata's key,
Destination, Recipient, InResponseTo, audience, times, replay; it decrypts
EncryptedAssertions with its own key.  The scripted browser is a
requests.Session walking each hop (saml_shib.ShibBrowser); the
SAMLResponse form the IdP returns is decoded before it is posted to
Shibboleth's ACS, so that a refusal by Shibboleth can be told apart from a
wrong answer of the IdP.  Shibboleth writes what it did to
<sp root>/logs/shibd.log (DEBUG for messages, security policy rules, SSO and
logout); those logs, mod_shib's and Apache's are attached to failure reports.

Needs the Debian packages apache2, libapache2-mod-shib and
shibboleth-sp-utils (with shibboleth-sp-common); missing ones fail the tests.
"""

from __future__ import annotations

import base64
import datetime
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from conftest import APP, WEIRD_VALUE, Browser, parse_login_form, ticket_from
from saml_shib import (
    AC_PPT,
    BINDING_POST,
    DS,
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    NSS,
    OID_CN,
    OID_MAIL,
    OID_MEMBER_OF,
    SAML,
    SAMLP,
    STATUS_NO_PASSIVE,
    STATUS_SUCCESS,
    MD,
    SamlCastellan,
    ShibBrowser,
    ShibbolethSp,
    assertion_attributes,
    instant,
    make_rsa_credential,
    parse_env_page,
    parse_saml,
    redirect_message,
    saml_post_form,
    shibboleth_available,
    status_codes,
)

URI_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BASIC_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
XS_TRUE = ("true", "1")


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@dataclass
class Expect:
    """What Castellan is configured to send one SP (and so what the tests expect)."""

    sign: str = "assertion"  # the service's `sign`
    encrypted: bool = False  # encrypt_assertions
    name_id_format: str = NAMEID_PERSISTENT
    weird: bool = False  # `weird` (a name without an OID: NameFormat basic) released too


EXPECT = {
    "shib-sp": Expect(),
    "shib-sp-md": Expect(),
    "shib-sp-enc": Expect(sign="both", encrypted=True),
    "shib-sp-signed": Expect(sign="response", name_id_format=NAMEID_EMAIL, weird=True),
}


@dataclass
class IdpKey:
    key: Path
    cert: Path
    cert_b64: str


@pytest.fixture(scope="module")
def idp_key() -> IdpKey:
    """The IdP's signing key and certificate, made here and given to Castellan ([saml] signing_key,
    signing_certificate; sign_metadata = true)."""
    d = Path(tempfile.mkdtemp(prefix="castellan-e2e-idpkey-"))
    k = IdpKey(d / "idp-key.pem", d / "idp-cert.pem", "")
    k.cert_b64 = make_rsa_credential(k.key, k.cert, "castellan e2e saml idp")
    yield k
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def sps(idp_key):
    reason = shibboleth_available()
    if reason:
        pytest.fail(reason)  # a missing package is a failure, not a skip
    made = {
        "plain": ShibbolethSp(name="shib-sp"),
        "md": ShibbolethSp(name="shib-sp-md", metadata_signer=idp_key.cert),
        "enc": ShibbolethSp(name="shib-sp-enc", slo_bindings=("SOAP", "POST")),
        "sig": ShibbolethSp(name="shib-sp-signed", sign_requests=True, want_assertions_signed=False,
                            name_id_format=NAMEID_EMAIL, remote_user="nameid-email"),
    }
    yield made
    for s in made.values():
        s.cleanup()


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, services, sps, idp_key):
    c = SamlCastellan(
        tmp_path_factory.mktemp("saml-shib-castellan"), label="saml-shib-castellan", ssl_cert_file=pki.ca_pem,
        services=services + [
            sps["plain"].service(),
            sps["md"].service(),
            sps["enc"].service(encrypt_assertions=True, sign="both"),
            sps["sig"].service(sign="response", release=["mail", "cn", "memberOf", "weird"]),
        ],
        saml={"signing_key": str(idp_key.key), "signing_certificate": str(idp_key.cert), "sign_metadata": True},
    ).start()
    yield c
    c.stop()


def _started(sp: ShibbolethSp, cas) -> ShibbolethSp:
    if not sp.alive():
        sp.stop()
        sp.start(cas)
    return sp


@pytest.fixture
def sp(cas, sps) -> ShibbolethSp:
    return _started(sps["plain"], cas)


@pytest.fixture
def sp_md(cas, sps) -> ShibbolethSp:
    return _started(sps["md"], cas)


@pytest.fixture
def sp_enc(cas, sps) -> ShibbolethSp:
    return _started(sps["enc"], cas)


@pytest.fixture
def sp_sig(cas, sps) -> ShibbolethSp:
    return _started(sps["sig"], cas)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def idp_entity(cas) -> str:
    return cas.public_url + "/idp"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def first_hop(sp: ShibbolethSp, b: ShibBrowser, url: str | None = None, **params) -> requests.Response:
    """GET a protected page (or an SP handler) without an SP session: Shibboleth
    answers with the AuthnRequest, a redirect to Castellan's SSO endpoint."""
    r = b.get(url or sp.protected, **params)
    assert r.status_code == 302, (
        f"Shibboleth did not redirect to the IdP: {r.status_code} {r.text[:600]}\n{sp.log_tail(40)}")
    return r


def check_authn_request_hop(sp: ShibbolethSp, cas, r: requests.Response):
    loc = r.headers["Location"]
    assert loc.startswith(cas.url("/idp/profile/SAML2/Redirect/SSO?")), f"not Castellan's Redirect SSO endpoint: {loc}"
    msg = redirect_message(loc)
    assert msg is not None and msg.doc.tag == f"{{{SAMLP}}}AuthnRequest", loc
    assert msg.relay_state, "Shibboleth sent no RelayState"
    return msg


def check_signed(el, what: str, xml: bytes) -> None:
    """`el` carries an enveloped signature as the spec says: RSA-SHA256, exclusive c14n, over `el`
    (by its ID), placed right after its Issuer (saml-schema-protocol/assertion-2.0)."""
    sig = el.find(f"{{{DS}}}Signature")
    assert sig is not None, f"the {what} is not signed: {xml[:1500]!r}"
    assert el[0].tag == f"{{{SAML}}}Issuer" and el.index(sig) == 1, (
        f"the {what}'s ds:Signature is not the element right after its Issuer (schema order)")
    assert sig.find("ds:SignedInfo/ds:SignatureMethod", NSS).get("Algorithm") == RSA_SHA256
    assert sig.find("ds:SignedInfo/ds:CanonicalizationMethod", NSS).get("Algorithm") == EXC_C14N
    refs = sig.findall("ds:SignedInfo/ds:Reference", NSS)
    assert [x.get("URI") for x in refs] == ["#" + el.get("ID")], [x.get("URI") for x in refs]


def response_from(sp: ShibbolethSp, form, cas, *, in_response_to: str | None):
    """Check the Response Castellan posts to Shibboleth against the SP's Expect
    (the envelope; the assertion when it is not encrypted) and return (response, assertion or None)."""
    e = EXPECT[sp.name]
    assert form.action == sp.acs_url, f"SAMLResponse form posts to {form.action!r}, not the ACS {sp.acs_url!r}"
    assert form.method == "post", form.method
    assert form.has_submit, "the SAMLResponse page has no Continue (submit) button for browsers without JavaScript"
    doc = form.doc
    assert doc.tag == f"{{{SAMLP}}}Response", doc.tag
    assert status_codes(doc)[:1] == [STATUS_SUCCESS], f"status {status_codes(doc)}: {form.xml[:1500]!r}"
    assert doc.get("Destination") == sp.acs_url, doc.get("Destination")
    assert doc.get("InResponseTo") == in_response_to, (doc.get("InResponseTo"), in_response_to)
    assert doc.findtext("saml:Issuer", namespaces=NSS) == idp_entity(cas)
    t = instant(doc.get("IssueInstant"))
    assert abs((t - now()).total_seconds()) < 60, f"Response IssueInstant {t} is not now"
    if e.sign in ("response", "both"):
        check_signed(doc, "Response", form.xml)
    else:
        assert doc.find(f"{{{DS}}}Signature") is None, f"sign = {e.sign!r} but the Response is signed"
    plain = doc.findall("saml:Assertion", NSS)
    enc = doc.findall("saml:EncryptedAssertion", NSS)
    if e.encrypted:
        assert not plain and len(enc) == 1, (
            f"expected one EncryptedAssertion and no plain Assertion, got {len(enc)} / {len(plain)}: {form.xml[:1500]!r}")
        assert enc[0].find("{http://www.w3.org/2001/04/xmlenc#}EncryptedData") is not None, form.xml[:1500]
        return doc, None
    assert len(plain) == 1 and not enc, f"expected one plain Assertion: {form.xml[:1500]!r}"
    a = plain[0]
    assert a.findtext("saml:Issuer", namespaces=NSS) == idp_entity(cas)
    if e.sign in ("assertion", "both"):
        check_signed(a, "Assertion", form.xml)
    else:
        assert a.find(f"{{{DS}}}Signature") is None, f"sign = {e.sign!r} but the Assertion is signed"
    nameid = a.find("saml:Subject/saml:NameID", NSS)
    assert nameid is not None and nameid.get("Format") == e.name_id_format and nameid.text, (
        "NameID: " + (repr(nameid.attrib) if nameid is not None else "none"))
    if e.name_id_format == NAMEID_PERSISTENT:
        assert nameid.text not in ("casuser", "casuser@example.org"), "the persistent NameID is not opaque"
    elif e.name_id_format == NAMEID_EMAIL:
        assert nameid.text == "casuser@example.org", nameid.text
    scd = a.find("saml:Subject/saml:SubjectConfirmation", NSS)
    assert scd is not None and scd.get("Method") == BEARER
    data = scd.find("saml:SubjectConfirmationData", NSS)
    assert data.get("Recipient") == sp.acs_url and data.get("InResponseTo") == in_response_to, data.attrib
    assert instant(data.get("NotOnOrAfter")) > now()
    cond = a.find("saml:Conditions", NSS)
    assert instant(cond.get("NotBefore")) <= now() + datetime.timedelta(seconds=5) < instant(cond.get("NotOnOrAfter"))
    assert [x.text for x in cond.findall("saml:AudienceRestriction/saml:Audience", NSS)] == [sp.entity_id]
    st = a.find("saml:AuthnStatement", NSS)
    assert st is not None and st.get("SessionIndex"), "no AuthnStatement with a SessionIndex"
    assert st.findtext("saml:AuthnContext/saml:AuthnContextClassRef", namespaces=NSS) == AC_PPT
    want = {OID_MAIL: (URI_FORMAT, "mail", ["casuser@example.org"]),
            OID_CN: (URI_FORMAT, "cn", ["CAS User"]),
            OID_MEMBER_OF: (URI_FORMAT, "memberOf", ["faculty", "staff"])}
    if e.weird:
        want["weird"] = (BASIC_FORMAT, None, [WEIRD_VALUE])
    attrs = assertion_attributes(a)
    assert set(attrs) == set(want), f"released attributes: {attrs}"
    for name, (fmt, friendly, values) in want.items():
        got = attrs[name]
        assert got["format"] == fmt, f"{name}: NameFormat {got['format']!r}, expected {fmt!r}"
        assert friendly is None or got["friendly"] == friendly, f"{name}: FriendlyName {got['friendly']!r}"
        assert sorted(got["values"]) == sorted(values), f"{name}: values {got['values']!r}"
    assert b"do-not-release" not in form.xml
    return doc, a


def post_to_acs(sp: ShibbolethSp, b: ShibBrowser, form, target: str | None = None) -> requests.Response:
    """POST the SAMLResponse form to Shibboleth's ACS: it must accept it and
    redirect to the target resource."""
    mark = sp.log_mark()
    r = b.post(form)
    want = target or sp.protected
    assert r.status_code == 302 and r.headers.get("Location") == want, (
        f"Shibboleth did not accept the Response: {r.status_code} Location={r.headers.get('Location')!r}\n"
        f"{r.text[:1500]}\n--- shibd.log during the POST ---\n{sp.log_since(mark)[-6000:]}\n"
        f"--- Response ---\n{form.xml.decode(errors='replace')[:4000]}")
    return r


def protected_page(sp: ShibbolethSp, b: ShibBrowser) -> dict[str, str]:
    r = b.get(sp.protected)
    assert r.status_code == 200, f"protected page: {r.status_code} {r.headers.get('Location')!r} {r.text[:500]}"
    env = parse_env_page(r.content.decode("utf-8"))
    assert env.get("AUTH_TYPE") == "shibboleth", env
    return env


def check_env(sp: ShibbolethSp, cas, env: dict[str, str]) -> str:
    """The attributes Shibboleth extracted into the CGI environment; returns REMOTE_USER."""
    e = EXPECT[sp.name]
    user = env.get("REMOTE_USER", "")
    if e.name_id_format == NAMEID_PERSISTENT:
        idp, _, rest = user.partition("!")
        spq, _, value = rest.partition("!")
        assert idp == idp_entity(cas) and spq == sp.entity_id and value, (
            f"REMOTE_USER {user!r} is not Shibboleth's persistent-id IdP!SP!value\n{env}")
        assert value not in ("casuser", "casuser@example.org"), user
        assert env.get("persistent_id") == user, env
    else:
        assert user == "casuser@example.org" and env.get("nameid_email") == user, env
    assert env.get("mail") == "casuser@example.org", env
    assert env.get("cn") == "CAS User", env
    assert sorted(env.get("memberOf", "").split(";")) == ["faculty", "staff"], env
    assert env.get("Shib_Identity_Provider") == idp_entity(cas), env
    assert env.get("Shib_AuthnContext_Class") == AC_PPT, env
    assert env.get("Shib_Session_Index"), env
    if e.weird:
        assert env.get("weird") == WEIRD_VALUE, f"weird: {env.get('weird')!r}, expected {WEIRD_VALUE!r}"
    else:
        assert "weird" not in env, env
    assert "secret" not in env, env
    return user


def login(sp: ShibbolethSp, cas, b: ShibBrowser, *, expect_form: bool = True) -> str:
    """The whole SP-initiated flow from the protected page; returns REMOTE_USER."""
    r = first_hop(sp, b)
    req = check_authn_request_hop(sp, cas, r)
    w = b.walk(r)
    assert w.post is not None, f"no SAMLResponse form:\n{w.trace()}"
    assert w.forms_seen == (1 if expect_form else 0), f"login forms shown: {w.forms_seen}\n{w.trace()}"
    form = w.post
    assert form.relay_state == req.relay_state, (form.relay_state, req.relay_state)
    response_from(sp, form, cas, in_response_to=req.doc.get("ID"))
    post_to_acs(sp, b, form)
    env = protected_page(sp, b)
    return check_env(sp, cas, env)


def cas_login_shows_form(cas, b: ShibBrowser) -> None:
    r = b.s.get(cas.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code == 200 and ticket_from(r) is None and parse_login_form(r), (
        f"CAS /login still has a session: {r.status_code} {r.headers.get('Location')!r}")


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_shibboleth_loaded_the_idp_metadata(sp, cas):
    """shibd loaded /cas/idp/metadata with schema validation (validate="true") and found the IdP in it."""
    log = sp.shibd_log.read_text(errors="replace")
    assert f"loaded XML resource ({sp.idp_metadata_path})" in log, log[-3000:]
    r = requests.get(cas.url("/idp/metadata"), timeout=15)
    assert f'entityID="{idp_entity(cas)}"' in r.text, r.text[:500]
    # Shibboleth's own view: the Status handler lists its metadata providers without errors
    s = requests.get(sp.handler + "/Status", timeout=15)
    assert s.status_code == 200 and "<OK" in s.text, s.text[:2000]


def test_signed_metadata_is_verified_by_shibboleth(sp_md, cas, idp_key):
    """sign_metadata = true with the configured signing key: /cas/idp/metadata carries an enveloped
    signature that shibd's MetadataFilter type="Signature" (with the IdP certificate made here)
    accepts -- the SP with that filter logs in.  The metadata's signing key is the configured one."""
    r = requests.get(cas.url("/idp/metadata"), timeout=15)
    assert r.status_code == 200, r.status_code
    doc = parse_saml(r.content)
    assert doc.tag == f"{{{MD}}}EntityDescriptor" and doc.get("ID"), (doc.tag, doc.attrib)
    sig = doc.find(f"{{{DS}}}Signature")
    assert sig is not None and doc.index(sig) == 0, "no ds:Signature as the EntityDescriptor's first child"
    assert [x.get("URI") for x in sig.findall("ds:SignedInfo/ds:Reference", NSS)] == ["#" + doc.get("ID")]
    certs = ["".join((c.text or "").split()) for c in doc.findall(
        "md:IDPSSODescriptor/md:KeyDescriptor/ds:KeyInfo/ds:X509Data/ds:X509Certificate", NSS)]
    assert certs == [idp_key.cert_b64], "the metadata does not publish the configured signing certificate"
    log = sp_md.shibd_log.read_text(errors="replace")
    assert "building MetadataFilter of type Signature" in log, log[-3000:]
    login(sp_md, cas, ShibBrowser())


def test_login_through_shibboleth(sp, cas):
    """GET the protected page -> AuthnRequest (HTTP-Redirect) -> CAS login form ->
    the SAMLResponse form -> Shibboleth's ACS -> the page with REMOTE_USER and the attributes."""
    b = ShibBrowser()
    r = first_hop(sp, b)
    req = check_authn_request_hop(sp, cas, r)
    ar = req.doc
    assert ar.get("AssertionConsumerServiceURL") == sp.acs_url and ar.get("ProtocolBinding") == BINDING_POST, ar.attrib
    assert not req.signed, "the plain SP should send unsigned AuthnRequests"

    w = b.walk(r)
    assert w.forms_seen == 1, f"expected exactly one login form:\n{w.trace()}"
    assert w.post is not None, f"no SAMLResponse form after the login:\n{w.trace()}"
    assert w.final.headers.get("Content-Type", "").startswith("text/html"), w.final.headers
    assert w.post.relay_state == req.relay_state, "RelayState not returned unchanged"
    response_from(sp, w.post, cas, in_response_to=ar.get("ID"))
    assert b.s.cookies.get("CASTGC"), "no CASTGC after the login"

    post_to_acs(sp, b, w.post)
    assert b.cookie("_shibsession_"), "Shibboleth set no session cookie"
    env = protected_page(sp, b)
    user = check_env(sp, cas, env)
    # the SP session holds: the page again without any redirect
    assert parse_env_page(b.get(sp.protected).text).get("REMOTE_USER") == user

    # the same user in a new browser: the same persistent id (stable per SP and user)
    assert login(sp, cas, ShibBrowser()) == user


def test_cas_session_gives_shibboleth_access_without_form(sp, cas):
    """A CAS login (a CAS service) first: the SAML login through Shibboleth then needs no form."""
    cb = Browser(cas)
    assert cb.ticket_for(APP)
    login(sp, cas, ShibBrowser(cb.s), expect_form=False)


def test_shibboleth_login_gives_cas_services_sso(sp, cas):
    """The other way round: after the SAML login a CAS service gets a ticket without a form."""
    b = ShibBrowser()
    login(sp, cas, b)
    r = b.s.get(cas.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303) and ticket_from(r), (
        f"no SSO for a CAS service after the SAML login: {r.status_code} {r.text[:300]}")
    assert cas.validate("/p3/serviceValidate", APP, ticket_from(r)).user == "casuser"


def test_force_authn_shows_the_form_again(sp, cas):
    b = ShibBrowser()
    login(sp, cas, b)
    t0 = now().replace(microsecond=0)
    time.sleep(1.1)  # AuthnInstant has whole seconds at worst
    r = first_hop(sp, b, sp.handler + "/Login", forceAuthn="true", target=sp.protected)
    req = check_authn_request_hop(sp, cas, r)
    assert req.doc.get("ForceAuthn") in XS_TRUE, req.xml  # Shibboleth writes "1" (xs:boolean)
    w = b.walk(r)
    assert w.forms_seen == 1, f"ForceAuthn did not show the login form despite ForceAuthn=true:\n{w.trace()}"
    to_login = [h for h in w.hops if h.url.startswith(cas.url("/login"))]
    assert to_login and parse_qs(urlparse(to_login[0].url).query).get("renew") == ["true"], (
        f"the CAS login was not asked with renew=true:\n{w.trace()}")
    assert w.post is not None, w.trace()
    _, a = response_from(sp, w.post, cas, in_response_to=req.doc.get("ID"))
    authn_instant = instant(a.find("saml:AuthnStatement", NSS).get("AuthnInstant"))
    assert authn_instant > t0, f"AuthnInstant {authn_instant} is not of the new login (after {t0})"
    post_to_acs(sp, b, w.post)
    check_env(sp, cas, protected_page(sp, b))


def test_is_passive(sp, cas):
    """IsPassive: without a CAS session Castellan answers NoPassive (Shibboleth shows it on its error page);
    with one the login needs no form."""
    b = ShibBrowser()
    r = first_hop(sp, b, sp.handler + "/Login", isPassive="true", target=sp.protected)
    req = check_authn_request_hop(sp, cas, r)
    assert req.doc.get("IsPassive") in XS_TRUE, req.xml  # Shibboleth writes "1" (xs:boolean)
    w = b.walk(r, login=False)
    assert w.forms_seen == 0, f"IsPassive showed a login form:\n{w.trace()}"
    assert w.post is not None, f"no SAMLResponse for the passive request:\n{w.trace()}"
    codes = status_codes(w.post.doc)
    assert len(codes) >= 2 and codes[0] != STATUS_SUCCESS and codes[1] == STATUS_NO_PASSIVE, (
        f"status {codes}, expected a top-level error with NoPassive below it")
    assert w.post.doc.get("InResponseTo") == req.doc.get("ID")
    assert w.post.doc.find("saml:Assertion", NSS) is None and w.post.doc.find("saml:EncryptedAssertion", NSS) is None
    r = b.post(w.post)
    assert r.status_code != 302 or not r.headers.get("Location", "").startswith(sp.protected), r.headers
    assert STATUS_NO_PASSIVE.replace(":", "&#58;") in r.text or STATUS_NO_PASSIVE in r.text, (
        f"Shibboleth's error page does not show NoPassive: {r.status_code} {r.text[:1500]}")
    assert b.get(sp.protected).status_code == 302, "an SP session after NoPassive"

    # with a CAS session: no form, a session at the SP
    cb = Browser(cas)
    cb.ticket_for(APP)
    b = ShibBrowser(cb.s)
    r = first_hop(sp, b, sp.handler + "/Login", isPassive="true", target=sp.protected)
    req = check_authn_request_hop(sp, cas, r)
    w = b.walk(r, login=False)
    assert w.forms_seen == 0 and w.post is not None, w.trace()
    response_from(sp, w.post, cas, in_response_to=req.doc.get("ID"))
    post_to_acs(sp, b, w.post)
    check_env(sp, cas, protected_page(sp, b))


def test_post_binding_authn_request(sp, cas):
    """Shibboleth can send the AuthnRequest with HTTP-POST (its outgoingBinding parameter)."""
    b = ShibBrowser()
    r = b.get(sp.handler + "/Login", outgoingBinding=BINDING_POST, target=sp.protected)
    form = saml_post_form(r)
    assert r.status_code == 200 and form is not None and form.message_field == "SAMLRequest", (
        f"{r.status_code} {r.text[:800]}\n{sp.log_tail(30)}")
    assert form.action == cas.url("/idp/profile/SAML2/POST/SSO"), form.action
    req_id = form.doc.get("ID")
    r = b.post(form)
    w = b.walk(r)
    assert w.forms_seen == 1 and w.post is not None, w.trace()
    assert w.post.relay_state == form.relay_state
    response_from(sp, w.post, cas, in_response_to=req_id)
    post_to_acs(sp, b, w.post)
    check_env(sp, cas, protected_page(sp, b))


def test_idp_initiated_sso(sp, cas):
    """Unsolicited SSO with target: Shibboleth accepts a Response without InResponseTo
    and goes to the RelayState URL."""
    b = ShibBrowser()
    r = b.get(cas.url("/idp/profile/SAML2/Unsolicited/SSO"), providerId=sp.entity_id, target=sp.protected)
    w = b.walk(r)
    assert w.forms_seen == 1 and w.post is not None, w.trace()
    assert w.post.relay_state == sp.protected, w.post.fields
    response_from(sp, w.post, cas, in_response_to=None)
    post_to_acs(sp, b, w.post, target=sp.protected)
    check_env(sp, cas, protected_page(sp, b))


def test_encrypted_assertion_is_accepted(sp, sp_enc, cas):
    """encrypt_assertions = true: an EncryptedAssertion for the SP's key; Shibboleth decrypts it,
    checks the signature inside and logs the user in.  The persistent id differs per SP."""
    b = ShibBrowser()
    user_enc = login(sp_enc, cas, b)
    user_plain = login(sp, cas, b, expect_form=False)
    assert user_enc.rsplit("!", 1)[1] != user_plain.rsplit("!", 1)[1], (
        f"the same persistent NameID for two SPs: {user_enc} / {user_plain}")


def test_signed_authn_requests(sp_sig, cas):
    """An SP with AuthnRequestsSigned="true": Shibboleth's signed request (HTTP-Redirect,
    SigAlg/Signature) is accepted; without or with a broken signature Castellan refuses it.
    This SP gets a signed Response (unsigned assertion), an emailAddress NameID and `weird`."""
    b = ShibBrowser()
    r = first_hop(sp_sig, b)
    req = check_authn_request_hop(sp_sig, cas, r)
    assert req.signed, f"Shibboleth did not sign the AuthnRequest: {req.url}"
    good_url = r.headers["Location"]

    # unsigned (SigAlg and Signature dropped), a broken signature, a RelayState the signature does not
    # cover: refused before any login (SAML bindings 3.4.4.1) -- a Requester Response to the ACS or a 400 page
    u = urlparse(good_url)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    sig = bytearray(base64.b64decode(q["Signature"]))
    sig[len(sig) // 2] ^= 0x01
    for label, params in (
        ("unsigned", {k: v for k, v in q.items() if k not in ("SigAlg", "Signature")}),
        ("bad signature", dict(q, Signature=base64.b64encode(bytes(sig)).decode())),
        ("other RelayState", dict(q, RelayState="ss:mem:tampered")),
    ):
        bb = ShibBrowser()
        rr = bb.s.get(u._replace(query="").geturl(), params=params, allow_redirects=False, timeout=30)
        w = bb.walk(rr, login=False)
        assert w.forms_seen == 0, f"{label} AuthnRequest led to the login form:\n{w.trace()}"
        if w.post is not None:
            codes = status_codes(w.post.doc)
            assert codes[0] == "urn:oasis:names:tc:SAML:2.0:status:Requester", f"{label}: status {codes}"
            assert w.post.action == sp_sig.acs_url, w.post.action
            assert w.post.doc.find("saml:Assertion", NSS) is None
            assert w.post.doc.find("saml:EncryptedAssertion", NSS) is None
        else:
            assert w.final.status_code == 400, f"{label}: neither a Requester response nor a 400:\n{w.trace()}"

    # the untouched request works
    w = b.walk(b.s.get(good_url, allow_redirects=False, timeout=30))
    assert w.post is not None and w.forms_seen == 1, w.trace()
    response_from(sp_sig, w.post, cas, in_response_to=req.doc.get("ID"))
    post_to_acs(sp_sig, b, w.post)
    check_env(sp_sig, cas, protected_page(sp_sig, b))


def test_logout_from_shibboleth_ends_the_cas_session(sp, cas):
    """/Shibboleth.sso/Logout sends a (signed) LogoutRequest to Castellan's SLO endpoint;
    Castellan ends the CAS session and answers with a LogoutResponse that Shibboleth accepts."""
    b = ShibBrowser()
    login(sp, cas, b)
    tgc = b.s.cookies.get("CASTGC")
    assert tgc

    mark = sp.log_mark()
    r = b.get(sp.handler + "/Logout", **{"return": sp.logged_out_url})
    if r.status_code == 302:
        loc = r.headers["Location"]
        assert loc.startswith(cas.url("/idp/profile/SAML2/Redirect/SLO?")), f"logout went to {loc}"
        msg = redirect_message(loc)
        lreq, relay = msg.doc, msg.relay_state
        r = b.s.get(loc, allow_redirects=False, timeout=30)
    else:
        form = saml_post_form(r)
        assert r.status_code == 200 and form is not None and form.message_field == "SAMLRequest", (
            f"Shibboleth's logout: {r.status_code} {r.text[:800]}\n{sp.log_tail(30)}")
        assert form.action == cas.url("/idp/profile/SAML2/POST/SLO"), form.action
        lreq, relay = form.doc, form.relay_state
        r = b.post(form)
    assert lreq.tag == f"{{{SAMLP}}}LogoutRequest", lreq.tag

    # Castellan's answer: a LogoutResponse to the SP's SLO endpoint (Redirect binding: the SP has one)
    assert r.status_code in (302, 303), f"Castellan's SLO answered {r.status_code}: {r.text[:800]}"
    loc = r.headers["Location"]
    assert loc.startswith(sp.slo_redirect + "?"), f"LogoutResponse not sent to the SP's Redirect SLO endpoint: {loc}"
    resp = redirect_message(loc)
    assert resp.signed, "the LogoutResponse is not signed (SigAlg/Signature)"
    ld = resp.doc
    assert ld.tag == f"{{{SAMLP}}}LogoutResponse", ld.tag
    assert status_codes(ld)[:1] == [STATUS_SUCCESS], status_codes(ld)
    assert ld.get("InResponseTo") == lreq.get("ID"), (ld.get("InResponseTo"), lreq.get("ID"))
    assert ld.get("Destination") == sp.slo_redirect, ld.get("Destination")
    assert ld.findtext("saml:Issuer", namespaces=NSS) == idp_entity(cas)
    # SAML bindings 3.4.3 / 3.5.3: the RelayState of the request comes back unchanged
    assert relay and resp.relay_state == relay, f"RelayState {resp.relay_state!r}, the request had {relay!r}"

    r = b.s.get(loc, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers.get("Location") == sp.logged_out_url, (
        f"Shibboleth did not accept the LogoutResponse: {r.status_code} {r.headers.get('Location')!r} "
        f"{r.text[:1000]}\n--- shibd.log ---\n{sp.log_since(mark)[-5000:]}")
    assert "logged out of the shibboleth sp" in b.s.get(sp.logged_out_url, timeout=15).text

    # the CAS session is over ...
    cas_login_shows_form(cas, b)
    r = requests.get(cas.url("/login"), params={"service": APP}, cookies={"CASTGC": tgc},
                     allow_redirects=False, timeout=15)
    assert ticket_from(r) is None and parse_login_form(r), "the old CASTGC still gives tickets"
    # ... and so is the SP's: the page needs a new login (the form, not SSO)
    r = first_hop(sp, b)
    w = b.walk(r, login=False)
    assert w.forms_seen == 1 and w.post is None, f"no login form after the logout:\n{w.trace()}"


def test_logout_reaches_the_other_sp_by_soap(sp, sp_enc, cas):
    """Logged in at two SPs in one CAS session; the logout from one makes Castellan send the other
    a back-channel (SOAP) LogoutRequest, which Shibboleth verifies and which ends its session."""
    b = ShibBrowser()
    login(sp, cas, b)
    login(sp_enc, cas, b, expect_form=False)
    assert b.get(sp_enc.protected).status_code == 200
    mark = sp_enc.log_mark()

    r = b.get(sp.handler + "/Logout", **{"return": sp.logged_out_url})
    r, hops = b.follow(r)
    if r.status_code == 200 and (form := saml_post_form(r)) is not None:
        r, hops = b.follow(b.post(form))
    assert r.status_code == 200 and r.url == sp.logged_out_url, (
        "logout did not end on the return page:\n" + "\n".join(f"{h.url} -> {h.status_code}" for h in hops))

    deadline = time.monotonic() + 10
    while True:
        r = b.get(sp_enc.protected)
        if r.status_code == 302:
            break
        assert time.monotonic() < deadline, (
            f"the other SP's session is alive 10 s after the logout ({r.status_code})\n"
            f"--- its shibd.log ---\n{sp_enc.log_since(mark)[-5000:]}\n"
            f"--- its access.log ---\n{(sp_enc.logs / 'access.log').read_text()[-2000:]}")
        time.sleep(0.2)
    # Apache writes the access log line after answering: wait for it.
    deadline = time.monotonic() + 5
    while True:
        access = (sp_enc.logs / "access.log").read_text(errors="replace")
        calls = [line for line in access.splitlines() if "/Shibboleth.sso/SLO/SOAP" in line]
        if calls or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert calls and all('"POST ' in line and '" 200 ' in line for line in calls), (
        f"SOAP logout calls at the other SP: {calls}\n{sp_enc.log_since(mark)[-4000:]}")
    # and it needs a login form again (the CAS session is gone too)
    w = b.walk(r, login=False)
    assert w.forms_seen == 1, w.trace()


def test_shibboleth_refuses_a_tampered_response(sp, cas):
    """The harness is no rubber stamp: Shibboleth checks Castellan's signature against the
    metadata key, so a Response changed on the way (the mail value) gives no session."""
    b = ShibBrowser()
    r = first_hop(sp, b)
    w = b.walk(r)
    assert w.post is not None, w.trace()
    xml = w.post.xml
    assert xml.count(b"casuser@example.org") == 1, xml[:2000]
    forged = base64.b64encode(xml.replace(b"casuser@example.org", b"mallory@example.org")).decode()
    mark = sp.log_mark()
    r = b.post(w.post, SAMLResponse=forged)
    assert not (r.status_code == 302 and r.headers.get("Location") == sp.protected), (
        f"Shibboleth accepted a tampered Response:\n{sp.log_since(mark)[-3000:]}")
    assert b.get(sp.protected).status_code == 302, "a session from a tampered Response"
    log = sp.log_since(mark)
    assert "signature" in log.lower(), f"shibd did not refuse it for its signature:\n{log[-3000:]}"


@pytest.mark.parametrize("tamper", ["unsigned", "bad signature"])
def test_unsigned_or_forged_logout_request_keeps_the_cas_session(sp, cas, tamper):
    """SAML profiles 4.4.4.1: the requester of a LogoutRequest MUST authenticate itself (over the
    front channel: a signature).  Shibboleth's own LogoutRequest with its SigAlg/Signature removed
    (or the signature broken) must not end the CAS session, nor be answered with Success."""
    b = ShibBrowser()
    login(sp, cas, b)
    r = b.get(sp.handler + "/Logout", **{"return": sp.logged_out_url})
    assert r.status_code == 302, f"Shibboleth's logout: {r.status_code} {r.text[:500]}"
    loc = r.headers["Location"]
    assert loc.startswith(cas.url("/idp/profile/SAML2/Redirect/SLO?")), loc
    msg = redirect_message(loc)
    assert msg.signed, "Shibboleth's LogoutRequest is not signed"
    u = urlparse(loc)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    if tamper == "unsigned":
        params = {k: v for k, v in q.items() if k not in ("SigAlg", "Signature")}
    else:
        sig = bytearray(base64.b64decode(q["Signature"]))
        sig[len(sig) // 2] ^= 0x01
        params = dict(q, Signature=base64.b64encode(bytes(sig)).decode())
    rr = b.s.get(u._replace(query="").geturl(), params=params, allow_redirects=False, timeout=30)
    assert rr.status_code < 500, f"{tamper}: {rr.status_code} {rr.text[:300]}"
    # the CAS session is still there ...
    t = b.s.get(cas.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    ended = not (t.status_code in (302, 303) and ticket_from(t))
    # ... and the answer is no Success
    answer = None
    if rr.status_code in (302, 303):
        back = redirect_message(urljoin(rr.url, rr.headers["Location"]))
        answer = status_codes(back.doc) if back is not None else None
    assert not ended and answer != [STATUS_SUCCESS], (
        f"a LogoutRequest ({tamper}) was honoured: CAS session ended={ended}, Castellan answered "
        f"{rr.status_code} with LogoutResponse status {answer}")


def test_logout_response_by_post_binding(sp_enc, cas):
    """An SP without an HTTP-Redirect SingleLogoutService (sp_enc: SOAP and POST) gets the
    LogoutResponse as an HTTP-POST form (enveloped signature) that Shibboleth accepts."""
    b = ShibBrowser()
    login(sp_enc, cas, b)
    mark = sp_enc.log_mark()
    r = b.get(sp_enc.handler + "/Logout", **{"return": sp_enc.logged_out_url})
    assert r.status_code == 302 and r.headers["Location"].startswith(cas.url("/idp/profile/SAML2/Redirect/SLO?")), (
        r.status_code, r.headers.get("Location"))
    lreq = redirect_message(r.headers["Location"])
    r = b.s.get(r.headers["Location"], allow_redirects=False, timeout=30)
    form = saml_post_form(r)
    assert r.status_code == 200 and form is not None and form.message_field == "SAMLResponse", (
        f"expected a LogoutResponse form (the SP has no Redirect SLO endpoint): {r.status_code} "
        f"{r.headers.get('Location')!r} {r.text[:500]}")
    assert form.action == sp_enc.slo_post, form.action
    assert form.relay_state == lreq.relay_state, (form.relay_state, lreq.relay_state)
    ld = form.doc
    assert ld.tag == f"{{{SAMLP}}}LogoutResponse" and status_codes(ld)[:1] == [STATUS_SUCCESS], form.xml[:800]
    assert ld.get("InResponseTo") == lreq.doc.get("ID") and ld.get("Destination") == sp_enc.slo_post, ld.attrib
    check_signed(ld, "LogoutResponse", form.xml)
    r = b.post(form)
    assert r.status_code == 302 and r.headers.get("Location") == sp_enc.logged_out_url, (
        f"Shibboleth did not accept the POSTed LogoutResponse: {r.status_code} {r.headers.get('Location')!r} "
        f"{r.text[:800]}\n--- shibd.log ---\n{sp_enc.log_since(mark)[-4000:]}")
    cas_login_shows_form(cas, b)


def test_force_authn_as_another_user(sp, cas):
    """ForceAuthn and someone else logs in at the renewed form: the assertion is about the one who
    just authenticated (SAML core 3.4.1: the IdP MUST authenticate the presenter directly)."""
    b = ShibBrowser()
    casuser_id = login(sp, cas, b)
    r = first_hop(sp, b, sp.handler + "/Login", forceAuthn="true", target=sp.protected)
    req = check_authn_request_hop(sp, cas, r)
    w = b.walk(r, username="alice", password="Wonderland-42")
    assert w.forms_seen == 1 and w.post is not None, w.trace()
    doc = w.post.doc
    assert status_codes(doc)[:1] == [STATUS_SUCCESS], status_codes(doc)
    assert doc.get("InResponseTo") == req.doc.get("ID")
    a = doc.find("saml:Assertion", NSS)
    mails = [v.text for v in a.findall(f"saml:AttributeStatement/saml:Attribute[@Name='{OID_MAIL}']/saml:AttributeValue", NSS)]
    assert mails == ["alice@example.org"], f"the assertion after alice's login says mail={mails}"
    post_to_acs(sp, b, w.post)
    env = protected_page(sp, b)
    assert env.get("mail") == "alice@example.org" and env.get("cn") == "Alice", env
    assert "memberOf" not in env, env
    assert env.get("REMOTE_USER") and env.get("REMOTE_USER") != casuser_id, (env.get("REMOTE_USER"), casuser_id)
