"""Several Castellan nodes sharing one Redis ticket store.

Every test starts its own redis-server (`--save ''`, nothing persisted) on a
free port and its own nodes.  All nodes of a test have the same configuration
(same users, services, throttling, `data_dir` and `redis_url`) except
`listen` / `public_url`, which differ only in the port (path `/cas` on both).
The CASTGC cookie is host-only, so the tests carry its value from one node to
the other by hand (an explicit `Cookie` header, never a shared cookie jar).

The load generators are plain Python threads, one `requests.Session` (HTTP
keep-alive) per worker; one round trip = GET /login?service with the CASTGC
-> 302 with a ticket -> /p3/serviceValidate on the same node.
"""

from __future__ import annotations

import http.cookiejar
import os
import shutil
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from conftest import (
    _LIVE,
    APP,
    BINARY,
    PASSWORD,
    Castellan,
    CasResult,
    free_port,
    parse_login_form,
    ticket_from,
    toml_value,
    unique_path,
    wait_for_port,
)

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
SAML2P = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"

# The same on every node of every test here (only alice is ever throttled).
# Attempts in flight count against the limit until decided: the per-user
# limit leaves room for the load workers' concurrent logins of casuser.
THROTTLE = {"failures_per_user": 6, "failures_per_ip": 1000, "window": "5m"}
UNAVAILABLE_TEXT = "Temporarily unavailable"
# A single response slower than this while Redis is down is a failure.
MAX_RESPONSE_S = 5.0
# Service must be back this long after redis-server is started again.
RECOVERY_S = 5.0


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


