#!/usr/bin/env python3
"""Anonymous-flood load generator and "real login during the flood" probe.

Plain Python 3.11 standard library, no third-party packages.

  flood.py flood --url URL [--url URL ...] --requests N [--connections 32]
                 [--probe-base BASE --probe-service S --probe-user U --probe-password P]
  flood.py probe --base BASE --service S --user U --password P [--count 1]

`flood` sends N GET requests over C raw HTTP/1.1 keep-alive connections (one
request in flight per connection), the URLs taken in turn. A `{i}` in a URL is
replaced by the request's number as 8 digits, so that every request can carry
distinct values of a fixed length. Responses are read whole (Content-Length or
chunked bodies); the status codes are counted. With --probe-base, a separate
process does one whole CAS login each second while the flood runs: GET
BASE/login?service=S, parse the form id="fm1" (hidden fields, `execution`
among them), send back the cookies it set (CASBROWSER: the form token is bound
to it), POST username/password, expect a 302 whose Location carries
`ticket=`, and validate that ticket at BASE/p3/serviceValidate.

Both print a human summary on stderr and one `RESULT kind=... key=value ...`
line on stdout (the last line), which bench/flood.sh reads.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import sys
import time
import urllib.parse
from html.parser import HTMLParser

# ----------------------------------------------------------------- flood


class Shared:
    """What all connections of one flood share."""

    def __init__(self, templates, total, host_header):
        # Each template: (bytes before {i}, bytes after {i}) or (request, None).
        self.templates = templates
        self.total = total
        self.issued = 0
        self.done = 0
        self.status = {}
        self.errors = 0
        self.reconnects = 0
        self.latencies = []  # seconds, one per completed request
        self.per_second = {}
        self.t0 = 0.0
        self.finished: asyncio.Future | None = None
        self.host_header = host_header

    def next_request(self):
        if self.issued >= self.total:
            return None
        i = self.issued
        self.issued += 1
        before, after = self.templates[i % len(self.templates)]
        if after is None:
            return before
        return b"%s%08d%s" % (before, i, after)


class FloodConnection(asyncio.Protocol):
    """One keep-alive connection: send, read the whole response, send again."""

    def __init__(self, shared: Shared, on_lost):
        self.s = shared
        self.on_lost = on_lost
        self.transport = None
        self.buf = bytearray()
        self.sent_at = 0.0
        self.in_flight = False
        self.closing = False

    def connection_made(self, transport):
        self.transport = transport
        self.send_next()

    def send_next(self):
        req = self.s.next_request()
        if req is None:
            self.closing = True
            self.transport.close()
            return
        self.in_flight = True
        self.sent_at = time.perf_counter()
        self.transport.write(req)

    def data_received(self, data):
        self.buf += data
        while self.in_flight:
            parsed = parse_response(self.buf)
            if parsed is None:
                return
            status, consumed, close = parsed
            del self.buf[:consumed]
            now = time.perf_counter()
            s = self.s
            s.latencies.append(now - self.sent_at)
            s.status[status] = s.status.get(status, 0) + 1
            sec = int(now - s.t0)
            s.per_second[sec] = s.per_second.get(sec, 0) + 1
            s.done += 1
            self.in_flight = False
            if s.done >= s.total and s.finished and not s.finished.done():
                s.finished.set_result(None)
            if close:
                self.closing = True
                self.transport.close()
                if s.issued < s.total:
                    s.reconnects += 1
                    self.on_lost()
                return
            self.send_next()

    def connection_lost(self, exc):
        if self.closing and not self.in_flight:
            return
        # Lost with a request in flight: count it as an error, open another.
        s = self.s
        if self.in_flight:
            s.errors += 1
            s.done += 1
            if s.done >= s.total and s.finished and not s.finished.done():
                s.finished.set_result(None)
                return
        self.in_flight = False
        if s.issued < s.total:
            s.reconnects += 1
            self.on_lost()


def parse_response(buf: bytearray):
    """(status, bytes consumed, connection close?) for a whole response, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).split(b"\r\n")
    status = int(head[0].split(b" ", 2)[1])
    length = None
    chunked = False
    close = False
    for line in head[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    start = end + 4
    if status in (204, 304) or 100 <= status < 200:
        return status, start, close
    if length is not None:
        if len(buf) < start + length:
            return None
        return status, start + length, close
    if chunked:
        pos = start
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                # Trailers end with an empty line.
                tend = buf.find(b"\r\n", pos)
                while tend >= 0 and tend != pos:
                    pos = tend + 2
                    tend = buf.find(b"\r\n", pos)
                if tend < 0:
                    return None
                return status, tend + 2, close
            if len(buf) < pos + size + 2:
                return None
            pos += size + 2
    # No length: the body runs to the end of the connection (not expected).
    raise ValueError("response without Content-Length or chunked body")


def build_templates(urls):
    host = None
    templates = []
    for url in urls:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            sys.exit(f"only http:// URLs: {url}")
        if host is None:
            host = (u.hostname, u.port or 80)
        elif host != (u.hostname, u.port or 80):
            sys.exit("every URL must name the same host and port")
        target = u.path or "/"
        if u.query:
            target += "?" + u.query
        head = (
            f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\n"
            "User-Agent: castellan-flood\r\nAccept: */*\r\n\r\n"
        ).encode()
        if b"{i}" in head:
            before, after = head.split(b"{i}", 1)
            templates.append((before, after))
        else:
            templates.append((head, None))
    return host, templates


async def run_flood(urls, total, connections):
    (hostname, port), templates = build_templates(urls)
    shared = Shared(templates, total, hostname)
    loop = asyncio.get_running_loop()
    shared.finished = loop.create_future()
    pending_opens = set()

    def open_one():
        t = loop.create_task(
            loop.create_connection(lambda: FloodConnection(shared, open_one), hostname, port)
        )
        pending_opens.add(t)
        t.add_done_callback(opened)

    def opened(t):
        pending_opens.discard(t)
        if t.exception() is not None:
            shared.errors += 1
            shared.done += 1
            shared.issued += 1  # count the request it would have sent
            if shared.done >= shared.total and not shared.finished.done():
                shared.finished.set_result(None)
            elif shared.issued < shared.total:
                loop.call_later(0.05, open_one)

    shared.t0 = time.perf_counter()
    for _ in range(min(connections, total)):
        open_one()
    if total == 0:
        shared.finished.set_result(None)
    await shared.finished
    elapsed = time.perf_counter() - shared.t0
    return shared, elapsed


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


# ----------------------------------------------------------------- probe


class FormParser(HTMLParser):
    """The form id="fm1": its action and its input fields."""

    def __init__(self):
        super().__init__()
        self.in_form = False
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == "fm1":
            self.in_form = True
            self.action = a.get("action")
        elif tag == "input" and self.in_form and a.get("name"):
            if a.get("type", "text").lower() in ("hidden", "text", "password", "submit"):
                self.fields.setdefault(a["name"], a.get("value") or "")

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False


def cookies_from(resp, jar):
    for value in resp.headers.get_all("Set-Cookie") or []:
        pair = value.split(";", 1)[0]
        name, _, val = pair.partition("=")
        jar[name.strip()] = val.strip()


def cookie_header(jar):
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def one_login(base, service, user, password, timeout=30.0):
    """One whole CAS login; (ok, seconds, reason)."""
    b = urllib.parse.urlsplit(base)
    prefix = b.path.rstrip("/")
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(b.hostname, b.port or 80, timeout=timeout)
    try:
        jar = {}
        login_path = f"{prefix}/login?service={urllib.parse.quote(service, safe='')}"
        conn.request("GET", login_path)
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        cookies_from(r, jar)
        if r.status != 200:
            return False, time.perf_counter() - t0, f"form {r.status}"
        form = FormParser()
        form.feed(body)
        if "execution" not in form.fields:
            return False, time.perf_counter() - t0, "no execution field"
        fields = dict(form.fields)
        fields["username"] = user
        fields["password"] = password
        action = form.action or login_path
        if not action.startswith("/"):
            action = urllib.parse.urljoin(login_path, action)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if jar:
            headers["Cookie"] = cookie_header(jar)
        conn.request("POST", action, body=urllib.parse.urlencode(fields), headers=headers)
        r = conn.getresponse()
        r.read()
        location = r.getheader("Location") or ""
        if r.status != 302 or "ticket=" not in location:
            return False, time.perf_counter() - t0, f"post {r.status}"
        ticket = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["ticket"][0]
        q = urllib.parse.urlencode({"service": service, "ticket": ticket})
        conn.request("GET", f"{prefix}/p3/serviceValidate?{q}")
        r = conn.getresponse()
        xml = r.read().decode("utf-8", "replace")
        if r.status != 200 or f"<cas:user>{user}</cas:user>" not in xml:
            return False, time.perf_counter() - t0, f"validate {r.status}"
        return True, time.perf_counter() - t0, "ok"
    except Exception as e:  # noqa: BLE001 - a probe reports, never raises
        return False, time.perf_counter() - t0, type(e).__name__
    finally:
        conn.close()


def probe_loop(base, service, user, password, stop, out, interval=1.0):
    """Runs in its own process (no GIL shared with the flood)."""
    results = []
    next_at = time.monotonic()
    while not stop.is_set():
        results.append(one_login(base, service, user, password))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()
    out.put(results)


def probe_summary(results):
    ok = sorted(t for good, t, _ in results if good)
    failed = [reason for good, _, reason in results if not good]
    reasons = {}
    for r in failed:
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "probe_ok": len(ok),
        "probe_failed": len(failed),
        "probe_p50_ms": f"{percentile(ok, 0.5) * 1000:.1f}" if ok else "nan",
        "probe_max_ms": f"{ok[-1] * 1000:.1f}" if ok else "nan",
        "probe_fail_reasons": ",".join(f"{k.replace(' ', '_')}:{v}" for k, v in sorted(reasons.items())) or "-",
    }


