"""Multi-factor authentication (TOTP, recovery codes) on CAS services, with
real clients: the PyPI `python-cas` client (CASClient version 3, i.e.
/p3/serviceValidate) and Apache httpd + mod_auth_cas.

The test is the authenticator app: it scrapes the `otpauth://` URI from the
enrolment page and computes the codes with pyotp (mfa_helpers.Totp).  Every
test has users of its own (TOTP steps are used once per factor, and wrong
codes are throttled per user), and one Castellan serves the whole module:

  mfa-app   https://mfa.example.test/...    mfa = "required"
  mfa-app2  https://mfa2.example.test/...   mfa = "required"
  plain-app https://plain.example.test/...  no mfa
  opt-app   https://opt.example.test/...    mfa = "optional"
  apache    http://127.0.0.1:<apache>/...   mfa = "required" (mod_auth_cas)
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests
from cas import CASClient

from conftest import Apache, free_port, parse_login_form
from mfa_helpers import (
    STEP,
    HtmlPage,
    MfaBrowser,
    MfaCastellan,
    Totp,
    describe,
    mfa_users,
    no_ticket,
    password_of,
    second_step,
    ticket_of,
)

SVC = "https://mfa.example.test/app"
SVC2 = "https://mfa2.example.test/app"
PLAIN = "https://plain.example.test/app"
OPT = "https://opt.example.test/app"

NAMES = [
    "enrol", "enrol-wrong", "abandon", "sso", "stepup", "renew", "replay", "other-a", "other-b",
    "recovery", "skip", "throttle", "page-fresh", "page-remove", "page-recovery", "opt-none",
    "opt-enrolled", "cli", "skew", "apache",
]
FAILURES_PER_USER = 3


def services(apache_port: int) -> list[dict]:
    return [
        {"name": "mfa-app", "protocol": "cas", "service": r"^https://mfa\.example\.test(/.*)?$",
         "release": ["mail"], "mfa": "required"},
        {"name": "mfa-app2", "protocol": "cas", "service": r"^https://mfa2\.example\.test(/.*)?$",
         "release": ["mail"], "mfa": "required"},
        {"name": "plain-app", "protocol": "cas", "service": r"^https://plain\.example\.test(/.*)?$",
         "release": ["mail"]},
        {"name": "opt-app", "protocol": "cas", "service": r"^https://opt\.example\.test(/.*)?$",
         "release": ["mail"], "mfa": "optional"},
        {"name": "apache", "protocol": "cas", "service": rf"^http://127\.0\.0\.1:{apache_port}/.*$",
         "release": ["mail", "cn"], "mfa": "required"},
    ]


@pytest.fixture(scope="module")
def apache_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, apache_port) -> MfaCastellan:
    c = MfaCastellan(tmp_path_factory.mktemp("castellan-mfa-cas"), label="castellan-mfa-cas",
                     users=mfa_users(NAMES), services=services(apache_port), ssl_cert_file=pki.ca_pem,
                     throttle={"failures_per_user": FAILURES_PER_USER, "failures_per_ip": 1000, "window": "5m"})
    c.start()
    yield c
    c.stop()


def browser(cas) -> MfaBrowser:
    return MfaBrowser(cas)


def verify(cas, service: str, ticket: str) -> tuple[str | None, dict]:
    """python-cas (CAS 3.0, /p3/serviceValidate): (user, attributes)."""
    client = CASClient(version=3, service_url=service, server_url=cas.base + "/")
    user, attrs, _ = client.verify_ticket(ticket)
    return user, attrs or {}


def values(attrs: dict, name: str) -> list[str]:
    v = attrs.get(name)
    if v is None:
        return []
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def assert_methods(attrs: dict, expected: set[str]) -> None:
    got = values(attrs, "authenticationMethod")
    assert set(got) == expected and len(got) == len(expected), (
        f"authenticationMethod {got!r}, expected {sorted(expected)}; all attributes: {attrs!r}")


def assert_refused(resp: requests.Response, what: str) -> None:
    """A wrong code: 401, the page again with an error, the field marked invalid."""
    assert resp.status_code == 401, f"{what}: expected 401:\n{describe(resp)}"
    no_ticket(resp)
    st = second_step(resp)
    assert st is not None, f"{what}: the 401 page has no form#otp-form:\n{describe(resp)}"
    otp = st.otp_input()
    assert otp is not None and otp.get("aria-invalid") == "true", (
        f"{what}: the otp field is not marked aria-invalid=\"true\": "
        f"{None if otp is None else dict(otp.attrib)}")


def enrolled(cas, username: str, service: str = SVC):
    """A user with a TOTP factor (enrolled in a browser of its own); (Totp, recovery codes, that browser)."""
    b = browser(cas)
    e = b.enrol(service, username)
    ticket_of(e.final, service)
    return e.totp, e.recovery_codes, b


# --------------------------------------------------------------------------
# enrolment and the first ticket
# --------------------------------------------------------------------------


def test_enrolment_page_then_ticket_validated_by_python_cas(cas):
    b = browser(cas)
    r = b.password(SVC, "enrol")
    assert r.status_code == 200, f"password for an MFA service: expected the second step:\n{describe(r)}"
    assert b.tgc is None, "a CASTGC before the second factor"
    assert "CASTGC" not in r.headers.get("Set-Cookie", "")
    st = b.expect_second_step(r)
    page = st.page
    # one form, posting to /login/mfa with a flow and the otp field
    assert st.form.method == "post"
    assert urlparse(st.form.action).path == urlparse(cas.url("/login/mfa")).path, st.form.action
    flow = st.form.input("flow")
    assert flow is not None and flow.get("type") == "hidden" and flow.get("value"), "no hidden flow input"
    otp = st.otp_input()
    assert otp is not None, "no input named otp"
    assert otp.get("autocomplete") == "one-time-code", dict(otp.attrib)
    assert otp.get("inputmode") == "numeric", dict(otp.attrib)
    assert otp.get("id") and page.label_for(otp.get("id")), "the otp input has no <label for=...>"
    assert not page.has_password_field(), "a password field on the second step"
    # enrolment: QR code as inline SVG, the URI as text (HTML-escaped), ten recovery codes
    assert st.qr_svg, "no inline <svg> in figure#totp-qr"
    assert st.enrolment, "no code#otpauth-uri"
    uri = st.otpauth_uri
    assert uri.startswith("otpauth://totp/"), uri
    q = parse_qs(urlparse(uri).query)
    assert q.get("secret") and q.get("issuer") == ["Castellan"], uri
    raw = re.search(r'<code[^>]*id="otpauth-uri"[^>]*>(.*?)</code>', r.text, re.S)
    assert raw, "no code#otpauth-uri in the page source"
    assert not re.search(r"&(?!amp;|#38;|#x26;)", raw.group(1)), f"the URI's & is not HTML-escaped: {raw.group(1)}"
    assert "enrol" in urlparse(uri).path, f"the account name is not in the URI's label: {uri}"
    codes = st.recovery_codes
    assert len(codes) == 10 and len(set(codes)) == 10 and all(codes), codes

    totp = Totp(uri)
    r = b.send_code(st, totp.fresh())
    ticket = ticket_of(r, SVC)
    assert b.tgc, "no CASTGC after the second factor"
    user, attrs = verify(cas, SVC, ticket)
    assert user == "enrol", attrs
    assert_methods(attrs, {"Password", "TOTP"})
    assert values(attrs, "isFromNewLogin") == ["true"], attrs
    assert values(attrs, "mail") == ["enrol@example.org"], attrs


def test_a_wrong_code_at_enrolment_keeps_the_secret(cas):
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "enrol-wrong"))
    totp = Totp(st.otpauth_uri)
    wrong = next(c for c in ("000000", "111111", "222222") if c not in {totp.at_time(time.time() + d) for d in (-30, 0, 30)})
    r = b.send_code(st, wrong)
    assert_refused(r, "a wrong first code")
    again = second_step(r)
    if again.otpauth_uri:  # shown again: the same secret the app has scanned
        assert Totp(again.otpauth_uri).secret == totp.secret, "the enrolment page changed the secret after a typo"
    ticket_of(b.send_code(again, totp.fresh()), SVC)


def test_enrolment_is_saved_only_once_a_code_is_confirmed(cas):
    b = browser(cas)
    first = b.expect_second_step(b.password(SVC, "abandon"))
    assert first.enrolment
    # walked away without a code: nothing saved, the next login enrols again with another secret
    b2 = browser(cas)
    second = b2.expect_second_step(b2.password(SVC, "abandon"))
    assert second.enrolment, "no enrolment page: the unconfirmed factor was saved"
    assert Totp(second.otpauth_uri).secret != Totp(first.otpauth_uri).secret
    listing = cas.cli("mfa", "list", "abandon")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "totp" not in listing.stdout.lower(), f"a factor was saved before its code:\n{listing.stdout}"


def test_one_step_of_skew_either_way_and_no_more(cas):
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "skew"))
    totp = Totp(st.otpauth_uri)
    if time.time() % STEP > STEP - 6:
        time.sleep(STEP - time.time() % STEP + 0.3)
    cur = int(time.time() // STEP)
    # the previous step's code (a phone clock a little behind)
    ticket_of(b.send_code(st, totp.at_step(cur - 1)), SVC)
    totp.used.add(cur - 1)
    b2 = browser(cas)
    st2 = b2.expect_second_step(b2.password(SVC, "skew"))
    r = b2.send_code(st2, totp.at_step(cur + 3))
    assert_refused(r, "a code three steps ahead")
    # the next step's code (a phone clock a little ahead)
    r = b2.send_code(second_step(r), totp.at_step(cur + 1))
    totp.used.add(cur + 1)
    ticket_of(r, SVC)


# --------------------------------------------------------------------------
# SSO, step-up, renew
# --------------------------------------------------------------------------


def test_a_session_with_mfa_serves_another_mfa_service_silently(cas):
    _, _, b = enrolled(cas, "sso")
    r = b.get_login(SVC2)
    ticket = ticket_of(r, SVC2)
    user, attrs = verify(cas, SVC2, ticket)
    assert user == "sso"
    assert_methods(attrs, {"Password", "TOTP"})
    assert values(attrs, "isFromNewLogin") == ["false"], attrs


def test_step_up_from_a_password_session_asks_only_for_the_code(cas):
    totp, _, _ = enrolled(cas, "stepup")
    b = browser(cas)
    r = b.password(PLAIN, "stepup")
    ticket = ticket_of(r, PLAIN)
    user, attrs = verify(cas, PLAIN, ticket)
    assert user == "stepup"
    assert_methods(attrs, {"Password"})
    # now an MFA service: only the code
    r = b.get_login(SVC)
    assert r.status_code == 200, f"step-up: expected the second step:\n{describe(r)}"
    st = b.expect_second_step(r)
    assert parse_login_form(r) is None and not st.page.has_password_field(), "step-up asks for the password again"
    assert not st.enrolment
    r = b.send_code(st, totp.fresh())
    ticket = ticket_of(r, SVC)
    user, attrs = verify(cas, SVC, ticket)
    assert user == "stepup"
    assert_methods(attrs, {"Password", "TOTP"})


def test_renew_asks_for_the_password_and_the_code_again(cas):
    totp, _, b = enrolled(cas, "renew")
    r = b.get_login(SVC, renew="true")
    assert r.status_code == 200 and parse_login_form(r) is not None, f"renew: expected the password form:\n{describe(r)}"
    r = b.submit(r, "renew", password_of("renew"))
    st = b.expect_second_step(r, "renew, after the password")
    assert not st.enrolment
    r = b.send_code(st, totp.fresh())
    ticket = ticket_of(r, SVC)
    user, attrs = verify(cas, SVC, ticket)
    assert user == "renew"
    assert_methods(attrs, {"Password", "TOTP"})
    assert values(attrs, "isFromNewLogin") == ["true"], attrs


# --------------------------------------------------------------------------
# negatives
# --------------------------------------------------------------------------


def test_a_replayed_code_is_refused(cas):
    b = browser(cas)
    e = b.enrol(SVC, "replay")
    ticket_of(e.final, SVC)
    enrol_code = e.totp.at_step(max(e.totp.used))
    # the enrolment code again, at the next login
    b2 = browser(cas)
    st = b2.expect_second_step(b2.password(SVC, "replay"))
    r = b2.send_code(st, enrol_code)
    assert_refused(r, "the enrolment code replayed")
    assert b2.tgc is None
    # a fresh code: accepted
    code = e.totp.fresh()
    ticket_of(b2.send_code(second_step(r), code), SVC)
    # that login code again, in another browser, within its window
    b3 = browser(cas)
    st = b3.expect_second_step(b3.password(SVC, "replay"))
    assert_refused(b3.send_code(st, code), "a login code replayed")
    assert b3.tgc is None


def test_a_code_from_another_users_secret_is_refused(cas):
    totp_a, _, _ = enrolled(cas, "other-a")
    totp_b, _, _ = enrolled(cas, "other-b")
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "other-b"))
    code_a = totp_a.fresh()
    assert code_a not in {totp_b.at_time(time.time() + d) for d in (-30, 0, 30)}, "the secrets collide"
    r = b.send_code(st, code_a)
    assert_refused(r, "other-a's code for other-b")
    assert b.tgc is None
    ticket_of(b.send_code(second_step(r), totp_b.fresh()), SVC)


def test_a_recovery_code_works_once(cas):
    totp, codes, _ = enrolled(cas, "recovery")
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "recovery"))
    r = b.send_code(st, codes[0])
    ticket = ticket_of(r, SVC)
    user, attrs = verify(cas, SVC, ticket)
    assert user == "recovery"
    assert_methods(attrs, {"Password", "RecoveryCode"})
    b2 = browser(cas)
    st = b2.expect_second_step(b2.password(SVC, "recovery"))
    r = b2.send_code(st, codes[0])
    assert_refused(r, "a used recovery code")
    ticket_of(b2.send_code(second_step(r), codes[1]), SVC)


def test_skipping_the_second_step_gives_no_ticket(cas):
    enrolled(cas, "skip")
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "skip"))
    flow = st.form.values().get("flow")
    assert b.tgc is None
    for service in (SVC, SVC2, PLAIN):
        r = b.get_login(service)
        no_ticket(r)
        assert r.status_code == 200, f"/login?service={service} after the password only:\n{describe(r)}"
        assert parse_login_form(r) is not None or second_step(r) is not None, describe(r)
    assert b.tgc is None
    # the half-done flow, without a code or with an empty one
    for data in ({"flow": flow}, {"flow": flow, "otp": ""}):
        r = b.s.post(cas.url("/login/mfa"), data=data, allow_redirects=False, timeout=15)
        no_ticket(r)
        assert 400 <= r.status_code < 500, describe(r)
    r = b.s.get(cas.url("/login/mfa"), params={"flow": flow, "service": SVC}, allow_redirects=False, timeout=15)
    no_ticket(r)
    assert b.tgc is None


def test_wrong_codes_are_throttled(cas):
    totp, _, _ = enrolled(cas, "throttle")
    b = browser(cas)
    r = b.password(SVC, "throttle")
    st = b.expect_second_step(r)
    valid = {totp.at_time(time.time() + d) for d in (-60, -30, 0, 30, 60)}
    wrongs = [c for c in (f"{n:06d}" for n in range(100000, 999999, 111111)) if c not in valid]
    statuses = []
    for wrong in wrongs[:FAILURES_PER_USER + 2]:
        r = b.send_code(st, wrong)
        statuses.append(r.status_code)
        no_ticket(r)
        if r.status_code == 429:
            break
        assert r.status_code == 401, describe(r)
        st = second_step(r) or st
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} wrong codes: {statuses}"
    assert len(statuses) <= FAILURES_PER_USER + 1, statuses
    # the right code now: still throttled
    r = b.send_code(st, totp.fresh())
    assert r.status_code == 429, describe(r)
    no_ticket(r)
    assert b.tgc is None


# --------------------------------------------------------------------------
# mfa = "optional"
# --------------------------------------------------------------------------


def test_optional_service_asks_only_enrolled_users(cas):
    b = browser(cas)
    r = b.password(OPT, "opt-none")
    ticket = ticket_of(r, OPT)
    _, attrs = verify(cas, OPT, ticket)
    assert_methods(attrs, {"Password"})

    totp, _, _ = enrolled(cas, "opt-enrolled")
    b = browser(cas)
    st = b.expect_second_step(b.password(OPT, "opt-enrolled"), "optional service, enrolled user")
    assert not st.enrolment
    ticket = ticket_of(b.send_code(st, totp.fresh()), OPT)
    user, attrs = verify(cas, OPT, ticket)
    assert user == "opt-enrolled"
    assert_methods(attrs, {"Password", "TOTP"})


# --------------------------------------------------------------------------
# the user's page /mfa
# --------------------------------------------------------------------------


def follow(b: MfaBrowser, r: requests.Response, hops: int = 6) -> requests.Response:
    for _ in range(hops):
        if r.status_code not in (301, 302, 303) or not r.headers.get("Location"):
            return r
        r = b.s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=15)
    return r


def mfa_page(b: MfaBrowser) -> HtmlPage:
    r = b.s.get(b.cas.url("/mfa"), allow_redirects=False, timeout=15)
    assert r.status_code == 200, f"/mfa right after a full login:\n{describe(r)}"
    page = HtmlPage(r)
    assert page.by_id("factors") is not None, f"no ul#factors on /mfa:\n{r.text[:1500]}"
    return page


def factors(page: HtmlPage) -> list:
    return page.doc.xpath("//ul[@id='factors']/li")


def factor_ids(page: HtmlPage) -> list[str]:
    out = []
    for li in factors(page):
        v = li.xpath(".//form//input[@name='factor']/@value")
        out.append(v[0] if v else None)
    return out


def assert_fresh_login_redirect(cas, r: requests.Response) -> str:
    assert r.status_code == 302, f"/mfa without a fresh login: expected 302:\n{describe(r)}"
    loc = urljoin(r.url, r.headers["Location"])
    u = urlparse(loc)
    q = parse_qs(u.query)
    assert u.path == urlparse(cas.url("/login")).path, loc
    assert q.get("service") == [cas.public_url + "/mfa"], loc
    assert q.get("renew") == ["true"], loc
    return loc


def test_mfa_page_needs_a_fresh_login_with_the_second_factor(cas):
    totp, _, _ = enrolled(cas, "page-fresh")
    anon = browser(cas)
    assert_fresh_login_redirect(cas, anon.s.get(cas.url("/mfa"), allow_redirects=False, timeout=15))
    # a session with the password only (the user has a factor): not enough
    b = browser(cas)
    ticket_of(b.password(PLAIN, "page-fresh"), PLAIN)
    loc = assert_fresh_login_redirect(cas, b.s.get(cas.url("/mfa"), allow_redirects=False, timeout=15))
    # the renew login: password, then code, then back to /mfa
    r = b.s.get(loc, allow_redirects=False, timeout=15)
    assert parse_login_form(r) is not None, f"renew login for /mfa: expected the password form:\n{describe(r)}"
    r = b.submit(r, "page-fresh", password_of("page-fresh"))
    st = b.expect_second_step(r, "renew login for /mfa")
    r = follow(b, b.send_code(st, totp.fresh()))
    assert r.status_code == 200 and urlparse(r.url).path == urlparse(cas.url("/mfa")).path, describe(r)
    page = HtmlPage(r)
    assert len(factors(page)) == 1, r.text[:1500]


def test_mfa_page_lists_adds_and_removes_but_not_the_last_factor(cas):
    first, _, b = enrolled(cas, "page-remove")
    page = mfa_page(b)
    assert len(factors(page)) == 1, page.resp.text[:1500]
    (only,) = factor_ids(page)
    assert only, "no hidden factor input in the remove form"
    form = factors(page)[0].xpath(".//form")[0]
    assert form.xpath(".//input[@name='action'][@value='remove']") and form.xpath(".//input[@name='csrf']/@value"), \
        "the remove form lacks action=remove or csrf"
    # the last factor while services require MFA: refused
    r = page.form(with_input=("factor", only)).submit(b.s)
    assert r.status_code < 500, describe(r)
    assert factor_ids(mfa_page(b)) == [only], "the last factor was removed though services require MFA"

    # add a second TOTP
    add = mfa_page(b).form(with_input=("action", "add-totp"))
    assert add is not None, "no add-totp form on /mfa"
    r = add.submit(b.s)
    assert r.status_code == 200, describe(r)
    enrol = HtmlPage(r)
    confirm = enrol.form(with_input=("action", "confirm-totp"))
    assert confirm is not None, f"no confirm-totp form:\n{r.text[:1500]}"
    assert "csrf" in confirm.values() and confirm.input("otp") is not None, confirm.values()
    assert urlparse(confirm.action).path == urlparse(cas.url("/mfa")).path, confirm.action
    uri = enrol.text("otpauth-uri")
    assert uri and uri.strip().startswith("otpauth://totp/"), "no otpauth URI on the add-totp page"
    second = Totp(uri.strip())
    r = follow(b, confirm.submit(b.s, otp=second.fresh()))
    assert r.status_code == 200, describe(r)
    ids = factor_ids(mfa_page(b))
    assert len(ids) == 2 and only in ids, ids
    listing = cas.cli("mfa", "list", "page-remove")
    assert listing.returncode == 0, listing.stderr
    for i in ids:
        assert i in listing.stdout, f"factor {i} of /mfa not in `castellan mfa list`:\n{listing.stdout}"

    # a removal without the csrf token: refused
    rm = mfa_page(b).form(with_input=("factor", only))
    r = b.s.post(rm.action, data={k: v for k, v in rm.values().items() if k != "csrf"}, allow_redirects=False,
                 timeout=15)
    assert r.status_code < 500, describe(r)
    assert len(factor_ids(mfa_page(b))) == 2, "a factor was removed without the csrf token"
    # with it: removed
    r = follow(b, rm.submit(b.s))
    assert r.status_code < 500, describe(r)
    ids = factor_ids(mfa_page(b))
    assert len(ids) == 1 and only not in ids, ids
    # and now the last one cannot go
    (last,) = ids
    r = mfa_page(b).form(with_input=("factor", last)).submit(b.s)
    assert r.status_code < 500, describe(r)
    assert factor_ids(mfa_page(b)) == [last]
    # the removed secret no longer signs in, the added one does
    b2 = browser(cas)
    st = b2.expect_second_step(b2.password(SVC, "page-remove"))
    r = b2.send_code(st, first.fresh())
    assert_refused(r, "a code of the removed factor")
    ticket_of(b2.send_code(second_step(r), second.fresh()), SVC)


def test_mfa_page_regenerates_recovery_codes(cas):
    totp, codes, _ = enrolled(cas, "page-recovery")
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "page-recovery"))
    ticket_of(b.send_code(st, codes[0]), SVC)  # a full login with a recovery code: 9 left
    page = mfa_page(b)
    text = " ".join(page.doc.text_content().split())
    assert re.search(r"\b9\b", text), f"the number of recovery codes left (9) is not on /mfa: {text[:800]}"
    form = page.form(with_input=("action", "recovery"))
    assert form is not None, "no recovery form on /mfa"
    r = form.submit(b.s)
    assert r.status_code == 200, describe(r)
    new = [c.text_content().strip() for c in HtmlPage(r).doc.xpath("//ol[@id='recovery-codes']/li//code")]
    assert len(new) == 10 and len(set(new)) == 10, new
    assert not set(new) & set(codes), "regenerated codes repeat old ones"
    text = " ".join(mfa_page(b).doc.text_content().split())
    assert re.search(r"\b10\b", text), f"10 recovery codes left not shown: {text[:800]}"
    # the old unused codes are gone, the new ones work
    b2 = browser(cas)
    st = b2.expect_second_step(b2.password(SVC, "page-recovery"))
    r = b2.send_code(st, codes[1])
    assert_refused(r, "an old recovery code after regeneration")
    ticket_of(b2.send_code(second_step(r), new[0]), SVC)


# --------------------------------------------------------------------------
# the operator's CLI
# --------------------------------------------------------------------------


def test_cli_list_and_reset(cas):
    enrolled(cas, "cli")
    p = cas.cli("mfa", "list", "cli")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if "totp" in ln.lower()]
    assert len(lines) == 1, f"one TOTP factor expected:\n{p.stdout}"
    assert re.search(r"\b10\b", p.stdout), f"10 recovery codes left not printed:\n{p.stdout}"
    p = cas.cli("mfa", "reset", "cli")
    assert p.returncode == 0, p.stdout + p.stderr
    p = cas.cli("mfa", "list", "cli")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "totp" not in p.stdout.lower(), p.stdout
    # the next login enrols again
    b = browser(cas)
    st = b.expect_second_step(b.password(SVC, "cli"))
    assert st.enrolment, "after `mfa reset` the user still has a factor"
    p = cas.cli("mfa", "reset", "nobody-at-all")
    assert p.returncode == 0, p.stdout + p.stderr
    assert (p.stdout + p.stderr).strip(), "`mfa reset` of an unknown user says nothing"


# --------------------------------------------------------------------------
# Apache httpd + mod_auth_cas
# --------------------------------------------------------------------------


def test_mod_auth_cas_with_totp(cas, pki, apache_port):
    reason = Apache.available()
    if reason:
        pytest.fail(reason)
    a = Apache(pki, cas, port=apache_port, validate_path="/p3/serviceValidate", saml=False, label="apache mfa")
    a.start()
    try:
        s = requests.Session()
        protected = a.base + "/secured/env.cgi"
        r = s.get(protected, allow_redirects=False, timeout=15)
        assert r.status_code == 302 and r.headers["Location"].startswith(cas.url("/login")), describe(r)
        b = browser(cas)
        b.s = s
        page = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
        r = b.submit(page, "apache", password_of("apache"))
        st = b.expect_second_step(r, "mod_auth_cas login")
        assert st.enrolment
        totp = Totp(st.otpauth_uri)
        r = b.send_code(st, totp.fresh())
        assert r.status_code == 302 and r.headers["Location"].startswith(protected + "?ticket=ST-"), describe(r)
        final = s.get(r.headers["Location"], allow_redirects=True, timeout=30)
        assert final.status_code == 200, f"{final.status_code} at {final.url}: {final.text[:500]}\n{a.log_tail()}"
        env = dict(line.split("=", 1) for line in final.text.splitlines() if "=" in line)
        assert env.get("REMOTE_USER") == "apache", final.text
        methods = set(env.get("HTTP_CAS_AUTHENTICATIONMETHOD", "").split(";"))
        assert methods == {"Password", "TOTP"}, final.text
        # a new Apache session, same CAS session: through without a prompt
        for c in list(s.cookies):
            if c.name != "CASTGC":
                s.cookies.clear(c.domain, c.path, c.name)
        again = s.get(protected, allow_redirects=True, timeout=30)
        assert again.status_code == 200 and "REMOTE_USER=apache" in again.text, again.text[:500]
    finally:
        a.cleanup()
