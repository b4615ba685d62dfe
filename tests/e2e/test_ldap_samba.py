"""Active Directory: the same LDAP authenticator against a Samba AD DC
(tests/e2e/samba_ad.py). Samba answers refused binds with AD's sub-codes
("data 533" ...): each is told in plain words on the login page; objectGUID
and objectSid are released in their Windows text forms. Skipped (with the
reason) where Samba cannot run: it needs root for its fixed ports."""

from __future__ import annotations

import re
import subprocess

import pytest

import samba_ad
from conftest import APP, BINARY
from samba_ad import ADMIN_DN, ADMIN_PW, BASE, PASSWORD, SambaDC
from test_ldap import NO_THROTTLE, LdapCastellan

pytestmark = pytest.mark.skipif(samba_ad.available() is not None, reason=samba_ad.available() or "")


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    d = SambaDC(tmp_path_factory.mktemp("samba"))
    try:
        d.tool("domain", "passwordsettings", "set", "--complexity=off", "--min-pwd-length=1",
               "--account-lockout-threshold=2")
        for u in ("aduser", "disabled", "expiredacct", "mustchange", "locked"):
            d.tool("user", "create", u, PASSWORD, f"--mail-address={u}@castellan.test")
        d.tool("user", "disable", "disabled")
        d.tool("user", "setexpiry", "expiredacct", "--days=0")
        d.tool("user", "setpassword", "mustchange", f"--newpassword={PASSWORD}", "--must-change-at-next-login")
        d.tool("group", "addmembers", "Domain Admins", "aduser")
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def cas(dc, tmp_path_factory, services, pki):
    c = LdapCastellan(tmp_path_factory.mktemp("castellan-ad"), label="castellan-ad", services=services,
                      users=[], throttle=NO_THROTTLE, ssl_cert_file=pki.ca_pem, authenticators=[{
                          "name": "ad", "kind": "ldap", "urls": ["ldap://127.0.0.1:389"],
                          "bind_dn": ADMIN_DN, "bind_password": ADMIN_PW,
                          "base_dn": f"CN=Users,{BASE}", "user_filter": "(sAMAccountName={user})",
                          "attributes": ["mail", "memberOf", "objectGUID", "objectSid"],
                          "password_change_url": "https://password.example.org/change"}])
    c.services = [dict(s, release=["mail", "memberOf", "objectGUID", "objectSid"]) if s["name"] == "app" else s
                  for s in services]
    c.start()
    yield c
    c.stop()


def test_ad_user_logs_in_with_binary_attributes_as_text(cas, dc):
    r = cas.browser().login(APP, username="aduser", password=PASSWORD)
    assert r.status_code == 302, r.text[:800]
    t = r.headers["Location"].split("ticket=", 1)[1]
    res = cas.validate("/p3/serviceValidate", APP, t)
    assert res.user == "aduser", res
    assert res.attributes["mail"] == ["aduser@castellan.test"]
    assert f"CN=Domain Admins,CN=Users,{BASE}" in res.attributes["memberOf"]
    shown = subprocess.run(["samba-tool", "user", "show", "aduser", "-s", str(dc.conf)],
                           capture_output=True, text=True, check=True).stdout
    guid = re.search(r"^objectGUID: (\S+)$", shown, re.M).group(1)
    sid = re.search(r"^objectSid: (\S+)$", shown, re.M).group(1)
    assert res.attributes["objectGUID"] == [guid]
    assert res.attributes["objectSid"] == [sid] and sid.startswith("S-1-5-21-")


@pytest.mark.parametrize("user, message", [
    ("disabled", "Your account is disabled."),
    ("expiredacct", "Your account has expired."),
    ("mustchange", "You must change your password before you can sign in."),
])
def test_ad_sub_codes_are_told_in_plain_words(cas, user, message):
    r = cas.browser().login(APP, username=user, password=PASSWORD)
    assert r.status_code == 403, (r.status_code, r.text[:800])
    assert message in r.text


def test_ad_lockout_after_wrong_passwords(cas):
    for _ in range(2):
        assert cas.browser().login(APP, username="locked", password="wrong").status_code == 401
    r = cas.browser().login(APP, username="locked", password=PASSWORD)
    assert r.status_code == 403 and "Your account is locked" in r.text, r.status_code
    assert 'href="https://password.example.org/change"' in r.text


def test_cli_reads_the_ad_answer(cas):
    r = subprocess.run([str(BINARY), "authenticators", "test", "--config", str(cas.config_path), "ad", "disabled"],
                       input=PASSWORD + "\n", capture_output=True, text=True, timeout=30)
    assert "result: refused: the account is disabled" in r.stdout, r.stdout + r.stderr
