"""pysaml2 service providers and a SAML-aware browser for the tests of
Castellan's SAML 2.0 Identity Provider (tests/e2e/test_saml_pysaml2.py).

* `ServiceProvider`: one SP with its own RSA key and self-signed certificate
  (made here), its pysaml2 configuration built in code, its metadata XML
  written by pysaml2 (saml2.metadata) into a file that Castellan's
  `protocol = "saml"` service points at, and - once Castellan runs and its
  /idp/metadata has been fetched - a `saml2.client.Saml2Client` trusting that
  IdP metadata.  The SP's endpoints are never served: the tests take the
  SAMLResponse out of the IdP's auto-submit form and hand it to pysaml2's
  parse_authn_request_response themselves.
* `SamlBrowser`: a conftest.Browser (requests session with CASTGC) that sends
  AuthnRequests / LogoutRequests in the HTTP-Redirect or HTTP-POST binding,
  follows Castellan's redirects, fills the CAS login form when one shows up
  and stops at the first answer that leaves Castellan or is no redirect
  (normally the HTML page with the form posting SAMLResponse to the ACS).
* Small XML helpers (status codes, signature elements, xmlsec1 --verify, the
  raw-query check of an HTTP-Redirect binding signature).
"""

from __future__ import annotations

import base64
import datetime
import subprocess
import tempfile
import uuid
import warnings
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlencode, urljoin, urlparse

import requests
from lxml import etree

with warnings.catch_warnings():
    # pysaml2 7.5 still names cryptography's CFB mode where cryptography deprecates it
    warnings.simplefilter("ignore", DeprecationWarning)
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    from saml2.metadata import create_metadata_string
    from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from conftest import PASSWORD, Browser, parse_login_form

XMLSEC1 = "/usr/bin/xmlsec1"

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
NSMAP = {"samlp": SAMLP, "saml": SAML, "md": MD, "ds": DS, "xenc": XENC, "soap": SOAPENV}

NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"

STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
STATUS_RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
STATUS_VERSION_MISMATCH = "urn:oasis:names:tc:SAML:2.0:status:VersionMismatch"
STATUS_NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
TOP_LEVEL_STATUS = (STATUS_SUCCESS, STATUS_REQUESTER, STATUS_RESPONDER, STATUS_VERSION_MISMATCH)

PASSWORD_PROTECTED_TRANSPORT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
ATTRNAME_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
ATTRNAME_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

# the attribute names of the spec's "uri" attribute_name_format
OIDS = {
    "mail": "urn:oid:0.9.2342.19200300.100.1.3",
    "cn": "urn:oid:2.5.4.3",
    "memberOf": "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
    "eduPersonPrincipalName": "urn:oid:1.3.6.1.4.1.5923.1.1.1.6",
    "uid": "urn:oid:0.9.2342.19200300.100.1.1",
    "givenName": "urn:oid:2.5.4.42",
    "sn": "urn:oid:2.5.4.4",
    "displayName": "urn:oid:2.16.840.1.113730.3.1.241",
}


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


