"""Ticket validation endpoints: /validate, /serviceValidate, /p3/*,
/samlValidate -- success shapes and the refusals the CAS 3.0 spec demands."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from conftest import APP, APP2, SAML1, SAML1P, WEIRD_VALUE, CasResult, ticket_from

XML_ENDPOINTS = ["/serviceValidate", "/proxyValidate", "/p3/serviceValidate", "/p3/proxyValidate"]


# ---------------------------------------------------------------- success


def test_p3_service_validate_success(cas, browser):
    t = browser.ticket_for(APP)
    r = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": t}, timeout=15)
    assert r.status_code == 200
    assert "xml" in r.headers.get("Content-Type", ""), r.headers
    res = CasResult.parse(r)
    assert res.success and res.user == "casuser", res
    assert res.attributes["mail"] == ["casuser@example.org"]
    assert res.attributes["cn"] == ["CAS User"]
    assert sorted(res.attributes["memberOf"]) == ["faculty", "staff"]
    assert "secret" not in res.attributes
    assert res.pgtiou is None


def test_no_attributes_for_service_releasing_none(cas, browser):
    t = browser.ticket_for(APP2)
    res = cas.validate("/p3/serviceValidate", APP2, t)
    assert res.success and res.user == "casuser"
    # only CAS's own authentication metadata may appear, no user attributes
    for name in ("mail", "cn", "memberOf", "weird", "secret"):
        assert name not in res.attributes, res


def test_xml_escaping_of_attribute_values(cas, browser):
    t = browser.ticket_for(APP)
    r = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": t}, timeout=15)
    res = CasResult.parse(r)  # parses only if the document is well-formed
    assert res.attributes["weird"] == [WEIRD_VALUE], r.text
    assert "a<b&c>" not in r.text, "raw markup characters in the XML"


@pytest.mark.parametrize("endpoint", XML_ENDPOINTS)
def test_each_xml_endpoint_validates_an_st(cas, browser, endpoint):
    t = browser.ticket_for(APP)
    res = cas.validate(endpoint, APP, t)
    assert res.success and res.user == "casuser", res


def test_json_format(cas, browser):
    t = browser.ticket_for(APP)
    r = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": t, "format": "JSON"},
                     timeout=15)
    assert r.status_code == 200
    assert "json" in r.headers.get("Content-Type", ""), r.headers
    doc = r.json()
    ok = doc["serviceResponse"]["authenticationSuccess"]
    assert ok["user"] == "casuser"
    attrs = ok["attributes"]
    mail = attrs["mail"]
    assert mail in ("casuser@example.org", ["casuser@example.org"])
    assert sorted(attrs["memberOf"]) == ["faculty", "staff"]
    weird = attrs["weird"]
    assert weird in (WEIRD_VALUE, [WEIRD_VALUE])
    assert "secret" not in attrs

    # failure in JSON
    r = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": t, "format": "JSON"},
                     timeout=15)
    assert r.status_code < 500
    fail = r.json()["serviceResponse"]["authenticationFailure"]
    assert fail["code"] == "INVALID_TICKET"
    assert fail["description"]


def test_cas1_validate(cas, browser):
    t = browser.ticket_for(APP)
    r = requests.get(cas.url("/validate"), params={"service": APP, "ticket": t}, timeout=15)
    assert r.status_code == 200
    assert r.text == "yes\ncasuser\n", repr(r.text)
    r = requests.get(cas.url("/validate"), params={"service": APP, "ticket": t}, timeout=15)
    assert r.status_code == 200
    assert r.text == "no\n\n", repr(r.text)
    r = requests.get(cas.url("/validate"), params={"service": APP, "ticket": "ST-doesnotexist"}, timeout=15)
    assert r.text == "no\n\n", repr(r.text)


def test_saml_validate_document(cas, browser):
    t = browser.ticket_for(APP)
    r = cas.saml_validate(APP, t)
    assert r.status_code == 200, r.text[:500]
    root = ET.fromstring(r.content)
    status = root.find(f".//{{{SAML1P}}}StatusCode")
    assert status is not None and status.get("Value", "").endswith("Success"), r.text
    assert root.findtext(f".//{{{SAML1}}}NameIdentifier") == "casuser", r.text
    attrs = {}
    for a in root.iter(f"{{{SAML1}}}Attribute"):
        attrs[a.get("AttributeName")] = [v.text for v in a.findall(f"{{{SAML1}}}AttributeValue")]
    assert attrs.get("mail") == ["casuser@example.org"], attrs
    assert sorted(attrs.get("memberOf", [])) == ["faculty", "staff"], attrs
    assert attrs.get("weird") == [WEIRD_VALUE], attrs
    assert "secret" not in attrs
    # replay: not a success any more
    r = cas.saml_validate(APP, t)
    assert r.status_code < 500
    status = ET.fromstring(r.content).find(f".//{{{SAML1P}}}StatusCode")
    assert status is None or not status.get("Value", "").endswith("Success"), r.text


def test_saml_validate_wrong_target(cas, browser):
    t = browser.ticket_for(APP)
    r = cas.saml_validate(APP + "/elsewhere", t)
    assert r.status_code < 500
    status = ET.fromstring(r.content).find(f".//{{{SAML1P}}}StatusCode")
    assert status is None or not status.get("Value", "").endswith("Success"), r.text
    assert "casuser" not in r.text


# ---------------------------------------------------------------- refusals


def test_ticket_replay(cas, browser):
    t = browser.ticket_for(APP)
    assert cas.validate("/serviceValidate", APP, t).success
    again = cas.validate("/serviceValidate", APP, t)
    assert not again.success and again.code == "INVALID_TICKET", again


def test_ticket_is_one_time_across_endpoints(cas, browser):
    t = browser.ticket_for(APP)
    assert cas.validate("/p3/serviceValidate", APP, t).success
    assert not cas.validate("/serviceValidate", APP, t).success
    assert requests.get(cas.url("/validate"), params={"service": APP, "ticket": t}, timeout=15).text == "no\n\n"


def test_wrong_service(cas, browser):
    t = browser.ticket_for(APP)
    res = cas.validate("/serviceValidate", APP2, t)
    assert not res.success and res.code == "INVALID_SERVICE", res
    # spec 2.5.3: CAS MUST invalidate the ticket after INVALID_SERVICE
    res = cas.validate("/serviceValidate", APP, t)
    assert not res.success and res.code == "INVALID_TICKET", res


def test_ticket_bound_to_exact_service_url(cas, browser):
    t = browser.ticket_for(APP + "/a")
    res = cas.validate("/serviceValidate", APP + "/b", t)
    assert not res.success and res.code == "INVALID_SERVICE", res


def test_bogus_ticket(cas):
    for endpoint in XML_ENDPOINTS:
        res = cas.validate(endpoint, APP, "ST-doesnotexist")
        assert not res.success and res.code == "INVALID_TICKET", (endpoint, res)


@pytest.mark.parametrize("ticket", ["garbage", "PT-1-notaserviceticket", "TGT-1-x", "PGT-1-x", "ST-"])
def test_malformed_ticket_on_service_validate(cas, ticket):
    # Spec: INVALID_TICKET_SPEC "failure to meet the requirements of
    # validation specification"; INVALID_TICKET "the ticket provided was not
    # valid".  Either is a correct refusal of these.
    res = cas.validate("/serviceValidate", APP, ticket)
    assert not res.success, res
    assert res.code in ("INVALID_TICKET_SPEC", "INVALID_TICKET"), res


@pytest.mark.parametrize("endpoint", XML_ENDPOINTS)
def test_missing_parameters(cas, endpoint):
    for service, ticket in ((APP, None), (None, "ST-1-x"), (None, None), ("", ""), (APP, "")):
        res = cas.validate(endpoint, service, ticket)
        assert not res.success and res.code == "INVALID_REQUEST", (endpoint, service, ticket, res)


def test_missing_parameters_cas1(cas):
    r = requests.get(cas.url("/validate"), params={"service": APP}, timeout=15)
    assert r.status_code < 500 and r.text == "no\n\n", repr(r.text)


def test_saml_validate_without_target_or_body(cas):
    r = requests.post(cas.url("/samlValidate"), data=b"", headers={"Content-Type": "text/xml"}, timeout=15)
    assert 200 <= r.status_code < 500
    assert "Success" not in r.text.replace("samlp:Success", "") or "casuser" not in r.text
    r = requests.post(cas.url("/samlValidate"), params={"TARGET": APP}, data=b"<not-xml",
                      headers={"Content-Type": "text/xml"}, timeout=15)
    assert r.status_code < 500
    assert "casuser" not in r.text


def test_renew_validation_of_sso_ticket_fails(cas, browser):
    # the first ticket comes from presenting the password: renew=true passes
    t1 = browser.ticket_for(APP)
    res = cas.validate("/serviceValidate", APP, t1, renew="true")
    assert res.success, res
    # the second comes from the SSO session: renew=true must fail
    t2 = browser.ticket_for(APP)
    res = cas.validate("/serviceValidate", APP, t2, renew="true")
    assert not res.success and res.code == "INVALID_TICKET", res
    # the same on CAS 1.0
    t3 = browser.ticket_for(APP)
    r = requests.get(cas.url("/validate"), params={"service": APP, "ticket": t3, "renew": "true"}, timeout=15)
    assert r.text == "no\n\n", repr(r.text)


def test_renew_login_ticket_passes_renew_validation(cas, browser):
    browser.ticket_for(APP)
    page = browser.get_login(APP, renew="true")
    r = browser.submit(page, "casuser", "Mellon")
    assert r.status_code == 302
    t = ticket_from(r)
    res = cas.validate("/p3/serviceValidate", APP, t, renew="true")
    assert res.success, res


def test_expired_ticket(fresh_castellan):
    cas = fresh_castellan("short-ttl", service_ticket_ttl="1s").start()
    b = cas.browser()
    t = b.ticket_for(APP)
    time.sleep(2.2)
    res = cas.validate("/serviceValidate", APP, t)
    assert not res.success and res.code == "INVALID_TICKET", res
    # a fresh one is fine
    t = b.ticket_for(APP)
    assert cas.validate("/serviceValidate", APP, t).success


def test_concurrent_double_validation(cas, browser):
    t = browser.ticket_for(APP)
    n = 20
    barrier = threading.Barrier(n)
    results: list[CasResult | BaseException] = [None] * n  # type: ignore[list-item]

    def worker(i: int) -> None:
        s = requests.Session()
        try:
            barrier.wait(10)
            r = s.get(cas.url("/serviceValidate"), params={"service": APP, "ticket": t}, timeout=30)
            results[i] = CasResult.parse(r)
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    wins = [r for r in results if r.success]
    assert len(wins) == 1, f"{len(wins)} of {n} concurrent validations succeeded"
    assert all(r.code == "INVALID_TICKET" for r in results if not r.success), results


def raw_request(port: int, request: bytes, timeout: float = 30.0) -> int | None:
    """Send raw bytes, return the answer's status code, or None when the
    server closed/reset the connection without answering.  (A server that
    refuses an oversized request before reading all of it makes the kernel
    reset the connection, which may eat its 4xx answer: that is acceptable.)"""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    if not data:
        return None
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    assert line.startswith("HTTP/1."), line
    return int(line.split()[1])


def test_huge_service_parameter(cas):
    from urllib.parse import quote

    huge = quote("https://app.example.test/" + "a" * (1024 * 1024), safe="")
    for target in (f"/cas/login?service={huge}",
                   f"/cas/serviceValidate?ticket=ST-1-x&service={huge}",
                   f"/cas/validate?ticket=ST-1-x&service={huge}"):
        req = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{cas.port}\r\nConnection: close\r\n\r\n".encode()
        status = raw_request(cas.port, req)
        assert status is None or 400 <= status < 500, (target[:40], status)
        assert cas.alive()
    # a huge form POST: refused, no 5xx
    body = b"username=" + b"x" * (1024 * 1024) + b"&password=y&execution=z"
    service = quote(APP, safe="")
    req = (f"POST /cas/login?service={service} HTTP/1.1\r\nHost: 127.0.0.1:{cas.port}\r\n"
           f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
           f"Connection: close\r\n\r\n").encode() + body
    status = raw_request(cas.port, req)
    assert status is None or status < 300 or 400 <= status < 500, status
    assert cas.alive()
    assert requests.get(cas.url("/health"), timeout=5).status_code == 200
    # and ordinary work goes on
    b = cas.browser()
    t = b.ticket_for(APP)
    assert cas.validate("/serviceValidate", APP, t).success


def test_unknown_format_is_refused(cas, browser):
    t = browser.ticket_for(APP)
    r = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": t, "format": "YAML"},
                     timeout=15)
    assert r.status_code < 500
    # spec 2.5.1: "If the parameter value is not supported by the CAS server,
    # an error code MUST be returned"
    assert "authenticationSuccess" not in r.text, r.text
