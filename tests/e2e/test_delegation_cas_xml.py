"""Delegated authentication to a CAS server that answers in XML only:
django-mama-cas (see mama_cas_upstream.py).

CAS 3.0 §2.5 makes XML the validation answer's format; JSON is optional and
mama-cas has none.  The downstream validates at the upstream's
/p3/serviceValidate by default, or at `validate_path` (here /serviceValidate,
as for a CAS 2.0 server), and reads the XML: user, attributes (multi-valued
too), failures.  Gateway and renew go through to mama-cas as well.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from cas import CASClient

import mama_cas_upstream as mama
from conftest import APP, Castellan, free_port, ticket_from, toml_table


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
def ports():
    return free_port(), free_port()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, ports):
    alternatives = "|".join(str(p) for p in ports)
    # mama-cas matches the attribute release against the service without its query.
    server = mama.MamaCas(tmp_path_factory.mktemp("mama-cas"),
                          rf"^http://127\.0\.0\.1:({alternatives})/cas/delegated/mama/callback(\?state=[A-Za-z0-9-]+)?$")
    server.start()
    yield server
    server.stop()


def make_downstream(workdir, port: int, services, upstream_url: str, **extra) -> Downstream:
    down = Downstream(workdir, label="downstream-of-mama", services=services, upstreams=[{
        "name": "mama", "protocol": "cas", "url": upstream_url, "display_name": "Mama CAS", **extra}])
    down.port = port
    down.base = down.public_url = f"http://127.0.0.1:{port}/cas"
    return down


@pytest.fixture(scope="module")
def down(tmp_path_factory, ports, services, upstream):
    d = make_downstream(tmp_path_factory.mktemp("down-mama"), ports[0], services, upstream.base)
    d.start()
    yield d
    d.stop()


def start(s: requests.Session, down: Castellan, upstream: mama.MamaCas, **params) -> str:
    r = s.get(down.url("/login"), params={"service": APP, "client_name": "mama", **params},
              allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(upstream.url("/login?")), (
        r.status_code, r.headers.get("Location"), r.text[:300])
    return r.headers["Location"]


def login_through(s: requests.Session, down: Castellan, upstream: mama.MamaCas, **params) -> requests.Response:
    """Start at the downstream, log in at mama-cas, come back: the
    downstream's answer to the callback."""
    r = mama.login(s, start(s, down, upstream, **params))
    assert r.status_code == 302 and "ticket=ST-" in r.headers.get("Location", ""), (
        f"mama-cas login: {r.status_code} {r.text[:300]}\n{upstream.log_tail(30)}")
    assert r.headers["Location"].startswith(down.url("/delegated/mama/callback?state="))
    return s.get(r.headers["Location"], allow_redirects=False, timeout=15)


def validate(down: Castellan, st: str):
    return CASClient(version=3, server_url=down.base + "/", service_url=APP).verify_ticket(st)


def validate_renew(down: Castellan, st: str):
    """CAS 3.0 §2.5.1: with renew=true, only a ticket from fresh credentials."""
    return down.validate("/p3/serviceValidate", APP, st, renew="true")


def forget_downstream_session(s: requests.Session) -> None:
    for c in list(s.cookies):
        if c.name == "CASTGC":
            s.cookies.clear(c.domain, c.path, c.name)


def test_delegated_login_through_mama_cas_at_the_default_path(down, upstream):
    s = requests.Session()
    mark = upstream.log_path.stat().st_size
    r = login_through(s, down, upstream)
    assert r.status_code == 302 and r.headers["Location"].startswith(APP), (r.status_code, r.text[:500])
    user, attributes, _ = validate(down, ticket_from(r))
    # the default principal: the upstream's name as namespace
    assert user == "mama:casuser", (user, attributes)
    assert attributes.get("mail") == mama.MAIL, attributes
    assert attributes.get("memberOf") == mama.GROUPS, attributes  # multi-valued, escaped characters
    assert attributes.get("cn") == "Mama User", attributes
    log = upstream.log_path.read_text(errors="replace")[mark:]
    assert re.search(r'"GET /cas/p3/serviceValidate\?[^"]*ticket=ST-[^"]* HTTP/1\.1" 200', log), log[-2000:]
    assert "format=JSON" not in log