def make_keypair(directory: Path, stem: str, common_name: str) -> tuple[Path, Path]:
    """An RSA-2048 key (PKCS#1 PEM) and a self-signed certificate for it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .sign(key, hashes.SHA256())
    )
    key_path = directory / f"{stem}.key"
    cert_path = directory / f"{stem}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def cert_der_b64(pem_path: Path) -> str:
    """The base64 DER of a PEM certificate (as it stands in ds:X509Certificate)."""
    lines = [ln.strip() for ln in Path(pem_path).read_text().splitlines()]
    return "".join(ln for ln in lines if ln and not ln.startswith("-----"))


# --------------------------------------------------------------------------
# the IdP as seen from its metadata
# --------------------------------------------------------------------------


@dataclass
class IdpMetadata:
    xml: bytes
    path: Path
    entity_id: str
    signing_certs: list[str]  # base64 DER
    sso: dict[str, str]  # binding -> location
    slo: dict[str, str]
    name_id_formats: list[str]
    cert_pem: Path | None = None  # the first signing certificate as a PEM file (for xmlsec1)

    @classmethod
    def fetch(cls, metadata_url: str, path: Path) -> "IdpMetadata":
        r = requests.get(metadata_url, timeout=15)
        assert r.status_code == 200, f"GET {metadata_url} -> {r.status_code}: {r.text[:500]}"
        path.write_bytes(r.content)
        root = parse_xml(r.content)
        assert root.tag == f"{{{MD}}}EntityDescriptor", f"IdP metadata root is {root.tag}"
        idp = root.find("md:IDPSSODescriptor", NSMAP)
        assert idp is not None, "no IDPSSODescriptor in the IdP metadata"
        certs = []
        for kd in idp.findall("md:KeyDescriptor", NSMAP):
            if kd.get("use") in (None, "signing"):
                for c in kd.iterfind(".//ds:X509Certificate", NSMAP):
                    certs.append("".join((c.text or "").split()))
        sso = {e.get("Binding"): e.get("Location") for e in idp.findall("md:SingleSignOnService", NSMAP)}
        slo = {e.get("Binding"): e.get("Location") for e in idp.findall("md:SingleLogoutService", NSMAP)}
        fmts = [(e.text or "").strip() for e in idp.findall("md:NameIDFormat", NSMAP)]
        md = cls(r.content, path, root.get("entityID"), certs, sso, slo, fmts)
        if certs:
            md.cert_pem = md.cert_pem_file(path.parent)
        return md

    def cert_pem_file(self, directory: Path) -> Path:
        """The (first) signing certificate as a PEM file (for xmlsec1)."""
        assert self.signing_certs, "the IdP metadata has no signing certificate"
        body = self.signing_certs[0]
        pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) \
              + "\n-----END CERTIFICATE-----\n"
        p = directory / f"{self.path.stem}-signing.pem"
        p.write_text(pem)
        return p

    def public_key(self):
        from cryptography import x509

        return x509.load_der_x509_certificate(base64.b64decode(self.signing_certs[0])).public_key()


# --------------------------------------------------------------------------
# service providers
# --------------------------------------------------------------------------


class ServiceProvider:
    """A pysaml2 SP registered in Castellan as a `protocol = "saml"` service.

    Endpoints live on https://<name>.sp.example.test/ (never contacted):
      ACS (HTTP-POST)            /saml/acs        index 0
      second ACS (HTTP-POST)     /saml/acs2       index 1
      SLO HTTP-Redirect          /saml/slo/redirect   (when "redirect" in slo)
      SLO HTTP-POST              /saml/slo/post       (when "post" in slo)
      SLO SOAP                   `soap_slo_url`       (when given)
    """

    def __init__(self, workdir: Path, name: str, *, service: dict | None = None,
                 authn_requests_signed: bool = False, want_assertions_signed: bool = True,
                 want_response_signed: bool = False, encryption: bool = False,
                 name_id_format: str | None = None, slo: tuple[str, ...] = ("redirect", "post"),
                 soap_slo_url: str | None = None, registered: bool = True) -> None:
        self.name = name
        self.dir = Path(workdir) / f"sp-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.base = f"https://{name}.sp.example.test"
        self.entity_id = f"{self.base}/saml/metadata"
        self.acs = f"{self.base}/saml/acs"
        self.acs2 = f"{self.base}/saml/acs2"
        self.slo_redirect = f"{self.base}/saml/slo/redirect" if "redirect" in slo else None
        self.slo_post = f"{self.base}/saml/slo/post" if "post" in slo else None
        self.soap_slo_url = soap_slo_url
        self.authn_requests_signed = authn_requests_signed
        self.want_assertions_signed = want_assertions_signed
        self.want_response_signed = want_response_signed
        self.encryption = encryption
        self.name_id_format = name_id_format
        self.registered = registered
        self.service_extra = dict(service or {})
        self.key_file, self.cert_file = make_keypair(self.dir, "signing", f"{name} SP signing")
        if encryption:
            self.enc_key_file, self.enc_cert_file = make_keypair(self.dir, "encryption", f"{name} SP encryption")
        else:
            self.enc_key_file = self.enc_cert_file = None
        self.metadata_path = self.dir / "metadata.xml"
        self.client: Saml2Client | None = None  # allow_unsolicited = False: InResponseTo is checked
        self.client_unsolicited: Saml2Client | None = None  # allow_unsolicited = True (IdP-initiated SSO)
        self.idp: IdpMetadata | None = None

    def impersonate(self, other: "ServiceProvider") -> "ServiceProvider":
        """Take `other`'s entityID and endpoints (but keep our own key): an
        impostor whose signatures the IdP must not accept for `other`."""
        for attr in ("base", "entity_id", "acs", "acs2", "slo_redirect", "slo_post", "soap_slo_url"):
            setattr(self, attr, getattr(other, attr))
        self.registered = False
        return self

    # -- configuration --------------------------------------------------
    def endpoints(self) -> dict:
        slo = []
        if self.slo_redirect:
            slo.append((self.slo_redirect, BINDING_HTTP_REDIRECT))
        if self.slo_post:
            slo.append((self.slo_post, BINDING_HTTP_POST))
        if self.soap_slo_url:
            slo.append((self.soap_slo_url, BINDING_SOAP))
        ep = {"assertion_consumer_service": [(self.acs, BINDING_HTTP_POST, 0), (self.acs2, BINDING_HTTP_POST, 1)]}
        if slo:
            ep["single_logout_service"] = slo
        return ep

    def config_dict(self, idp_metadata: Path | None = None, allow_unsolicited: bool = False) -> dict:
        sp: dict = {
            "name": f"e2e SP {self.name}",
            "endpoints": self.endpoints(),
            "allow_unsolicited": allow_unsolicited,
            "authn_requests_signed": self.authn_requests_signed,
            "want_assertions_signed": self.want_assertions_signed,
            "want_response_signed": self.want_response_signed,
            "logout_requests_signed": True,
            "logout_responses_signed": True,
        }
        if self.name_id_format:
            sp["name_id_format"] = [self.name_id_format]
            sp["name_id_policy_format"] = self.name_id_format
            sp["name_id_format_allow_create"] = self.name_id_format != NAMEID_TRANSIENT
        preferred = []
        if self.slo_redirect:
            preferred.append(BINDING_HTTP_REDIRECT)
        if self.slo_post:
            preferred.append(BINDING_HTTP_POST)
        if preferred:
            sp["preferred_binding"] = {"single_logout_service": preferred}
        conf: dict = {
            "entityid": self.entity_id,
            "xmlsec_binary": XMLSEC1,
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "allow_unknown_attributes": True,
            "accepted_time_diff": 5,
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
            "delete_tmpfiles": True,
            "service": {"sp": sp},
        }
        if self.encryption:
            conf["encryption_keypairs"] = [{"key_file": str(self.enc_key_file), "cert_file": str(self.enc_cert_file)}]
        if idp_metadata is not None:
            conf["metadata"] = {"local": [str(idp_metadata)]}
        return conf

    def write_metadata(self) -> Path:
        """The SP's metadata (pysaml2's EntityDescriptor) in self.metadata_path."""
        conf = SPConfig().load(self.config_dict())
        text = create_metadata_string(None, config=conf)
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.metadata_path.write_bytes(text)
        return self.metadata_path

    def service(self) -> dict:
        """The Castellan [[services]] entry registering this SP."""
        if not self.metadata_path.exists():
            self.write_metadata()
        svc = {"name": self.name, "protocol": "saml", "metadata": str(self.metadata_path)}
        if self.name_id_format:
            svc["name_id_format"] = self.name_id_format
        svc.update(self.service_extra)
        return svc

    def attach(self, idp: IdpMetadata) -> Saml2Client:
        """Build the Saml2Client, trusting the IdP's (fetched) metadata."""
        if not self.metadata_path.exists():
            self.write_metadata()
        self.idp = idp
        self.client = Saml2Client(config=SPConfig().load(self.config_dict(idp.path)))
        self.client_unsolicited = Saml2Client(config=SPConfig().load(self.config_dict(idp.path, True)))
        return self.client

    # -- messages -------------------------------------------------------
    def authn_request(self, *, binding: str = BINDING_HTTP_REDIRECT, sign: bool | None = None,
                      issue_instant: str | None = None, destination: str | None = None,
                      **kwargs) -> tuple[str, str]:
        """(request ID, AuthnRequest XML) addressed to the IdP's SSO endpoint of
        `binding`; signed (enveloped) when `sign` (POST binding only: the
        Redirect binding signs the query string instead).  kwargs go to
        pysaml2's create_authn_request (force_authn="true", is_passive="true",
        assertion_consumer_service_url=..., message_id=...).  `issue_instant`
        overrides IssueInstant (unsigned requests only), `destination` the
        Destination attribute (default: the IdP's endpoint for `binding`)."""
        dest = destination or self.idp.sso[binding]
        if sign is None:
            sign = self.authn_requests_signed
        xml_sign = bool(sign) and binding != BINDING_HTTP_REDIRECT
        assert not (xml_sign and issue_instant), "cannot change IssueInstant of an enveloped-signed request"
        reqid, req = self.client.create_authn_request(dest, binding=BINDING_HTTP_POST, sign=xml_sign,
                                                      sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256, **kwargs)
        if issue_instant is not None:
            req.issue_instant = issue_instant
        return reqid, str(req)

    def logout_request(self, name_id, binding: str) -> tuple[str, str, str]:
        """pysaml2's LogoutRequest for the session it holds for `name_id`
        (do_logout: NameID and SessionIndex from its identity cache, signed -
        enveloped for POST, over the query for Redirect): (request ID,
        URL, RelayState-or-"") for Redirect, (request ID, XML, RelayState) for POST."""
        responses = self.client.do_logout(name_id, [self.idp.entity_id], reason="", expire=None, sign=True,
                                          expected_binding=binding, sign_alg=SIG_RSA_SHA256,
                                          digest_alg=DIGEST_SHA256)
        got_binding, info = responses[self.idp.entity_id]
        assert got_binding == binding, (got_binding, binding)
        if binding == BINDING_HTTP_REDIRECT:
            url = dict(info["headers"])["Location"]
            q = parse_qs(urlparse(url).query)
            reqid = parse_xml(inflate(q["SAMLRequest"][0])).get("ID")
            return reqid, url, q.get("RelayState", [""])[0]
        p = _Forms()
        p.feed(info["data"])
        fields = p.forms[0]["inputs"]
        xml = base64.b64decode(fields["SAMLRequest"]).decode("utf-8")
        return parse_xml(xml).get("ID"), xml, fields.get("RelayState", "")

    def redirect_url(self, xml: str, relay_state: str | None, *, sign: bool | None = None,
                     destination: str | None = None, request: bool = True) -> str:
        """The HTTP-Redirect binding URL for a message (deflate, base64, optional
        SigAlg/Signature over the query string, done by pysaml2)."""
        if sign is None:
            sign = self.authn_requests_signed
        dest = destination or self.idp.sso[BINDING_HTTP_REDIRECT]
        info = self.client.apply_binding(BINDING_HTTP_REDIRECT, xml, dest, relay_state or "",
                                         response=not request, sign=bool(sign), sigalg=SIG_RSA_SHA256)
        return dict(info["headers"])["Location"]

    def accept(self, b64_response: str, request_id: str | None, *, unsolicited: bool = False):
        """pysaml2's verdict on a SAMLResponse from the HTTP-POST binding: the
        AuthnResponse (signature, audience, Destination, InResponseTo, times
        checked) or an exception.  Only an IdP-initiated response (no
        request_id) goes to the client that allows unsolicited responses."""
        if unsolicited:
            assert request_id is None
            return self.client_unsolicited.parse_authn_request_response(b64_response, BINDING_HTTP_POST)
        outstanding = {request_id: "/"} if request_id else {}
        return self.client.parse_authn_request_response(b64_response, BINDING_HTTP_POST, outstanding=outstanding)


