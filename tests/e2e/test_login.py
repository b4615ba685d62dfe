"""/login: the form, the SSO cookie, renew, gateway, refusals, throttling."""

from __future__ import annotations

import re

import requests

from conftest import APP, PASSWORD, parse_login_form, ticket_from

EVIL = "https://evil.example.test/collect"


def set_cookie_headers(resp) -> list[str]:
    return resp.raw.headers.getlist("Set-Cookie")


def test_login_page_has_the_form(cas, browser):
    r = browser.get_login(APP)
    assert r.status_code == 200
    assert "text/html" in r.headers.get("Content-Type", "")
    form = parse_login_form(r)
    assert form is not None, r.text[:1000]
    assert form.method == "post"
    assert {"username", "password", "execution"} <= set(form.fields), form.fields
    assert len(form.execution) >= 16, form.execution
    assert re.search(r'<input[^>]*name="password"[^>]*type="password"|<input[^>]*type="password"[^>]*name="password"',
                     r.text), "password input is not type=password"
    # two page loads give two different flow tokens
    assert parse_login_form(browser.get_login(APP)).execution != form.execution


def test_login_redirects_with_ticket_and_sets_tgc(cas, browser):
    r = browser.login(APP)
    assert r.status_code == 302, f"{r.status_code}: {r.text[:500]}"
    loc = r.headers["Location"]
    assert loc.startswith(APP + "?ticket=ST-"), loc
    tgc = [h for h in set_cookie_headers(r) if h.startswith("CASTGC=")]
    assert len(tgc) == 1, set_cookie_headers(r)
    h = tgc[0]
    assert h.split(";")[0].split("=", 1)[1].startswith("TGT-"), h
    attrs = [p.strip().lower() for p in h.split(";")[1:]]
    assert "httponly" in attrs, h
    assert "samesite=lax" in attrs, h
    assert "path=/cas" in attrs, h
    assert "secure" not in attrs, "Secure set although public_url is http"  # contract: Secure only with https


def test_service_with_query_gets_ampersand_ticket(cas, browser):
    svc = APP + "?a=1&b=x%20y"
    r = browser.login(svc)
    assert r.status_code == 302, r.text[:300]
    loc = r.headers["Location"]
    assert loc.startswith(svc + "&ticket=ST-"), loc
    t = ticket_from(r)
    assert cas.validate("/serviceValidate", svc, t).success


def test_sso_gives_fresh_ticket_without_form(cas, browser):
    t1 = browser.ticket_for(APP)
    r = browser.get_login(APP + "/other")
    assert r.status_code == 302, r.text[:300]
    t2 = ticket_from(r)
    assert t2 and t2.startswith("ST-") and t2 != t1
    assert r.headers["Location"].startswith(APP + "/other?ticket=")


def test_renew_shows_form_despite_sso(cas, browser):
    browser.ticket_for(APP)
    r = browser.get_login(APP, renew="true")
    assert r.status_code == 200, r.status_code
    assert ticket_from(r) is None
    assert parse_login_form(r) is not None


def test_gateway_without_session_redirects_without_ticket(cas, browser):
    r = browser.get_login(APP, gateway="true")
    assert r.status_code in (302, 303), r.status_code
    assert r.headers["Location"] == APP
    assert ticket_from(r) is None


def test_gateway_with_session_gives_ticket(cas, browser):
    browser.ticket_for(APP)
    r = browser.get_login(APP, gateway="true")
    assert r.status_code in (302, 303)
    assert ticket_from(r)


def test_unregistered_service_is_refused(cas, browser):
    r = browser.get_login(EVIL)
    assert 400 <= r.status_code < 500, r.status_code
    assert "Location" not in r.headers
    assert parse_login_form(r) is None, "login form offered for an unregistered service"
    # also with a valid SSO session: no ticket for it
    browser.ticket_for(APP)
    r = browser.get_login(EVIL)
    assert 400 <= r.status_code < 500, r.status_code
    assert "Location" not in r.headers
    # and a gateway request does not bounce to it either
    r = browser.get_login(EVIL, gateway="true")
    assert "Location" not in r.headers or not r.headers["Location"].startswith("https://evil")


def test_post_credentials_for_unregistered_service(cas, browser):
    page = browser.get_login(APP)
    form = parse_login_form(page)
    data = dict(form.fields, username="casuser", password=PASSWORD)
    r = browser.s.post(cas.url("/login"), params={"service": EVIL}, data=data, allow_redirects=False, timeout=15)
    assert r.status_code < 500
    assert not r.headers.get("Location", "").startswith("https://evil"), r.headers
    assert ticket_from(r) is None


def test_login_without_service(cas, browser):
    r = browser.login(None)
    assert r.status_code in (200, 302, 303), r.status_code
    assert browser.tgc, "no CASTGC after login without service"
    assert ticket_from(r) is None


