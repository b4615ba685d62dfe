#!/usr/bin/env python3
"""Password logins per second through a PostgreSQL [[authenticators]] source
whose table holds bcrypt cost-10 hashes, beside the bare bcrypt-10 rate of
this machine (pyca/bcrypt, which is the same Rust `bcrypt` crate Castellan
uses), to say how close the login rate comes to the hash's own.

  CASTELLAN_BIN=/tmp/castellan-sql tests/.venv/bin/python bench/sql_logins.py [--seconds 10] [--clients 4]

Starts its own PostgreSQL (tests/e2e/postgres.py: Debian's postgresql 15 as
the postgres user) and its own server (tests/e2e/conftest.py's Castellan).
Each login is a whole CAS login from a fresh client: GET the form, POST
username and password, expect the 302 with a ticket. Prints a markdown
table; not a timed test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

import bcrypt  # noqa: E402

from conftest import APP, Castellan, toml_table  # noqa: E402
from postgres import Postgres  # noqa: E402

USERS = 20


def _bcrypt_worker(args) -> int:
    stored, seconds = args
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        bcrypt.checkpw(b"bench-password", stored)
        n += 1
    return n


def bare_bcrypt_rate(cost: int, processes: int, seconds: float) -> float:
    stored = bcrypt.hashpw(b"bench-password", bcrypt.gensalt(cost))
    with mp.Pool(processes) as pool:
        counts = pool.map(_bcrypt_worker, [(stored, seconds)] * processes)
    return sum(counts) / seconds


class SqlCastellan(Castellan):
    def __init__(self, *a, authenticators: list[dict], **kw) -> None:
        super().__init__(*a, **kw)
        self.authenticators = authenticators

    def config_text(self) -> str:
        return super().config_text() + "".join(
            toml_table("authenticators", a, array=True) for a in self.authenticators)


def vmrss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--cost", type=int, default=10)
    ap.add_argument("--pool-size", type=int, default=4)
    args = ap.parse_args()
    cores = os.cpu_count() or 2

    db = Postgres()
    try:
        db.psql(f"CREATE TABLE users (username text PRIMARY KEY, password text, mail text);"
                f"ALTER TABLE users OWNER TO castellan;")
        values = ",".join(
            f"('bench{i}', '{bcrypt.hashpw(f'pw-{i}'.encode(), bcrypt.gensalt(args.cost)).decode()}', 'bench{i}@example.org')"
            for i in range(USERS))
        db.psql(f"INSERT INTO users VALUES {values}")
        work = Path(tempfile.mkdtemp(prefix="castellan-sqlbench-"))
        cas = SqlCastellan(
            work, users=[], label="sqlbench",
            services=[{"name": "app", "protocol": "cas", "service": r"^https://app\.example\.test(/.*)?$",
                       "release": ["mail"]}],
            throttle={"failures_per_user": 1000000, "failures_per_ip": 1000000},
            env={"RUST_LOG": "warn"},
            authenticators=[{"name": "appdb", "kind": "sql", "url": db.url, "pool_size": args.pool_size,
                             "query": "SELECT password, mail FROM users WHERE username = $1"}],
        ).start()
        try:
            assert cas.browser().login(APP, username="bench0", password="pw-0").status_code == 302
            idle_rss = vmrss_mib(cas.proc.pid)
            ok = failed = 0
            lock = threading.Lock()
            latencies: list[float] = []
            end = time.monotonic() + args.seconds

            def client(k: int) -> None:
                nonlocal ok, failed
                i = k
                while time.monotonic() < end:
                    u = i % USERS
                    t0 = time.monotonic()
                    r = cas.browser().login(APP, username=f"bench{u}", password=f"pw-{u}")
                    dt = time.monotonic() - t0
                    with lock:
                        if r.status_code == 302 and "ticket=ST-" in r.headers.get("Location", ""):
                            ok += 1
                            latencies.append(dt)
                        else:
                            failed += 1
                    i += args.clients

            start = time.monotonic()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - start
            burst_rss = vmrss_mib(cas.proc.pid)
            conns = db.connections()
        finally:
            cas.stop()
    finally:
        db.cleanup()

    latencies.sort()
    rate = ok / elapsed
    bare1 = bare_bcrypt_rate(args.cost, 1, 5)
    bare_all = bare_bcrypt_rate(args.cost, cores, 5)
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0
    print(f"| Measure | Value |\n| --- | ---: |")
    print(f"| Password logins/s through PostgreSQL (bcrypt {args.cost}, {args.clients} clients, "
          f"pool {args.pool_size}, {elapsed:.1f} s) | {rate:.1f} /s ({ok} ok, {failed} failed) |")
    print(f"| Login latency p50 / p99 | {p50:.0f} / {p99:.0f} ms |")
    print(f"| Bare bcrypt-{args.cost} verifications/s, 1 process | {bare1:.1f} /s |")
    print(f"| Bare bcrypt-{args.cost} verifications/s, {cores} processes | {bare_all:.1f} /s |")
    print(f"| Logins/s as a share of the bare {cores}-process rate | {100 * rate / bare_all:.0f} % |")
    print(f"| PostgreSQL connections opened by Castellan | {conns} |")
    print(f"| Server RSS idle (after one login) / after the burst | {idle_rss:.1f} / {burst_rss:.1f} MiB |")


if __name__ == "__main__":
    main()