# --------------------------------------------------------------------------
# HTML auto-submit forms
# --------------------------------------------------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._cur = {"attrs": a, "inputs": {}, "types": {}, "submit": False}
            self.forms.append(self._cur)
        elif self._cur is not None and tag == "input":
            typ = a.get("type", "text").lower()
            if a.get("name"):
                self._cur["inputs"][a["name"]] = a.get("value", "")
                self._cur["types"][a["name"]] = typ
            if typ in ("submit", "image"):
                self._cur["submit"] = True
        elif self._cur is not None and tag == "button":
            if a.get("type", "submit").lower() == "submit":
                self._cur["submit"] = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


@dataclass
class PostForm:
    """A form posting a SAML message (SAMLResponse or SAMLRequest)."""

    action: str
    method: str
    fields: dict[str, str]
    types: dict[str, str]
    has_submit: bool

    @property
    def saml_response(self) -> str | None:
        return self.fields.get("SAMLResponse")

    @property
    def relay_state(self) -> str | None:
        return self.fields.get("RelayState")

    def xml(self, name: str = "SAMLResponse") -> bytes:
        return base64.b64decode(self.fields[name])

    def tree(self, name: str = "SAMLResponse"):
        return parse_xml(self.xml(name))


def saml_forms(resp: requests.Response) -> list[PostForm]:
    """The forms of an HTML page that carry SAMLResponse or SAMLRequest."""
    p = _Forms()
    p.feed(resp.text)
    out = []
    for f in p.forms:
        if "SAMLResponse" in f["inputs"] or "SAMLRequest" in f["inputs"]:
            action = f["attrs"].get("action", "")
            out.append(PostForm(urljoin(resp.url, action) if action else "", (f["attrs"].get("method") or "get").lower(),
                                dict(f["inputs"]), dict(f["types"]), f["submit"]))
    return out


