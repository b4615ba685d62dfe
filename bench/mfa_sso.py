#!/usr/bin/env python3
"""SSO round trips/s for a service with `mfa = "required"` from sessions that
did their second factor, beside the same figure for a plain service on the
same server: the second factor must cost nothing once the session has it.

  bench/mfa_sso.py --bin target/release/castellan --loadgen tools/loadgen/target/release/loadgen \
      [--connections 64] [--seconds 10]

Castellan runs on its memory store with one user per connection. Each user
signs in once for the MFA service, enrolling an authenticator app at the
second step (the code is computed from the otpauth URI the page shows);
the loadgen then loops `GET /login?service=MFA` (302 with a ticket) and
`/p3/serviceValidate` on those sessions (`--sessions-from`). The plain
figure is the loadgen's usual run (password login, then the same loop)
against a service without `mfa`. Both runs are printed as the loadgen's
RESULT lines, then the ratio.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests

MFA_SERVICE = "https://secure.example.test/app"
PLAIN_SERVICE = "https://plain.example.test/app"
PASSWORD = "bench-password"


def totp(secret: str) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(time.time() // 30)), hashlib.sha1).digest()
    o = digest[-1] & 15
    return "%06d" % ((struct.unpack(">I", digest[o : o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mfa_session(base: str, user: str) -> str:
    """Password, then the enrolment step: the session's CASTGC."""
    s = requests.Session()
    page = s.get(f"{base}/login", params={"service": MFA_SERVICE}).text
    execution = re.search(r'name="execution" value="([^"]+)"', page).group(1)
    r = s.post(f"{base}/login", params={"service": MFA_SERVICE},
               data={"username": user, "password": PASSWORD, "execution": execution},
               allow_redirects=False)
    uri = html.unescape(re.search(r'id="otpauth-uri"[^>]*>([^<]+)<', r.text).group(1))
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    flow = re.search(r'name="flow" value="([^"]+)"', r.text).group(1)
    r = s.post(f"{base}/login/mfa", data={"flow": flow, "otp": totp(secret)}, allow_redirects=False)
    if r.status_code != 302 or "ticket=ST-" not in r.headers.get("location", ""):
        raise SystemExit(f"{user}: the second step failed ({r.status_code})")
    return "CASTGC=" + s.cookies["CASTGC"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/castellan")
    ap.add_argument("--loadgen", default="tools/loadgen/target/release/loadgen")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the two runs this many times (plain first, then MFA)")
    a = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}/cas"
    with tempfile.TemporaryDirectory() as tmp:
        users = "".join(
            f'[[users]]\nusername = "bench{i}"\npassword = "{PASSWORD}"\n\n' for i in range(a.connections)
        )
        config = Path(tmp) / "castellan.toml"
        config.write_text(f"""[server]
listen = "127.0.0.1:{port}"
public_url = "{base}"
data_dir = "data"
log_format = "json"

[throttle]
failures_per_ip = 100000
failures_per_user = 100000

{users}
[[services]]
name = "secure"
protocol = "cas"
service = "^https://secure\\\\.example\\\\.test(/.*)?$"
mfa = "required"

[[services]]
name = "plain"
protocol = "cas"
service = "^https://plain\\\\.example\\\\.test(/.*)?$"
""")
        log = open(Path(tmp) / "castellan.log", "w")
        server = subprocess.Popen([a.bin, "serve", "--config", str(config)], stdout=log, stderr=log)
        try:
            for _ in range(100):
                try:
                    requests.get(f"{base}/health", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            sessions = Path(tmp) / "sessions.tsv"
            sessions.write_text("".join(
                f"bench{i}\t{mfa_session(base, f'bench{i}')}\n" for i in range(a.connections)))
            common = ["--url", base, "--user", "bench0", "--password", PASSWORD,
                      "--connections", str(a.connections), "--duration", str(a.seconds),
                      "--server-pid", str(server.pid)]
            results: dict[str, list[float]] = {"mfa": [], "plain": []}
            runs = [
                ("plain", ["--service", PLAIN_SERVICE]),
                ("mfa", ["--service", MFA_SERVICE, "--sessions-from", str(sessions)]),
            ] * a.rounds
            for label, extra in runs:
                out = subprocess.run([a.loadgen, "sso", *common, *extra],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"loadgen {label} failed:\n{out.stderr[-3000:]}")
                out = out.stdout
                line = next(l for l in out.splitlines() if l.startswith("RESULT"))
                print(f"{label}: {line}")
                results[label].append(float(re.search(r" rate=([0-9.]+)", line).group(1)))
            mfa, plain = (sum(results[k]) / len(results[k]) for k in ("mfa", "plain"))
            print(f"mean MFA {mfa:.0f}/s, plain {plain:.0f}/s, MFA / plain: {mfa / plain:.3f}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