def test_wrong_password_is_refused_generically(cas):
    bodies = []
    for user, pw in (("casuser", "wrong-password"), ("nosuchuser", "whatever")):
        b = cas.browser()
        r = b.login(APP, username=user, password=pw)
        assert r.status_code == 401, (user, r.status_code)
        assert "Location" not in r.headers
        assert not any(h.startswith("CASTGC=") for h in set_cookie_headers(r)), set_cookie_headers(r)
        assert b.tgc is None
        assert parse_login_form(r) is not None, "form not shown again"
        # normalise what legitimately differs: flow tokens, echoed username
        body = re.sub(r'value="[^"]*"', 'value=""', r.text).replace(user, "USER")
        bodies.append(body)
    assert bodies[0] == bodies[1], "wrong password and unknown user give different pages (user enumeration)"


def test_empty_credentials(cas, browser):
    r = browser.login(APP, username="", password="")
    assert r.status_code in (400, 401), r.status_code
    assert ticket_from(r) is None and browser.tgc is None


def test_replayed_execution_does_not_log_in(cas):
    b1 = cas.browser()
    page = b1.get_login(APP)
    execution = parse_login_form(page).execution
    r = b1.submit(page, "casuser", PASSWORD)
    assert r.status_code == 302 and ticket_from(r)
    # replay the very same form post from a browser without a session
    b2 = cas.browser()
    r = b2.s.post(parse_login_form(page).action,
                  data={"username": "casuser", "password": PASSWORD, "execution": execution},
                  allow_redirects=False, timeout=15)
    assert ticket_from(r) is None, r.headers
    assert r.status_code not in (301, 302, 303, 307, 308), r.status_code
    assert r.status_code < 500
    assert b2.tgc is None


def test_failed_attempt_consumes_execution(cas, browser):
    page = browser.get_login(APP)
    r = browser.submit(page, "casuser", "wrong")
    assert r.status_code == 401
    r = browser.submit(page, "casuser", PASSWORD)  # same (old) execution, right password
    assert ticket_from(r) is None, "a used flow token let a login through"
    assert browser.tgc is None


def test_missing_or_forged_execution(cas, browser):
    page = browser.get_login(APP)
    r = browser.submit(page, "casuser", PASSWORD, execution="forged-execution-token")
    assert ticket_from(r) is None and r.status_code < 500
    r = browser.s.post(cas.url("/login"), params={"service": APP},
                       data={"username": "casuser", "password": PASSWORD}, allow_redirects=False, timeout=15)
    assert ticket_from(r) is None and r.status_code < 500


def test_throttling_after_five_failures(fresh_castellan):
    cas = fresh_castellan("throttle", throttle={"failures_per_user": 5, "failures_per_ip": 20, "window": "5m"}).start()
    for i in range(5):
        b = cas.browser()
        r = b.login(APP, username="casuser", password=f"wrong-{i}")
        assert r.status_code == 401, (i, r.status_code)
    # 6th attempt, even with the right password, is refused
    b = cas.browser()
    page = b.get_login(APP)
    if page.status_code == 429:
        r = page
    else:
        r = b.submit(page, "casuser", PASSWORD)
    assert r.status_code == 429, r.status_code
    assert "Too many" in r.text, r.text[:500]
    assert ticket_from(r) is None and b.tgc is None
    # another user from the same address is not locked out by casuser's failures
    other = cas.browser().login(APP, username="alice", password="Wonderland-42")
    assert other.status_code == 302 and ticket_from(other), other.status_code


def test_health_and_metrics(cas):
    assert requests.get(cas.url("/health"), timeout=5).status_code == 200
    r = requests.get(cas.url("/metrics"), timeout=5)
    assert r.status_code == 200
    assert "# TYPE" in r.text or "# HELP" in r.text, r.text[:300]


def test_method_post_answers_with_auto_submitting_form(cas, browser):
    r = browser.login(APP, method="POST")
    assert r.status_code == 200, r.status_code
    assert "Location" not in r.headers
    m = re.search(r"<form[^>]*>", r.text)
    assert m, r.text[:800]
    form_tag = m.group(0)
    assert re.search(r'method="post"', form_tag, re.I), form_tag
    assert f'action="{APP}"' in form_tag, form_tag
    t = re.search(r'name="ticket"[^>]*value="(ST-[^"]+)"|value="(ST-[^"]+)"[^>]*name="ticket"', r.text)
    assert t, r.text[:800]
    ticket = t.group(1) or t.group(2)
    assert cas.validate("/serviceValidate", APP, ticket).success


def test_tgc_is_secure_when_public_url_is_https(fresh_castellan):
    c = fresh_castellan("https-public-url")
    c.public_url = f"https://127.0.0.1:{c.port}/cas"
    c.start()
    r = c.browser().login(APP)
    assert r.status_code == 302, r.status_code
    tgc = [h for h in set_cookie_headers(r) if h.startswith("CASTGC=")]
    assert tgc, set_cookie_headers(r)
    attrs = [p.strip().lower() for p in tgc[0].split(";")[1:]]
    assert "secure" in attrs, tgc[0]
    assert "httponly" in attrs and "path=/cas" in attrs, tgc[0]
