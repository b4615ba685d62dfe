"""Delegated authentication to an upstream CAS server: a second Castellan.

The downstream Castellan lists the upstream on its login page; /login with
client_name=campus sends the browser to the upstream's /login with the
downstream's /delegated/campus/callback as service; the upstream's ticket
is validated at its /p3/serviceValidate, the identity is mapped (principal
template, renamed attributes) and the downstream opens its own SSO session.
python-cas then validates the downstream's ticket like any CAS client.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urljoin, urlparse

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


@pytest.fixture(scope="module")
def pair(tmp_path_factory, services):
    down_port = free_port()
    up = Castellan(tmp_path_factory.mktemp("upstream-cas"), label="upstream-cas", services=[{
        "name": "downstream",
        "protocol": "cas",
        "service": rf"^http://127\.0\.0\.1:{down_port}/cas/delegated/campus/callback\?state=[A-Za-z0-9-]+$",
        "release": ["mail", "cn", "memberOf"],
    }])
    down = Downstream(tmp_path_factory.mktemp("downstream-cas"), label="downstream", services=services,
                      upstreams=[{
                          "name": "campus",
                          "protocol": "cas",
                          "url": up.base,
                          "display_name": "Campus account",
                          "principal": "campus:{id}",
                          "rename": {"cn": "displayName"},
                      }, {
                          "name": "down-upstream",
                          "protocol": "cas",
                          "url": f"http://127.0.0.1:{free_port()}/cas",  # nothing listens there
                      }])
    down.port = down_port
    down.base = f"http://127.0.0.1:{down_port}/cas"
    down.public_url = down.base
    up.start()
    down.start()
    yield up, down
    down.stop()
    up.stop()


def walk_to_upstream(s: requests.Session, down: Castellan, service: str = APP) -> requests.Response:
    r = s.get(down.url("/login"), params={"service": service, "client_name": "campus"},
              allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"/login?client_name: {r.status_code} {r.text[:300]}"
    return r


def login_upstream(s: requests.Session, up: Castellan, r: requests.Response,
                   username: str = "casuser", password: str = PASSWORD) -> str:
    """Log in at the upstream; returns the downstream callback URL with its ticket."""
    loc = r.headers["Location"]
    assert loc.startswith(up.url("/login")), loc
    page = s.get(loc, allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    assert page.status_code == 200 and form, page.text[:300]
    r = s.post(form.action if form.action.startswith("http") else urljoin(page.url, form.action),
               data=dict(form.fields, username=username, password=password), allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), f"upstream login: {r.status_code} {r.text[:300]}"
    return r.headers["Location"]


def test_login_page_offers_the_upstream(pair):
    _, down = pair
    r = requests.get(down.url("/login"), params={"service": APP}, timeout=15)
    assert r.status_code == 200
    links = re.findall(r'href="(login\?client_name=[^"]+)"', r.text)
    assert any("client_name=campus" in l and "service=" in l for l in links), links
    assert "Campus account" in r.text


def test_delegated_login_gives_a_cas_ticket_python_cas_validates(pair):
    up, down = pair
    s = requests.Session()
    r = walk_to_upstream(s, down)
    callback = login_upstream(s, up, r)
    assert callback.startswith(down.url("/delegated/campus/callback?state=")), callback
    r = s.get(callback, allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"callback: {r.status_code} {r.text[:500]}"
    assert r.headers["Location"].startswith(APP)
    st = ticket_from(r)
    assert st and st.startswith("ST-")
    assert any(c.name == "CASTGC" for c in s.cookies if c.domain.startswith("127.0.0.1") and c.path == "/cas")
    client = CASClient(version=3, server_url=down.base + "/", service_url=APP)
    user, attributes, _ = client.verify_ticket(st)
    assert user == "campus:casuser", (user, attributes)
    assert attributes.get("mail") == "casuser@example.org", attributes
    # SSO at the downstream: a second service needs no upstream trip.
    r = s.get(down.url("/login"), params={"service": APP + "/again"}, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), r.text[:300]


def test_replayed_or_foreign_callbacks_fail(pair):
    up, down = pair
    s = requests.Session()
    callback = login_upstream(s, up, walk_to_upstream(s, down))
    # Another browser (no binding cookie) cannot use it.
    r = requests.get(callback, allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers, r.status_code
    # Nor the right browser a second time: the state was taken.
    r = s.get(callback, allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "Back to sign-in" in r.text
    # A made-up state.
    s2 = requests.Session()
    walk_to_upstream(s2, down)
    r = s2.get(down.url("/delegated/campus/callback"), params={"state": "DS-1-" + "x" * 32, "ticket": "ST-1-x"},
               allow_redirects=False, timeout=15)
    assert r.status_code == 400


def test_an_upstream_ticket_that_does_not_validate_fails_cleanly(pair):
    up, down = pair
    s = requests.Session()
    callback = login_upstream(s, up, walk_to_upstream(s, down))
    q = parse_qs(urlparse(callback).query)
    forged = down.url("/delegated/campus/callback") + f"?state={q['state'][0]}&ticket=ST-1-forged"
    r = s.get(forged, allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.text[:300])
    assert "INVALID_TICKET" in r.text or "did not sign you in" in r.text


def test_unknown_and_unreachable_upstreams(pair):
    _, down = pair
    r = requests.get(down.url("/login"), params={"client_name": "nope"}, allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers
    # An upstream that is down: the redirect still goes out (the browser finds
    # out), and a callback for it fails with a clear page, not a hang.
    s = requests.Session()
    r = s.get(down.url("/login"), params={"client_name": "down-upstream", "service": APP},
              allow_redirects=False, timeout=15)
    assert r.status_code == 302
    state = parse_qs(urlparse(parse_qs(urlparse(r.headers["Location"]).query)["service"][0]).query)["state"][0]
    r = s.get(down.url("/delegated/down-upstream/callback"), params={"state": state, "ticket": "ST-1-x"},
              allow_redirects=False, timeout=30)
    assert r.status_code == 502 and "could not be reached" in r.text, (r.status_code, r.text[:300])


def test_cas_logout_at_the_downstream_ends_its_session(pair):
    up, down = pair
    s = requests.Session()
    r = s.get(login_upstream(s, up, walk_to_upstream(s, down)), allow_redirects=False, timeout=15)
    assert ticket_from(r)
    s.get(down.url("/logout"), timeout=15)
    r = s.get(down.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    assert r.status_code == 200 and parse_login_form(r) is not None


def test_upstreams_test_command_reaches_each_upstream(pair):
    import subprocess

    from conftest import BINARY

    _, down = pair
    ok = subprocess.run([str(BINARY), "upstreams", "test", "--config", str(down.config_path), "campus"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "campus: ok:" in ok.stdout and "200" in ok.stdout, (ok.stdout, ok.stderr)
    bad = subprocess.run([str(BINARY), "upstreams", "test", "--config", str(down.config_path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "down-upstream: FAILED" in bad.stdout and "campus: ok" in bad.stdout, bad.stdout
    none = subprocess.run([str(BINARY), "upstreams", "test", "--config", str(down.config_path), "nope"],
                          capture_output=True, text=True, timeout=60)
    assert none.returncode == 2


def test_auto_redirect_and_kept_attributes(tmp_path, pair, services):
    """An upstream marked auto_redirect is the only way in: /login goes there
    at once; `keep` drops every attribute it does not list."""
    up, _ = pair
    down = Downstream(tmp_path / "auto", label="downstream-auto", services=services, upstreams=[{
        "name": "campus", "protocol": "cas", "url": up.base, "auto_redirect": True,
        "keep": ["cn"], "principal": "{id}"}])
    # The upstream registered the first downstream's callback only: reuse its port.
    down.port, down.base = pair[1].port, pair[1].base
    down.public_url = down.base
    pair[1].stop()
    try:
        down.start()
        s = requests.Session()
        r = s.get(down.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
        assert r.status_code == 302 and r.headers["Location"].startswith(up.url("/login")), r.status_code
        callback = login_upstream(s, up, r)
        r = s.get(callback, allow_redirects=False, timeout=15)
        user, attributes, _ = CASClient(version=3, server_url=down.base + "/", service_url=APP).verify_ticket(
            ticket_from(r))
        assert user == "casuser"
        assert "mail" not in attributes, attributes  # released by the service, but not kept from the upstream
    finally:
        down.stop()
        pair[1].start()


def test_method_post_survives_the_upstream_trip(pair):
    """CAS method=POST: the ticket goes back to the service by form post,
    also when the login went through an upstream."""
    up, down = pair
    s = requests.Session()
    r = s.get(down.url("/login"), params={"service": APP, "client_name": "campus", "method": "POST"},
              allow_redirects=False, timeout=15)
    assert r.status_code == 302
    r = s.get(login_upstream(s, up, r), allow_redirects=False, timeout=15)
    assert r.status_code == 200 and "Location" not in r.headers, r.status_code
    assert re.search(r'<form[^>]*method="post"[^>]*action="' + re.escape(APP) + '"', r.text), r.text[:500]
    st = re.search(r'name="ticket" value="(ST-[^"]+)"', r.text).group(1)
    user, _, _ = CASClient(version=3, server_url=down.base + "/", service_url=APP).verify_ticket(st)
    assert user == "campus:casuser"
    # the login page's button keeps method=POST too
    page = requests.get(down.url("/login"), params={"service": APP, "method": "POST"}, timeout=15)
    assert re.search(r'href="login\?client_name=campus[^"]*method=POST', page.text), page.text[:800]
