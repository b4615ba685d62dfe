#!/usr/bin/env python3
"""Password logins/s through an LDAP [[authenticators]] entry, with Debian's
slapd on the same machine (started here by tests/e2e/slapd.py).

  bench/ldap_logins.py --bin target/release/castellan [--seconds 10] [--clients 4]

Each client process keeps one HTTP/1.1 connection and loops over whole
logins: GET /login?service=S (form token and browser cookie), POST the
username and password, expect the 302 with a ticket. Castellan searches the
user as the service account and binds as the user, each on a pooled
connection. Printed: logins/s, directory operations per login (SRCH and
BIND lines in slapd's stats log over the number of logins), connections
slapd accepted during the run, Castellan's RSS idle with the pools open and
after the burst. Needs the `cryptography` package (the tests' venv).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import slapd as slapd_mod  # noqa: E402

SERVICE = "https://app.example.test/home"
EXEC_RE = re.compile(rb'name="execution" value="([^"]+)"')


def one_client(port: int, seconds: float, out) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    q = urllib.parse.urlencode({"service": SERVICE})
    body_user = urllib.parse.urlencode({"username": "casuser", "password": slapd_mod.PASSWORD})
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request("GET", f"/cas/login?{q}")
        r = conn.getresponse()
        page = r.read()
        cookies = "; ".join(c.split(";", 1)[0] for k, c in r.getheaders() if k.lower() == "set-cookie")
        m = EXEC_RE.search(page)
        if r.status != 200 or not m:
            errors += 1
            continue
        body = body_user + "&execution=" + urllib.parse.quote(m.group(1).decode())
        conn.request("POST", f"/cas/login?{q}", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookies})
        r = conn.getresponse()
        r.read()
        if r.status == 302 and "ticket=ST-" in (r.getheader("Location") or ""):
            done += 1
        else:
            errors += 1
    out.put((done, errors))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--pool-size", type=int, default=8)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ldap-bench-"))
    ldap = slapd_mod.Slapd(work / "slapd")
    port = slapd_mod._free_port()
    cfg = work / "castellan.toml"
    cfg.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/cas"
data_dir = "{work}/data"

[throttle]
failures_per_user = 100000
failures_per_ip = 100000

[[services]]
name = "app"
protocol = "cas"
service = "^https://app\\\\.example\\\\.test(/.*)?$"
release = ["mail", "cn", "memberOf"]

[[authenticators]]
name = "directory"
kind = "ldap"
urls = ["{ldap.url}"]
bind_dn = "{slapd_mod.SERVICE_DN}"
bind_password = "{slapd_mod.SERVICE_PW}"
base_dn = "{slapd_mod.PEOPLE}"
user_filter = "(uid={{user}})"
attributes = ["mail", "cn", "memberOf"]
pool_size = {a.pool_size}
""")
    log = open(work / "castellan.log", "wb")
    proc = subprocess.Popen([a.bin, "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/cas/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        # Warm-up: opens the pools.
        q: mp.Queue = mp.Queue()
        one_client(port, 1.0, q)
        q.get()
        time.sleep(0.5)
        rss_idle = rss_kib(proc.pid)
        text = ldap.log_text()
        srch0, bind0, acc0 = text.count(" SRCH base="), len(re.findall(r" BIND dn=\"[^\"]*\" method=", text)), ldap.accepted()
        procs = [mp.Process(target=one_client, args=(port, a.seconds, q)) for _ in range(a.clients)]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        elapsed = time.monotonic() - t0
        for p in procs:
            p.join()
        rss_after = rss_kib(proc.pid)
        time.sleep(0.5)
        text = ldap.log_text()
        logins = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        srch, bind = text.count(" SRCH base=") - srch0, len(re.findall(r" BIND dn=\"[^\"]*\" method=", text)) - bind0
        print(f"logins: {logins} in {elapsed:.1f} s = {logins / elapsed:.0f} /s ({errors} errors), "
              f"{a.clients} clients, pool_size {a.pool_size}")
        print(f"directory operations per login: {srch / max(logins, 1):.2f} searches, "
              f"{bind / max(logins, 1):.2f} binds; connections slapd accepted during the run: "
              f"{ldap.accepted() - acc0}")
        print(f"castellan RSS: idle with pools open {rss_idle / 1024:.1f} MiB, after the burst "
              f"{rss_after / 1024:.1f} MiB")
    finally:
        proc.terminate()
        proc.wait(10)
        ldap.stop()


if __name__ == "__main__":
    main()
