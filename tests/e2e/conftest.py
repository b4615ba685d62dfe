"""Fixtures and helpers for Castellan's end-to-end tests.

Everything here talks to a real `target/release/castellan` process over
loopback HTTP, started per test module (or per test where a test needs its
own configuration).  Helper servers:

* `callback_server`: an HTTPS server (certificate issued by a test CA made
  here) that records proxy callbacks (`pgtUrl`).  Paths below `/pgt404`
  answer 404, everything else 200.
* `recorder`: a plain-HTTP server recording every request (used for
  back-channel single-logout POSTs and for "http:// pgtUrl must not be
  called" checks).

Castellan is started with `SSL_CERT_FILE=<test CA pem>` so that it trusts the
callback server; a test that wants an untrusted callback starts its own
Castellan without that variable.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("CASTELLAN_BIN", REPO / "target" / "release" / "castellan"))
CAS_NS = "http://www.yale.edu/tp/cas"
NS = {"cas": CAS_NS}
SAML1P = "urn:oasis:names:tc:SAML:1.0:protocol"
SAML1 = "urn:oasis:names:tc:SAML:1.0:assertion"

# --------------------------------------------------------------------------
# users and services shared by most modules
# --------------------------------------------------------------------------

PASSWORD = "Mellon"
WEIRD_VALUE = "a<b&c>\"d'e ]]> \u00e9"  # XML special chars, a CDATA terminator, non-ASCII

USERS = [
    {
        "username": "casuser",
        "password": PASSWORD,
        "attributes": {
            "mail": "casuser@example.org",
            "cn": "CAS User",
            "memberOf": ["staff", "faculty"],
            "weird": WEIRD_VALUE,
            "secret": "do-not-release",
        },
    },
    {
        "username": "alice",
        "password": "Wonderland-42",
        "attributes": {"mail": "alice@example.org", "cn": "Alice"},
    },
]

APP = "https://app.example.test/home"
APP2 = "https://app2.example.test/home"
PROXY_SVC = "https://proxy.example.test/portal"
BACKEND = "https://backend.example.test/api"
LEAF = "https://leaf.example.test/data"


def standard_services(callback_port: int, plain_port: int) -> list[dict]:
    """The services every default instance has registered."""
    pgt_re = rf"^https?://127\.0\.0\.1:({callback_port}|{plain_port})/pgt.*$"
    return [
        {
            "name": "app",
            "protocol": "cas",
            "service": r"^https://app\.example\.test(/.*)?$",
            "release": ["mail", "cn", "memberOf", "weird"],
        },
        {
            "name": "app2",
            "protocol": "cas",
            "service": r"^https://app2\.example\.test(/.*)?$",
            "release": [],
        },
        {
            "name": "proxying-portal",
            "protocol": "cas",
            "service": r"^https://proxy\.example\.test(/.*)?$",
            "release": ["mail"],
            "proxy_callback": pgt_re,
        },
        {
            "name": "backend",
            "protocol": "cas",
            "service": r"^https://backend\.example\.test(/.*)?$",
            "release": ["mail", "memberOf"],
            "proxy_callback": pgt_re,
        },
        {
            "name": "leaf",
            "protocol": "cas",
            "service": r"^https://leaf\.example\.test(/.*)?$",
            "release": [],
        },
        {
            "name": "slo-app",
            "protocol": "cas",
            "service": rf"^http://127\.0\.0\.1:{plain_port}/slo(/.*)?$",
            "release": [],
            "logout": "back-channel",
        },
        {
            "name": "no-slo-app",
            "protocol": "cas",
            "service": rf"^http://127\.0\.0\.1:{plain_port}/noslo(/.*)?$",
            "release": [],
        },
    ]


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------

_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on (and that we did not hand out before)."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port")


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --------------------------------------------------------------------------
# process registry: logs of live processes are attached to failing reports
# --------------------------------------------------------------------------

_LIVE: list[Any] = []


_LOG_MARKS: dict[int, int] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # remember where each live process's log stands when a test starts, so a
    # failure report shows only what was logged during that test
    _LOG_MARKS.clear()
    for proc in _LIVE:
        try:
            _LOG_MARKS[id(proc)] = proc.log_path.stat().st_size
        except OSError:
            pass
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in list(_LIVE):
            try:
                text = _tail(proc.log_path, 120, since=_LOG_MARKS.get(id(proc), 0))
            except Exception as exc:  # pragma: no cover - best effort
                text = f"(unreadable: {exc})"
            report.sections.append((f"log of {proc.label} during this test", text))


def _tail(path: Path, lines: int = 150, since: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# TOML
# --------------------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        # A JSON string with ensure_ascii is a valid TOML basic string.
        return json.dumps(v, ensure_ascii=True)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {v!r} as TOML")


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_table(name: str, values: dict, array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    body = "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in values.items() if v is not None)
    return f"{head}\n{body}\n"


# --------------------------------------------------------------------------
# Castellan process
# --------------------------------------------------------------------------


class Castellan:
    """A castellan server with its own config and data dir."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: list[dict] | None = None,
        services: list[dict] | None = None,
        service_ticket_ttl: str = "10s",
        tickets: dict | None = None,
        throttle: dict | None = None,
        oidc: dict | None = None,
        ssl_cert_file: Path | None = None,
        env: dict | None = None,
        public_url: str | None = None,
        label: str = "castellan",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # where the tests talk to it (always plain http on the listen address)
        self.base = f"http://127.0.0.1:{self.port}/cas"
        # what it believes it is (e.g. https behind a TLS-terminating proxy)
        self.public_url = public_url or self.base
        self.users = USERS if users is None else users
        self.services = services or []
        self.tickets = {"service_ticket_ttl": service_ticket_ttl, **(tickets or {})}
        self.throttle = throttle
        self.oidc = oidc  # the [oidc] table (code_ttl, access_token_ttl, ...), when set
        self.ssl_cert_file = ssl_cert_file
        self.extra_env = env or {}
        self.config_path = self.workdir / "castellan.toml"
        self.log_path = self.workdir / "castellan.log"
        self.label = f"{label} (port {self.port}, {self.log_path})"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    # -- config -----------------------------------------------------------
    def config_text(self) -> str:
        parts = [
            toml_table(
                "server",
                {
                    "listen": f"127.0.0.1:{self.port}",
                    "public_url": self.public_url,
                    "data_dir": str(self.workdir / "data"),
                },
            ),
            toml_table("tickets", self.tickets),
        ]
        if self.throttle:
            parts.append(toml_table("throttle", self.throttle))
        if self.oidc is not None:
            parts.append(toml_table("oidc", self.oidc))
        for u in self.users:
            parts.append(toml_table("users", u, array=True))
        for s in self.services:
            parts.append(toml_table("services", s, array=True))
        return "".join(parts)

    def write_config(self) -> Path:
        self.config_path.write_text(self.config_text())
        return self.config_path

    # -- lifecycle --------------------------------------------------------
    def spawn(self) -> None:
        """Start the process without waiting for it (see start)."""
        if not BINARY.exists():
            pytest.fail(f"castellan binary not found at {BINARY} (run `cargo build --release`)")
        self.write_config()
        env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        env.setdefault("RUST_LOG", "info,castellan=debug")
        env["NO_COLOR"] = "1"
        if self.ssl_cert_file is not None:
            env["SSL_CERT_FILE"] = str(self.ssl_cert_file)
        env.update(self.extra_env)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(self.config_path)],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        _LIVE.append(self)

    def start(self, timeout: float = 30.0) -> "Castellan":
        """Start and wait until /health answers 200."""
        self.spawn()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._forget()
                raise RuntimeError(
                    f"castellan exited with {self.proc.returncode} during start-up:\n{self.log_tail()}"
                )
            try:
                r = requests.get(self.url("/health"), timeout=1)
                if r.status_code == 200:
                    return self
                last = f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"castellan not healthy after {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._forget()
        return self.proc.returncode

    def _forget(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 150) -> str:
        return _tail(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- helpers ----------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def browser(self) -> "Browser":
        return Browser(self)

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url(path), params=params, allow_redirects=False, timeout=15)

    def validate(self, endpoint: str, service: str | None, ticket: str | None, **params) -> "CasResult":
        """GET one of the XML validation endpoints and parse the answer."""
        q = dict(params)
        if service is not None:
            q["service"] = service
        if ticket is not None:
            q["ticket"] = ticket
        r = requests.get(self.url(endpoint), params=q, allow_redirects=False, timeout=30)
        return CasResult.parse(r)

    def saml_validate(self, service: str, ticket: str) -> requests.Response:
        body = SAML_REQUEST.format(request_id="_" + uuid.uuid4().hex, ticket=ticket,
                                   instant=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return requests.post(
            self.url("/samlValidate"),
            params={"TARGET": service},
            data=body.encode(),
            headers={"Content-Type": "text/xml; charset=utf-8",
                     "SOAPAction": "http://www.oasis-open.org/committees/security"},
            timeout=15,
        )


SAML_REQUEST = """<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
<SOAP-ENV:Header/>
<SOAP-ENV:Body>
<samlp:Request xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol" MajorVersion="1" MinorVersion="1" RequestID="{request_id}" IssueInstant="{instant}">
<samlp:AssertionArtifact>{ticket}</samlp:AssertionArtifact>
</samlp:Request>
</SOAP-ENV:Body>
</SOAP-ENV:Envelope>"""


# --------------------------------------------------------------------------
# parsing validation answers
# --------------------------------------------------------------------------


@dataclass
class CasResult:
    status: int
    raw: str
    success: bool = False
    user: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)
    pgtiou: str | None = None
    proxies: list[str] = field(default_factory=list)
    code: str | None = None
    message: str | None = None

    @classmethod
    def parse(cls, r: requests.Response) -> "CasResult":
        res = cls(status=r.status_code, raw=r.text)
        assert r.status_code < 500, f"server error {r.status_code} from {r.url}: {r.text[:500]}"
        try:
            root = ET.fromstring(r.content)
        except ET.ParseError as exc:
            raise AssertionError(f"not XML ({exc}) from {r.url}: {r.text[:500]!r}") from None
        assert root.tag == f"{{{CAS_NS}}}serviceResponse", f"unexpected root {root.tag}: {r.text[:500]}"
        ok = root.find("cas:authenticationSuccess", NS)
        bad = root.find("cas:authenticationFailure", NS)
        if ok is not None:
            res.success = True
            user = ok.find("cas:user", NS)
            res.user = user.text if user is not None else None
            attrs = ok.find("cas:attributes", NS)
            if attrs is not None:
                for a in attrs:
                    name = a.tag.split("}", 1)[-1]
                    res.attributes.setdefault(name, []).append(a.text or "")
            pgt = ok.find("cas:proxyGrantingTicket", NS)
            res.pgtiou = pgt.text.strip() if pgt is not None and pgt.text else None
            proxies = ok.find("cas:proxies", NS)
            if proxies is not None:
                res.proxies = [(p.text or "").strip() for p in proxies.findall("cas:proxy", NS)]
        elif bad is not None:
            res.code = bad.get("code")
            res.message = (bad.text or "").strip()
        else:
            raise AssertionError(f"neither success nor failure: {r.text[:500]}")
        return res

    def __repr__(self) -> str:  # keep assertion messages readable
        return (f"CasResult(status={self.status}, success={self.success}, user={self.user!r}, "
                f"code={self.code!r}, pgtiou={self.pgtiou!r}, proxies={self.proxies!r}, "
                f"attributes={self.attributes!r}, raw={self.raw[:800]!r})")


