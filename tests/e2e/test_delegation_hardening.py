"""Delegated authentication, the security issue's findings, driven over HTTP:

A. an upstream's user never becomes a local user by default: the principal
   is `{upstream}:{id}` unless configured, and check-config warns about
   templates that can collide;
B. renew goes through to the upstream (CAS renew=true, OIDC prompt=login +
   max_age=0, SAML ForceAuthn) and a ticket is "from a new login" only when
   the upstream proved a fresh authentication (CAS: validation with
   renew=true / isFromNewLogin, OIDC: auth_time); an upstream that cannot
   prove it (plain OAuth2) is not asked;
D. the SAML ACS (and the callback) refuse a parameter given twice.

The upstreams: a second Castellan (CAS server and SAML IdP), a scripted
OpenID Provider (scripted_op.py) whose auth_time the test chooses, and an
OAuth2 provider that is never reached.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
import zlib
from html import unescape
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests
from cas import CASClient

from conftest import APP, BINARY, PASSWORD, Castellan, free_port, parse_login_form, ticket_from, toml_table
from scripted_op import CLIENT_ID, CLIENT_SECRET, ScriptedOp


class Downstream(Castellan):
    def __init__(self, *args, upstreams: list[dict], **kw) -> None:
        super().__init__(*args, **kw)
        self.upstreams = upstreams

    def config_text(self) -> str:
        text = super().config_text()
        for u in self.upstreams:
            text += toml_table("upstreams", u, array=True)
        return text


@pytest.fixture(scope="module")
def op():
    server = ScriptedOp()
    yield server
    server.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, services, op):
    work = tmp_path_factory.mktemp("deleg-hardening")
    down_port = free_port()
    up = Castellan(work / "up", label="upstream", services=[])
    # Another path than the downstream's /cas: the two CASTGC cookies on
    # 127.0.0.1 must not replace each other in the test's cookie jar.
    up.base = up.public_url = f"http://127.0.0.1:{up.port}/up"
    up.start()
    idp_md = work / "idp-metadata.xml"
    idp_md.write_text(requests.get(up.url("/idp/metadata"), timeout=15).text)
    down = Downstream(work / "down", label="downstream", services=services, upstreams=[
        # no principal: the default
        {"name": "campus", "protocol": "cas", "url": up.base},
        {"name": "federation", "protocol": "saml", "metadata": str(idp_md), "principal": "fed:{id}"},
        {"name": "partner", "protocol": "oidc", "issuer": op.issuer, "client_id": CLIENT_ID,
         "client_secret": CLIENT_SECRET, "principal": "partner:{id}"},
        # never reached: the renew request stops before it
        {"name": "forge", "protocol": "oauth2", "authorize_url": "http://127.0.0.1:9/authorize",
         "token_url": "http://127.0.0.1:9/token", "profile_url": "http://127.0.0.1:9/user",
         "client_id": "c", "client_secret": "s", "principal": "forge:{id}"},
    ])
    down.port = down_port
    down.base = down.public_url = f"http://127.0.0.1:{down_port}/cas"
    down.start()
    sp_md = work / "sp-metadata.xml"
    sp_md.write_text(requests.get(down.url("/delegated/federation/metadata"), timeout=15).text)
    up.stop()
    up.services = [
        {"name": "downstream-cas", "protocol": "cas",
         "service": rf"^http://127\.0\.0\.1:{down_port}/cas/delegated/campus/callback\?state=[A-Za-z0-9-]+$",
         "release": ["mail", "cn"]},
        {"name": "downstream-saml", "protocol": "saml", "metadata": str(sp_md), "release": ["mail", "cn"]},
    ]
    up.start()  # same data_dir: same IdP key
    yield up, down
    down.stop()
    up.stop()


# -- helpers -----------------------------------------------------------------

def start(s: requests.Session, down: Castellan, name: str, **params) -> requests.Response:
    return s.get(down.url("/login"), params={"service": APP, "client_name": name, **params},
                 allow_redirects=False, timeout=15)


def fill_login_form(s: requests.Session, page: requests.Response) -> requests.Response:
    form = parse_login_form(page)
    assert page.status_code == 200 and form, (page.status_code, page.text[:300])
    action = form.action if form.action.startswith("http") else urljoin(page.url, form.action)
    return s.post(action, data=dict(form.fields, username="casuser", password=PASSWORD),
                  allow_redirects=False, timeout=15)


def cas_upstream_trip(s: requests.Session, location: str, expect_form: bool) -> str:
    """At the upstream CAS /login: log in if it asks; the callback URL."""
    page = s.get(location, allow_redirects=False, timeout=15)
    if expect_form:
        r = fill_login_form(s, page)
    else:
        assert page.status_code == 302, f"the upstream asked for credentials: {page.status_code}"
        r = page
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:300])
    return r.headers["Location"]


def forget_downstream_session(s: requests.Session) -> None:
    for c in list(s.cookies):
        if c.name == "CASTGC" and c.path == "/cas":
            s.cookies.clear(c.domain, c.path, c.name)


def validate(down: Castellan, st: str):
    return CASClient(version=3, server_url=down.base + "/", service_url=APP).verify_ticket(st)


def validate_renew(down: Castellan, st: str):
    return down.validate("/p3/serviceValidate", APP, st, renew="true")


# -- A: namespaced principals ---------------------------------------------------

def test_an_upstream_user_does_not_become_the_local_user_of_that_name(env):
    """The downstream has a local `casuser`; the upstream's `casuser` comes
    in as `campus:casuser` (the default template), never as `casuser`."""
    up, down = env
    s = requests.Session()
    r = start(s, down, "campus")
    assert r.status_code == 302
    r = s.get(cas_upstream_trip(s, r.headers["Location"], expect_form=True), allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:300])
    user, attributes, _ = validate(down, ticket_from(r))
    assert user == "campus:casuser", (user, attributes)
    # the signed-in page of /login names the namespaced user too
    page = s.get(down.url("/login"), timeout=15)
    assert "campus:casuser" in page.text


def _check_config(tmp_path, services, upstream: dict) -> subprocess.CompletedProcess:
    c = Downstream(tmp_path, services=services, upstreams=[upstream])
    c.write_config()
    return subprocess.run([str(BINARY), "check-config", "--config", str(c.config_path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_warns_about_principal_templates_that_can_collide(tmp_path, services):
    base = {"name": "campus", "protocol": "cas", "url": "https://cas.example/cas"}
    p = _check_config(tmp_path / "plain-id", services, {**base, "principal": "{id}"})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert re.search(r'upstream "campus": principal "\{id\}" has no literal prefix', out), out
    p = _check_config(tmp_path / "mail", services, {**base, "principal": "{mail}"})
    assert 'principal "{mail}" has no literal prefix' in p.stdout + p.stderr, p.stdout + p.stderr
    # a prefix that a local username (casuser) has
    p = _check_config(tmp_path / "cas", services, {**base, "principal": "cas{id}"})
    assert 'can produce the local user "casuser"' in p.stdout + p.stderr, p.stdout + p.stderr
    # the default and a namespaced template: no such warning
    for extra in ({}, {"principal": "campus:{id}"}):
        p = _check_config(tmp_path / f"ok{len(extra)}", services, {**base, **extra})
        assert p.returncode == 0 and "principal" not in p.stdout + p.stderr, p.stdout + p.stderr


# -- B: renew, and what counts as a new login ----------------------------------------

def test_cas_upstream_sso_is_not_a_new_login(env):
    up, down = env
    s = requests.Session()
    # 1. credentials at the upstream (isFromNewLogin true there): a new login
    r = start(s, down, "campus")
    r = s.get(cas_upstream_trip(s, r.headers["Location"], expect_form=True), allow_redirects=False, timeout=15)
    res = validate_renew(down, ticket_from(r))
    assert res.success and res.user.endswith("casuser"), res
    # 2. through the upstream's SSO session: no credentials, not a new login,
    #    so a service that validates with renew=true refuses the ticket
    forget_downstream_session(s)
    r = start(s, down, "campus")
    r = s.get(cas_upstream_trip(s, r.headers["Location"], expect_form=False), allow_redirects=False, timeout=15)
    st = ticket_from(r)
    assert st, (r.status_code, r.text[:300])
    res = validate_renew(down, st)
    assert not res.success and res.code == "INVALID_TICKET", res


def test_cas_upstream_renew_cannot_be_dropped_on_the_way(env):
    up, down = env
    s = requests.Session()
    r = start(s, down, "campus")
    cas_upstream_trip(s, r.headers["Location"], expect_form=True)  # a session at the upstream
    # 3. renew=true, with renew dropped on the way to the upstream: the
    #    upstream's SSO ticket fails the renew=true validation downstream
    r = start(s, down, "campus", renew="true")
    assert r.status_code == 302 and "renew=true" in r.headers["Location"], r.headers.get("Location")
    dropped = r.headers["Location"].replace("&renew=true", "")
    callback = cas_upstream_trip(s, dropped, expect_form=False)
    r = s.get(callback, allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.headers.get("Location"))
    # 4. renew=true honoured: the upstream asks again, the ticket is a new login
    r = start(s, down, "campus", renew="true")
    r = s.get(cas_upstream_trip(s, r.headers["Location"], expect_form=True), allow_redirects=False, timeout=15)
    res = validate_renew(down, ticket_from(r))
    assert res.success and res.user.endswith("casuser"), res


def test_renew_is_refused_for_an_upstream_that_cannot_prove_a_fresh_login(env):
    _, down = env
    s = requests.Session()
    r = start(s, down, "forge", renew="true")
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.headers.get("Location"))
    assert "cannot confirm a fresh sign-in" in r.text, r.text[:800]
    assert "renew=true" in r.text  # the way back keeps the renew request
    # without renew it goes there as before
    r = start(s, down, "forge")
    assert r.status_code == 302 and r.headers["Location"].startswith("http://127.0.0.1:9/authorize")


def test_oidc_renew_asks_for_prompt_login_and_checks_auth_time(env, op):
    _, down = env
    s = requests.Session()
    # renew: prompt=login and max_age=0 (which makes auth_time required)
    r = start(s, down, "partner", renew="true")
    assert r.status_code == 302 and r.headers["Location"].startswith(op.issuer + "/authorize")
    q = {k: v[0] for k, v in parse_qs(urlparse(r.headers["Location"]).query).items()}
    assert q.get("prompt") == "login" and q.get("max_age") == "0", q
    # an OP that ignored prompt=login (auth_time an hour ago): refused
    op.auth_time = int(time.time()) - 3600
    cb = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    r = s.get(cb.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.headers.get("Location"))
    assert "fresh sign-in" in r.text
    # no auth_time at all: refused too
    op.auth_time = None
    r = start(s, down, "partner", renew="true")
    cb = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    r = s.get(cb.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 403, r.status_code
    # auth_time now: a new login, the ticket satisfies renew
    op.auth_time = int(time.time())
    r = start(s, down, "partner", renew="true")
    cb = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    r = s.get(cb.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:300])
    res = validate_renew(down, ticket_from(r))
    assert res.success and res.user == "partner:casuser", res
    # without renew, an old auth_time still signs in, but not as a new login
    forget_downstream_session(s)
    op.auth_time = int(time.time()) - 3600
    r = start(s, down, "partner")
    q = {k: v[0] for k, v in parse_qs(urlparse(r.headers["Location"]).query).items()}
    assert "prompt" not in q and "max_age" not in q, q
    cb = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    r = s.get(cb.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:300])
    res = validate_renew(down, ticket_from(r))
    assert not res.success and res.code == "INVALID_TICKET", res


# -- SAML: ForceAuthn, and the ACS ---------------------------------------------------

def form_fields(html: str) -> tuple[str, dict]:
    action = unescape(re.search(r'<form[^>]*action="([^"]+)"', html).group(1))
    fields = {unescape(n): unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', html)}
    return action, fields


def saml_to_acs(s: requests.Session, up: Castellan, down: Castellan, **params) -> tuple[str, dict, str]:
    """Through the upstream IdP up to its auto-submit page: (ACS, fields, AuthnRequest XML)."""
    r = start(s, down, "federation", **params)
    assert r.status_code == 302 and r.headers["Location"].startswith(up.url("/idp/profile/SAML2/Redirect/SSO"))
    q = parse_qs(urlparse(r.headers["Location"]).query)
    request_xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    assert r.status_code == 302, f"upstream SSO: {r.status_code} {r.text[:300]}"
    page = s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=15)
    if parse_login_form(page):
        r = fill_login_form(s, page)
        page = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
    for _ in range(5):  # through the IdP's SSO session: its own redirects
        if page.status_code != 302:
            break
        page = s.get(urljoin(page.url, page.headers["Location"]), allow_redirects=False, timeout=15)
    assert page.status_code == 200, page.text[:300]
    action, fields = form_fields(page.text)
    assert action == down.url("/delegated/federation/acs"), action
    return action, fields, request_xml


def test_saml_renew_sends_force_authn_and_the_fresh_assertion_is_a_new_login(env):
    up, down = env
    s = requests.Session()
    action, fields, request_xml = saml_to_acs(s, up, down, renew="true")
    assert 'ForceAuthn="true"' in request_xml, request_xml
    r = s.post(action, data=fields, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:300])
    res = validate_renew(down, ticket_from(r))
    assert res.success and res.user == "fed:casuser", res


@pytest.mark.parametrize("twice", ["SAMLResponse", "RelayState"])
def test_saml_acs_refuses_a_parameter_given_twice(env, twice):
    """A form with two SAMLResponses (or two RelayStates) is refused, whichever
    of the two is the genuine one."""
    up, down = env
    s = requests.Session()
    action, fields, _ = saml_to_acs(s, up, down)
    decoy = "PHg+PC94Pg==" if twice == "SAMLResponse" else "DS-1-" + "x" * 32
    body = [(twice, decoy)] + list(fields.items())  # the genuine value comes last
    r = s.post(action, data=body, allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers, (twice, r.status_code, r.headers.get("Location"))
    assert "given twice" in r.text


def test_callback_refuses_a_ticket_given_twice(env):
    up, down = env
    s = requests.Session()
    r = start(s, down, "campus")
    callback = cas_upstream_trip(s, r.headers["Location"], expect_form=True)
    # the genuine ticket last, a decoy before it
    r = s.get(callback.replace("&ticket=", "&ticket=ST-1-decoy&ticket="), allow_redirects=False, timeout=15)
    assert r.status_code == 400 and "Location" not in r.headers, (r.status_code, r.headers.get("Location"))


def test_saml_only_the_signed_assertion_is_read(env):
    """Signature wrapping: an unsigned copy of the assertion naming another
    user, put before the signed one, is never what is read."""
    up, down = env
    s = requests.Session()
    action, fields, _ = saml_to_acs(s, up, down)
    xml = base64.b64decode(fields["SAMLResponse"]).decode()
    m = re.search(r"<(\w+:)?Assertion\b.*?</(\w+:)?Assertion>", xml, flags=re.S)
    assert m, xml[:500]
    forged = re.sub(r"<ds:Signature.*?</ds:Signature>", "", m.group(0), flags=re.S)
    forged = forged.replace(">casuser<", ">admin<").replace('ID="', 'ID="x', 1)
    wrapped = xml[:m.start()] + forged + xml[m.start():]
    r = s.post(action, data={**fields, "SAMLResponse": base64.b64encode(wrapped.encode()).decode()},
               allow_redirects=False, timeout=15)
    if r.status_code == 302:
        user, _, _ = validate(down, ticket_from(r))
        assert user == "fed:casuser", user
    else:
        assert r.status_code == 403, (r.status_code, r.text[:300])


def test_saml_sso_assertion_from_an_earlier_login_is_not_a_new_login(env):
    """Without renew, an assertion whose AuthnInstant is older than the
    request (the IdP's SSO session, here more than the 60 s of tolerated
    clock difference ago) signs in, but not as a new login."""
    up, down = env
    s = requests.Session()
    action, fields, _ = saml_to_acs(s, up, down)
    r = s.post(action, data=fields, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r)
    res = validate_renew(down, ticket_from(r))
    assert res.success, res  # credentials just now at the IdP: a new login
    time.sleep(62)
    forget_downstream_session(s)
    action, fields, _ = saml_to_acs(s, up, down)  # SSO at the IdP: no form
    r = s.post(action, data=fields, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and ticket_from(r), (r.status_code, r.text[:300])
    res = validate_renew(down, ticket_from(r))
    assert not res.success and res.code == "INVALID_TICKET", res
