"""LDAP authentication ([[authenticators]] kind "ldap") against a real
slapd (Debian's, started by tests/e2e/slapd.py with memberof and ppolicy).

What is proved here, through the real login form and the CAS validation:
search-then-bind and direct bind log users in and release their directory
attributes; injected filters and empty passwords do not; ldaps and
StartTLS work with ca_file and refuse a certificate for another host;
failover reaches the second URL; a directory that is down gives 503 "try
again later" (not "wrong password") and the service recovers when it comes
back; ppolicy states are told in plain words; pooled connections are reused.
"""

from __future__ import annotations

import html
import re
import subprocess
import time

import pytest
import requests

import slapd as slapd_mod
from conftest import APP, BINARY, Castellan, CasResult, free_port, parse_login_form, toml_table
from slapd import PASSWORD, PEOPLE, SERVICE_DN, SERVICE_PW, SUFFIX, Slapd

pytestmark = pytest.mark.skipif(slapd_mod.available() is not None,
                                reason=slapd_mod.available() or "")

CHANGE_URL = "https://password.example.org/change"
# [[users]] knows "other" with another password: it decides for "other".
LOCAL_USERS = [{"username": "other", "password": "local-password",
                "attributes": {"mail": "other@users.example.org"}}]
NO_THROTTLE = {"failures_per_user": 10000, "failures_per_ip": 10000}


class LdapCastellan(Castellan):
    def __init__(self, *a, authenticators: list[dict], **kw) -> None:
        super().__init__(*a, **kw)
        self.authenticators = authenticators

    def config_text(self) -> str:
        return super().config_text() + "".join(
            toml_table("authenticators", a, array=True) for a in self.authenticators)


def directory(ldap: Slapd, **over) -> dict:
    entry = {
        "name": "directory",
        "kind": "ldap",
        "urls": [ldap.url],
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PW,
        "base_dn": PEOPLE,
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
        "attributes": ["mail", "cn", "memberOf"],
        "principal": "uid",
        "password_change_url": CHANGE_URL,
        "connect_timeout": "1s",
        "operation_timeout": "2s",
        "pool_size": 4,
    }
    entry.update(over)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.fixture(scope="module")