# --------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------


@dataclass
class Flow:
    """Where a front-channel SAML exchange ended."""

    hops: list  # every response, in order
    forms_seen: int  # CAS login forms shown
    final: requests.Response
    location: str | None  # absolute Location of the final answer when it left Castellan
    request_id: str | None = None
    relay_state: str | None = None
    sent_xml: str | None = None

    @property
    def post_forms(self) -> list[PostForm]:
        if self.final.status_code != 200:
            return []
        return saml_forms(self.final)

    @property
    def form(self) -> PostForm:
        forms = self.post_forms
        assert len(forms) == 1, f"expected one SAML auto-submit form, found {len(forms)}:\n{self.trace()}"
        return forms[0]

    def trace(self) -> str:
        out = []
        for r in self.hops:
            loc = r.headers.get("Location")
            out.append(f"{r.request.method} {r.url[:300]} -> {r.status_code}" + (f" Location: {loc[:300]}" if loc else ""))
        if self.final is not None and not self.location:
            out.append(f"final body [{self.final.status_code}]: {self.final.text[:1500]!r}")
        return "\n".join(out)


class SamlBrowser(Browser):
    """conftest.Browser plus the SAML front channel."""

    def walk(self, r: requests.Response, *, login: bool = True, username: str = "casuser",
             password: str = PASSWORD) -> Flow:
        hops = [r]
        forms = 0
        prefixes = (self.cas.base, self.cas.public_url)
        for _ in range(25):
            if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                loc = urljoin(r.url, r.headers["Location"])
                if not loc.startswith(prefixes):
                    return Flow(hops, forms, r, loc)
                if loc.startswith(self.cas.public_url) and self.cas.public_url != self.cas.base:
                    loc = self.cas.base + loc[len(self.cas.public_url):]
                r = self.s.get(loc, allow_redirects=False, timeout=15)
            elif r.status_code == 200 and parse_login_form(r) is not None:
                forms += 1
                if not login or forms > 1:
                    return Flow(hops, forms, r, None)
                r = self.submit(r, username, password)
            else:
                return Flow(hops, forms, r, None)
            hops.append(r)
        raise AssertionError("more than 25 hops:\n" + Flow(hops, forms, r, None).trace())

    def send_redirect(self, url: str, **kw) -> Flow:
        r = self.s.get(url, allow_redirects=False, timeout=30)
        return self.walk(r, **kw)

    def send_post(self, url: str, fields: dict, **kw) -> Flow:
        r = self.s.post(url, data=fields, allow_redirects=False, timeout=30)
        return self.walk(r, **kw)

    def sso(self, sp: ServiceProvider, *, binding: str = BINDING_HTTP_REDIRECT, relay_state: str | None = "rs-1",
            sign: bool | None = None, login: bool = True, username: str = "casuser", password: str = PASSWORD,
            **authn_kwargs) -> Flow:
        """Send an AuthnRequest of `sp` to the IdP and walk the answer."""
        reqid, xml = sp.authn_request(binding=binding, sign=sign, **authn_kwargs)
        flow = self.send_authn(sp, xml, binding=binding, relay_state=relay_state, sign=sign, login=login,
                               username=username, password=password)
        flow.request_id = reqid
        return flow

    def send_authn(self, sp: ServiceProvider, xml: str | bytes, *, binding: str = BINDING_HTTP_REDIRECT,
                   relay_state: str | None = "rs-1", sign: bool | None = None, **kw) -> Flow:
        """Send a given AuthnRequest XML (e.g. a tampered one) in `binding`;
        Redirect: deflated, signed over the query string when `sign` (default:
        the SP's AuthnRequestsSigned).  POST: base64 of the XML as given."""
        if isinstance(xml, bytes):
            xml = xml.decode("utf-8")
        if binding == BINDING_HTTP_REDIRECT:
            flow = self.send_redirect(sp.redirect_url(xml, relay_state, sign=sign), **kw)
        else:
            fields = {"SAMLRequest": base64.b64encode(xml.encode("utf-8")).decode("ascii")}
            if relay_state is not None:
                fields["RelayState"] = relay_state
            flow = self.send_post(sp.idp.sso[BINDING_HTTP_POST], fields, **kw)
        flow.relay_state = relay_state
        flow.sent_xml = xml
        return flow


