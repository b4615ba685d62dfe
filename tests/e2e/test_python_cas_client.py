"""The PyPI `python-cas` client (CASClient versions 1, 2, 3 and
CAS_2_SAML_1_0) against Castellan: a ticket from the login form, then
verify_ticket()."""

from __future__ import annotations

import pytest
from cas import CASClient

from conftest import APP, WEIRD_VALUE

SERVICE = APP + "/python-cas"


def client(cas, version, service=SERVICE, **kw):
    # python-cas joins endpoint names onto server_url, so it needs the slash.
    return CASClient(version=version, service_url=service, server_url=cas.base + "/", **kw)


def test_v1(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    user, attrs, pgtiou = client(cas, 1).verify_ticket(ticket)
    assert user == "casuser"
    assert attrs is None and pgtiou is None


def test_v1_replayed_ticket_fails(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    assert client(cas, 1).verify_ticket(ticket)[0] == "casuser"
    assert client(cas, 1).verify_ticket(ticket)[0] is None


def test_v2(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    user, attrs, pgtiou = client(cas, 2).verify_ticket(ticket)
    assert user == "casuser"
    assert pgtiou is None
    # CAS 2.0 has no attributes; if the server adds them anyway (as Apereo
    # does) they must still be only the released ones.
    if attrs:
        assert "secret" not in attrs


def test_v3_attributes(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    user, attrs, pgtiou = client(cas, 3).verify_ticket(ticket)
    assert user == "casuser"
    assert pgtiou is None
    assert attrs, "no attributes from /p3/serviceValidate"
    assert attrs["mail"] == "casuser@example.org"
    assert attrs["cn"] == "CAS User"
    assert sorted(attrs["memberOf"]) == ["faculty", "staff"], attrs  # two values, not one joined string
    assert attrs["weird"] == WEIRD_VALUE
    assert "secret" not in attrs


def test_v3_wrong_service_fails(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    user, attrs, pgtiou = client(cas, 3, service=SERVICE + "/elsewhere").verify_ticket(ticket)
    assert user is None


def test_saml_1_1(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    user, attrs, _ = client(cas, "CAS_2_SAML_1_0").verify_ticket(ticket)
    assert user == "casuser"
    assert attrs["mail"] == "casuser@example.org"
    assert attrs["cn"] == "CAS User"
    assert sorted(attrs["memberOf"]) == ["faculty", "staff"], attrs
    assert attrs["weird"] == WEIRD_VALUE
    assert "secret" not in attrs


def test_saml_1_1_replay_and_bogus_fail(cas, browser):
    ticket = browser.ticket_for(SERVICE)
    c = client(cas, "CAS_2_SAML_1_0")
    assert c.verify_ticket(ticket)[0] == "casuser"
    assert c.verify_ticket(ticket)[0] is None
    assert c.verify_ticket("ST-doesnotexist")[0] is None


@pytest.mark.parametrize("version", [2, 3])
def test_bogus_ticket(cas, version):
    user, attrs, pgtiou = client(cas, version).verify_ticket("ST-doesnotexist")
    assert user is None and pgtiou is None
