"""An upstream OpenID Provider for the delegation tests: npm's oidc-provider
(OpenID Certified) run by tests/e2e/upstream_op/op.mjs on plain http on
loopback, plus the helpers to walk its pages with requests.

`node_modules` is installed with `npm ci` in tests/e2e/upstream_op when it is
missing (tests/run.sh does that before pytest).  Missing node/npm is a
failure, not a skip: tests/run.sh installs them.

What op.mjs serves (see its header): issuer http://127.0.0.1:PORT, clients
`castellan`/`change-me` and `castellan-oauth2`/`change-me-too` (both
client_secret_basic, code flow, PKCE S256 required, redirect URIs = the
callback URLs given), accounts `u-42` (email casuser@partner.example) and
`u-7` (no email), oidc-provider's devInteractions login/consent pages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

import conftest
from conftest import free_port

OP_DIR = Path(__file__).resolve().parent / "upstream_op"
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]

ACCOUNT = "u-42"
ACCOUNT_EMAIL = "casuser@partner.example"
ACCOUNT_NAME = "Partner User"
NO_MAIL_ACCOUNT = "u-7"

OIDC_CLIENT = ("castellan", "change-me")
OAUTH2_CLIENT = ("castellan-oauth2", "change-me-too")

_install_lock = threading.Lock()


def _lock_digest() -> str:
    """sha256 of package.json + package-lock.json (as `cat ... | sha256sum`)."""
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((OP_DIR / name).read_bytes())
    return h.hexdigest()


STAMP = OP_DIR / "node_modules" / ".castellan-lock.sha256"


def ensure_installed() -> None:
    """`npm ci` in tests/e2e/upstream_op when node_modules is missing or was
    installed from another package-lock.json (the stamp file tests/run.sh
    writes too)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found (apt-get install nodejs npm; tests/run.sh installs them)")
    with _install_lock:
        want = _lock_digest()
        have = STAMP.read_text().strip() if STAMP.is_file() else None
        if have == want and (OP_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
            return
        r = subprocess.run(NPM_CI, cwd=OP_DIR, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.fail(f"`{' '.join(NPM_CI)}` in {OP_DIR} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        STAMP.write_text(want + "\n")


class UpstreamOp:
    """One oidc-provider process (node op.mjs PORT CALLBACKS...)."""

    def __init__(self, workdir: Path, callbacks: list[str], *, port: int | None = None,
                 id_token_claims: bool = False, label: str = "upstream-op") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.callbacks = list(callbacks)
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.id_token_claims = id_token_claims
        self.log_path = self.workdir / f"op-{self.port}.log"
        self.label = f"{label} (oidc-provider, port {self.port}, {self.log_path})"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    # endpoints (as op.mjs configures them; the tests also read discovery)
    @property
    def authorization_endpoint(self) -> str:
        return self.issuer + "/auth"

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @property
    def userinfo_endpoint(self) -> str:
        return self.issuer + "/me"

    def url(self, path: str) -> str:
        return self.issuer + path

    def discovery(self) -> dict:
        r = requests.get(self.url("/.well-known/openid-configuration"), timeout=10)
        assert r.status_code == 200, r.text[:300]
        return r.json()

    def tamper(self, mode: str | None) -> None:
        """Make the next ID token (or userinfo answer, for userinfo-*) misbehave:
        see op.mjs for the modes; None clears a pending one."""
        r = requests.post(self.url("/__test/tamper"), params={"mode": mode} if mode else {}, timeout=10)
        assert r.status_code == 200 and r.json() == {"tamper": mode}, (r.status_code, r.text[:300])

    def pending_tamper(self) -> str | None:
        return requests.get(self.url("/__test/tamper"), timeout=10).json()["tamper"]

    def start(self, timeout: float = 30.0) -> "UpstreamOp":
        ensure_installed()
        env = dict(os.environ)
        env["NODE_ENV"] = "test"
        env.pop("DEBUG", None)
        if self.id_token_claims:
            env["OP_ID_TOKEN_CLAIMS"] = "1"
        else:
            env.pop("OP_ID_TOKEN_CLAIMS", None)
        self._log_file = open(self.log_path, "ab")
        since = self._log_file.tell()  # a restart appends to the same log
        self.proc = subprocess.Popen(
            ["node", str(OP_DIR / "op.mjs"), str(self.port), *self.callbacks],
            cwd=OP_DIR, env=env, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        conftest._LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._forget()
                raise RuntimeError(f"op.mjs exited with {self.proc.returncode}:\n{self.log_tail()}")
            if b"READY " in self.log_path.read_bytes()[since:]:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"op.mjs did not print READY within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel does), nothing answers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _forget(self) -> None:
        if self in conftest._LIVE:
            conftest._LIVE.remove(self)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def events(self, name: str | None = None) -> list[dict]:
        """The JSON event lines op.mjs logged (optionally only those named `name`)."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if name is None or ev.get("event") == name:
                    out.append(ev)
        return out


# --------------------------------------------------------------------------
# walking oidc-provider's interaction pages
# --------------------------------------------------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[tuple[str, str]] = []
        self._cur: dict | None = None
        self._a: str | None = None
        self._a_text = ""

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._cur = {"action": a.get("action", ""), "method": (a.get("method") or "get").lower(), "inputs": {}}
            self.forms.append(self._cur)
        elif tag == "input" and self._cur is not None and a.get("name"):
            self._cur["inputs"][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self._a, self._a_text = a["href"], ""

    def handle_data(self, data):
        if self._a is not None:
            self._a_text += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None
        elif tag == "a" and self._a is not None:
            self.links.append((self._a, self._a_text.strip()))
            self._a = None


@dataclass
class OpPage:
    response: requests.Response
    forms: list[dict]
    links: list[tuple[str, str]]

    @classmethod
    def parse(cls, r: requests.Response) -> "OpPage":
        p = _Forms()
        p.feed(r.text)
        return cls(r, p.forms, p.links)

    @property
    def prompt(self) -> str | None:
        """'login' or 'consent' for devInteractions pages (their hidden `prompt` input)."""
        for f in self.forms:
            if "prompt" in f["inputs"]:
                return f["inputs"]["prompt"]
        return None

    def link(self, text: str) -> str:
        for href, label in self.links:
            if text in label:
                return urljoin(self.response.url, href)
        raise AssertionError(f"no link {text!r} on {self.response.url}: {self.links}")


@dataclass
class OpWalk:
    """Where walking the upstream ended: the redirect that leaves the provider."""

    hops: list
    prompts: list  # the interaction prompts answered, in order ('login', 'consent')
    final: requests.Response
    location: str | None

    @property
    def params(self) -> dict[str, str]:
        if not self.location:
            return {}
        return {k: v[0] for k, v in parse_qs(urlparse(self.location).query, keep_blank_values=True).items()}

    def trace(self) -> str:
        out = []
        for r in self.hops:
            loc = r.headers.get("Location")
            out.append(f"{r.request.method} {r.url} -> {r.status_code}" + (f" Location: {loc}" if loc else ""))
        if not self.location:
            out.append(f"final body: {self.final.text[:800]!r}")
        return "\n".join(out)


def walk_op(s: requests.Session, op: UpstreamOp, r: requests.Response, *, login: str = ACCOUNT,
            password: str = "any-password", consent: bool = True, cancel_at: str | None = None,
            max_prompts: int = 4) -> OpWalk:
    """Follow `r` (a redirect to the provider) through the provider's pages:
    submit its login form (login name `login`) and its consent form, until a
    redirect leaves the provider (to the relying party's callback).

    consent=False or cancel_at='login'/'consent' follows the page's
    "[ Cancel ]" link instead (the provider then answers error=access_denied)."""
    hops = [r]
    prompts: list[str] = []
    if cancel_at is None and not consent:
        cancel_at = "consent"
    for _ in range(30):
        if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("Location"):
            loc = urljoin(r.url, r.headers["Location"])
            if not loc.startswith(op.issuer + "/"):
                return OpWalk(hops, prompts, r, loc)
            r = s.get(loc, allow_redirects=False, timeout=15)
        elif r.status_code == 200 and r.url.startswith(op.issuer + "/"):
            page = OpPage.parse(r)
            prompt = page.prompt
            if prompt is None or len(prompts) >= max_prompts:
                return OpWalk(hops, prompts, r, None)
            prompts.append(prompt)
            if cancel_at == prompt:
                r = s.get(page.link("Cancel"), allow_redirects=False, timeout=15)
            else:
                form = next(f for f in page.forms if "prompt" in f["inputs"])
                data = dict(form["inputs"])
                if prompt == "login":
                    data.update(login=login, password=password)
                action = urljoin(r.url, form["action"]) if form["action"] else r.url
                assert form["method"] == "post", form
                r = s.post(action, data=data, allow_redirects=False, timeout=15)
        else:
            return OpWalk(hops, prompts, r, None)
        hops.append(r)
    raise AssertionError("more than 30 hops at the provider:\n" + OpWalk(hops, prompts, r, None).trace())