# --------------------------------------------------------------------------
# the login form dance
# --------------------------------------------------------------------------


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._cur = {"attrs": a, "inputs": {}}
            self.forms.append(self._cur)
        elif tag == "input" and self._cur is not None and a.get("name"):
            self._cur["inputs"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


@dataclass
class LoginForm:
    action: str
    method: str
    fields: dict[str, str]

    @property
    def execution(self) -> str:
        return self.fields["execution"]


def parse_login_form(resp: requests.Response) -> LoginForm | None:
    """The form id=fm1 of a login page, or None when the page has none."""
    ctype = resp.headers.get("Content-Type", "")
    if "html" not in ctype and "<form" not in resp.text:
        return None
    p = _FormParser()
    p.feed(resp.text)
    for f in p.forms:
        if f["attrs"].get("id") == "fm1":
            action = f["attrs"].get("action") or ""
            return LoginForm(
                action=urljoin(resp.url, action) if action else resp.url,
                method=(f["attrs"].get("method") or "get").lower(),
                fields=dict(f["inputs"]),
            )
    return None


def ticket_from(resp: requests.Response) -> str | None:
    loc = resp.headers.get("Location")
    if not loc:
        return None
    vals = parse_qs(urlparse(loc).query).get("ticket")
    return vals[0] if vals else None


class Browser:
    """A cookie-keeping client that walks Castellan's login pages without
    following redirects, so that each hop can be inspected."""

    def __init__(self, cas: Castellan) -> None:
        self.cas = cas
        self.s = requests.Session()

    # raw hops
    def get_login(self, service: str | None = None, **params) -> requests.Response:
        q = dict(params)
        if service is not None:
            q["service"] = service
        return self.s.get(self.cas.url("/login"), params=q, allow_redirects=False, timeout=15)

    def submit(self, page: requests.Response, username: str, password: str,
               execution: str | None = None, extra: dict | None = None) -> requests.Response:
        form = parse_login_form(page)
        assert form is not None, f"no login form (id=fm1) on page {page.url} [{page.status_code}]:\n{page.text[:1500]}"
        assert form.method == "post", f"login form method is {form.method!r}"
        assert "execution" in form.fields, f"no execution field in form: {form.fields}"
        assert "username" in form.fields or "username" in page.text, "no username input"
        data = dict(form.fields)
        data.update({"username": username, "password": password})
        if execution is not None:
            data["execution"] = execution
        if extra:
            data.update(extra)
        return self.s.post(form.action, data=data, allow_redirects=False, timeout=15)

    def login(self, service: str | None = None, username: str = "casuser",
              password: str = PASSWORD, **params) -> requests.Response:
        page = self.get_login(service, **params)
        assert page.status_code == 200, f"GET /login -> {page.status_code}: {page.text[:500]}"
        return self.submit(page, username, password)

    def ticket_for(self, service: str, username: str = "casuser", password: str = PASSWORD) -> str:
        """Log in (or use the SSO session) and return a fresh ST for `service`."""
        if self.tgc:
            r = self.get_login(service)
        else:
            r = self.login(service, username, password)
        assert r.status_code in (302, 303), f"expected a redirect with a ticket, got {r.status_code}: {r.text[:800]}"
        loc = r.headers["Location"]
        assert loc.startswith(service), f"redirected to {loc!r}, not to {service!r}"
        t = ticket_from(r)
        assert t and t.startswith("ST-"), f"no ST in {loc!r}"
        return t

    @property
    def tgc(self) -> str | None:
        for c in self.s.cookies:
            if c.name == "CASTGC":
                return c.value
        return None


# --------------------------------------------------------------------------
# test CA and TLS
# --------------------------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_pki(dirpath: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    dirpath.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Castellan e2e test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(dirpath, dirpath / "ca.pem", dirpath / "server.pem", dirpath / "server.key")
    pki.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    for p in (pki.dir, pki.ca_pem, pki.cert_pem):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return pki


# --------------------------------------------------------------------------
# recording HTTP(S) servers
# --------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)


class RecordingServer:
    """A threaded HTTP(S) server remembering every request.

    Status: 404 below /pgt404 and /404, 200 elsewhere."""

    def __init__(self, tls_context: ssl.SSLContext | None = None, label: str = "recorder") -> None:
        self.requests: list[Recorded] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                u = urlparse(self.path)
                rec = Recorded(self.command, u.path, parse_qs(u.query, keep_blank_values=True),
                               {k.lower(): v for k, v in self.headers.items()}, body)
                with outer.cond:
                    outer.requests.append(rec)
                    outer.cond.notify_all()
                status = 404 if (u.path.startswith("/pgt404") or u.path.startswith("/404")) else 200
                payload = b"ok\n" if status == 200 else b"not here\n"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = _handle

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        _handed_out.add(self.port)
        self.scheme = "https" if tls_context else "http"
        self.base = f"{self.scheme}://127.0.0.1:{self.port}"
        self.label = label
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def matching(self, path_prefix: str) -> list[Recorded]:
        with self.cond:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def for_url(self, url: str) -> list[Recorded]:
        """Requests whose path is exactly the path of `url`."""
        path = urlparse(url).path
        with self.cond:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path_prefix: str, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [r for r in self.requests if r.path.startswith(path_prefix)]
                left = deadline - time.monotonic()
                if len(got) >= count or left <= 0:
                    return got
                self.cond.wait(left)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def unique_path(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    # Under /tmp with open permissions: Apache's unprivileged children read the CA.
    d = Path(tempfile.mkdtemp(prefix="castellan-e2e-pki-"))
    os.chmod(d, 0o755)
    yield make_pki(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def callback_server(pki) -> RecordingServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
    srv = RecordingServer(ctx, label="https callback server")
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def recorder() -> RecordingServer:
    srv = RecordingServer(None, label="http recorder")
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def services(callback_server, recorder) -> list[dict]:
    return standard_services(callback_server.port, recorder.port)


@pytest.fixture(scope="session")
def castellan_factory(tmp_path_factory, pki, services):
    """Build (not start) a Castellan with the standard users/services; the
    caller may override anything, then call .start().  All instances made
    are stopped at the end of the session at the latest."""
    made: list[Castellan] = []

    def make(name: str = "castellan", **kw) -> Castellan:
        kw.setdefault("services", services)
        kw.setdefault("ssl_cert_file", pki.ca_pem)
        c = Castellan(tmp_path_factory.mktemp(name), label=name, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def fresh_castellan(castellan_factory):
    """A per-test factory: every instance it starts is stopped after the test."""
    mine: list[Castellan] = []

    def make(name: str = "castellan", **kw) -> Castellan:
        c = castellan_factory(name, **kw)
        mine.append(c)
        return c

    yield make
    for c in mine:
        c.stop()


@pytest.fixture(scope="module")
def cas(castellan_factory, request) -> Castellan:
    """The module's default Castellan: standard users and services, ST ttl 10s."""
    c = castellan_factory(request.module.__name__.rsplit(".", 1)[-1]).start()
    yield c
    c.stop()


@pytest.fixture
def browser(cas) -> Browser:
    return cas.browser()


@pytest.fixture(autouse=True)
def _castellan_watchdog(request):
    """Fail the test during which the module's Castellan died, and restart it
    so that the tests after it still run against a server."""
    yield
    if "cas" in request.fixturenames:
        c = request.getfixturevalue("cas")
        if not c.alive():
            code = c.proc.returncode if c.proc else None
            log = c.log_tail()
            c.start()
            pytest.fail(f"castellan died during this test (exit code {code}); last log lines:\n{log}")


# --------------------------------------------------------------------------
# Apache httpd + mod_auth_cas
# --------------------------------------------------------------------------

APACHE_BIN = Path("/usr/sbin/apache2")
APACHE_MODULES = Path("/usr/lib/apache2/modules")

ENV_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "REMOTE_USER=$REMOTE_USER"
env | grep '^HTTP_CAS' | sort
"""


class Apache:
    """Our own Apache httpd (not the system service): own ServerRoot, config,
    pid file and logs in a temp dir, prefork MPM, running in the foreground.

    Layout of the site it serves on http://127.0.0.1:<port>/ :
      /secured/env.cgi  protected by AuthType CAS; prints REMOTE_USER and the
                        CAS-* request headers mod_auth_cas adds (as HTTP_CAS_*).
    and, on https://127.0.0.1:<tls_port>/cas/, a TLS reverse proxy to
    Castellan: mod_auth_cas only validates tickets over https (CASValidateURL
    must be https, and it verifies the certificate against
    CASCertificatePath), while Castellan itself speaks plain HTTP here.  The
    proxy's certificate is issued by the test CA; CASCertificatePath points at
    that CA's PEM file.
    """

    def __init__(self, pki: Pki, castellan: Castellan, *, port: int, validate_path: str,
                 saml: bool, label: str = "apache") -> None:
        self.pki = pki
        self.cas = castellan
        self.port = port
        self.tls_port = free_port()
        self.validate_path = validate_path
        self.saml = saml
        self.root = Path(tempfile.mkdtemp(prefix="castellan-e2e-apache-"))
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "logs" / "error.log"
        self.label = f"{label} (port {port}, {self.root})"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        """None when Apache and mod_auth_cas are installed, else why not."""
        if not APACHE_BIN.exists():
            return f"{APACHE_BIN} missing (apt-get install apache2)"
        if not (APACHE_MODULES / "mod_auth_cas.so").exists():
            return "mod_auth_cas missing (apt-get install libapache2-mod-auth-cas)"
        return None

    def config_text(self) -> str:
        r = self.root
        mods = ["mpm_prefork", "authn_core", "authz_core", "authz_user", "auth_cas", "cgi",
                "ssl", "socache_shmcb", "proxy", "proxy_http", "mime", "dir"]
        load = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in mods)
        return f"""# generated by tests/e2e/conftest.py
ServerRoot "{r}"
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
Listen 127.0.0.1:{self.tls_port}
PidFile "{r}/run/httpd.pid"
DefaultRuntimeDir "{r}/run"
Mutex file:{r}/run default
ErrorLog "{self.log_path}"
LogLevel warn auth_cas:debug
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog "{r}/logs/access.log" common
User www-data
Group www-data
{load}
StartServers 3
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers 16
Timeout 30
TypesConfig /dev/null
SSLSessionCache "shmcb:{r}/run/ssl_scache(512000)"

CASDebug On
CASCookiePath "{r}/cas_cache/"
CASLoginURL {self.cas.url('/login')}
CASValidateURL https://127.0.0.1:{self.tls_port}/cas{self.validate_path}
CASValidateSAML {'On' if self.saml else 'Off'}
CASCertificatePath "{r}/ca.pem"
CASAttributePrefix CAS-
CASAttributeDelimiter ;
CASTimeout 600
CASIdleTimeout 600

DocumentRoot "{r}/htdocs"
<Directory "{r}/htdocs">
    Require all granted
</Directory>
<Directory "{r}/htdocs/secured">
    AuthType CAS
    CASAuthNHeader CAS-User
    CASScrubRequestHeaders On
    Require valid-user
    Options +ExecCGI
    SetHandler cgi-script
</Directory>

<VirtualHost 127.0.0.1:{self.tls_port}>
    ServerName 127.0.0.1
    SSLEngine on
    SSLCertificateFile "{r}/server.pem"
    SSLCertificateKeyFile "{r}/server.key"
    ProxyPass /cas/ {self.cas.base}/
    ProxyPassReverse /cas/ {self.cas.base}/
</VirtualHost>
"""

    def start(self, timeout: float = 20.0) -> "Apache":
        r = self.root
        os.chmod(r, 0o755)
        for d in ("logs", "run", "htdocs/secured", "cas_cache"):
            (r / d).mkdir(parents=True, exist_ok=True)
            os.chmod(r / d, 0o755)
        shutil.chown(r / "cas_cache", "www-data", "www-data")
        os.chmod(r / "cas_cache", 0o700)
        shutil.copy(self.pki.ca_pem, r / "ca.pem")
        shutil.copy(self.pki.cert_pem, r / "server.pem")
        shutil.copy(self.pki.key_pem, r / "server.key")
        os.chmod(r / "ca.pem", 0o644)
        os.chmod(r / "server.key", 0o600)
        cgi = r / "htdocs/secured/env.cgi"
        cgi.write_text(ENV_CGI)
        os.chmod(cgi, 0o755)
        (r / "htdocs/index.html").write_text("apache up\n")
        conf = r / "httpd.conf"
        conf.write_text(self.config_text())
        check = subprocess.run([str(APACHE_BIN), "-d", str(r), "-f", str(conf), "-t"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"apache config test failed:\n{check.stdout}{check.stderr}\n{conf.read_text()}")
        out = open(r / "logs" / "stdout.log", "ab")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        self.proc = subprocess.Popen([str(APACHE_BIN), "-d", str(r), "-f", str(conf), "-DFOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        out.close()
        _LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"apache exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.base + "/index.html", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"apache did not come up:\n{self.log_tail()}")

    def stop(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the parent stops its children
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 120) -> str:
        return (_tail(self.log_path, lines) + "\n--- access log ---\n"
                + _tail(self.root / "logs" / "access.log", 40)
                + "\n--- stdout ---\n" + _tail(self.root / "logs" / "stdout.log", 40))

    def cleanup(self) -> None:
        self.stop()
        if not os.environ.get("KEEP_E2E_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------
# OpenID Connect: a client's side of the protocol (requests + PyJWT)
# --------------------------------------------------------------------------

OIDC_BCL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) as in RFC 7636 §4.1-4.2."""
    import hashlib
    import secrets

    verifier = secrets.token_urlsafe(48)  # 64 chars of [A-Za-z0-9_-]
    return verifier, b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def half_hash(token: str) -> str:
    """at_hash of `token` for a SHA-256 based alg (RS256, ES256): OIDC Core §3.1.3.6."""
    import hashlib

    return b64url(hashlib.sha256(token.encode("ascii")).digest()[:16])


@dataclass
class OidcClient:
    """One registered client as the tests see it (mirrors a protocol = "oidc" service)."""

    client_id: str
    redirect_uri: str
    secret: str | None = None  # None: a public client

    @property
    def public(self) -> bool:
        return self.secret is None

    def service(self, **extra) -> dict:
        """The [[services]] entry registering this client (extra keys added / overriding)."""
        svc = {
            "name": self.client_id,
            "protocol": "oidc",
            "client_id": self.client_id,
            "client_secret": self.secret,
            "redirect_uris": [self.redirect_uri],
        }
        svc.update(extra)
        return {k: v for k, v in svc.items() if v is not None}


@dataclass
class AuthzResult:
    """Where an authorization request ended up (see OidcBrowser.authorize)."""

    hops: list  # every response, in order
    forms_seen: int  # how many login forms were shown (and submitted, if allowed)
    final: requests.Response  # the response not followed any more
    location: str | None  # its absolute Location, when it is a redirect

    @property
    def params(self) -> dict[str, str]:
        """The query parameters of the final redirect (code/state/iss or error/...)."""
        if not self.location:
            return {}
        return {k: v[0] for k, v in parse_qs(urlparse(self.location).query, keep_blank_values=True).items()}

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def error(self) -> str | None:
        return self.params.get("error")

    def trace(self) -> str:
        out = []
        for r in self.hops:
            loc = r.headers.get("Location")
            out.append(f"{r.request.method} {r.url} -> {r.status_code}" + (f" Location: {loc}" if loc else ""))
        if self.final is not None and not self.location:
            out.append(f"final body: {self.final.text[:600]!r}")
        return "\n".join(out)


class Oidc:
    """The OpenID provider of one Castellan, from a relying party's side."""

    def __init__(self, cas: Castellan, base: str | None = None) -> None:
        self.cas = cas
        self.issuer = cas.public_url + "/oidc"
        self.base = base or (cas.base + "/oidc")  # where the tests send requests

    def url(self, path: str) -> str:
        return self.base + path

    # -- metadata and keys ------------------------------------------------
    def discovery(self) -> dict:
        r = requests.get(self.url("/.well-known/openid-configuration"), timeout=15)
        assert r.status_code == 200, f"discovery: {r.status_code} {r.text[:300]}"
        return r.json()

    def jwks(self) -> dict:
        r = requests.get(self.url("/jwks"), timeout=15)
        assert r.status_code == 200, f"jwks: {r.status_code} {r.text[:300]}"
        return r.json()

    def verify(self, token: str, *, audience: str | None = None, typ: str | None = None,
               require: tuple = ("iss", "exp", "iat"), leeway: float = 5, verify_exp: bool = True) -> dict:
        """Verify a JWT's signature against /oidc/jwks (kid from the header), its
        iss (= the issuer), aud (when `audience` is given) and exp/iat; return the claims."""
        import jwt

        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        assert alg in ("RS256", "ES256"), f"unexpected alg {alg!r} in {header}"
        if typ is not None:
            assert str(header.get("typ", "")).lower() in (typ.lower(), "application/" + typ.lower()), (
                f"JWT header typ {header.get('typ')!r}, expected {typ!r}: {header}")
        keys = [k for k in self.jwks()["keys"] if k.get("kid") == header.get("kid")]
        assert header.get("kid") and len(keys) == 1, f"kid {header.get('kid')!r} not (once) in the JWKS"
        key = jwt.PyJWK.from_dict(keys[0])
        options = {"require": list(require), "verify_aud": audience is not None, "verify_exp": verify_exp}
        return jwt.decode(token, key=key.key, algorithms=[alg], audience=audience, issuer=self.issuer,
                          options=options, leeway=leeway)

    # -- back-channel calls ------------------------------------------------
    def _client_post(self, path: str, client: OidcClient, data: dict, auth: str) -> requests.Response:
        data = dict(data)
        kw: dict = {}
        if client.public or auth == "none":
            data.setdefault("client_id", client.client_id)
        elif auth == "basic":
            from urllib.parse import quote

            # RFC 6749 §2.3.1: form-urlencode id and secret, then Basic
            kw["auth"] = (quote(client.client_id, safe=""), quote(client.secret, safe=""))
        elif auth == "post":
            data.update(client_id=client.client_id, client_secret=client.secret)
        else:
            raise ValueError(auth)
        return requests.post(self.url(path), data=data, allow_redirects=False, timeout=15, **kw)

    def token(self, client: OidcClient, data: dict, auth: str = "basic") -> requests.Response:
        return self._client_post("/token", client, data, auth)

    def redeem(self, client: OidcClient, code: str, verifier: str | None = None,
               redirect_uri: str | None = None, auth: str = "basic") -> requests.Response:
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri or client.redirect_uri}
        if verifier is not None:
            data["code_verifier"] = verifier
        return self.token(client, data, auth)

    def refresh(self, client: OidcClient, refresh_token: str, **extra) -> requests.Response:
        return self.token(client, {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})

    def introspect(self, client: OidcClient, token: str, **extra) -> requests.Response:
        return self._client_post("/introspect", client, {"token": token, **extra}, "basic")

    def revoke(self, client: OidcClient, token: str, **extra) -> requests.Response:
        return self._client_post("/revoke", client, {"token": token, **extra}, "basic")

    def userinfo(self, access_token: str, method: str = "GET") -> requests.Response:
        return requests.request(method, self.url("/userinfo"), headers={"Authorization": f"Bearer {access_token}"},
                                allow_redirects=False, timeout=15)


def token_json(r: requests.Response, what: str = "token response") -> dict:
    """A successful token endpoint answer as a dict (asserting RFC 6749 §5.1)."""
    assert r.status_code == 200, f"{what}: expected 200, got {r.status_code}: {r.text[:600]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body.get("access_token") and str(body.get("token_type", "")).lower() == "bearer", body
    assert "no-store" in r.headers.get("Cache-Control", ""), f"{what}: Cache-Control {r.headers.get('Cache-Control')!r}"
    return body


def oauth_error(r: requests.Response) -> str | None:
    """The `error` of a JSON error answer (None if the body is no JSON object)."""
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


class OidcBrowser(Browser):
    """A Browser that also walks authorization requests: it follows redirects
    as long as they stay on Castellan, submits the login form when one shows up
    (if allowed), and stops at the first answer that leaves Castellan (the
    redirect to the client's redirect_uri) or is not a redirect."""

    def __init__(self, cas: Castellan) -> None:
        super().__init__(cas)
        self.oidc = Oidc(cas)

    def authorize(self, client: OidcClient, *, scope: str = "openid profile email", state: str | None = "st-1",
                  nonce: str | None = "n-1", verifier: str | None = None, challenge: str | None = None,
                  method: str | None = "S256", login: bool = True, username: str = "casuser",
                  password: str = PASSWORD, redirect_uri: str | None = None, **extra) -> AuthzResult:
        """GET /oidc/authorize?response_type=code&... and walk it.  `challenge`
        (or the one derived from `verifier`) is sent with code_challenge_method
        `method`; give neither to send no PKCE.  `extra` adds or overrides
        parameters (a None value removes one)."""
        params = {"response_type": "code", "client_id": client.client_id,
                  "redirect_uri": redirect_uri or client.redirect_uri, "scope": scope,
                  "state": state, "nonce": nonce}
        if verifier is not None and challenge is None:
            import hashlib

            challenge = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        if challenge is not None:
            params["code_challenge"] = challenge
            params["code_challenge_method"] = method
        params.update(extra)
        params = {k: v for k, v in params.items() if v is not None}
        r = self.s.get(self.oidc.url("/authorize"), params=params, allow_redirects=False, timeout=15)
        return self.walk(r, login=login, username=username, password=password)

    def walk(self, r: requests.Response, *, login: bool = True, username: str = "casuser",
             password: str = PASSWORD) -> AuthzResult:
        hops = [r]
        forms = 0
        prefixes = (self.cas.base, self.cas.public_url)
        for _ in range(20):
            if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                loc = urljoin(r.url, r.headers["Location"])
                if not loc.startswith(prefixes):
                    return AuthzResult(hops, forms, r, loc)
                if loc.startswith(self.cas.public_url) and self.cas.public_url != self.cas.base:
                    loc = self.cas.base + loc[len(self.cas.public_url):]
                r = self.s.get(loc, allow_redirects=False, timeout=15)
            elif r.status_code == 200 and parse_login_form(r) is not None:
                forms += 1
                if not login or forms > 1:
                    return AuthzResult(hops, forms, r, None)
                r = self.submit(r, username, password)
            else:
                return AuthzResult(hops, forms, r, None)
            hops.append(r)
        raise AssertionError("more than 20 hops:\n" + AuthzResult(hops, forms, r, None).trace())


def login_token_flow(browser: OidcBrowser, client: OidcClient, *, scope: str = "openid profile email",
                     nonce: str = "n-1", **kw) -> tuple[dict, AuthzResult]:
    """Authorize (with PKCE, logging in if need be) and redeem the code: (token JSON, AuthzResult)."""
    verifier, _ = pkce_pair()
    res = browser.authorize(client, scope=scope, nonce=nonce, verifier=verifier, **kw)
    assert res.code, f"no code:\n{res.trace()}"
    tokens = token_json(browser.oidc.redeem(client, res.code, verifier), "code redemption")
    return tokens, res


# --------------------------------------------------------------------------
# Apache httpd + mod_auth_openidc
# --------------------------------------------------------------------------

OIDC_ENV_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "REMOTE_USER=$REMOTE_USER"
env | grep '^OIDC_CLAIM_' | sort
"""


class ApacheOidc:
    """Our own Apache httpd with mod_auth_openidc (Debian's
    libapache2-mod-auth-openidc) as a relying party of Castellan: own
    ServerRoot, config, pid file and logs in a temp dir, prefork MPM, in the
    foreground.

    On http://127.0.0.1:<port>/ it serves:
      /secured/env.cgi       AuthType openid-connect; prints REMOTE_USER and the
                             OIDC_CLAIM_* variables (OIDCPassClaimsAs environment)
      /secured/redirect_uri  mod_auth_openidc's redirect URI (also its
                             back-channel logout endpoint: ?logout=backchannel)
      /loggedout.html        where its logout sends the browser in the end
    mod_auth_openidc reads the provider from Castellan's discovery document
    (plain http on loopback: no TLS anywhere here).
    """

    CLIENT_ID = "apache-oidc"
    CLIENT_SECRET = "apache-oidc-secret-0123456789"

    def __init__(self, castellan: Castellan, *, port: int, remote_user_claim: str = "preferred_username",
                 label: str = "apache-oidc") -> None:
        self.cas = castellan
        self.port = port
        self.remote_user_claim = remote_user_claim
        self.root = Path(tempfile.mkdtemp(prefix="castellan-e2e-apache-oidc-"))
        self.base = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = self.base + "/secured/redirect_uri"
        self.logged_out_url = self.base + "/loggedout.html"
        self.backchannel_logout_uri = self.redirect_uri + "?logout=backchannel"
        self.log_path = self.root / "logs" / "error.log"
        self.label = f"{label} (port {port}, {self.root})"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def service(cls, port: int, **extra) -> dict:
        """The Castellan [[services]] entry for the Apache on `port`."""
        base = f"http://127.0.0.1:{port}"
        svc = {
            "name": "apache-oidc",
            "protocol": "oidc",
            "client_id": cls.CLIENT_ID,
            "client_secret": cls.CLIENT_SECRET,
            "redirect_uris": [base + "/secured/redirect_uri"],
            "post_logout_redirect_uris": [base + "/loggedout.html"],
            "scopes": ["openid", "profile", "email"],
            "release": ["mail", "cn"],
            "backchannel_logout_uri": base + "/secured/redirect_uri?logout=backchannel",
        }
        svc.update(extra)
        return svc

    @staticmethod
    def available() -> str | None:
        if not APACHE_BIN.exists():
            return f"{APACHE_BIN} missing (apt-get install apache2)"
        if not (APACHE_MODULES / "mod_auth_openidc.so").exists():
            return "mod_auth_openidc missing (apt-get install libapache2-mod-auth-openidc)"
        return None

    def config_text(self) -> str:
        r = self.root
        mods = ["mpm_prefork", "authn_core", "authz_core", "authz_user", "auth_openidc", "cgi", "mime", "dir"]
        load = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in mods)
        return f"""# generated by tests/e2e/conftest.py (ApacheOidc)
ServerRoot "{r}"
ServerName 127.0.0.1:{self.port}
Listen 127.0.0.1:{self.port}
PidFile "{r}/run/httpd.pid"
DefaultRuntimeDir "{r}/run"
Mutex file:{r}/run default
ErrorLog "{self.log_path}"
LogLevel warn auth_openidc:debug
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog "{r}/logs/access.log" common
User www-data
Group www-data
{load}
StartServers 3
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers 16
Timeout 30
TypesConfig /dev/null

OIDCProviderMetadataURL {self.cas.url('/oidc/.well-known/openid-configuration')}
OIDCClientID {self.CLIENT_ID}
OIDCClientSecret {self.CLIENT_SECRET}
OIDCRedirectURI {self.redirect_uri}
OIDCCryptoPassphrase "{uuid.uuid4().hex}"
OIDCScope "openid email profile"
OIDCResponseType code
OIDCPKCEMethod S256
OIDCRemoteUserClaim {self.remote_user_claim}
OIDCPassClaimsAs environment
OIDCClaimPrefix OIDC_CLAIM_
OIDCSessionType server-cache
OIDCCacheType shm
OIDCHTTPTimeoutShort 10
OIDCHTTPTimeoutLong 20
OIDCDefaultLoggedOutURL {self.logged_out_url}

DocumentRoot "{r}/htdocs"
<Directory "{r}/htdocs">
    Require all granted
</Directory>
<Location "/secured/">
    AuthType openid-connect
    Require valid-user
</Location>
<Directory "{r}/htdocs/secured">
    Options +ExecCGI
    <Files "env.cgi">
        SetHandler cgi-script
    </Files>
</Directory>
"""

    def write(self) -> Path:
        r = self.root
        os.chmod(r, 0o755)
        for d in ("logs", "run", "htdocs/secured"):
            (r / d).mkdir(parents=True, exist_ok=True)
            os.chmod(r / d, 0o755)
        cgi = r / "htdocs/secured/env.cgi"
        cgi.write_text(OIDC_ENV_CGI)
        os.chmod(cgi, 0o755)
        (r / "htdocs/index.html").write_text("apache up\n")
        (r / "htdocs/loggedout.html").write_text("<html><body><p>logged out of apache</p></body></html>\n")
        conf = r / "httpd.conf"
        conf.write_text(self.config_text())
        return conf

    def config_test(self) -> subprocess.CompletedProcess:
        conf = self.write()
        return subprocess.run([str(APACHE_BIN), "-d", str(self.root), "-f", str(conf), "-t"],
                              capture_output=True, text=True)

    def start(self, timeout: float = 20.0) -> "ApacheOidc":
        check = self.config_test()
        conf = self.root / "httpd.conf"
        if check.returncode != 0:
            raise RuntimeError(f"apache config test failed:\n{check.stdout}{check.stderr}\n{conf.read_text()}")
        out = open(self.root / "logs" / "stdout.log", "ab")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        self.proc = subprocess.Popen([str(APACHE_BIN), "-d", str(self.root), "-f", str(conf), "-DFOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        out.close()
        _LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"apache exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.base + "/index.html", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"apache did not come up:\n{self.log_tail()}")

    stop = Apache.stop
    log_tail = Apache.log_tail
    cleanup = Apache.cleanup