# --------------------------------------------------------------------------
# XML
# --------------------------------------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_xml(data: bytes | str):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return etree.fromstring(data, _PARSER)


def status_codes(root) -> list[str]:
    """The nested StatusCode values of a Response, top level first."""
    out = []
    node = root.find("samlp:Status", NSMAP)
    node = node.find("samlp:StatusCode", NSMAP) if node is not None else None
    while node is not None:
        out.append(node.get("Value"))
        node = node.find("samlp:StatusCode", NSMAP)
    return out


def signature_of(elem):
    """The ds:Signature that is a direct child of `elem` (None if none)."""
    return elem.find("ds:Signature", NSMAP)


def signature_summary(sig) -> dict:
    si = sig.find("ds:SignedInfo", NSMAP)
    refs = si.findall("ds:Reference", NSMAP)
    return {
        "c14n": si.find("ds:CanonicalizationMethod", NSMAP).get("Algorithm"),
        "sig_alg": si.find("ds:SignatureMethod", NSMAP).get("Algorithm"),
        "refs": [r.get("URI") for r in refs],
        "transforms": [[t.get("Algorithm") for t in r.findall("ds:Transforms/ds:Transform", NSMAP)] for r in refs],
        "digest": [r.find("ds:DigestMethod", NSMAP).get("Algorithm") for r in refs],
    }


