"""Helpers for the multi-factor tests (test_mfa_cas.py, test_mfa_protocols.py).

* `MfaCastellan`: a conftest.Castellan whose config also has an `[mfa]` table
  (and, for the SAML tests, a `[saml]` table); `cli(...)` runs
  `castellan ... --config <its config>`.
* `mfa_users`: users of their own for each test, so that no test eats
  another's TOTP steps or throttling budget.
* `Totp`: the authenticator app.  Built from the `otpauth://` URI scraped
  from the enrolment page (pyotp parses it as an app would); `fresh()` hands
  out a code of a step never used before: the current step's, else the next
  step's (the server accepts one step of skew either way), else it waits for
  the next step.  A step is used once per factor on the server, so a test
  never gets a code refused for a replay it did not mean.
* `HtmlPage` / `HtmlForm`: lxml.html over an answer, forms submitted as a
  browser would (every successful control of the form).
* `MfaBrowser`: conftest.Browser plus the second step: `password()` (the
  login form), `second_step()` (the page with `form#otp-form`, its
  enrolment data when shown), `send_code()`, `enrol()`, `login_with_code()`.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import lxml.html
import pyotp
import requests

from conftest import BINARY, Browser, Castellan, ticket_from, toml_table

STEP = 30
REFEDS_MFA = "https://refeds.org/profile/mfa"
REFEDS_SFA = "https://refeds.org/profile/sfa"


def mfa_users(names: list[str]) -> list[dict]:
    """One [[users]] entry per name; password `pw-<name>`."""
    return [
        {
            "username": n,
            "password": password_of(n),
            "attributes": {"mail": f"{n}@example.org", "cn": f"User {n}"},
        }
        for n in names
    ]


def password_of(username: str) -> str:
    return f"pw-{username}"


class MfaCastellan(Castellan):
    """A Castellan with an [mfa] table (and optionally [saml])."""

    def __init__(self, *args, mfa: dict | None = None, saml: dict | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.mfa_table = {"store": "sqlite", "issuer": "Castellan"} if mfa is None else mfa
        self.saml_table = saml

    def config_text(self) -> str:
        text = super().config_text()
        if self.saml_table is not None:
            text += toml_table("saml", self.saml_table)
        text += toml_table("mfa", self.mfa_table)
        return text

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`castellan ARGS --config <this server's config>`."""
        return subprocess.run([str(BINARY), *args, "--config", str(self.config_path)],
                              capture_output=True, text=True, timeout=timeout, cwd=self.workdir)


# --------------------------------------------------------------------------
# the authenticator app
# --------------------------------------------------------------------------


