#!/usr/bin/env python3
"""SSO round trips/s while the configuration is reloaded over and over,
beside the same run without reloads: a reload must cost the requests in
flight nothing (no error) and the throughput little.

  bench/reload_sso.py --bin target/release/castellan --loadgen tools/loadgen/target/release/loadgen \
      [--connections 64] [--seconds 10] [--every 1] [--audit]

Castellan runs on its memory store. The first run is the loadgen's usual
`sso` loop (password login per connection, then `GET /login?service=` and
`/p3/serviceValidate`). During the second run the file is rewritten (a
service added or removed) and SIGHUP sent every `--every` seconds. Both
RESULT lines are printed, then the reload count and the ratio. With
`--audit` the server writes its audit log (`[audit] path`) all along: the
steady figure with and without it is the audit log's cost.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

SERVICE = "https://app.example.test/app"
PASSWORD = "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(port: int, base: str, extra: int, audit: bool) -> str:
    services = "".join(
        f'[[services]]\nname = "extra{i}"\nprotocol = "cas"\nservice = "^https://extra{i}\\\\.example\\\\.test/.*$"\n\n'
        for i in range(extra))
    return f"""[server]
listen = "127.0.0.1:{port}"
public_url = "{base}"
data_dir = "data"
log_format = "json"
{'[audit]' + chr(10) + 'path = "audit.jsonl"' + chr(10) if audit else ''}
[throttle]
failures_per_ip = 100000
failures_per_user = 100000

[[users]]
username = "bench"
password = "{PASSWORD}"

[[services]]
name = "app"
protocol = "cas"
service = "^https://app\\\\.example\\\\.test(/.*)?$"

{services}"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/castellan")
    ap.add_argument("--loadgen", default="tools/loadgen/target/release/loadgen")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between two reloads")
    ap.add_argument("--audit", action="store_true", help="write the audit log")
    a = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}/cas"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "castellan.toml"
        path.write_text(config(port, base, 0, a.audit))
        log = open(Path(tmp) / "castellan.log", "w")
        server = subprocess.Popen([a.bin, "serve", "--config", str(path)], stdout=log, stderr=log)
        try:
            for _ in range(100):
                try:
                    requests.get(f"{base}/health", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            cmd = [a.loadgen, "sso", "--url", base, "--user", "bench", "--password", PASSWORD,
                   "--service", SERVICE, "--connections", str(a.connections),
                   "--duration", str(a.seconds), "--warmup", "1", "--server-pid", str(server.pid)]
            rates = {}
            for label in ("steady", "reloading"):
                stop = threading.Event()
                reloads = [0]

                def reload_loop():
                    while not stop.wait(a.every):
                        reloads[0] += 1
                        path.write_text(config(port, base, reloads[0] % 5, a.audit))
                        server.send_signal(signal.SIGHUP)

                thread = threading.Thread(target=reload_loop)
                if label == "reloading":
                    thread.start()
                out = subprocess.run(cmd, capture_output=True, text=True)
                stop.set()
                if thread.is_alive():
                    thread.join()
                if out.returncode != 0:
                    raise SystemExit(f"loadgen {label} failed:\n{out.stderr[-3000:]}")
                line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
                print(f"{label}: {line}" + (f" reloads={reloads[0]}" if label == "reloading" else ""))
                rates[label] = float(re.search(r" rate=([0-9.]+)", line).group(1))
                errors = int(re.search(r" errors=(\d+)", line).group(1))
                if errors:
                    raise SystemExit(f"{label}: {errors} failed round trips")
            generation = re.search(r"^castellan_config_generation (\d+)$",
                                   requests.get(f"{base}/metrics", timeout=5).text, re.M).group(1)
            print(f"generation {generation}; reloading / steady: {rates['reloading'] / rates['steady']:.3f}")
            if a.audit:
                lines = sum(1 for _ in open(Path(tmp) / "audit.jsonl"))
                print(f"audit lines written: {lines}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
