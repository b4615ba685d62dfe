"""Proxy authentication: pgtUrl callbacks, /proxy, /proxyValidate chains.

What the CAS Protocol 3.0 specification (section 2.5.4) asks when the
callback cannot be used:

  1. the pgtUrl "MUST be HTTPS and CAS MUST evaluate the endpoint to establish
     peer trust ... In case of failure, no proxy-granting ticket will be
     issued and the CAS service response ... MUST NOT contain a
     <proxyGrantingTicket> block. At this point, the issuance of a
     proxy-granting ticket is halted and service ticket validation will fail."
  2. "If the proxy service fails to authenticate or the endpoint responds with
     an unacceptable status code, proxy authentication MUST fail and CAS MUST
     respond with the appropriate error code as is described in section 2.5.3"
     -- that is INVALID_PROXY_CALLBACK ("The proxy callback specified is
     invalid. The credentials specified for proxy authentication do not meet
     the security requirements").

So these tests expect an authenticationFailure with INVALID_PROXY_CALLBACK
and no PGTIOU for an http:// pgtUrl, a callback answering 404 and a callback
whose certificate is not trusted.  A pgtUrl the service's registration does
not allow (regex mismatch, or no proxy_callback at all) is a service not
authorized to proxy: UNAUTHORIZED_SERVICE_PROXY, or INVALID_PROXY_CALLBACK
which Apereo CAS uses for some of these cases -- both are accepted there.
In all of these cases the callback must not be called with a PGT.
"""

from __future__ import annotations

from cas import CASClient

from conftest import APP, BACKEND, LEAF, PROXY_SVC, unique_path

PROXY_FAILURE_CODES = {"INVALID_PROXY_CALLBACK", "UNAUTHORIZED_SERVICE_PROXY"}


def pgt_for(cas, callback_server, browser, service=PROXY_SVC, endpoint="/p3/serviceValidate"):
    """Validate a fresh ST with a pgtUrl; return (result, pgtUrl, pgtId)."""
    pgt_url = callback_server.url(unique_path("/pgt"))
    st = browser.ticket_for(service)
    res = cas.validate(endpoint, service, st, pgtUrl=pgt_url)
    assert res.success, res
    assert res.user == "casuser"
    assert res.pgtiou and res.pgtiou.startswith("PGTIOU-"), res
    calls = [c for c in callback_server.for_url(pgt_url)
             if "pgtIou" in c.query]
    assert len(calls) == 1, f"callback requests: {calls}"
    call = calls[0]
    assert call.method == "GET"
    assert call.query["pgtIou"] == [res.pgtiou]
    pgt = call.query["pgtId"][0]
    assert pgt.startswith("PGT-"), call.query
    return res, pgt_url, pgt


def request_pt(cas, pgt, target):
    return cas.get("/proxy", pgt=pgt, targetService=target)


def pt_from(resp) -> str:
    import xml.etree.ElementTree as ET

    assert resp.status_code == 200, resp.text
    root = ET.fromstring(resp.content)
    pt = root.find("{http://www.yale.edu/tp/cas}proxySuccess/{http://www.yale.edu/tp/cas}proxyTicket")
    assert pt is not None and pt.text, resp.text
    assert pt.text.startswith("PT-"), resp.text
    return pt.text


def proxy_failure_code(resp) -> str | None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(resp.content)
    f = root.find("{http://www.yale.edu/tp/cas}proxyFailure")
    if f is None:
        f = root.find("{http://www.yale.edu/tp/cas}authenticationFailure")
    return None if f is None else f.get("code")


def test_pgt_callback_and_proxy_ticket_chain(cas, callback_server, browser):
    res, pgt_url, pgt = pgt_for(cas, callback_server, browser)
    # released attributes still come with the PGTIOU
    assert res.attributes.get("mail") == ["casuser@example.org"]

    pt = pt_from(request_pt(cas, pgt, BACKEND))
    v = cas.validate("/p3/proxyValidate", BACKEND, pt)
    assert v.success, v
    assert v.user == "casuser"
    assert v.proxies == [pgt_url], v
    # attributes are those released to the *target* service
    assert sorted(v.attributes.get("memberOf", [])) == ["faculty", "staff"], v
    assert "weird" not in v.attributes and "secret" not in v.attributes
    # a PT is one-time too
    again = cas.validate("/p3/proxyValidate", BACKEND, pt)
    assert not again.success and again.code == "INVALID_TICKET", again