# ----------------------------------------------------------------- main


def result_line(kind, fields):
    return "RESULT kind=" + kind + "".join(f" {k}={v}" for k, v in fields.items())


def cmd_flood(a):
    probe = None
    if a.probe_base:
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        out = ctx.Queue()
        probe = ctx.Process(
            target=probe_loop,
            args=(a.probe_base, a.probe_service, a.probe_user, a.probe_password, stop, out),
            daemon=True,
        )
        probe.start()
    shared, elapsed = asyncio.run(run_flood(a.url, a.requests, a.connections))
    fields = {}
    if probe is not None:
        stop.set()
        results = out.get(timeout=120)
        probe.join(10)
        fields.update(probe_summary(results))
    lat = sorted(shared.latencies)
    statuses = ",".join(f"{k}:{v}" for k, v in sorted(shared.status.items()))
    summary = {
        "requests": shared.done,
        "seconds": f"{elapsed:.2f}",
        "rate": f"{shared.done / elapsed:.0f}" if elapsed > 0 else "0",
        "status": statuses or "-",
        "errors": shared.errors,
        "reconnects": shared.reconnects,
        "p50_ms": f"{percentile(lat, 0.5) * 1000:.2f}",
        "p99_ms": f"{percentile(lat, 0.99) * 1000:.2f}",
        "max_ms": f"{(lat[-1] if lat else float('nan')) * 1000:.2f}",
    }
    summary.update(fields)
    timeline = " ".join(str(shared.per_second.get(s, 0)) for s in range(int(elapsed) + 1))
    print(f"flood: {summary}", file=sys.stderr)
    print(f"flood: per second: {timeline}", file=sys.stderr)
    print(result_line("flood", summary))


