"""Languages and themes (issue 14): the pages in en, fr, de, es chosen by
Accept-Language or ?locale=, and a service's display name, logo and accent
colour, against the real server."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import BINARY, Castellan

# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201e2213bc20000000049454e44ae426082"
)
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
       "form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'")
THEMED = "https://themed.example.test/home"
PLAIN = "https://plain.example.test/home"

THEMES = """
[themes.campus]
display_name = "Campus Portal"
logo = "campus.png"
accent_color = "#1A5FB4"
"""

SERVICES = [
    {"name": "themed", "protocol": "cas", "service": r"^https://themed\.example\.test(/.*)?$",
     "release": [], "theme": "campus", "accent_color": "#c01c28"},
    {"name": "plain", "protocol": "cas", "service": r"^https://plain\.example\.test(/.*)?$",
     "release": []},
    {"name": "payroll", "protocol": "oidc", "client_id": "payroll", "client_secret": "s3cret-payroll",
     "redirect_uris": ["https://payroll.example.test/cb"], "display_name": "Payroll & Pensions",
     "logo": "campus.png"},
]


class ThemedCastellan(Castellan):
    """A Castellan whose configuration also has [themes] tables and a logo beside it."""

    def __init__(self, workdir: Path, themes: str = THEMES, **kw) -> None:
        super().__init__(workdir, services=kw.pop("services", SERVICES), **kw)
        self.themes = themes
        (self.workdir / "campus.png").write_bytes(PNG)

    def config_text(self) -> str:
        return super().config_text() + self.themes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    c = ThemedCastellan(tmp_path_factory.mktemp("i18n")).start()
    yield c
    c.stop()


def login_page(server, lang: str | None = None, **params) -> requests.Response:
    headers = {"Accept-Language": lang} if lang else {}
    return requests.get(server.url("/login"), params=params, headers=headers, timeout=10)


def html_lang(r: requests.Response) -> str:
    m = re.search(r'<html lang="([^"]+)"', r.text)
    assert m, r.text[:300]
    return m.group(1)


@pytest.mark.parametrize("header, lang, word", [
    ("de;q=0.9, en;q=0.3, fr;q=0.5", "de", "Anmelden"),
    ("fr-CA,fr;q=0.9,en;q=0.8", "fr", "Connexion"),
    ("ja, es;q=0.2, de;q=0.1", "es", "Iniciar sesión"),
    ("en-GB", "en", "Sign in"),
    ("ja, zh;q=0.9, *;q=0.1", "en", "Sign in"),
    ("de;q=0, es;q=0.5", "es", "Iniciar sesión"),
])
def test_accept_language_with_q_values_and_range_fallback(server, header, lang, word):
    r = login_page(server, header)
    assert r.status_code == 200
    assert html_lang(r) == lang
    assert r.headers["Content-Language"] == lang
    assert f"<h1>{word}</h1>" in r.text
    vary = {v.strip().lower() for v in r.headers.get("Vary", "").split(",")}
    assert {"accept-language", "cookie"} <= vary, r.headers.get("Vary")


def test_locale_parameter_wins_and_is_remembered(server):
    s = requests.Session()
    r = s.get(server.url("/login"), params={"locale": "es"}, headers={"Accept-Language": "de"}, timeout=10)
    assert html_lang(r) == "es" and "Usuario" in r.text
    cookie = r.headers.get("Set-Cookie", "")
    assert re.search(r"castellan_locale=es;", cookie), cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/cas" in cookie, cookie
    # The cookie wins over Accept-Language afterwards, on every page.
    r = s.get(server.url("/logout"), headers={"Accept-Language": "de"}, timeout=10)
    assert html_lang(r) == "es" and "Ha cerrado la sesión" in r.text, r.text[:500]
    # A later ?locale= replaces it.
    r = s.get(server.url("/login"), params={"locale": "fr"}, timeout=10)
    assert html_lang(r) == "fr" and "castellan_locale=fr" in r.headers.get("Set-Cookie", "")


def test_unknown_locale_is_ignored(server):
    r = login_page(server, "de", locale="tlh")
    assert html_lang(r) == "de"
    assert "castellan_locale" not in r.headers.get("Set-Cookie", "")
    r = login_page(server, None, locale="xx-YY")
    assert html_lang(r) == "en" and "<h1>Sign in</h1>" in r.text


def test_the_language_menu_keeps_the_service(server):
    r = login_page(server, "en", service=PLAIN)
    links = re.findall(r'<a href="([^"]+)" hreflang="(\w+)"', r.text)
    assert [l for _, l in links] == ["en", "fr", "de", "es"], links
    href = html.unescape(dict((l, h) for h, l in links)["fr"])
    r = requests.get(server.url("")[: -len("/cas")] + href, timeout=10)
    assert html_lang(r) == "fr"
    assert "pour continuer vers" in r.text and "plain" in r.text


@pytest.mark.parametrize("lang, heading", [
    ("en", "Application not authorized"),
    ("fr", "Application non autorisée"),
    ("de", "Anwendung nicht zugelassen"),
    ("es", "Aplicación no autorizada"),
])
def test_error_pages_are_translated(server, lang, heading):
    r = login_page(server, lang, service="https://unregistered.example.test/")
    assert r.status_code == 403
    assert html_lang(r) == lang and f"<h1>{heading}</h1>" in r.text
    # A protocol error: the OIDC authorize endpoint with an unknown client.
    r = requests.get(server.url("/oidc/authorize"), headers={"Accept-Language": lang}, timeout=10,
                     params={"client_id": "nope", "redirect_uri": "https://x.example/cb",
                             "response_type": "code", "scope": "openid"}, allow_redirects=False)
    assert r.status_code == 400, r.status_code
    assert html_lang(r) == lang and r.headers["Content-Language"] == lang


def test_no_content_language_on_protocol_answers(server):
    r = requests.get(server.url("/serviceValidate"), params={"service": PLAIN, "ticket": "ST-x"},
                     headers={"Accept-Language": "fr"}, timeout=10)
    assert r.status_code == 200
    assert "Content-Language" not in r.headers
    assert "castellan_locale" not in r.headers.get("Set-Cookie", "")


def test_theme_on_the_login_page_and_its_files(server):
    r = login_page(server, "fr", service=THEMED)
    assert r.headers["Content-Security-Policy"] == CSP
    assert 'pour continuer vers <strong class="service-name">Campus Portal</strong>' in r.text
    logo = re.search(r'<img class="service-logo" src="([^"]+)"', r.text)
    css = re.search(r'<link rel="stylesheet" href="([^"]+/static/themes/[^"]+)"', r.text)
    assert logo and css, r.text[:1500]
    root = server.url("")[: -len("/cas")]
    img = requests.get(root + logo.group(1), timeout=10)
    assert img.status_code == 200 and img.headers["Content-Type"] == "image/png" and img.content == PNG
    sheet = requests.get(root + css.group(1), timeout=10)
    assert sheet.status_code == 200 and sheet.headers["Content-Type"].startswith("text/css")
    # The service's own accent_color overrides its theme's.
    assert "#c01c28" in sheet.text and "#1a5fb4" not in sheet.text.lower()
    assert "style=" not in r.text and "<style" not in r.text
    # A service without a theme: no logo, no stylesheet, its name and host.
    r = login_page(server, "en", service=PLAIN)
    assert "service-logo" not in r.text and "/static/themes/" not in r.text
    assert requests.get(server.url("/static/themes/plain/logo"), timeout=10).status_code == 404
    assert requests.get(server.url("/static/themes/nope/style.css"), timeout=10).status_code == 404


def test_an_oidc_client_is_named_by_its_display_name(server):
    s = requests.Session()
    r = s.get(server.url("/oidc/authorize"), headers={"Accept-Language": "de"}, timeout=10,
              params={"client_id": "payroll", "redirect_uri": "https://payroll.example.test/cb",
                      "response_type": "code", "scope": "openid", "state": "st"})
    assert r.status_code == 200, (r.status_code, r.url)
    assert html_lang(r) == "de"
    assert 'um mit <strong class="service-name">Payroll &amp; Pensions</strong> fortzufahren' in r.text
    assert '<img class="service-logo" src="/cas/static/themes/payroll/logo"' in r.text


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=60)


def line_of(text: str, needle: str) -> int:
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


def test_check_config_refuses_bad_themes_at_their_line(tmp_path):
    themes = THEMES + '\n[themes.loud]\naccent_color = "red"\n\n[themes.odd]\nlogo = "campus.gif"\n'
    services = SERVICES + [
        {"name": "lost", "protocol": "cas", "service": r"^https://lost\.example\.test/.*$",
         "release": [], "theme": "no-such-theme"},
        {"name": "huge", "protocol": "saml", "metadata": "sp.xml", "logo": "missing.svg"},
    ]
    c = ThemedCastellan(tmp_path / "bad", themes=themes, services=services)
    c.write_config()
    (c.workdir / "campus.gif").write_bytes(b"GIF89a")
    p = run("check-config", "--config", str(c.config_path))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    text = c.config_path.read_text()
    for needle, word in [('accent_color = "red"', "accent_color"),
                         ('logo = "campus.gif"', ".png, .svg, .jpg or .jpeg"),
                         ('theme = "no-such-theme"', "no [themes] table"),
                         ('logo = "missing.svg"', "missing.svg")]:
        line = line_of(text, needle)
        assert re.search(rf"castellan\.toml:{line}: .*{re.escape(word)}", out), (needle, line, out)

    good = ThemedCastellan(tmp_path / "good")
    good.write_config()
    p = run("check-config", "--config", str(good.config_path))
    assert p.returncode == 0, p.stdout + p.stderr