def test_two_level_proxy_chain_lists_most_recent_first(cas, callback_server, browser):
    _, pgt_url1, pgt1 = pgt_for(cas, callback_server, browser)
    pt1 = pt_from(request_pt(cas, pgt1, BACKEND))
    # the backend validates the PT and asks for its own PGT
    pgt_url2 = callback_server.url(unique_path("/pgt"))
    v1 = cas.validate("/proxyValidate", BACKEND, pt1, pgtUrl=pgt_url2)
    assert v1.success and v1.pgtiou, v1
    calls = [c for c in callback_server.for_url(pgt_url2) if "pgtIou" in c.query]
    assert len(calls) == 1 and calls[0].query["pgtIou"] == [v1.pgtiou]
    pgt2 = calls[0].query["pgtId"][0]
    pt2 = pt_from(request_pt(cas, pgt2, LEAF))
    v2 = cas.validate("/proxyValidate", LEAF, pt2)
    assert v2.success and v2.user == "casuser", v2
    assert v2.proxies == [pgt_url2, pgt_url1], v2


def test_pgt_gives_several_pts(cas, callback_server, browser):
    _, _, pgt = pgt_for(cas, callback_server, browser)
    pts = {pt_from(request_pt(cas, pgt, BACKEND)) for _ in range(3)}
    assert len(pts) == 3


def test_proxy_ticket_is_bound_to_target_service(cas, callback_server, browser):
    _, _, pgt = pgt_for(cas, callback_server, browser)
    pt = pt_from(request_pt(cas, pgt, BACKEND))
    v = cas.validate("/proxyValidate", LEAF, pt)
    assert not v.success and v.code == "INVALID_SERVICE", v


def test_proxy_ticket_refused_by_service_validate(cas, callback_server, browser):
    """Spec 2.5: /serviceValidate MUST NOT return a successful authentication
    if it receives a proxy ticket."""
    _, _, pgt = pgt_for(cas, callback_server, browser)
    for endpoint in ("/serviceValidate", "/p3/serviceValidate"):
        pt = pt_from(request_pt(cas, pgt, BACKEND))
        v = cas.validate(endpoint, BACKEND, pt)
        assert not v.success, (endpoint, v)
        assert v.code in ("INVALID_TICKET_SPEC", "INVALID_TICKET"), (endpoint, v)


def test_proxy_validate_accepts_service_tickets(cas, browser):
    st = browser.ticket_for(APP)
    v = cas.validate("/proxyValidate", APP, st)
    assert v.success and v.user == "casuser" and v.proxies == [], v


def test_proxy_endpoint_errors(cas, callback_server, browser):
    r = cas.get("/proxy", targetService=BACKEND)
    assert r.status_code < 500
    assert proxy_failure_code(r) == "INVALID_REQUEST", r.text
    r = cas.get("/proxy", pgt="PGT-doesnotexist")
    assert proxy_failure_code(r) == "INVALID_REQUEST", r.text
    r = cas.get("/proxy", pgt="PGT-doesnotexist", targetService=BACKEND)
    assert r.status_code < 500
    code = proxy_failure_code(r)
    assert code in ("INVALID_TICKET", "BAD_PGT", "UNAUTHORIZED_SERVICE"), r.text
    # a PGT for an unregistered target service
    _, _, pgt = pgt_for(cas, callback_server, browser)
    r = request_pt(cas, pgt, "https://evil.example.test/")
    assert proxy_failure_code(r) is not None, r.text
    assert "proxyTicket" not in r.text


def test_http_pgt_url_gets_no_pgt(cas, recorder, callback_server, browser):
    # matches the registered proxy_callback regex, but is plain http
    pgt_url = recorder.url(unique_path("/pgt"))
    st = browser.ticket_for(PROXY_SVC)
    res = cas.validate("/p3/serviceValidate", PROXY_SVC, st, pgtUrl=pgt_url)
    assert res.pgtiou is None, res
    assert not res.success and res.code == "INVALID_PROXY_CALLBACK", res
    assert recorder.for_url(pgt_url) == []


def test_pgt_url_not_matching_registration(cas, callback_server, browser):
    pgt_url = callback_server.url(unique_path("/notallowed"))
    st = browser.ticket_for(PROXY_SVC)
    res = cas.validate("/p3/serviceValidate", PROXY_SVC, st, pgtUrl=pgt_url)
    assert res.pgtiou is None, res
    assert not res.success and res.code in PROXY_FAILURE_CODES, res
    assert callback_server.for_url(pgt_url) == []


