"""Delegated authentication to an upstream SAML 2.0 IdP: a second
Castellan's IdP, with the downstream Castellan as its service provider
(SP metadata at /delegated/NAME/metadata, Response at /delegated/NAME/acs)."""

from __future__ import annotations

import base64
import re
import zlib
from html import unescape
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import pytest
import requests
from cas import CASClient

from conftest import APP, PASSWORD, Castellan, free_port, parse_login_form, ticket_from, toml_table


class Downstream(Castellan):
    def __init__(self, *args, upstreams: list[dict], **kw) -> None:
        super().__init__(*args, **kw)
        self.upstreams = upstreams

    def config_text(self) -> str:
        text = super().config_text()
        for u in self.upstreams:
            text += toml_table("upstreams", u, array=True)
        return text


def form_fields(html: str) -> tuple[str, dict]:
    action = unescape(re.search(r'<form[^>]*action="([^"]+)"', html).group(1))
    fields = {unescape(n): unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', html)}
    return action, fields


OTHER_SP = "https://other-sp.example.test/metadata"


@pytest.fixture(scope="module")
def pair(tmp_path_factory, services):
    work = tmp_path_factory.mktemp("deleg-saml")
    up = Castellan(work / "up", label="upstream-idp", services=[])
    up.start()
    idp_md = work / "idp-metadata.xml"
    idp_md.write_text(requests.get(up.url("/idp/metadata"), timeout=15).text)
    down = Downstream(work / "down", label="downstream-sp", services=services, upstreams=[{
        "name": "federation", "protocol": "saml", "metadata": str(idp_md),
        "display_name": "Federation", "principal": "fed:{id}"}])
    down.start()
    sp_md = work / "sp-metadata.xml"
    sp_md.write_text(requests.get(down.url("/delegated/federation/metadata"), timeout=15).text)
    acs = down.url("/delegated/federation/acs")
    # A second SP at the upstream whose consumer service is the downstream's
    # ACS: a genuinely signed Response for another audience.
    other_md = work / "other-sp.xml"
    other_md.write_text(
        f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{OTHER_SP}">'
        '<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f'<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0"/>'
        '</md:SPSSODescriptor></md:EntityDescriptor>')
    up.stop()
    up.services = [
        {"name": "downstream", "protocol": "saml", "metadata": str(sp_md), "release": ["mail", "cn"]},
        {"name": "other", "protocol": "saml", "metadata": str(other_md), "release": ["mail"]},
    ]
    up.start()  # same data_dir: same IdP key
    yield up, down
    down.stop()
    up.stop()


def to_acs(s: requests.Session, up: Castellan, down: Castellan) -> tuple[str, dict, str]:
    """Downstream login through the upstream IdP, up to the auto-submit page:
    (ACS URL, form fields, the downstream's AuthnRequest ID)."""
    r = s.get(down.url("/login"), params={"service": APP, "client_name": "federation"},
              allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(up.url("/idp/profile/SAML2/Redirect/SSO"))
    q = parse_qs(urlparse(r.headers["Location"]).query)
    assert "Signature" in q and q["SigAlg"] == ["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"]
    request_xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    request_id = re.search(r'ID="([^"]+)"', request_xml).group(1)
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"upstream SSO: {r.status_code} {r.text[:300]}"
    page = s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=15)
    if parse_login_form(page):
        form = parse_login_form(page)
        r = s.post(form.action if form.action.startswith("http") else urljoin(page.url, form.action),
                   data=dict(form.fields, username="casuser", password=PASSWORD), allow_redirects=False, timeout=15)
        page = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert page.status_code == 200, page.text[:300]
    action, fields = form_fields(page.text)
    assert action == down.url("/delegated/federation/acs"), action
    return action, fields, request_id


def test_delegated_saml_login_gives_a_cas_ticket(pair):
    up, down = pair
    s = requests.Session()
    action, fields, _ = to_acs(s, up, down)
    r = s.post(action, data=fields, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(APP), (r.status_code, r.text[:500])
    user, attributes, _ = CASClient(version=3, server_url=down.base + "/", service_url=APP).verify_ticket(ticket_from(r))
    assert user == "fed:casuser", (user, attributes)
    assert attributes.get("mail") == "casuser@example.org", attributes
    # The same Response again: the state is spent.
    r = s.post(action, data=fields, allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers


def tamper(fields: dict, fn) -> dict:
    xml = base64.b64decode(fields["SAMLResponse"]).decode()
    return {**fields, "SAMLResponse": base64.b64encode(fn(xml).encode()).decode()}


@pytest.mark.parametrize("kind", ["tampered", "unsigned", "comment-in-nameid"])
def test_bad_responses_are_refused(pair, kind):
    up, down = pair
    s = requests.Session()
    action, fields, _ = to_acs(s, up, down)
    if kind == "tampered":
        bad = tamper(fields, lambda x: x.replace(">casuser<", ">admin<"))
    elif kind == "unsigned":
        bad = tamper(fields, lambda x: re.sub(r"<ds:Signature.*?</ds:Signature>", "", x, flags=re.S))
    else:
        bad = tamper(fields, lambda x: x.replace(">casuser<", ">casuser<!---->.evil<"))
    r = s.post(action, data=bad, allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (kind, r.status_code, r.text[:300])
    assert "Back to sign-in" in r.text


def test_a_signed_response_for_another_audience_is_refused(pair):
    up, down = pair
    s = requests.Session()
    # Start a downstream login, then have the upstream answer the *other* SP
    # with the same request ID and the downstream's ACS.
    r = s.get(down.url("/login"), params={"service": APP, "client_name": "federation"},
              allow_redirects=False, timeout=15)
    q = parse_qs(urlparse(r.headers["Location"]).query)
    request_xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    request_id = re.search(r'ID="([^"]+)"', request_xml).group(1)
    forged = request_xml.replace(
        re.search(r"<saml:Issuer>[^<]+</saml:Issuer>", request_xml).group(0),
        f"<saml:Issuer>{OTHER_SP}</saml:Issuer>")
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = c.compress(forged.encode()) + c.flush()
    url = up.url("/idp/profile/SAML2/Redirect/SSO") + "?" + urlencode(
        {"SAMLRequest": base64.b64encode(deflated).decode(), "RelayState": q["RelayState"][0]})
    r = s.get(url, allow_redirects=False, timeout=15)
    page = s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    r = s.post(form.action if form.action.startswith("http") else urljoin(page.url, form.action),
               data=dict(form.fields, username="casuser", password=PASSWORD), allow_redirects=False, timeout=15)
    page = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    action, fields = form_fields(page.text)
    xml = base64.b64decode(fields["SAMLResponse"]).decode()
    assert f"<saml:Audience>{OTHER_SP}</saml:Audience>" in xml and f'InResponseTo="{request_id}"' in xml
    r = s.post(action, data=fields, allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "another audience" in r.text, (r.status_code, r.text[:300])


def test_sp_metadata_is_published(pair):
    _, down = pair
    r = requests.get(down.url("/delegated/federation/metadata"), timeout=15)
    assert r.status_code == 200 and "SPSSODescriptor" in r.text and 'AuthnRequestsSigned="true"' in r.text
    assert down.url("/delegated/federation/acs") in r.text
    assert requests.get(down.url("/delegated/nope/metadata"), timeout=15).status_code == 404