def cmd_probe(a):
    results = []
    for i in range(a.count):
        if i:
            time.sleep(1)
        results.append(one_login(a.base, a.service, a.user, a.password))
    for good, t, reason in results:
        print(f"probe: {reason} in {t * 1000:.1f} ms", file=sys.stderr)
    s = probe_summary(results)
    print(result_line("probe", s))
    sys.exit(0 if s["probe_failed"] == 0 else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood", help="N GET requests over C keep-alive connections")
    f.add_argument("--url", action="append", required=True, help="http:// URL; repeat for several ({i}: request number)")
    f.add_argument("--requests", type=int, required=True)
    f.add_argument("--connections", type=int, default=32)
    f.add_argument("--probe-base", help="e.g. http://127.0.0.1:8080/cas: run the login probe during the flood")
    f.add_argument("--probe-service", default="https://app.example.org/")
    f.add_argument("--probe-user", default="casuser")
    f.add_argument("--probe-password", default="Mellon")
    f.set_defaults(func=cmd_flood)
    q = sub.add_parser("probe", help="whole CAS logins, one a second")
    q.add_argument("--base", required=True)
    q.add_argument("--service", default="https://app.example.org/")
    q.add_argument("--user", default="casuser")
    q.add_argument("--password", default="Mellon")
    q.add_argument("--count", type=int, default=1)
    q.set_defaults(func=cmd_probe)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
