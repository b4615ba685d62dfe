"""RUSTSEC-2026-0194: quick-xml < 0.41 checked a start tag's attributes for
duplicates in quadratic time. Castellan now reads at most 64 attributes from
one element of attacker-supplied XML: a /samlValidate Request element with
1,500 attributes is refused as INVALID_REQUEST before the ticket is looked at
(the old binary read them all and validated the ticket)."""

from __future__ import annotations

import datetime

import requests

from conftest import APP, SAML_REQUEST


def _post(cas, body: str) -> requests.Response:
    return requests.post(
        cas.url("/samlValidate"),
        params={"TARGET": APP},
        data=body.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=15,
    )


def _request(ticket: str, extra: str) -> str:
    instant = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = SAML_REQUEST.format(request_id="_flood", ticket=ticket, instant=instant)
    return body.replace('MajorVersion="1"', extra + ' MajorVersion="1"', 1)


def test_saml_validate_refuses_a_request_element_with_1500_attributes(cas, browser):
    t = browser.ticket_for(APP)
    flood = "".join(f' a{i}=""' for i in range(1500))
    body = _request(t, flood)
    assert len(body) < 16 * 1024
    r = _post(cas, body)
    assert r.status_code == 200, r.status_code
    assert "saml1p:RequestDenied" in r.text and "casuser" not in r.text, r.text[:500]
    assert "INVALID_REQUEST" in r.text and "64 attributes" in r.text, r.text[:500]
    # The refusal came before the ticket was looked at: it still validates.
    r = _post(cas, _request(t, ' a1="x"'))
    assert "saml1p:Success" in r.text and "casuser" in r.text, r.text[:500]
