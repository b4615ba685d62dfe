"""/logout: ending the SSO session, redirects, back-channel single logout."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from urllib.parse import urlparse

import requests

from cas import CASClient

from conftest import APP, parse_login_form, ticket_from, unique_path

SAML2P = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"


def cookie_cleared(resp) -> bool:
    """Does this response delete / empty the CASTGC cookie?"""
    for h in resp.raw.headers.getlist("Set-Cookie"):
        name, _, rest = h.partition("=")
        if name.strip() != "CASTGC":
            continue
        value = rest.split(";", 1)[0].strip()
        low = h.lower()
        if value in ("", '""') or "max-age=0" in low or "expires=thu, 01 jan 1970" in low:
            return True
    return False


def test_back_channel_single_logout(cas, recorder, browser):
    slo_service = recorder.url(unique_path("/slo"))
    noslo_service = recorder.url(unique_path("/noslo"))
    st_slo = browser.ticket_for(slo_service)
    assert cas.validate("/p3/serviceValidate", slo_service, st_slo).success
    st_noslo = browser.ticket_for(noslo_service)
    assert cas.validate("/p3/serviceValidate", noslo_service, st_noslo).success
    browser.ticket_for(APP)  # a service without back-channel logout

    r = browser.s.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    assert r.status_code < 400, r.status_code

    got = recorder.wait_for(urlparse(slo_service).path, count=1, timeout=10)
    assert len(got) == 1, f"expected exactly one logout request at {slo_service}, got {got}"
    req = got[0]
    assert req.method == "POST"
    assert req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"), req.headers
    form = req.form()
    assert "logoutRequest" in form, form
    xml = form["logoutRequest"][0]
    root = ET.fromstring(xml)
    assert root.tag == f"{{{SAML2P}}}LogoutRequest", xml
    assert root.get("ID") and root.get("Version") == "2.0" and root.get("IssueInstant"), xml
    assert root.findtext(f"{{{SAML2}}}NameID") == "casuser", xml
    assert root.findtext(f"{{{SAML2P}}}SessionIndex") == st_slo, xml
    # python-cas's own check of a logout request
    assert CASClient(version=3, service_url=slo_service, server_url=cas.base + "/").verify_logout_request(xml, st_slo)

    # the service registered without back-channel logout was not called
    time.sleep(0.5)
    assert recorder.for_url(noslo_service) == []
    # and the SLO service got just the one request
    assert len(recorder.for_url(slo_service)) == 1


def test_logout_ends_sso_session(cas, browser):
    browser.ticket_for(APP)
    old_tgc = browser.tgc
    assert old_tgc and old_tgc.startswith("TGT-"), old_tgc
    r = browser.s.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    assert r.status_code < 400
    assert cookie_cleared(r), r.headers
    assert not browser.tgc
    # the browser's session is over
    r = browser.get_login(APP)
    assert r.status_code == 200 and ticket_from(r) is None
    assert parse_login_form(r) is not None
    # and the old cookie value, replayed by hand, gives no ticket either
    r = requests.get(cas.url("/login"), params={"service": APP}, cookies={"CASTGC": old_tgc},
                     allow_redirects=False, timeout=15)
    assert ticket_from(r) is None, r.headers
    assert r.status_code == 200 and parse_login_form(r) is not None


def test_logout_redirects_to_registered_service(cas, browser):
    browser.ticket_for(APP)
    r = browser.s.get(cas.url("/logout"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code in (302, 303), r.status_code
    assert r.headers["Location"] == APP


def test_logout_does_not_redirect_to_unregistered_service(cas, browser):
    evil = "https://evil.example.test/phish"
    browser.ticket_for(APP)
    r = browser.s.get(cas.url("/logout"), params={"service": evil}, allow_redirects=False, timeout=15)
    assert r.status_code < 500
    assert not r.headers.get("Location", "").startswith("https://evil"), r.headers
    # the session still ends
    assert not browser.tgc or cookie_cleared(r)
    r = browser.get_login(APP)
    assert ticket_from(r) is None


def test_logout_without_session(cas):
    r = requests.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    assert r.status_code < 400