def test_service_without_proxy_callback_cannot_proxy(cas, callback_server, browser):
    pgt_url = callback_server.url(unique_path("/pgt"))
    st = browser.ticket_for(APP)
    res = cas.validate("/p3/serviceValidate", APP, st, pgtUrl=pgt_url)
    assert res.pgtiou is None, res
    assert not res.success and res.code in PROXY_FAILURE_CODES, res
    assert [c for c in callback_server.for_url(pgt_url) if "pgtId" in c.query] == []


def test_callback_answering_404_gets_no_pgt(cas, callback_server, browser):
    pgt_url = callback_server.url(unique_path("/pgt404"))
    st = browser.ticket_for(PROXY_SVC)
    res = cas.validate("/p3/serviceValidate", PROXY_SVC, st, pgtUrl=pgt_url)
    assert res.pgtiou is None, res
    assert not res.success and res.code == "INVALID_PROXY_CALLBACK", res
    # the server did try it
    assert callback_server.for_url(pgt_url), "callback never called"


def test_untrusted_callback_certificate_gets_no_pgt(fresh_castellan, callback_server):
    # Castellan without SSL_CERT_FILE: the test CA is unknown to it.
    cas = fresh_castellan("untrusted-ca", ssl_cert_file=None).start()
    b = cas.browser()
    pgt_url = callback_server.url(unique_path("/pgt"))
    st = b.ticket_for(PROXY_SVC)
    res = cas.validate("/p3/serviceValidate", PROXY_SVC, st, pgtUrl=pgt_url)
    assert res.pgtiou is None, res
    assert not res.success and res.code == "INVALID_PROXY_CALLBACK", res
    # the TLS handshake fails, so no HTTP request reaches the handler
    assert callback_server.for_url(pgt_url) == []


def test_python_cas_v3_proxy_flow(cas, callback_server, browser):
    pgt_url = callback_server.url(unique_path("/pgt"))
    st = browser.ticket_for(PROXY_SVC)
    c = CASClient(version=3, service_url=PROXY_SVC, server_url=cas.base + "/", proxy_callback=pgt_url)
    user, attrs, pgtiou = c.verify_ticket(st)
    assert user == "casuser" and pgtiou and pgtiou.startswith("PGTIOU-")
    call = [x for x in callback_server.for_url(pgt_url) if "pgtIou" in x.query][0]
    assert call.query["pgtIou"] == [pgtiou]
    backend = CASClient(version=3, service_url=BACKEND, server_url=cas.base + "/")
    pt = backend.get_proxy_ticket(call.query["pgtId"][0])
    assert pt.startswith("PT-")
    # python-cas V3 validates on /p3/serviceValidate, which refuses PTs; a
    # backend accepting PTs validates on /p3/proxyValidate:
    backend.url_suffix = "p3/proxyValidate"
    user, attrs, _ = backend.verify_ticket(pt)
    assert user == "casuser"
    assert attrs["mail"] == "casuser@example.org"


# mod_auth_cas 1.2 (validCASTicketFormat) only accepts tickets matching
# (ST|PT)-[A-Za-z0-9.-]+ and silently ignores any other `ticket` parameter,
# which sends the browser back to /login (a redirect loop).  Apereo CAS
# tickets use exactly that alphabet.
CLIENT_SAFE_TICKET = r"^(ST|PT)-[A-Za-z0-9.-]+$"


def test_ticket_ids_use_an_alphabet_cas_clients_accept(cas, callback_server):
    import re

    sts, pts, others = [], [], []
    b = cas.browser()
    for _ in range(30):
        sts.append(b.ticket_for(PROXY_SVC))
    others.append(b.tgc)
    for st in sts[:5]:
        pgt_url = callback_server.url(unique_path("/pgt"))
        res = cas.validate("/serviceValidate", PROXY_SVC, st, pgtUrl=pgt_url)
        if res.pgtiou:
            others.append(res.pgtiou)
            call = [c for c in callback_server.for_url(pgt_url) if "pgtId" in c.query][0]
            pgt = call.query["pgtId"][0]
            others.append(pgt)
            for _ in range(5):
                pts.append(pt_from(request_pt(cas, pgt, BACKEND)))
    bad = [t for t in sts + pts if not re.match(CLIENT_SAFE_TICKET, t)]
    assert not bad, f"tickets mod_auth_cas 1.2 rejects (allowed: [A-Za-z0-9.-] after the prefix): {bad[:5]}"
    for t in sts + pts + others:
        assert len(t) <= 256, t
    bad = [t for t in others if not re.match(r"^(TGT|PGT|PGTIOU)-[A-Za-z0-9._~-]+$", t or "")]
    assert not bad, bad