class RedisProc:
    """Our own redis-server, restartable on the same port (nothing persisted)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if not os.path.exists(REDIS):
            pytest.fail("redis-server not installed (tests/run.sh installs it)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = self.workdir / "redis.log"
        self.label = f"redis-server (port {self.port}, {self.log_path})"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisProc":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _LIVE.append(self)
        wait_for_port(self.port, timeout=10)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Node(Castellan):
    """A Castellan whose `data_dir` is shared with the other nodes, and which
    can be launched without waiting for a healthy store."""

    def __init__(self, workdir: Path, *, data_dir: Path, **kw) -> None:
        super().__init__(workdir, **kw)
        self.data_dir = Path(data_dir)

    def config_text(self) -> str:
        text = super().config_text()
        own = f"data_dir = {toml_value(str(self.workdir / 'data'))}\n"
        assert own in text, text
        return text.replace(own, f"data_dir = {toml_value(str(self.data_dir))}\n")

    def launch(self, timeout: float = 30.0) -> "Node":
        """Start and wait until /health answers at all (any status)."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._forget()
                raise RuntimeError(f"castellan exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                requests.get(self.url("/health"), timeout=5)
                return self
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError(f"castellan does not answer after {timeout}s:\n{self.log_tail()}")

    def sigkill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "node not running"
        self.proc.kill()
        self.proc.wait(10)
        self._forget()

    def log_since(self, mark: int, lines: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_mark(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0


@pytest.fixture
def cluster(tmp_path, services, pki):
    """Factories for this test's redis-servers and nodes; all of them are
    stopped at the end of the test, whatever happened."""
    nodes: list[Node] = []
    redises: list[RedisProc] = []
    shared_data = tmp_path / "shared-data"

    class Cluster:
        def redis(self, port: int | None = None, start: bool = True) -> RedisProc:
            r = RedisProc(tmp_path / f"redis{len(redises) + 1}", port)
            redises.append(r)
            return r.start() if start else r

        def node(self, redis_url: str) -> Node:
            n = Node(tmp_path / f"node{len(nodes) + 1}", data_dir=shared_data,
                     services=services, ssl_cert_file=pki.ca_pem, throttle=THROTTLE,
                     tickets={"store": "redis", "redis_url": redis_url},
                     label=f"node{len(nodes) + 1}")
            nodes.append(n)
            return n

    yield Cluster()
    for n in nodes:
        try:
            n.stop()
        except Exception:  # pragma: no cover - keep stopping the others
            pass
    for r in redises:
        r.stop()


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------


def jarless_session() -> requests.Session:
    """A keep-alive session that never stores nor sends cookies by itself:
    the CASTGC goes only where a test puts it."""
    s = requests.Session()
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return s


def browser_header(page: requests.Response) -> dict:
    """The pre-session cookie the login page set, sent back by hand (the
    form's token is bound to it)."""
    for v in page.raw.headers.getlist("Set-Cookie"):
        if v.startswith("CASBROWSER="):
            return {"Cookie": v.split(";", 1)[0]}
    return {}


def tgc_header(tgc: str | None) -> dict:
    return {"Cookie": f"CASTGC={tgc}"} if tgc else {}


def set_tgc(resp: requests.Response) -> str | None:
    """The CASTGC value a response sets (None when it sets none or clears it)."""
    for h in resp.raw.headers.getlist("Set-Cookie"):
        name, _, rest = h.partition("=")
        if name.strip() == "CASTGC":
            value = rest.split(";", 1)[0].strip()
            return value or None
    return None


def sso_login(node: Castellan, tgc: str, service: str = APP,
              session: requests.Session | None = None, timeout: float = 15) -> requests.Response:
    s = session or requests
    return s.get(node.url("/login"), params={"service": service}, headers=tgc_header(tgc),
                 allow_redirects=False, timeout=timeout)


def validate(node: Castellan, ticket: str, service: str = APP,
             session: requests.Session | None = None, timeout: float = 15) -> CasResult:
    s = session or requests
    r = s.get(node.url("/p3/serviceValidate"), params={"service": service, "ticket": ticket},
              allow_redirects=False, timeout=timeout)
    return CasResult.parse(r)


def sso_ticket(node: Castellan, tgc: str, service: str = APP) -> str:
    """A ticket from the SSO session `tgc` on `node`, without the form."""
    r = sso_login(node, tgc, service)
    t = ticket_from(r)
    assert r.status_code == 302 and t and t.startswith("ST-"), (
        f"GET {node.base}/login?service={service} with CASTGC={tgc[:12]}...: expected a 302 with a "
        f"ticket, got {r.status_code} Location={r.headers.get('Location')!r}\n{r.text[:400]}")
    assert r.headers["Location"].startswith(service), r.headers["Location"]
    return t


def form_login(node: Castellan, username: str = "casuser", password: str = PASSWORD,
               service: str = APP) -> tuple[requests.Response, str | None]:
    """The whole login form on one node; (POST response, CASTGC it sets)."""
    s = jarless_session()
    page = s.get(node.url("/login"), params={"service": service}, allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    assert page.status_code == 200 and form, f"GET {page.url} -> {page.status_code}: {page.text[:400]}"
    data = dict(form.fields, username=username, password=password)
    r = s.post(node.url("/login"), params={"service": service}, data=data, headers=browser_header(page),
               allow_redirects=False, timeout=15)
    return r, set_tgc(r)


def shows_form(r: requests.Response) -> bool:
    return r.status_code == 200 and ticket_from(r) is None and parse_login_form(r) is not None


def health(node: Castellan, timeout: float = 10) -> int:
    return requests.get(node.url("/health"), timeout=timeout).status_code


def wait_health(node: Castellan, status: int, within: float) -> float:
    """Seconds until /health answers `status`; fails after `within` seconds."""
    t0 = time.monotonic()
    last = None
    while True:
        try:
            last = health(node, timeout=MAX_RESPONSE_S + 1)
            if last == status:
                return time.monotonic() - t0
        except requests.RequestException as exc:
            last = repr(exc)
        if time.monotonic() - t0 > within:
            pytest.fail(f"{node.base}/health did not answer {status} within {within}s (last: {last})\n"
                        f"node log:\n{node.log_tail(40)}")
        time.sleep(0.1)


def is_unavailable_page(r: requests.Response) -> bool:
    return (r.status_code == 503 and "html" in r.headers.get("Content-Type", "")
            and UNAVAILABLE_TEXT in r.text and ticket_from(r) is None)


def cas_code(r: requests.Response) -> str:
    """'success', the failure code, or 'unclean:...' for anything not a CAS 3 XML answer with HTTP 200."""
    if r.status_code != 200:
        return f"unclean:HTTP {r.status_code}"
    try:
        root = ET.fromstring(r.content)
    except ET.ParseError:
        return f"unclean:not XML {r.text[:80]!r}"
    ns = "{http://www.yale.edu/tp/cas}"
    if root.tag != f"{ns}serviceResponse":
        return f"unclean:root {root.tag}"
    ok = root.find(f"{ns}authenticationSuccess")
    if ok is not None:
        return "success" if ok.findtext(f"{ns}user") == "casuser" else "unclean:wrong user"
    bad = root.find(f"{ns}authenticationFailure")
    if bad is None:
        return "unclean:neither success nor failure"
    return bad.get("code") or "unclean:failure without code"


# --------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------


@dataclass
class Rec:
    worker: str
    kind: str  # login | post | validate | health | round-trip
    t0: float
    t1: float
    outcome: str  # see the workers; "unclean:..." is never acceptable
    detail: str = ""


class Load:
    """Worker threads recording every request they make."""

    def __init__(self) -> None:
        self.recs: list[Rec] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def add(self, rec: Rec) -> None:
        with self.lock:
            self.recs.append(rec)

    def spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a load worker hangs"

    def snapshot(self) -> list[Rec]:
        with self.lock:
            return list(self.recs)

    # -- test 3: plain SSO round trips -----------------------------------
    def round_trips(self, name: str, node: Castellan, tgc: str) -> None:
        s = jarless_session()
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            outcome, detail = "ok", ""
            try:
                r = sso_login(node, tgc, session=s, timeout=10)
                t = ticket_from(r)
                if r.status_code != 302 or not t:
                    outcome, detail = "fail", f"login {r.status_code}: {r.text[:200]!r}"
                else:
                    v = s.get(node.url("/p3/serviceValidate"), params={"service": APP, "ticket": t},
                              allow_redirects=False, timeout=10)
                    code = cas_code(v)
                    if code != "success":
                        outcome, detail = "fail", f"validate {code}: {v.text[:200]!r}"
            except requests.RequestException as exc:
                outcome, detail = "fail", repr(exc)
            self.add(Rec(name, "round-trip", t0, time.monotonic(), outcome, detail))
            if outcome != "ok":
                time.sleep(0.05)  # a dead node: do not spin

    # -- test 4: every request classified --------------------------------
    def _timed(self, name, kind, fn, classify):
        t0 = time.monotonic()
        try:
            r = fn()
        except requests.RequestException as exc:
            self.add(Rec(name, kind, t0, time.monotonic(), f"unclean:{type(exc).__name__}", repr(exc)))
            return None, None
        t1 = time.monotonic()
        outcome = classify(r)
        self.add(Rec(name, kind, t0, t1, outcome,
                     "" if not outcome.startswith("unclean") else f"{r.status_code} {r.text[:300]!r}"))
        return r, outcome

    @staticmethod
    def classify_login(r: requests.Response) -> str:
        if r.status_code == 302 and ticket_from(r):
            return "ticket"
        if shows_form(r):
            return "form"
        if is_unavailable_page(r):
            return "unavailable"
        return f"unclean:HTTP {r.status_code}"

    @staticmethod
    def classify_post(r: requests.Response) -> str:
        if r.status_code == 302 and ticket_from(r) and set_tgc(r):
            return "ticket"
        if is_unavailable_page(r):
            return "unavailable"
        # a form fetched before the restart of Redis, posted after it: its
        # execution token is gone; a fresh form with a 4xx is clean.
        if 400 <= r.status_code < 500 and parse_login_form(r) is not None and ticket_from(r) is None:
            return "expired"
        return f"unclean:HTTP {r.status_code}"

    def resilient(self, name: str, node: Castellan) -> None:
        """SSO round trips that log in again (whole form) when the session is
        gone, and validate their last (already used) ticket when the login
        page says the service is unavailable."""
        s = jarless_session()
        tgc: str | None = None
        last_ticket: str | None = None
        while not self.stop_event.is_set():
            r, outcome = self._timed(name, "login", lambda: sso_login(node, tgc, session=s, timeout=15),
                                     self.classify_login)
            ticket = None
            if outcome == "ticket":
                ticket = ticket_from(r)
            elif outcome == "form":
                form = parse_login_form(r)
                data = dict(form.fields, username="casuser", password=PASSWORD)
                r2, o2 = self._timed(name, "post", lambda: s.post(
                    node.url("/login"), params={"service": APP}, data=data, headers=browser_header(r),
                    allow_redirects=False, timeout=15), self.classify_post)
                if o2 == "ticket":
                    tgc, ticket = set_tgc(r2), ticket_from(r2)
            elif outcome == "unavailable" and last_ticket:
                # the store is down: a validation must say so (INTERNAL_ERROR)
                self._timed(name, "validate", lambda: s.get(
                    node.url("/p3/serviceValidate"), params={"service": APP, "ticket": last_ticket},
                    allow_redirects=False, timeout=15), cas_code)
            if ticket:
                self._timed(name, "validate", lambda: s.get(
                    node.url("/p3/serviceValidate"), params={"service": APP, "ticket": ticket},
                    allow_redirects=False, timeout=15), cas_code)
                last_ticket = ticket
            if outcome is None or outcome == "unavailable":
                time.sleep(0.05)

    def health_probe(self, name: str, node: Castellan) -> None:
        s = jarless_session()
        while not self.stop_event.is_set():
            self._timed(name, "health", lambda: s.get(node.url("/health"), timeout=15),
                        lambda r: {200: "up", 503: "down"}.get(r.status_code, f"unclean:HTTP {r.status_code}"))
            time.sleep(0.05)


def summarize(recs: list[Rec], limit: int = 8) -> str:
    return "\n".join(f"  {r.worker} {r.kind} +{r.t1 - r.t0:.2f}s {r.outcome} {r.detail}" for r in recs[:limit])


# --------------------------------------------------------------------------
# 1. two nodes, one Redis
# --------------------------------------------------------------------------


def test_two_nodes_share_forms_sessions_tickets_logout_and_throttling(cluster, recorder):
    redis = cluster.redis()
    n1 = cluster.node(redis.url).start()
    n2 = cluster.node(redis.url).start()
    assert urlparse(n1.base).path == urlparse(n2.base).path == "/cas"

    # -- the login form of node 1, posted to node 2 (shared execution token)
    s = jarless_session()
    page = s.get(n1.url("/login"), params={"service": APP}, allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    assert page.status_code == 200 and form and form.execution, page.text[:500]
    data = dict(form.fields, username="casuser", password=PASSWORD)
    r = s.post(n2.url("/login"), params={"service": APP}, data=data, headers=browser_header(page),
               allow_redirects=False, timeout=15)
    t0 = ticket_from(r)
    assert r.status_code == 302 and t0, (
        f"POST {n2.base}/login with node 1's execution: expected 302 with a ticket, got "
        f"{r.status_code}\n{r.text[:600]}")
    assert set_tgc(r), r.headers
    res = validate(n1, t0)
    assert res.success and res.user == "casuser", res
    # the token was used up on node 2: posting it again to node 1 gets no ticket
    r = s.post(n1.url("/login"), params={"service": APP}, data=data, headers=browser_header(page),
               allow_redirects=False, timeout=15)
    assert ticket_from(r) is None and 400 <= r.status_code < 500 and not set_tgc(r), (
        f"replayed execution on node 1: {r.status_code} {r.headers.get('Location')!r}")

    # -- login on node 1, its ticket validated on node 2 with attributes
    r, tgc = form_login(n1)
    t1 = ticket_from(r)
    assert r.status_code == 302 and t1 and tgc and tgc.startswith("TGT-"), (r.status_code, r.headers)
    res = validate(n2, t1)
    assert res.success and res.user == "casuser", res
    assert res.attributes.get("mail") == ["casuser@example.org"], res
    assert res.attributes.get("cn") == ["CAS User"], res
    assert sorted(res.attributes.get("memberOf", [])) == ["faculty", "staff"], res
    assert "secret" not in res.attributes, res
    # validated on node 2: not again on node 1
    again = validate(n1, t1)
    assert not again.success and again.code == "INVALID_TICKET", again

    # -- node 1's CASTGC on node 2: a ticket without the form
    t2 = sso_ticket(n2, tgc)
    res = validate(n2, t2)
    assert res.success and res.user == "casuser", res
    again = validate(n1, t2)
    assert not again.success and again.code == "INVALID_TICKET", again

    # -- single logout: ST for a back-channel service from node 1, logout on node 2
    slo_service = recorder.url(unique_path("/slo"))
    slo_path = urlparse(slo_service).path
    st_slo = sso_ticket(n1, tgc, slo_service)
    assert validate(n2, st_slo, slo_service).success
    other = form_login(n2)[1]  # another session of the same user: must survive
    assert other and other != tgc

    r = requests.get(n2.url("/logout"), headers=tgc_header(tgc), allow_redirects=False, timeout=15)
    assert r.status_code < 400, r.status_code
    r = sso_login(n1, tgc)
    assert shows_form(r), (
        f"after logout on node 2, node 1 with the old CASTGC: expected the login form, got "
        f"{r.status_code} Location={r.headers.get('Location')!r}")
    assert shows_form(sso_login(n2, tgc))
    # the session of the other login is not touched
    assert validate(n1, sso_ticket(n1, other)).success

    got = recorder.wait_for(slo_path, count=1, timeout=10)
    assert len(got) == 1, f"no single-logout POST at {slo_service} within 10s"
    # a logout of the already ended session on node 1 sends nothing more
    r = requests.get(n1.url("/logout"), headers=tgc_header(tgc), allow_redirects=False, timeout=15)
    assert r.status_code < 400, r.status_code
    time.sleep(3)  # give a second (wrong) notification time to arrive
    got = recorder.matching(slo_path)
    assert len(got) == 1, f"expected exactly ONE single-logout POST for the session, got {len(got)}: {got}"
    req = got[0]
    assert req.method == "POST", req
    xml = req.form().get("logoutRequest", [""])[0]
    root = ET.fromstring(xml)
    assert root.tag == f"{{{SAML2P}}}LogoutRequest", xml
    assert root.findtext(f"{{{SAML2}}}NameID") == "casuser", xml
    assert root.findtext(f"{{{SAML2P}}}SessionIndex") == st_slo, xml

    # -- throttling: failures counted on node 1 apply on node 2
    for i in range(THROTTLE["failures_per_user"]):
        r, _ = form_login(n1, "alice", f"wrong-{i}")
        assert r.status_code == 401 and ticket_from(r) is None, (i, r.status_code)
    r, t = form_login(n2, "alice", "Wonderland-42")
    assert r.status_code == 429 and ticket_from(r) is None and t is None, (
        f"node 2, right password after {THROTTLE['failures_per_user']} failures on node 1: expected "
        f"429, got {r.status_code} Location={r.headers.get('Location')!r}")
    assert "Too many" in r.text, r.text[:500]
    # counted per user: casuser still logs in on node 2
    r, t = form_login(n2)
    assert r.status_code == 302 and t, r.status_code


# --------------------------------------------------------------------------
# 2. both nodes restarted
# --------------------------------------------------------------------------


def test_sessions_survive_a_restart_of_every_node(cluster):
    redis = cluster.redis()
    n1 = cluster.node(redis.url).start()
    n2 = cluster.node(redis.url).start()
    r, tgc1 = form_login(n1)
    assert r.status_code == 302 and tgc1, r.status_code
    r, tgc2 = form_login(n2)
    assert r.status_code == 302 and tgc2, r.status_code

    assert n1.stop() == 0, f"node 1 did not exit cleanly on SIGTERM:\n{n1.log_tail(30)}"
    assert n2.stop() == 0, f"node 2 did not exit cleanly on SIGTERM:\n{n2.log_tail(30)}"
    n1.start()
    n2.start()

    for tgc in (tgc1, tgc2):
        for issuer, checker in ((n1, n2), (n2, n1), (n1, n1), (n2, n2)):
            t = sso_ticket(issuer, tgc)
            res = validate(checker, t)
            assert res.success and res.user == "casuser", (issuer.base, checker.base, res)
            assert res.attributes.get("mail") == ["casuser@example.org"], res


# --------------------------------------------------------------------------
# 3. SIGKILL of one node under load
# --------------------------------------------------------------------------


def test_sigkill_of_one_node_under_load(cluster):
    redis = cluster.redis()
    n1 = cluster.node(redis.url).start()
    n2 = cluster.node(redis.url).start()
    workers = 4
    cookies = {}
    for node, label in ((n1, "n1"), (n2, "n2")):
        for i in range(workers):
            r, tgc = form_login(node)
            assert r.status_code == 302 and tgc, r.status_code
            cookies[f"{label}-w{i}"] = (node, tgc)

    load = Load()
    for name, (node, tgc) in cookies.items():
        load.spawn(load.round_trips, name, node, tgc)
    try:
        time.sleep(2.0)
        t_kill = time.monotonic()
        n1.sigkill()
        time.sleep(4.0)
    finally:
        load.stop()
    recs = load.snapshot()

    on2 = [r for r in recs if r.worker.startswith("n2")]
    on1 = [r for r in recs if r.worker.startswith("n1")]
    failed2 = [r for r in on2 if r.outcome != "ok"]
    failed1 = [r for r in on1 if r.outcome != "ok"]
    print(f"node 1: {len(on1)} round trips, {len(failed1)} failed (killed at +2s); "
          f"node 2: {len(on2)} round trips, {len(failed2)} failed")
    assert not failed2, (f"{len(failed2)} of {len(on2)} round trips on node 2 failed while node 1 was "
                         f"SIGKILLed:\n{summarize(failed2)}\nnode 2 log:\n{n2.log_tail(40)}")
    assert len([r for r in on2 if r.t0 > t_kill]) >= 20, "node 2 barely served after the kill"
    assert len([r for r in on1 if r.outcome == "ok" and r.t1 < t_kill]) >= 4, "no load on node 1 before the kill"
    assert failed1, "node 1 was killed, yet no round trip on it failed?"

    n1.start()
    for name, (_, tgc) in cookies.items():
        t = sso_ticket(n1, tgc)
        res = validate(n1, t)
        assert res.success and res.user == "casuser", (name, res)
    assert validate(n2, sso_ticket(n1, cookies["n1-w0"][1])).success


# --------------------------------------------------------------------------
# 4. Redis stopped and restarted under load
# --------------------------------------------------------------------------


def test_redis_stop_and_restart_under_load(cluster):
    redis = cluster.redis()
    node = cluster.node(redis.url).start()
    load = Load()
    for i in range(4):
        load.spawn(load.resilient, f"w{i}", node)
    load.spawn(load.health_probe, "health", node)
    mark = node.log_mark()
    try:
        time.sleep(1.5)
        redis.stop(signal.SIGTERM)  # returns once redis-server has exited
        t_down = time.monotonic()
        time.sleep(3.0)
        assert node.alive(), f"node exited with Redis down:\n{node.log_since(mark)}"
        t_up = time.monotonic()
        redis.start()
        recovered_in = wait_health(node, 200, within=RECOVERY_S)
        t_healthy = time.monotonic()
        # a brand-new login (whole form) and a round trip
        r, tgc = form_login(node)
        assert r.status_code == 302 and tgc, (r.status_code, r.text[:300])
        assert validate(node, ticket_from(r)).success
        assert validate(node, sso_ticket(node, tgc)).success
        time.sleep(2.0)
    finally:
        load.stop()
    recs = load.snapshot()
    assert node.alive(), f"node exited:\n{node.log_since(mark)}"
    down_kinds = {k: len([r for r in recs if r.kind == k and r.t0 >= t_down and r.t1 <= t_up])
                  for k in ("login", "validate", "health")}
    print(f"{len(recs)} requests, {down_kinds} while Redis was down, slowest "
          f"{max(r.t1 - r.t0 for r in recs):.2f}s; /health 200 again {recovered_in:.2f}s after "
          f"redis-server restarted")

    # no reset connection, no 5xx other than the 503 pages, no odd answer
    unclean = [r for r in recs if r.outcome.startswith("unclean")]
    assert not unclean, f"{len(unclean)} unclean responses:\n{summarize(unclean)}\nlog:\n{node.log_since(mark)}"
    slow = [r for r in recs if r.t1 - r.t0 > MAX_RESPONSE_S]
    assert not slow, f"{len(slow)} responses slower than {MAX_RESPONSE_S}s:\n{summarize(slow)}"

    # while Redis was down: only clean errors
    down = [r for r in recs if r.t0 >= t_down and r.t1 <= t_up]
    expected = {"login": {"unavailable"}, "post": {"unavailable"}, "validate": {"INTERNAL_ERROR"},
                "health": {"down"}}
    wrong = [r for r in down if r.outcome not in expected[r.kind]]
    assert not wrong, f"with Redis down, {len(wrong)} unexpected answers:\n{summarize(wrong)}"
    # not vacuous: each kind of request was made while Redis was down
    for kind, least in (("login", 2), ("validate", 1), ("health", 2)):
        n = len([r for r in down if r.kind == kind])
        assert n >= least, f"only {n} {kind} requests while Redis was down"
    # before the stop, the load was served
    before = [r for r in recs if r.t1 < t_down]
    assert any(r.kind == "validate" and r.outcome == "success" for r in before), summarize(before)

    # after recovery: every round trip started after /health came back succeeds
    after = [r for r in recs if r.t0 >= t_healthy and r.kind != "health"]
    good = {"login": {"ticket", "form"}, "post": {"ticket"}, "validate": {"success"}}
    bad = [r for r in after if r.outcome not in good[r.kind]]
    assert not bad, f"after recovery, {len(bad)} failed requests:\n{summarize(bad)}\nlog:\n{node.log_since(mark)}"
    for w in ("w0", "w1", "w2", "w3"):
        assert any(r.worker == w and r.kind == "validate" and r.outcome == "success" for r in after), (
            f"worker {w} got no validated ticket after recovery")
    assert all(r.outcome == "up" for r in recs if r.kind == "health" and r.t0 >= t_healthy)


# --------------------------------------------------------------------------
# 5. Redis only reachable after the node started
# --------------------------------------------------------------------------


def test_redis_reachable_only_after_the_node_starts(cluster):
    redis = cluster.redis(start=False)
    node = cluster.node(redis.url).launch()
    pid = node.proc.pid
    t0 = time.monotonic()
    r = requests.get(node.url("/health"), timeout=10)
    assert r.status_code == 503, r.status_code
    assert time.monotonic() - t0 < MAX_RESPONSE_S
    for params in ({}, {"service": APP}):
        r = requests.get(node.url("/login"), params=params, allow_redirects=False, timeout=10)
        assert is_unavailable_page(r), (params, r.status_code, r.text[:400])
        assert parse_login_form(r) is None
    assert node.alive()

    redis.start()
    wait_health(node, 200, within=RECOVERY_S)
    assert node.alive() and node.proc.pid == pid
    r, tgc = form_login(node)
    assert r.status_code == 302 and tgc, (r.status_code, r.text[:300])
    res = validate(node, ticket_from(r))
    assert res.success and res.user == "casuser", res
    assert validate(node, sso_ticket(node, tgc)).success
