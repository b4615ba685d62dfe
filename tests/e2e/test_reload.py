"""Reload without restart (SIGHUP and `castellan reload`), and the operator's
commands on the admin socket (`castellan sessions list|end`) and offline
(`castellan services test`)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from urllib.parse import urlparse

import requests

import xml.etree.ElementTree as ET

from conftest import APP, BINARY, unique_path
from saml_sp import saml_forms

GONE = "https://gone.example.test/app"
EXTRA = "https://extra{n}.example.test/app"
SP_ENTITY = "https://reload.sp.example.test/saml/metadata"


def cas_service(name: str, pattern: str, **extra) -> dict:
    return {"name": name, "protocol": "cas", "service": pattern, **extra}


def base_services() -> list[dict]:
    return [
        cas_service("app", r"^https://app\.example\.test(/.*)?$", release=["mail"]),
        cas_service("gone", r"^https://gone\.example\.test(/.*)?$"),
    ]


def cli(cas, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), *args, "--config", str(cas.config_path)],
                          capture_output=True, text=True, timeout=timeout)


def metric(cas, name: str) -> int:
    body = requests.get(cas.url("/metrics"), timeout=5).text
    m = re.search(rf"^castellan_{name} (\d+)$", body, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def rewrite(cas, services: list[dict]) -> None:
    cas.services = services
    cas.write_config()


def wait_generation(cas, generation: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while metric(cas, "config_generation") != generation:
        assert time.monotonic() < deadline, f"generation {generation} not reached:\n{cas.log_tail(30)}"
        time.sleep(0.05)


def test_reload_under_load_loses_no_request(fresh_castellan):
    """SSO round trips run on while the registry changes 20 times (services
    added and removed, one invalid file in between): none fails, the invalid
    file is refused with its line, each added service works at once."""
    cas = fresh_castellan("reload-load", services=base_services()).start()
    stop = threading.Event()
    rounds, failures = [0], []

    def loop():
        b = cas.browser()
        b.login(APP)
        while not stop.is_set():
            try:
                t = b.ticket_for(APP)
                res = cas.validate("/p3/serviceValidate", APP, t)
                if not res.success:
                    failures.append(repr(res))
                rounds[0] += 1
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))

    workers = [threading.Thread(target=loop) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        generation = 1
        for i in range(20):
            services = base_services() + [cas_service(f"extra{j}", rf"^https://extra{j}\.example\.test/.*$")
                                          for j in range(i % 4)]
            if i == 10:
                cas.config_path.write_text(cas.config_text() + "\n[[services]]\nname = 'broken'\nprotocol = 'cas'\n"
                                           "service = '('\n")
                out = cli(cas, "reload")
                assert out.returncode != 0, out
                assert re.search(r"castellan\.toml:\d+: ", out.stdout), out.stdout
                assert "refused" in out.stdout, out.stdout
                assert metric(cas, "config_last_reload_success") == 0
                assert metric(cas, "config_generation") == generation
                continue
            rewrite(cas, services)
            generation += 1
            if i % 2 == 0:
                out = cli(cas, "reload")
                assert out.returncode == 0, (out.stdout, out.stderr)
                assert f"generation {generation}" in out.stdout, out.stdout
            else:
                cas.proc.send_signal(signal.SIGHUP)
            wait_generation(cas, generation)
            assert metric(cas, "config_last_reload_success") == 1
            # what the new generation added serves now
            if i % 4:
                svc = EXTRA.format(n=i % 4 - 1)
                b = cas.browser()
                t = b.ticket_for(svc)
                assert cas.validate("/p3/serviceValidate", svc, t).success
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert not failures, failures[:5]
    assert rounds[0] > 50, f"only {rounds[0]} round trips during 20 reloads"
    assert metric(cas, "config_generation") == 20
    assert metric(cas, "config_last_reload_timestamp_seconds") > time.time() - 120
    assert cas.alive()
    log = cas.log_text()
    assert "configuration reload refused" in log and "castellan.toml:" in log


def test_removed_service_loses_its_tickets_and_sessions_survive(fresh_castellan):
    cas = fresh_castellan("reload-remove", services=base_services()).start()
    b = cas.browser()
    t = b.ticket_for(GONE)
    page = b.get_login()  # a login flow started before the reload
    rewrite(cas, base_services()[:1])
    assert cli(cas, "reload").returncode == 0
    res = cas.validate("/p3/serviceValidate", GONE, t)
    assert not res.success and res.code in ("INVALID_SERVICE", "UNAUTHORIZED_SERVICE"), res
    # the service is refused from now on
    r = b.get_login(GONE)
    assert r.status_code != 302 or "ticket=" not in r.headers.get("Location", "")
    # the SSO session survives: a ticket without a password
    t2 = b.ticket_for(APP)
    assert cas.validate("/p3/serviceValidate", APP, t2).success
    # and so does the login flow started before
    other = cas.browser()
    page = other.get_login(APP)
    cas.proc.send_signal(signal.SIGHUP)
    wait_generation(cas, 3)
    r = other.submit(page, "alice", "Wonderland-42")
    assert r.status_code == 302 and "ticket=" in r.headers["Location"], (r.status_code, r.text[:300])


def test_restart_only_settings_are_reported_and_kept(fresh_castellan):
    cas = fresh_castellan("reload-restart", services=base_services()).start()
    text = cas.config_text().replace(f"127.0.0.1:{cas.port}\"", "127.0.0.1:1\"", 1)
    cas.config_path.write_text(text)
    # `castellan reload` would look for the server of the new port; the
    # operator signals this one.
    cas.proc.send_signal(signal.SIGHUP)
    wait_generation(cas, 2)
    assert "server.listen changed: this needs a restart" in cas.log_text()
    assert requests.get(cas.url("/health"), timeout=5).status_code == 200


def test_changed_sp_metadata_is_read_again(fresh_castellan, tmp_path):
    def metadata(acs: str) -> str:
        return f"""<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP_ENTITY}">
 <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
  <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0"/>
 </md:SPSSODescriptor>