class Totp:
    """An authenticator app holding one TOTP secret."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.otp = pyotp.parse_uri(uri)
        assert isinstance(self.otp, pyotp.TOTP), f"not a TOTP URI: {uri}"
        self.used: set[int] = set()

    @property
    def secret(self) -> str:
        return self.otp.secret

    def at_step(self, step: int) -> str:
        return self.otp.generate_otp(step)

    def at_time(self, t: float) -> str:
        return self.at_step(int(t // STEP))

    def fresh(self) -> str:
        """A code of a step this app never gave out: the current step, else the
        next (one step of skew is accepted), else wait for the next step."""
        while True:
            now = time.time()
            cur = int(now // STEP)
            last = max(self.used, default=-1)
            for s in (cur, cur + 1):
                if s > last:
                    self.used.add(s)
                    return self.at_step(s)
            time.sleep((cur + 1) * STEP - now + 0.3)


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------


@dataclass
class HtmlForm:
    el: object
    action: str
    method: str

    def values(self) -> dict[str, str]:
        """What a browser sends: every successful control, plus the default
        (first) named submit button, as on pressing Enter."""
        out: dict[str, str] = {}
        for k, v in self.el.form_values():
            out[k] = v
        # lxml leaves out an input without a value attribute; a browser sends it empty
        for el in self.el.xpath(".//input[@name][not(@value)][not(@disabled)]"):
            if (el.get("type") or "text").lower() not in ("checkbox", "radio", "submit", "image", "reset", "file"):
                out.setdefault(el.get("name"), "")
        for b in self.el.xpath(".//button[@name] | .//input[@type='submit'][@name]"):
            if (b.get("type") or "submit").lower() == "submit":
                out.setdefault(b.get("name"), b.get("value") or "")
                break
        return out

    def input(self, name: str):
        found = self.el.xpath(".//input[@name=$n] | .//textarea[@name=$n] | .//select[@name=$n]", n=name)
        return found[0] if found else None

    def submit(self, session: requests.Session, **fields) -> requests.Response:
        data = self.values()
        data.update(fields)
        if self.method == "post":
            return session.post(self.action, data=data, allow_redirects=False, timeout=15)
        return session.get(self.action, params=data, allow_redirects=False, timeout=15)


class HtmlPage:
    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp
        text = resp.text or "<html></html>"
        self.doc = lxml.html.document_fromstring(text)

    def by_id(self, ident: str):
        found = self.doc.xpath("//*[@id=$i]", i=ident)
        return found[0] if found else None

    def form(self, *, id: str | None = None, with_input: tuple[str, str] | None = None) -> HtmlForm | None:
        """The form with that id, or the one with an input name=value."""
        for f in self.doc.forms:
            if id is not None and f.get("id") != id:
                continue
            if with_input is not None:
                n, v = with_input
                if not f.xpath(".//input[@name=$n][@value=$v] | .//button[@name=$n][@value=$v]", n=n, v=v):
                    continue
            action = f.get("action") or ""
            return HtmlForm(f, urljoin(self.resp.url, action) if action else self.resp.url,
                            (f.get("method") or "get").lower())
        return None

    def forms(self) -> list[HtmlForm]:
        return [HtmlForm(f, urljoin(self.resp.url, f.get("action") or "") if f.get("action") else self.resp.url,
                         (f.get("method") or "get").lower()) for f in self.doc.forms]

    def text(self, ident: str) -> str | None:
        el = self.by_id(ident)
        return el.text_content() if el is not None else None

    def label_for(self, ident: str) -> str | None:
        found = self.doc.xpath("//label[@for=$i]", i=ident)
        return found[0].text_content().strip() if found else None

    def has_password_field(self) -> bool:
        return bool(self.doc.xpath("//input[@type='password']"))


@dataclass
class SecondStep:
    """The page asking for the second factor (login or enrolment variant)."""

    page: HtmlPage
    form: HtmlForm
    otpauth_uri: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    qr_svg: bool = False

    @property
    def enrolment(self) -> bool:
        return self.otpauth_uri is not None

    @property
    def resp(self) -> requests.Response:
        return self.page.resp

    def otp_input(self):
        return self.form.input("otp")


def second_step(resp: requests.Response, *, form_id: str = "otp-form") -> SecondStep | None:
    """The second-step page in `resp` (None when `resp` has no such form)."""
    if resp.status_code not in (200, 401, 429) or "html" not in resp.headers.get("Content-Type", "html"):
        return None
    page = HtmlPage(resp)
    form = page.form(id=form_id)
    if form is None:
        return None
    uri = page.text("otpauth-uri")
    codes = [c.text_content().strip() for c in page.doc.xpath("//ol[@id='recovery-codes']/li//code")]
    fig = page.by_id("totp-qr")
    svg = fig is not None and bool(fig.xpath(".//*[local-name()='svg']"))
    return SecondStep(page, form, uri.strip() if uri else None, codes, svg)


def describe(resp: requests.Response, n: int = 1500) -> str:
    loc = resp.headers.get("Location")
    return (f"{resp.request.method} {resp.url} -> {resp.status_code}"
            + (f" Location: {loc}" if loc else "") + f"\n{resp.text[:n]}")


# --------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------


@dataclass
class Enrolled:
    username: str
    totp: Totp
    recovery_codes: list[str]
    step: SecondStep  # the enrolment page
    final: requests.Response  # the answer to the confirming code


class MfaBrowser(Browser):
    """conftest.Browser plus the second step."""

    def password(self, service: str | None, username: str, password: str | None = None,
                 **params) -> requests.Response:
        """GET /login, POST the form with the password: the answer."""
        page = self.get_login(service, **params)
        assert page.status_code == 200, describe(page)
        return self.submit(page, username, password if password is not None else password_of(username))

    def expect_second_step(self, resp: requests.Response, what: str = "second step") -> SecondStep:
        st = second_step(resp)
        assert st is not None, f"{what}: expected the page with form#otp-form:\n{describe(resp)}"
        return st

    def send_code(self, step: SecondStep, code: str) -> requests.Response:
        assert step.form.method == "post", f"otp form method {step.form.method!r}"
        return step.form.submit(self.s, otp=code)

    def enrol(self, service: str | None, username: str, password: str | None = None,
              **params) -> Enrolled:
        """Password, enrolment page, first code: the answer to the code."""
        r = self.password(service, username, password, **params)
        st = self.expect_second_step(r, f"password of {username}")
        assert st.enrolment, f"{username} has no factor: expected the enrolment page:\n{describe(r)}"
        totp = Totp(st.otpauth_uri)
        final = self.send_code(st, totp.fresh())
        return Enrolled(username, totp, st.recovery_codes, st, final)

    def login_with_code(self, service: str | None, username: str, totp: Totp,
                        **params) -> requests.Response:
        r = self.password(service, username, **params)
        st = self.expect_second_step(r, f"password of {username}")
        assert not st.enrolment, f"{username} is enrolled: no enrolment page expected:\n{describe(r)}"
        return self.send_code(st, totp.fresh())


def ticket_of(resp: requests.Response, service: str) -> str:
    """The ST of a redirect to `service` (asserting it is one)."""
    assert resp.status_code in (302, 303), f"expected a redirect with a ticket:\n{describe(resp)}"
    loc = resp.headers["Location"]
    assert loc.startswith(service), f"redirected to {loc!r}, not to {service!r}"
    t = ticket_from(resp)
    assert t and t.startswith("ST-"), f"no ST in {loc!r}"
    return t


def no_ticket(resp: requests.Response) -> None:
    loc = resp.headers.get("Location") or ""
    assert "ticket=" not in loc, f"a ticket was issued: {loc}"