def xmlsec_verify(xml: bytes, cert_pem: Path, node_xpath: str | None = None) -> tuple[bool, str]:
    """xmlsec1 --verify of the signature at `node_xpath` (default: the first
    ds:Signature in document order) with the IdP's certificate; SAML's ID
    attributes declared, only same-document references allowed."""
    with tempfile.NamedTemporaryFile(suffix=".xml", delete=False) as f:
        f.write(xml)
        path = f.name
    cmd = [XMLSEC1, "--verify", "--pubkey-cert-pem", str(cert_pem),
           "--enabled-reference-uris", "same-doc",
           "--id-attr:ID", f"{SAMLP}:Response",
           "--id-attr:ID", f"{SAMLP}:LogoutResponse",
           "--id-attr:ID", f"{SAMLP}:LogoutRequest",
           "--id-attr:ID", f"{SAML}:Assertion"]
    if node_xpath:
        cmd += ["--node-xpath", node_xpath]
    cmd.append(path)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    finally:
        Path(path).unlink(missing_ok=True)
    return p.returncode == 0 and "OK" in (p.stdout + p.stderr), p.stdout + p.stderr


def verify_redirect_signature(location: str, public_key, message_param: str = "SAMLResponse") -> tuple[bool, dict]:
    """Check an HTTP-Redirect binding signature (SAML bindings §3.4.4.1) over
    the *original* URL-encoded query values: "SAMLx=..&RelayState=..&SigAlg=..".
    Returns (verified, decoded parameters)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    query = urlparse(location).query
    raw: dict[str, str] = {}
    for part in query.split("&"):
        k, _, v = part.partition("=")
        raw[unquote_plus(k)] = v
    params = {k: unquote_plus(v) for k, v in raw.items()}
    if "Signature" not in raw or "SigAlg" not in raw or message_param not in raw:
        return False, params
    signed = f"{message_param}={raw[message_param]}"
    if "RelayState" in raw:
        signed += f"&RelayState={raw['RelayState']}"
    signed += f"&SigAlg={raw['SigAlg']}"
    hashes_by_alg = {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512(),
    }
    h = hashes_by_alg.get(params["SigAlg"])
    if h is None:
        return False, params
    try:
        public_key.verify(base64.b64decode(params["Signature"]), signed.encode("ascii"), padding.PKCS1v15(), h)
    except (InvalidSignature, ValueError):
        return False, params
    return True, params


def inflate(b64: str) -> bytes:
    return zlib.decompress(base64.b64decode(b64), -15)


def deflate_b64(data: bytes) -> str:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(c.compress(data) + c.flush()).decode("ascii")


def redirect_query(dest: str, param: str, xml: bytes, relay_state: str | None = None) -> str:
    """An unsigned HTTP-Redirect binding URL, built by hand."""
    q = {param: deflate_b64(xml)}
    if relay_state is not None:
        q["RelayState"] = relay_state
    return dest + ("&" if "?" in dest else "?") + urlencode(q)


def utc(ts: str) -> datetime.datetime:
    """An xs:dateTime (UTC, optional fraction) as an aware datetime."""
    ts = ts.strip()
    assert ts.endswith("Z"), f"time {ts!r} is not in UTC ('Z')"
    base, _, frac = ts[:-1].partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    if frac:
        dt += datetime.timedelta(microseconds=int((frac + "000000")[:6]))
    return dt


def new_id() -> str:
    return "_" + uuid.uuid4().hex