def test_a_cas_2_server_with_validate_path(tmp_path, ports, services, upstream, down):
    down.stop()  # the second downstream takes the other registered port; keep one at a time
    try:
        d = make_downstream(tmp_path / "cas2", ports[1], services, upstream.base, validate_path="/serviceValidate",
                            principal="cas2:{id}")
        d.start()
        try:
            s = requests.Session()
            mark = upstream.log_path.stat().st_size
            r = login_through(s, d, upstream)
            assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:500])
            user, attributes, _ = validate(d, ticket_from(r))
            assert user == "cas2:casuser" and attributes.get("memberOf") == mama.GROUPS, (user, attributes)
            log = upstream.log_path.read_text(errors="replace")[mark:]
            assert re.search(r'"GET /cas/serviceValidate\?[^"]* HTTP/1\.1" 200', log), log[-2000:]
            assert "/p3/" not in log
        finally:
            d.stop()
    finally:
        down.start()


def test_a_forged_ticket_is_refused_with_mama_cas_failure_code(down, upstream):
    s = requests.Session()
    location = start(s, down, upstream)
    service = parse_qs(urlparse(location).query)["service"][0]
    r = s.get(service + "&ticket=ST-1-forged", allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.text[:300])
    assert "INVALID_TICKET" in r.text, r.text[:800]


def test_gateway_without_and_with_a_session_at_mama_cas(down, upstream):
    s = requests.Session()
    # No session at mama-cas: straight back to the service, ticketless.
    location = start(s, down, upstream, gateway="true")
    assert "gateway=true" in location
    r = s.get(location, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(down.url("/delegated/mama/callback?state="))
    assert "ticket=" not in r.headers["Location"]
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"] == APP, (r.status_code, r.headers.get("Location"))
    # A session at mama-cas: gateway comes back with a ticket, and a login.
    r = login_through(s, down, upstream)
    assert ticket_from(r)
    forget_downstream_session(s)
    location = start(s, down, upstream, gateway="true")
    r = s.get(location, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and "ticket=ST-" in r.headers["Location"], r.headers.get("Location")
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"].startswith(APP) and ticket_from(r), (
        r.status_code, r.headers.get("Location"), r.text[:300])
    user, _, _ = validate(down, ticket_from(r))
    assert user == "mama:casuser"


def test_renew_goes_through_to_mama_cas_and_is_checked_there(down, upstream):
    s = requests.Session()
    r = login_through(s, down, upstream)
    assert ticket_from(r)
    # An SSO trip through mama-cas proves no fresh login (mama-cas sends no
    # isFromNewLogin): the ticket does not satisfy a renew validation.
    forget_downstream_session(s)
    r = s.get(start(s, down, upstream), allow_redirects=False, timeout=15)
    assert "ticket=ST-" in r.headers["Location"], r.headers.get("Location")
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    st = ticket_from(r)
    assert st
    res = validate_renew(down, st)
    assert not res.success and res.code == "INVALID_TICKET", res
    # renew=true: mama-cas asks again despite its session, and the ticket of
    # that login satisfies renew.
    r = login_through(s, down, upstream, renew="true")
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:500])
    res = validate_renew(down, ticket_from(r))
    assert res.success and res.user == "mama:casuser", res
    # renew dropped on the way to mama-cas: its SSO ticket is refused, since
    # the downstream validates with renew=true.
    location = start(s, down, upstream, renew="true")
    assert "renew=true" in location
    r = s.get(location.replace("&renew=true", ""), allow_redirects=False, timeout=15)
    assert r.status_code == 302 and "ticket=ST-" in r.headers["Location"], r.status_code
    mark = upstream.log_path.stat().st_size
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.headers.get("Location"))
    # The dev server writes its access log line after answering: wait for it.
    wanted = re.compile(r"GET /cas/p3/serviceValidate\?[^\"]*renew=true")
    deadline = time.monotonic() + 5
    log = upstream.log_path.read_text(errors="replace")[mark:]
    while not wanted.search(log) and time.monotonic() < deadline:
        time.sleep(0.05)
        log = upstream.log_path.read_text(errors="replace")[mark:]
    assert wanted.search(log), log[-2000:]
