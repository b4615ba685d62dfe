"""The audit log (`[audit] path`): one JSON line per event, read back from the
file the real server writes.

One server for the module, with every kind of source and client: the
built-in users, a SQLite `[[authenticators]]` source, a service that requires
a second factor (TOTP through mfa_helpers), an OIDC client walked with plain
requests, a pysaml2 SP, a back-channel single-logout service (the
`recorder`), and an upstream CAS server (a second Castellan) for delegated
logins.  Each test checks the lines of what it did (event, user, service,
protocol, source, outcome, client, and request_id = the X-Request-Id header
of the answer that caused it); the last checks that no secret the tests saw
(passwords, OTP and recovery codes, ST-/PT-/TGT- ids, OIDC codes and tokens,
SAML responses) is anywhere in the file.  Rotation (rename + SIGHUP) and
`path = "-"` (stderr) get servers of their own.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlparse

import bcrypt
import pytest
import requests

from conftest import (APP, PASSWORD, USERS, Castellan, OidcBrowser, OidcClient, free_port, login_token_flow,
                      ticket_from, toml_table, unique_path)
from mfa_helpers import MfaBrowser, Totp, mfa_users, ticket_of
from saml_sp import IdpMetadata, SamlBrowser, ServiceProvider
from test_delegation_cas import login_upstream, walk_to_upstream

SECURE = "https://secure.example.test/home"
DB_USER, DB_PASSWORD = "dbuser", "db-Secret-77"
RP = OidcClient("audit-rp", "https://rp.example.test/callback", "rp-Secret-123")

# Every secret a test saw: none may be in the audit file.
SEEN_SECRETS: set[str] = {PASSWORD, DB_PASSWORD, RP.secret, "Wonderland-42"}


class AuditCastellan(Castellan):
    """A Castellan with [audit], [mfa], [[authenticators]] and [[upstreams]]."""

    def __init__(self, *args, audit_path: str = "audit.jsonl", authenticators: list[dict] = (),
                 upstreams: list[dict] = (), **kw) -> None:
        super().__init__(*args, **kw)
        self.audit_path = audit_path
        self.authenticators = list(authenticators)
        self.upstreams = list(upstreams)

    def config_text(self) -> str:
        text = super().config_text()
        text += toml_table("mfa", {"store": "sqlite", "issuer": "Castellan"})
        text += toml_table("audit", {"path": self.audit_path})
        for a in self.authenticators:
            text += toml_table("authenticators", a, array=True)
        for u in self.upstreams:
            text += toml_table("upstreams", u, array=True)
        return text

    @property
    def audit_file(self) -> Path:
        return self.workdir / self.audit_path

    def audit_lines(self) -> list[dict]:
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines() if line.strip()]


def lines_of(cas: AuditCastellan, request_id: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
    """The lines of one request (by its X-Request-Id), waiting for `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        got = [l for l in cas.audit_lines() if l.get("request_id") == request_id]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def settled(cas: AuditCastellan, protocol: str, count: int = 2, timeout: float = 5.0) -> list[dict]:
    """The lines of `protocol`, once `count` are there: the log is written
    apart from the requests, a few milliseconds after them."""
    deadline = time.monotonic() + timeout
    while True:
        got = [l for l in cas.audit_lines() if l.get("protocol") == protocol]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def one(lines: list[dict], **want) -> dict:
    """The one line with these field values."""
    found = [l for l in lines if all(l.get(k) == v for k, v in want.items())]
    assert len(found) == 1, f"expected one line with {want}, got {found} among:\n" + "\n".join(map(str, lines))
    return found[0]


def rid(r: requests.Response) -> str:
    value = r.headers.get("x-request-id")
    assert value, f"no X-Request-Id on {r.url}"
    return value


def check_common(line: dict) -> None:
    """Every line: an RFC 3339 UTC time with milliseconds, the client address."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
    assert line["client"] == "127.0.0.1", line
    for key in ("event", "outcome", "user", "service", "protocol", "request_id"):
        assert key in line, (key, line)


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audit-sql") / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (username TEXT NOT NULL, password TEXT, mail TEXT)")
    hashed = bcrypt.hashpw(DB_PASSWORD.encode(), bcrypt.gensalt(6)).decode()
    con.execute("INSERT INTO users VALUES (?, ?, ?)", (DB_USER, hashed, "db@example.org"))
    con.commit()
    con.close()
    return path


@pytest.fixture(scope="module")
def sp(tmp_path_factory) -> ServiceProvider:
    sp = ServiceProvider(tmp_path_factory.mktemp("audit-sp"), "auditsp")
    sp.write_metadata()
    return sp


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pki, services, sqlite_db, sp):
    """(audited server, its upstream CAS server), both running."""
    down_port = free_port()
    up = Castellan(tmp_path_factory.mktemp("audit-upstream"), label="audit-upstream", services=[{
        "name": "downstream",
        "protocol": "cas",
        "service": rf"^http://127\.0\.0\.1:{down_port}/cas/delegated/campus/callback\?state=[A-Za-z0-9-]+$",
        "release": ["mail"],
    }])
    cas = AuditCastellan(
        tmp_path_factory.mktemp("audit"), label="audited",
        users=[*USERS, *mfa_users(["mfa-ann"])],
        services=services + [
            {"name": "secure", "protocol": "cas", "service": r"^https://secure\.example\.test(/.*)?$",
             "mfa": "required"},
            RP.service(name="audit-rp", release=["mail"]),
            sp.service(),
        ],
        ssl_cert_file=pki.ca_pem,
        authenticators=[{"name": "litedb", "kind": "sql", "url": f"sqlite://{sqlite_db}",
                         "query": "SELECT password, mail FROM users WHERE username = ?"}],
        upstreams=[{"name": "campus", "protocol": "cas", "url": up.base}],
    )
    cas.port = down_port
    cas.base = cas.public_url = f"http://127.0.0.1:{down_port}/cas"
    up.start()
    cas.start()
    yield cas, up
    cas.stop()
    up.stop()


@pytest.fixture(scope="module")
def cas(setup) -> AuditCastellan:
    return setup[0]


def test_a_wrong_and_a_right_password_name_the_source_and_the_ticket_follows(cas):
    b = cas.browser()
    page = b.get_login(APP)
    wrong = b.submit(page, "casuser", "not-the-password")
    assert wrong.status_code == 401
    line = one(lines_of(cas, rid(wrong)), event="login")
    check_common(line)
    assert (line["user"], line["outcome"], line["source"]) == ("casuser", "failed", "users"), line
    SEEN_SECRETS.add("not-the-password")

    page = b.get_login(APP)
    right = b.submit(page, "casuser", PASSWORD)
    st = ticket_from(right)
    assert st and st.startswith("ST-"), right.status_code
    SEEN_SECRETS.update({st, b.tgc})
    lines = lines_of(cas, rid(right), count=2)
    login = one(lines, event="login")
    check_common(login)
    assert (login["user"], login["outcome"], login["source"]) == ("casuser", "ok", "users"), login
    granted = one(lines, event="ticket_granted")
    check_common(granted)
    assert (granted["user"], granted["service"], granted["protocol"], granted["outcome"]) == \
        ("casuser", "app", "cas", "ok"), granted

    ok = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": st}, timeout=15)
    assert "authenticationSuccess" in ok.text
    line = one(lines_of(cas, rid(ok)), event="ticket_validated")
    check_common(line)
    assert (line["user"], line["service"], line["protocol"], line["outcome"]) == ("casuser", "app", "cas", "ok")

    again = requests.get(cas.url("/p3/serviceValidate"), params={"service": APP, "ticket": st}, timeout=15)
    assert "INVALID_TICKET" in again.text
    line = one(lines_of(cas, rid(again)), event="ticket_validated")
    assert (line["outcome"], line["detail"], line["service"]) == ("failed", "INVALID_TICKET", "app"), line
    assert line["user"] is None

    # SSO: a ticket for another service from the session alone names the user too.
    r = b.s.get(cas.url("/login"), params={"service": APP + "/sso"}, allow_redirects=False, timeout=15)
    SEEN_SECRETS.add(ticket_from(r))
    line = one(lines_of(cas, rid(r)), event="ticket_granted")
    assert (line["user"], line["service"]) == ("casuser", "app"), line


def test_a_login_at_an_authenticator_names_that_source(cas):
    b = cas.browser()
    r = b.submit(b.get_login(APP), DB_USER, DB_PASSWORD)
    SEEN_SECRETS.add(ticket_from(r))
    line = one(lines_of(cas, rid(r), count=2), event="login")
    assert (line["user"], line["outcome"], line["source"]) == (DB_USER, "ok", "litedb"), line
    b = cas.browser()
    r = b.submit(b.get_login(APP), DB_USER, "db-wrong-pass")
    SEEN_SECRETS.add("db-wrong-pass")
    line = one(lines_of(cas, rid(r)), event="login")
    assert (line["outcome"], line["source"]) == ("failed", "litedb"), line
    r = b.submit(b.get_login(APP), "nobody-at-all", "whatever-pass")
    SEEN_SECRETS.update({"db-wrong-pass", "whatever-pass"})
    line = one(lines_of(cas, rid(r)), event="login")
    assert (line["outcome"], line.get("source"), line["detail"]) == ("failed", None, "unknown_user"), line


def test_each_second_factor_step_is_a_line(cas):
    b = MfaBrowser(cas)
    first = b.password(SECURE, "mfa-ann")
    asked = one(lines_of(cas, rid(first), count=2), event="mfa")
    check_common(asked)
    assert (asked["user"], asked["outcome"], asked["service"], asked["protocol"]) == \
        ("mfa-ann", "asked", "secure", "cas"), asked
    step = b.expect_second_step(first)
    totp = Totp(step.otpauth_uri)
    SEEN_SECRETS.update(step.recovery_codes)
    SEEN_SECRETS.add(totp.secret)
    refused = b.send_code(step, "000000" if totp.at_time(time.time()) != "000000" else "111111")
    assert refused.status_code == 401
    line = one(lines_of(cas, rid(refused)), event="mfa")
    assert (line["user"], line["outcome"]) == ("mfa-ann", "refused"), line
    step = b.expect_second_step(refused)
    code = totp.fresh()
    SEEN_SECRETS.add(code)
    passed = b.send_code(step, code)
    st = ticket_of(passed, SECURE)
    SEEN_SECRETS.update({st, b.tgc})
    lines = lines_of(cas, rid(passed), count=2)
    line = one(lines, event="mfa")
    assert (line["user"], line["outcome"], line["method"]) == ("mfa-ann", "ok", "totp"), line
    granted = one(lines, event="ticket_granted")
    assert (granted["user"], granted["service"]) == ("mfa-ann", "secure"), granted


def test_an_oidc_login_is_granted_and_validated_as_oidc(cas):
    b = OidcBrowser(cas)
    tokens, res = login_token_flow(b, RP)
    SEEN_SECRETS.update({res.code, tokens["access_token"], tokens["id_token"], b.tgc})
    if tokens.get("refresh_token"):
        SEEN_SECRETS.add(tokens["refresh_token"])
    for hop in res.hops:
        loc = hop.headers.get("Location") or ""
        SEEN_SECRETS.update(re.findall(r"(?:ST|TGT)-[A-Za-z0-9_-]+", loc))
    lines = settled(cas, "oidc")
    granted = one(lines, event="ticket_granted", user="casuser")
    assert granted["service"] == "audit-rp", granted
    validated = one(lines, event="ticket_validated", user="casuser")
    assert (validated["service"], validated["outcome"]) == ("audit-rp", "ok"), validated
    assert granted["request_id"] in {rid(h) for h in res.hops}
    assert validated["request_id"] in {rid(h) for h in res.hops}


def test_a_saml_login_is_granted_and_validated_as_saml(cas, sp):
    md = IdpMetadata.fetch(cas.url("/idp/metadata"), cas.workdir / "idp-metadata.xml")
    sp.attach(md)
    b = SamlBrowser(cas)
    flow = b.sso(sp)
    response = flow.form.saml_response
    assert response, flow.trace()
    SEEN_SECRETS.update({response, b.tgc})
    lines = settled(cas, "saml")
    granted = one(lines, event="ticket_granted", user="casuser")
    assert granted["service"] == "auditsp", granted
    validated = one(lines, event="ticket_validated", user="casuser")
    assert (validated["service"], validated["outcome"]) == ("auditsp", "ok"), validated


def test_logout_and_a_back_channel_delivery_are_lines(cas, recorder):
    slo_service = recorder.url(unique_path("/slo"))
    b = cas.browser()
    st = b.ticket_for(slo_service)
    SEEN_SECRETS.update({st, b.tgc})
    assert cas.validate("/p3/serviceValidate", slo_service, st).success
    r = b.s.get(cas.url("/logout"), allow_redirects=False, timeout=15)
    assert r.status_code < 400
    assert recorder.wait_for(urlparse(slo_service).path, count=1, timeout=10)
    lines = lines_of(cas, rid(r), count=2)
    logout = one(lines, event="logout")
    check_common(logout)
    assert (logout["user"], logout["outcome"]) == ("casuser", "ok"), logout
    delivery = one(lines, event="single_logout")
    assert (delivery["user"], delivery["party"], delivery["protocol"], delivery["outcome"]) == \
        ("casuser", slo_service, "cas", "ok"), delivery
    assert delivery["client"] == "127.0.0.1", "the delivery keeps the logout request's context"


def test_a_delegated_login_names_the_upstream(setup):
    cas, up = setup
    s = requests.Session()
    callback = login_upstream(s, up, walk_to_upstream(s, cas))
    SEEN_SECRETS.update(re.findall(r"ST-[A-Za-z0-9_-]+", callback))
    r = s.get(callback, allow_redirects=False, timeout=15)
    assert r.status_code == 302
    SEEN_SECRETS.add(ticket_from(r))
    lines = lines_of(cas, rid(r), count=2)
    line = one(lines, event="upstream_login")
    check_common(line)
    assert (line["user"], line["source"], line["outcome"], line["service"]) == \
        ("campus:casuser", "campus", "ok", "app"), line
    one(lines, event="ticket_granted", user="campus:casuser", service="app")


def test_metrics_count_the_lines_written(cas):
    text = requests.get(cas.url("/metrics"), timeout=15).text
    written = re.search(r"^castellan_audit_events_written_total (\d+)$", text, re.M)
    assert written and int(written.group(1)) >= len(cas.audit_lines()) > 10, text[-600:]
    assert re.search(r"^castellan_audit_events_dropped_total 0$", text, re.M)


def test_no_secret_is_in_the_audit_file(cas):
    text = cas.audit_file.read_text()
    assert len(text.splitlines()) > 10
    secrets = {s for s in SEEN_SECRETS if s and len(s) >= 6}
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in the audit log: {leaked}"
    # No ticket id of any kind, whoever saw it.
    assert not re.search(r"\b(ST|PT|PGT|TGT|PGTIOU)-\d", text), text
    assert "SAMLResponse" not in text and "otpauth" not in text
    for line in cas.audit_lines():
        for key in line:
            assert not re.search(r"password|secret|otp|code|ticket|token|saml", key, re.I), key


def test_rename_and_sighup_start_a_new_file(tmp_path):
    cas = AuditCastellan(tmp_path / "rot", label="audit-rotation")
    cas.start()
    try:
        b = cas.browser()
        r = b.submit(b.get_login(), "casuser", PASSWORD)
        assert lines_of(cas, rid(r)), "first login written"
        rotated = cas.audit_file.with_name("audit.jsonl.1")
        cas.audit_file.rename(rotated)
        cas.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not cas.audit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        b2 = cas.browser()
        r2 = b2.submit(b2.get_login(), "alice", "Wonderland-42")
        new = lines_of(cas, rid(r2))
        assert new and new[0]["user"] == "alice", new
        assert cas.alive(), "SIGHUP does not end the server"
        old = [json.loads(l) for l in rotated.read_text().splitlines()]
        assert [l["user"] for l in old] == ["casuser"], old
        lines = cas.audit_lines()
        # SIGHUP also reloaded the configuration: that is the new file's first line.
        assert lines[0]["event"] == "reload" and lines[0]["outcome"] == "ok", lines[0]
        assert all(l["user"] == "alice" for l in lines[1:])
        assert oct(cas.audit_file.stat().st_mode & 0o777) == oct(0o600)
    finally:
        cas.stop()


def test_a_dash_writes_the_lines_to_stderr(tmp_path):
    cas = AuditCastellan(tmp_path / "stderr", label="audit-stderr", audit_path="-")
    cas.start()
    try:
        b = cas.browser()
        r = b.submit(b.get_login(), "casuser", "wrong-pass-x")
        deadline = time.monotonic() + 5
        found = []
        while not found and time.monotonic() < deadline:
            found = [json.loads(l) for l in cas.log_text().splitlines()
                     if l.startswith('{"time"') and rid(r) in l]
            time.sleep(0.05)
        assert found and found[0]["event"] == "login" and found[0]["outcome"] == "failed", cas.log_tail()
        assert not (cas.workdir / "-").exists()
    finally:
        cas.stop()


def test_consent_decisions_and_a_refused_reload_are_lines(tmp_path):
    consent_app = "https://consent.example.test/home"
    cas = AuditCastellan(tmp_path / "consent", label="audit-consent", services=[
        {"name": "consent-app", "protocol": "cas", "service": r"^https://consent\.example\.test/.*$",
         "release": ["mail", "cn"], "consent": True}])
    cas.start()
    try:
        for user, password, decision, outcome in (("casuser", PASSWORD, "accept", "ok"),
                                                  ("alice", "Wonderland-42", "decline", "refused")):
            b = cas.browser()
            page = b.submit(b.get_login(consent_app), user, password)
            m = re.search(r'name="flow" value="([^"]+)"', page.text)
            assert page.status_code == 200 and m, page.text[:500]
            r = b.s.post(cas.url("/login/consent"), data={"flow": m.group(1), "decision": decision},
                         allow_redirects=False, timeout=15)
            line = one(lines_of(cas, rid(r)), event="consent")
            assert (line["user"], line["service"], line["outcome"]) == (user, "consent-app", outcome), line
            assert sorted(line["detail"].split()) == ["cn", "mail"], line
            # names, never values
            assert not any(v in json.dumps(line) for v in ("casuser@example.org", "CAS User", "Alice"))
        cas.config_path.write_text(cas.config_text() + "\n[[services]]\nname = 'broken'\n")
        cas.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not [l for l in cas.audit_lines() if l["event"] == "reload"] and time.monotonic() < deadline:
            time.sleep(0.05)
        reload_line = one(cas.audit_lines(), event="reload")
        assert reload_line["outcome"] == "refused" and reload_line["detail"] == "generation 1", reload_line
    finally:
        cas.stop()
