"""The command line: hash-password, check-config, serve with password_hash."""

from __future__ import annotations

import subprocess

from conftest import APP, BINARY, USERS, Castellan


def run(*args, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), *args], input=input, capture_output=True, text=True, timeout=timeout)


def test_hash_password_and_login_with_hash(fresh_castellan):
    p = run("hash-password", input="s3cret-Pass\n")
    assert p.returncode == 0, p.stderr
    phc = p.stdout.strip().splitlines()[-1].strip()
    assert phc.startswith("$argon2id$"), p.stdout
    users = USERS + [{"username": "hashed", "password_hash": phc, "attributes": {"mail": "h@example.org"}}]
    cas = fresh_castellan("hashed-user", users=users).start()
    r = cas.browser().login(APP, username="hashed", password="s3cret-Pass")
    assert r.status_code == 302, r.status_code
    r = cas.browser().login(APP, username="hashed", password="s3cret-pass")
    assert r.status_code == 401, r.status_code
    assert "s3cret-Pass" not in cas.log_text(), "password written to the log"


def test_check_config(tmp_path, services):
    good = Castellan(tmp_path / "good", services=services)
    good.write_config()
    p = run("check-config", "--config", str(good.config_path))
    assert p.returncode == 0, p.stdout + p.stderr

    bad = Castellan(tmp_path / "bad", services=services)
    text = bad.config_text().replace("[tickets]\n", "[tickets]\nno_such_setting = 1\n", 1)
    bad.config_path.write_text(text)
    p = run("check-config", "--config", str(bad.config_path))
    assert p.returncode != 0, p.stdout + p.stderr
    assert "no_such_setting" in p.stdout + p.stderr, p.stdout + p.stderr

    broken = Castellan(tmp_path / "regex", services=services + [
        {"name": "broken", "protocol": "cas", "service": "^https://(unclosed", "release": []}])
    broken.write_config()
    p = run("check-config", "--config", str(broken.config_path))
    assert p.returncode != 0, p.stdout + p.stderr


def test_check_config_refuses_keys_of_another_protocol(tmp_path, services):
    """Unknown keys are errors (the contract), a key of another protocol too: a CAS service
    with an OIDC client's secret, an OIDC client with a CAS service's logout."""
    mixed = Castellan(tmp_path / "mixed", services=services + [
        {"name": "mixed-cas", "protocol": "cas", "service": r"^https://mixed\.example\.test/.*$",
         "release": [], "client_secret": "s3cret"},
        {"name": "mixed-oidc", "protocol": "oidc", "client_id": "mixed", "logout": "back-channel",
         "redirect_uris": ["https://mixed.example.test/cb"]}])
    mixed.write_config()
    p = run("check-config", "--config", str(mixed.config_path))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    lines = mixed.config_path.read_text().splitlines()
    secret = lines.index('client_secret = "s3cret"') + 1
    logout = max(i for i, line in enumerate(lines, 1) if line == 'logout = "back-channel"')
    assert f'{mixed.config_path}:{secret}: service "mixed-cas": client_secret is not a key of a CAS service' in out, out
    assert f'{mixed.config_path}:{logout}: service "mixed-oidc": logout is not a key of an OIDC client' in out, out


def test_serve_refuses_bad_config(tmp_path, services):
    bad = Castellan(tmp_path / "bad", services=services)
    bad.config_path.write_text(bad.config_text() + "\n[bogus_section]\nx = 1\n")
    p = subprocess.run([str(BINARY), "serve", "--config", str(bad.config_path)], capture_output=True, text=True,
                       timeout=15)
    assert p.returncode != 0


def test_sigterm_stops_cleanly(fresh_castellan):
    cas = fresh_castellan("sigterm").start()
    code = cas.stop()
    assert code == 0, f"exit code {code} after SIGTERM"
