"""End to end: a pysaml2 service provider signs in at Castellan's SAML IdP,
and Castellan hands the login to an upstream CAS server (delegated
authentication).

    pysaml2 SP --AuthnRequest (HTTP-Redirect)--> downstream /idp/profile/SAML2/Redirect/SSO
      -> downstream /login?service={downstream}/idp/callback?sp=..&req=..   (login page with
         a link login?client_name=campus&service=...)
      -> downstream /login?client_name=campus&service=...                    (302 to the upstream)
      -> upstream /login?service={downstream}/delegated/campus/callback?state=..   (CAS form)
      -> POST casuser / Mellon at the upstream -> 302 ...callback?state=..&ticket=ST-..
      -> downstream /delegated/campus/callback (validates at the upstream, maps the principal
         "campus:{id}", opens the SSO session) -> 302 to the IdP callback with a downstream ST
      -> downstream /idp/callback -> auto-submit page with the SAMLResponse
      -> pysaml2's parse_authn_request_response accepts it.

The downstream is a Castellan with both a [saml] table and [[upstreams]];
the upstream is a plain Castellan (CAS) with a registration for the
downstream's delegation callback.  A second AuthnRequest then uses the
downstream's SSO session: no login form, no trip to the upstream.
"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from conftest import PASSWORD, Castellan, free_port, parse_login_form, ticket_from, toml_table
from saml_sp import (
    BINDING_HTTP_REDIRECT,
    NAMEID_UNSPECIFIED,
    Flow,
    IdpMetadata,
    SamlBrowser,
    ServiceProvider,
    make_keypair,
)
from test_saml_pysaml2 import SAML_CONFIG, SamlCastellan, check_success, name_id, saml_attributes


class DelegatingSamlCastellan(SamlCastellan):
    """A Castellan with a [saml] table and [[upstreams]] tables."""

    def __init__(self, *args, upstreams: list[dict], **kw) -> None:
        super().__init__(*args, **kw)
        self.upstreams = upstreams

    def config_text(self) -> str:
        text = super().config_text()
        for u in self.upstreams:
            text += toml_table("upstreams", u, array=True)
        return text


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("deleg-saml-sp")
    sp = ServiceProvider(work, "sp-campus", service={"release": ["mail", "displayName"]})
    sp.write_metadata()
    key, cert = make_keypair(work / "idp-key", "idp", "Castellan e2e delegating SAML IdP")

    down_port = free_port()
    down_base = f"http://127.0.0.1:{down_port}/cas"
    up = Castellan(tmp_path_factory.mktemp("deleg-saml-sp-upstream"), label="upstream-cas", services=[{
        "name": "downstream",
        "protocol": "cas",
        "service": rf"^http://127\.0\.0\.1:{down_port}/cas/delegated/campus/callback\?state=[A-Za-z0-9-]+$",
        "release": ["mail", "cn", "memberOf"],
    }])
    down = DelegatingSamlCastellan(
        tmp_path_factory.mktemp("deleg-saml-sp-downstream"), label="downstream-saml-idp",
        services=[sp.service()],
        saml={**SAML_CONFIG, "signing_key": str(key), "signing_certificate": str(cert)},
        upstreams=[{
            "name": "campus",
            "protocol": "cas",
            "url": up.base,
            "display_name": "Campus account",
            "principal": "campus:{id}",
            "rename": {"cn": "displayName"},
        }])
    down.port = down_port
    down.base = down_base
    down.public_url = down_base
    up.start()
    try:
        down.start()
    except Exception:
        up.stop()
        raise
    try:
        md = IdpMetadata.fetch(down.url("/idp/metadata"), work / "idp-metadata.xml")
        sp.attach(md)
        yield up, down, sp, md
    finally:
        down.stop()
        up.stop()


def test_pysaml2_sp_login_delegated_to_upstream_cas_then_sso(setup):
    up, down, sp, md = setup
    b = SamlBrowser(down)
    s = b.s
    relay = "rs-deleg"

    # 1. the SP's AuthnRequest (HTTP-Redirect) at the downstream IdP -> its /login
    reqid, xml = sp.authn_request(binding=BINDING_HTTP_REDIRECT)
    first = s.get(sp.redirect_url(xml, relay), allow_redirects=False, timeout=15)
    assert first.status_code == 302, f"SSO: {first.status_code} {first.text[:500]}"
    login_url = urljoin(first.url, first.headers["Location"])
    assert login_url.startswith(down.url("/login?")), login_url
    callback_service = parse_qs(urlparse(login_url).query)["service"][0]
    assert callback_service.startswith(down.url("/idp/callback?sp=")), callback_service

    # 2. the login page offers the upstream, keeping the service
    page = s.get(login_url, allow_redirects=False, timeout=15)
    assert page.status_code == 200 and parse_login_form(page) is not None, f"{page.status_code} {page.text[:500]}"
    links = [unescape(h) for h in re.findall(r'href="(login\?client_name=[^"]+)"', page.text)]
    campus = [l for l in links if "client_name=campus" in l and "service=" in l]
    assert campus, f"no campus link on the login page: {links}"
    q = parse_qs(urlparse(campus[0]).query)
    assert q["service"] == [callback_service], (q, callback_service)

    # 3. follow it: off to the upstream's /login
    r = s.get(urljoin(page.url, campus[0]), allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"/login?client_name=campus: {r.status_code} {r.text[:500]}"
    up_login = r.headers["Location"]
    assert up_login.startswith(up.url("/login?")), up_login
    up_service = parse_qs(urlparse(up_login).query)["service"][0]
    assert up_service.startswith(down.url("/delegated/campus/callback?state=")), up_service

    # 4. the upstream's form, casuser / Mellon
    up_page = s.get(up_login, allow_redirects=False, timeout=15)
    form = parse_login_form(up_page)
    assert up_page.status_code == 200 and form, f"upstream login page: {up_page.status_code} {up_page.text[:500]}"
    r = s.post(form.action if form.action.startswith("http") else urljoin(up_page.url, form.action),
               data=dict(form.fields, username="casuser", password=PASSWORD), allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), f"upstream login: {r.status_code} {r.text[:500]}"
    back = r.headers["Location"]
    assert back.startswith(down.url("/delegated/campus/callback?state=")), back
    assert parse_qs(urlparse(back).query)["state"] == parse_qs(urlparse(up_service).query)["state"]

    # 5. the delegation callback -> the IdP callback -> the auto-submit page
    cb = s.get(back, allow_redirects=False, timeout=15)
    assert cb.status_code == 302, f"delegation callback: {cb.status_code} {cb.text[:500]}\n{down.log_tail(40)}"
    assert cb.headers["Location"].startswith(callback_service + "&ticket="), cb.headers["Location"]
    flow = b.walk(cb, login=False)
    flow.hops.insert(0, first)
    flow.request_id = reqid
    flow.relay_state = relay
    assert flow.forms_seen == 0, flow.trace()

    # 6. pysaml2 takes it; the subject came through the upstream
    resp, root, assertion = check_success(flow, sp, md)
    value, fmt = name_id(assertion)
    assert (value, fmt) == ("campus:casuser", NAMEID_UNSPECIFIED), (value, fmt)
    assert resp.name_id.text.strip() == "campus:casuser", resp.name_id
    assert resp.ava.get("mail") == ["casuser@example.org"], resp.ava
    assert resp.ava.get("displayName") == ["CAS User"], resp.ava  # the upstream's cn, renamed
    attrs = saml_attributes(assertion)
    assert not any(a["friendly"] in ("memberOf", "cn") for a in attrs.values()), attrs  # not released to this SP

    # 7. SSO at the downstream: a second AuthnRequest needs no form and no upstream
    again = b.sso(sp, relay_state="rs-again", login=False)
    assert again.forms_seen == 0, again.trace()
    assert all(h.url.startswith(down.base) for h in again.hops), again.trace()
    resp2, _, assertion2 = check_success(again, sp, md)
    assert name_id(assertion2) == ("campus:casuser", NAMEID_UNSPECIFIED), name_id(assertion2)
    assert resp2.ava.get("mail") == ["casuser@example.org"], resp2.ava
    assert assertion2.get("ID") != assertion.get("ID")
