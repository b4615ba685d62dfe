"""Apache httpd + mod_auth_cas (Debian's libapache2-mod-auth-cas 1.2) in front
of a CGI page, logging in through Castellan.

mod_auth_cas validates tickets only over https and checks the certificate, so
each Apache instance also runs a TLS virtual host that reverse-proxies /cas/
to Castellan; CASValidateURL points there and CASCertificatePath is the test
CA (see conftest.Apache).  The browser side (CASLoginURL) talks to Castellan
directly over http.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from conftest import PASSWORD, Apache, Browser, free_port, parse_login_form, ticket_from

MODES = {
    # id: (validate path, SAML?, attributes expected?)
    "cas2-serviceValidate": ("/serviceValidate", False, False),
    "cas3-p3-serviceValidate": ("/p3/serviceValidate", False, True),
    "saml11-samlValidate": ("/samlValidate", True, True),
}

RELEASED = ["mail", "cn", "memberOf"]


@pytest.fixture(scope="module")
def apache_ports():
    return {mode: free_port() for mode in MODES}


@pytest.fixture(scope="module")
def apache_cas(castellan_factory, services, apache_ports):
    reason = Apache.available()
    if reason:
        pytest.fail(reason)  # tests/run.sh installs Apache: missing is a failure, not a skip
    ports = "|".join(str(p) for p in apache_ports.values())
    svc = {
        "name": "apache",
        "protocol": "cas",
        "service": rf"^http://127\.0\.0\.1:({ports})/.*$",
        "release": RELEASED,
    }
    c = castellan_factory("apache-castellan", services=services + [svc]).start()
    yield c
    c.stop()


@pytest.fixture(scope="module", params=list(MODES))
def apache(request, apache_cas, apache_ports, pki):
    mode = request.param
    path, saml, _ = MODES[mode]
    a = Apache(pki, apache_cas, port=apache_ports[mode], validate_path=path, saml=saml, label=f"apache {mode}")
    a.mode = mode
    a.start()
    yield a
    a.cleanup()


def parse_env_page(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def login_through_apache(apache: Apache, session: requests.Session) -> requests.Response:
    """Apache -> Castellan login form -> POST -> Apache (ticket) -> page."""
    protected = apache.base + "/secured/env.cgi"
    r = session.get(protected, allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"apache did not redirect to CAS: {r.status_code} {r.text[:300]}"
    loc = r.headers["Location"]
    assert loc.startswith(apache.cas.url("/login")), loc
    service = parse_qs(urlparse(loc).query)["service"][0]
    assert service == protected

    page = session.get(loc, allow_redirects=False, timeout=15)
    assert page.status_code == 200, f"login page: {page.status_code} {page.text[:300]}"
    b = Browser(apache.cas)
    b.s = session
    r = b.submit(page, "casuser", PASSWORD)
    assert r.status_code in (302, 303), f"login POST: {r.status_code} {r.text[:500]}"
    ticket = ticket_from(r)
    assert ticket and ticket.startswith("ST-"), r.headers.get("Location")
    # mod_auth_cas ignores a ticket outside this alphabet (and loops back to
    # /login); see test_proxy.test_ticket_ids_use_an_alphabet_cas_clients_accept
    assert re.fullmatch(r"ST-[A-Za-z0-9.-]+", ticket), (
        f"Castellan issued {ticket!r}: mod_auth_cas 1.2 accepts only [A-Za-z0-9.-] after 'ST-'")
    assert r.headers["Location"].startswith(protected + "?ticket=")
    # back to Apache: it validates the ticket (over the TLS front), sets its
    # own cookie and redirects to the URL without the ticket.
    final = session.get(r.headers["Location"], allow_redirects=True, timeout=30)
    return final


def test_login_shows_user_and_released_attributes(apache):
    _, _, with_attrs = MODES[apache.mode]
    s = requests.Session()
    final = login_through_apache(apache, s)
    assert final.status_code == 200, (
        f"{apache.mode}: expected the protected page, got {final.status_code} at {final.url}: {final.text[:500]}"
    )
    env = parse_env_page(final.text)
    assert env.get("REMOTE_USER") == "casuser", final.text
    assert env.get("HTTP_CAS_USER") == "casuser", final.text
    if with_attrs:
        assert env.get("HTTP_CAS_MAIL") == "casuser@example.org", final.text
        assert env.get("HTTP_CAS_CN") == "CAS User", final.text
        assert sorted(env.get("HTTP_CAS_MEMBEROF", "").split(";")) == ["faculty", "staff"], final.text
    # never released to this service:
    assert "HTTP_CAS_SECRET" not in env, final.text
    assert "do-not-release" not in final.text
    assert "HTTP_CAS_WEIRD" not in env, final.text


def test_second_apache_session_uses_sso(apache):
    """With the CASTGC from a first login, a new Apache session gets through
    without seeing the login form (Castellan issues a ticket straight away)."""
    s = requests.Session()
    first = login_through_apache(apache, s)
    assert first.status_code == 200, first.text[:300]
    # forget Apache's session cookie, keep Castellan's
    for c in list(s.cookies):
        if c.name != "CASTGC":
            s.cookies.clear(c.domain, c.path, c.name)
    assert any(c.name == "CASTGC" for c in s.cookies)
    r = s.get(apache.base + "/secured/env.cgi", allow_redirects=True, timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert parse_login_form(r) is None
    assert parse_env_page(r.text).get("REMOTE_USER") == "casuser", r.text


def test_bogus_ticket_is_not_accepted_by_apache(apache):
    """Apache hands a made-up ticket to Castellan; the failure answer must be
    understood as a failure (mod_auth_cas answers 401, or sends the user to
    log in again)."""
    s = requests.Session()
    r = s.get(apache.base + "/secured/env.cgi?ticket=ST-0-bogusbogusbogus", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 401), f"{r.status_code}: {r.text[:300]}"
    if r.status_code == 302:
        assert r.headers["Location"].startswith(apache.cas.url("/login"))
    assert "REMOTE_USER" not in r.text