</md:EntityDescriptor>"""

    md = tmp_path / "sp.xml"
    md.write_text(metadata("https://reload.sp.example.test/acs-one"))
    services = base_services() + [{"name": "sp", "protocol": "saml", "metadata": str(md), "release": ["mail"]}]
    cas = fresh_castellan("reload-sp", services=services).start()
    b = cas.browser()
    b.login()

    def acs_posted_to() -> str:
        r = b.s.get(cas.url("/idp/profile/SAML2/Unsolicited/SSO"), params={"providerId": SP_ENTITY}, timeout=15)
        forms = saml_forms(r)
        assert forms, (r.status_code, r.text[:500])
        return forms[0].action

    assert acs_posted_to() == "https://reload.sp.example.test/acs-one"
    md.write_text(metadata("https://reload.sp.example.test/acs-two"))
    out = cli(cas, "reload")
    assert out.returncode == 0, out
    assert acs_posted_to() == "https://reload.sp.example.test/acs-two"


def test_sessions_list_and_end(fresh_castellan, recorder):
    slo = recorder.url(unique_path("/slo"))
    services = base_services() + [cas_service("slo", "^" + re.escape(slo) + "$", logout="back-channel")]
    cas = fresh_castellan("reload-sessions", services=services).start()
    browsers = [cas.browser() for _ in range(2)]
    tickets = []
    for b in browsers:
        t = b.ticket_for(slo, username="alice", password="Wonderland-42")
        assert cas.validate("/p3/serviceValidate", slo, t).success
        tickets.append(t)
    bystander = cas.browser()
    bystander.login(APP)

    out = cli(cas, "sessions", "list", "alice")
    assert out.returncode == 0, out
    assert out.stdout.startswith("2 live session(s) of alice"), out.stdout
    lines = out.stdout.strip().splitlines()[1:]
    assert len(lines) == 2 and all("since" in line and "pwd" in line for line in lines), out.stdout
    for b in browsers:
        assert b.tgc and b.tgc not in out.stdout, "a whole session id on screen"
    assert cli(cas, "sessions", "list", "nobody").stdout.startswith("0 live session(s)")

    out = cli(cas, "sessions", "end", "alice")
    assert out.returncode == 0, out
    assert "ended 2 session(s) of alice" in out.stdout, out.stdout
    got = recorder.wait_for(urlparse(slo).path, count=2, timeout=10)
    indexes = [ET.fromstring(r.form()["logoutRequest"][0]).findtext(
        "{urn:oasis:names:tc:SAML:2.0:protocol}SessionIndex") for r in got]
    assert sorted(indexes) == sorted(tickets)
    for b in browsers:  # no SSO any more: the login form again
        r = b.get_login(APP)
        assert r.status_code == 200 and 'id="fm1"' in r.text
    assert cli(cas, "sessions", "list", "alice").stdout.startswith("0 live session(s)")
    # another user's session is untouched
    t = bystander.ticket_for(APP)
    assert cas.validate("/p3/serviceValidate", APP, t).success


def test_sessions_on_redis(fresh_castellan, tmp_path):
    from test_redis_store import REDIS
    from conftest import free_port, wait_for_port
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        cas = fresh_castellan("reload-redis", services=base_services(),
                              tickets={"store": "redis", "redis_url": f"redis://127.0.0.1:{port}/0"}).start()
        b1, b2 = cas.browser(), cas.browser()
        b1.login(APP, username="alice", password="Wonderland-42")
        b2.login(APP, username="alice", password="Wonderland-42")
        b2.s.get(cas.url("/logout"), timeout=10)
        out = cli(cas, "sessions", "list", "alice")
        assert out.stdout.startswith("1 live session(s) of alice"), out.stdout
        assert "ended 1 session(s)" in cli(cas, "sessions", "end", "alice").stdout
        assert 'id="fm1"' in b1.get_login(APP).text
    finally:
        proc.terminate()
        proc.wait(10)


def test_services_test_names_the_match(fresh_castellan, tmp_path):
    services = base_services() + [{
        "name": "wiki", "protocol": "oidc", "client_id": "wiki-client", "client_secret": "s3cret-s3cret",
        "redirect_uris": ["https://wiki.example.test/cb"], "scopes": ["openid", "email"], "release": ["mail"],
        "mfa": "required", "consent": True, "consent_ttl": "30d", "display_name": "The Wiki",
        "accent_color": "#0a7",
    }]
    cas = fresh_castellan("reload-services", services=services)
    cas.write_config()
    out = cli(cas, "services", "test", APP)
    assert out.returncode == 0 and "service: app" in out.stdout and "protocol: cas" in out.stdout, out
    assert "release: mail" in out.stdout
    out = cli(cas, "services", "test", "https://wiki.example.test/cb")
    assert out.returncode == 0 and "service: wiki" in out.stdout and "protocol: oidc" in out.stdout, out
    assert "mfa: required" in out.stdout
    assert "consent: asked, remembered 2592000s" in out.stdout, out.stdout
    assert "display name: The Wiki" in out.stdout and "accent colour: #00aa77" in out.stdout, out.stdout
    out = cli(cas, "services", "test", APP)
    assert "consent: not asked" in out.stdout, out.stdout
    out = cli(cas, "services", "test", "https://evil.example.test/")
    assert out.returncode == 1 and "no registered service matches" in out.stdout, out


def test_reload_without_a_server_says_so(fresh_castellan):
    cas = fresh_castellan("reload-none", services=base_services())
    cas.write_config()
    out = cli(cas, "reload")
    assert out.returncode != 0 and "cannot reach the server" in out.stderr, out


def test_password_not_needed_after_reload(fresh_castellan):
    """A reload re-reads [[users]]: a changed password applies at once."""
    users = [{"username": "bob", "password": "first-Passw0rd"}]
    cas = fresh_castellan("reload-users", services=base_services(), users=users).start()
    assert cas.browser().login(APP, username="bob", password="first-Passw0rd").status_code == 302
    cas.users = [{"username": "bob", "password": "second-Passw0rd"}]
    cas.write_config()
    assert cli(cas, "reload").returncode == 0
    r = cas.browser().login(APP, username="bob", password="first-Passw0rd")
    assert r.status_code != 302
    assert cas.browser().login(APP, username="bob", password="second-Passw0rd").status_code == 302