def ldap(tmp_path_factory):
    s = Slapd(tmp_path_factory.mktemp("slapd"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def make(tmp_path_factory, pki, services):
    made: list[Castellan] = []

    def build(name: str, authenticators: list[dict], **kw) -> LdapCastellan:
        kw.setdefault("services", services)
        kw.setdefault("users", LOCAL_USERS)
        kw.setdefault("throttle", NO_THROTTLE)
        c = LdapCastellan(tmp_path_factory.mktemp(name), label=name,
                          authenticators=authenticators, **kw)
        made.append(c)
        return c.start()

    yield build
    for c in made:
        c.stop()


@pytest.fixture(scope="module")
def cas(make, ldap):
    return make("ldap", [directory(ldap)])


def login(cas: Castellan, username: str, password: str, service: str | None = APP) -> requests.Response:
    return cas.browser().login(service, username=username, password=password)


def error_text(r: requests.Response) -> str:
    return r.text


def ticket(r: requests.Response) -> str:
    assert r.status_code == 302, f"{r.status_code}: {r.text[:1200]}"
    loc = r.headers["Location"]
    assert "ticket=ST-" in loc, loc
    return loc.split("ticket=", 1)[1]


def test_search_then_bind_releases_directory_attributes(cas, ldap):
    t = ticket(login(cas, "casuser", PASSWORD))
    res = cas.validate("/p3/serviceValidate", APP, t)
    assert res.success, res
    assert res.user == "casuser"
    assert res.attributes["mail"] == ["casuser@ldap.example.org"]
    assert res.attributes["cn"] == ["Casuser Ldap"]
    # multi-valued kept multi-valued, from the memberof overlay
    assert sorted(res.attributes["memberOf"]) == [f"cn=faculty,ou=groups,{SUFFIX}", f"cn=staff,ou=groups,{SUFFIX}"]


def test_wrong_password_and_unknown_user_look_the_same(cas):
    wrong = login(cas, "casuser", "not-the-password")
    unknown = login(cas, "nobody-here", "whatever")
    for r in (wrong, unknown):
        assert r.status_code == 401, r.status_code
        assert "The username or password you entered is incorrect." in r.text


def test_users_first_and_the_first_that_knows_decides(cas):
    # [[users]] knows "other": its password there works...
    assert login(cas, "other", "local-password").status_code == 302
    # ...and the directory's password for "other" is not tried.
    r = login(cas, "other", PASSWORD)
    assert r.status_code == 401, r.status_code


@pytest.mark.parametrize("username", ["*", "casuser)(uid=*", "*)(|(uid=*", "cas*", "casuser\\", "casuser\x00"])
def test_filter_injection_does_not_log_in(cas, username):
    r = login(cas, username, PASSWORD)
    assert r.status_code == 401, (username, r.status_code, r.text[:500])


def test_empty_password_never_reaches_the_directory(cas, ldap):
    dn = f"uid=casuser,{PEOPLE}"
    before = ldap.binds(dn)
    b = cas.browser()
    page = b.get_login(APP)
    form = parse_login_form(page)
    data = dict(form.fields)
    data.update({"username": "casuser", "password": ""})
    r = b.s.post(form.action, data=data, allow_redirects=False, timeout=15)
    assert r.status_code == 401, r.status_code
    time.sleep(0.3)  # slapd writes its log asynchronously
    assert ldap.binds(dn) == before, "an empty password was sent to the directory"
    # whereas a real attempt does bind
    login(cas, "casuser", "wrong")
    deadline = time.monotonic() + 3
    while ldap.binds(dn) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ldap.binds(dn) == before + 1


def test_direct_bind_from_a_dn_template(make, ldap):
    c = make("ldap-direct", [directory(
        ldap, bind_dn=None, bind_password=None, base_dn=None, user_filter=None,
        bind_dn_template=f"uid={{user}},{PEOPLE}", principal=None)])
    t = ticket(login(c, "casuser", PASSWORD))
    res = c.validate("/p3/serviceValidate", APP, t)
    assert res.success and res.user == "casuser", res
    assert res.attributes["mail"] == ["casuser@ldap.example.org"]
    # a comma in the name is escaped into the DN (RFC 4514), not a new RDN
    t = ticket(login(c, "doe, john", PASSWORD))
    assert c.validate("/p3/serviceValidate", APP, t).attributes["mail"] == ["jdoe@ldap.example.org"]
    assert login(c, "casuser", "wrong").status_code == 401
    assert login(c, "casuser,ou=people", PASSWORD).status_code == 401


def test_group_search_where_there_is_no_member_of(make, ldap):
    c = make("ldap-groups", [directory(
        ldap, attributes=["mail"], group_base_dn=f"ou=groups,{SUFFIX}",
        group_filter="(&(objectClass=groupOfNames)(member={dn}))", group_attribute="cn")])
    t = ticket(login(c, "doe, john", PASSWORD))
    res = c.validate("/p3/serviceValidate", APP, t)
    assert res.attributes["memberOf"] == ["faculty"], res


def test_ldaps_with_ca_file(make, ldap):
    c = make("ldap-ldaps", [directory(ldap, urls=[ldap.ldaps_url], ca_file=str(ldap.ca))])
    assert login(c, "casuser", PASSWORD).status_code == 302


def test_start_tls_with_ca_file(make, ldap):
    c = make("ldap-starttls", [directory(ldap, urls=[f"ldap://localhost:{ldap.port}"],
                                         start_tls=True, ca_file=str(ldap.ca))])
    assert login(c, "casuser", PASSWORD).status_code == 302
    # the server saw a StartTLS extended operation
    assert "oid=1.3.6.1.4.1.1466.20037" in ldap.log_text()


def test_a_certificate_for_another_host_is_refused(make, ldap):
    # The certificate names localhost only; 127.0.0.1 is another name.
    c = make("ldap-wronghost", [directory(ldap, urls=[f"ldaps://127.0.0.1:{ldap.tls_port}"],
                                          ca_file=str(ldap.ca))])
    r = login(c, "casuser", PASSWORD)
    assert r.status_code == 503, r.status_code
    # and without ca_file, the system roots do not trust the test CA
    c2 = make("ldap-untrusted", [directory(ldap, urls=[ldap.ldaps_url])])
    assert login(c2, "casuser", PASSWORD).status_code == 503


def test_failover_to_the_second_url(make, ldap):
    dead = f"ldap://127.0.0.1:{free_port()}"
    c = make("ldap-failover", [directory(ldap, urls=[dead, ldap.url])])
    t = ticket(login(c, "casuser", PASSWORD))
    assert c.validate("/p3/serviceValidate", APP, t).user == "casuser"


def test_directory_down_is_try_again_later_and_recovers(make, tmp_path_factory):
    own = Slapd(tmp_path_factory.mktemp("slapd-down"))
    try:
        c = make("ldap-down", [directory(own)])
        assert login(c, "casuser", PASSWORD).status_code == 302  # pool filled
        own.stop()
        for _ in range(3):
            r = login(c, "casuser", PASSWORD)
            assert r.status_code == 503, r.status_code
            assert "try again" in r.text
            assert "incorrect" not in r.text
        assert c.alive()
        assert requests.get(c.url("/health"), timeout=5).status_code == 200
        own.start()
        assert login(c, "casuser", PASSWORD).status_code == 302
    finally:
        own.stop()


@pytest.mark.parametrize("user, message, link", [
    ("locked", "Your account is locked", True),
    ("mustchange", "You must change your password before you can sign in.", True),
    ("expired", "Your password has expired", True),
])
def test_password_policy_is_told_in_plain_words(cas, user, message, link):
    if user == "expired":
        time.sleep(1.2)  # its policy's pwdMaxAge is one second
    r = login(cas, user, PASSWORD)
    assert r.status_code == 403, (r.status_code, r.text[:800])
    assert message in r.text
    assert "incorrect" not in r.text
    assert (f'href="{CHANGE_URL}"' in r.text) == link


def link_of(page: requests.Response, element_id: str) -> str | None:
    m = re.search(rf'id="{element_id}" href="([^"]*)"', page.text)
    return html.unescape(m.group(1)) if m else None


@pytest.mark.parametrize("user, message", [
    ("grace", "left before the account is locked."),  # "1 sign-in left" / "2 sign-ins left"
    ("soon", "Your password expires in"),
])
def test_grace_logins_and_expiry_warnings_are_told_then_the_user_goes_on(cas, user, message):
    if user == "grace":
        time.sleep(1.2)  # grace's password has expired, with grace logins left
    b = cas.browser()
    r = b.login(APP, username=user, password=PASSWORD)
    # Signed in, and told before going on: no ticket yet.
    assert r.status_code == 200 and "ticket=" not in r.headers.get("Location", ""), (r.status_code, r.text[:800])
    assert message in r.text, r.text[:1500]
    assert b.tgc, "no SSO session after a login with a password notice"
    assert link_of(r, "change-password") == CHANGE_URL
    onward = link_of(r, "continue")
    assert onward and onward.startswith("/cas/login?") and "service=" in onward, onward
    # Continue: through SSO to the application, with a ticket that validates.
    r = b.s.get(cas.url(onward[len("/cas"):]), allow_redirects=False, timeout=15)
    res = cas.validate("/p3/serviceValidate", APP, ticket(r))
    assert res.success and res.user == user, res

    # renew: the ticket must come from this very login, so it goes at once.
    r = cas.browser().login(APP, username=user, password=PASSWORD, renew="true")
    res = cas.validate("/p3/serviceValidate", APP, ticket(r), renew="true")
    assert res.success and res.user == user, res
    assert message.rstrip(".").lower() in cas.log_text().lower()  # and logged


def test_pooled_connections_are_reused(make, ldap):
    c = make("ldap-pool", [directory(ldap)])
    assert login(c, "casuser", PASSWORD).status_code == 302
    before = ldap.accepted()
    for _ in range(20):
        assert login(c, "casuser", PASSWORD).status_code == 302
    time.sleep(0.2)
    # 20 logins = 20 searches and 20 binds, on the connections opened for
    # the first (one search, one bind connection): none new.
    assert ldap.accepted() == before, ldap.accepted() - before


def test_cli_probe_and_test(make, ldap, tmp_path):
    c = make("ldap-cli", [directory(ldap)])
    ok = subprocess.run([str(BINARY), "check-config", "--probe", "--config", str(c.config_path)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"authenticator directory: ok: connected, bound as {SERVICE_DN}" in ok.stdout
    r = subprocess.run([str(BINARY), "authenticators", "test", "--config", str(c.config_path),
                        "directory", "casuser"], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "result: accepted" in r.stdout
    assert "attribute mail: casuser@ldap.example.org" in r.stdout
    assert f"attribute memberOf: cn=staff,ou=groups,{SUFFIX}" in r.stdout
    r = subprocess.run([str(BINARY), "authenticators", "test", "--config", str(c.config_path),
                        "directory", "locked"], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "result: refused: the account is locked" in r.stdout, r.stdout
    # a wrong service password is told by the probe
    bad = c.workdir / "bad.toml"
    bad.write_text(c.config_path.read_text().replace(SERVICE_PW, "wrong-secret"))
    r = subprocess.run([str(BINARY), "check-config", "--probe", "--config", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "authenticator directory: FAILED" in r.stdout, r.stdout


class DownstreamWithDirectory(LdapCastellan):
    def __init__(self, *a, upstreams: list[dict], **kw) -> None:
        super().__init__(*a, **kw)
        self.upstreams = upstreams

    def config_text(self) -> str:
        return super().config_text() + "".join(toml_table("upstreams", u, array=True) for u in self.upstreams)


def test_upstream_attributes_from_the_directory(tmp_path_factory, services, pki, ldap):
    from urllib.parse import urljoin

    from conftest import PASSWORD as UP_PASSWORD
    from conftest import ticket_from

    down_port = free_port()
    up = Castellan(tmp_path_factory.mktemp("upstream"), label="upstream", services=[{
        "name": "downstream", "protocol": "cas",
        "service": rf"^http://127\.0\.0\.1:{down_port}/cas/delegated/campus/callback\?state=[A-Za-z0-9-]+$",
        "release": ["mail", "cn"],
    }])
    down = DownstreamWithDirectory(
        tmp_path_factory.mktemp("downstream"), label="downstream", services=services, users=[],
        ssl_cert_file=pki.ca_pem, authenticators=[directory(ldap)],
        upstreams=[{"name": "campus", "protocol": "cas", "url": up.base, "principal": "{id}",
                    "attributes_from": "directory"}])
    down.port = down_port
    down.base = down.public_url = f"http://127.0.0.1:{down_port}/cas"
    up.start()
    down.start()
    try:
        s = requests.Session()
        r = s.get(down.url("/login"), params={"service": APP, "client_name": "campus"},
                  allow_redirects=False, timeout=15)
        page = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
        form = parse_login_form(page)
        r = s.post(urljoin(page.url, form.action),
                   data=dict(form.fields, username="casuser", password=UP_PASSWORD),
                   allow_redirects=False, timeout=15)
        r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)
        assert r.status_code == 302, r.text[:800]
        res = down.validate("/p3/serviceValidate", APP, ticket_from(r))
        assert res.user == "casuser", res
        # the groups live at home: memberOf from the directory; the
        # directory's mail wins over the upstream's
        assert sorted(res.attributes["memberOf"]) == [f"cn=faculty,ou=groups,{SUFFIX}",
                                                      f"cn=staff,ou=groups,{SUFFIX}"], res
        assert res.attributes["mail"] == ["casuser@ldap.example.org"]
        assert res.attributes["cn"] == ["Casuser Ldap"]
    finally:
        down.stop()
        up.stop()
