"""A delegated login can count the upstream's own second factor.

The upstream is a second Castellan (its OIDC provider) whose client for us
requires MFA: the user enrols an authenticator app there, and its ID token
says `amr` pwd+otp+mfa. Our side has a CAS service with `mfa = "required"`
and the same upstream twice: `trusted` (`trust_mfa = true`) serves the
service at once; `plain` (not trusted) leads the user to our own second
step.
"""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
import requests
from cas import CASClient

from conftest import Castellan, free_port, parse_login_form, ticket_from
from mfa_helpers import MfaCastellan, Totp, mfa_users, password_of, second_step
from test_delegation_oidc_castellan import Downstream as WithUpstreams

SECURE = "https://secure.example.test/home"


class Downstream(WithUpstreams, MfaCastellan):
    """[[upstreams]] and an [mfa] table."""


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    down_port = free_port()
    down_base = f"http://127.0.0.1:{down_port}/cas"
    clients = [
        {"name": f"downstream-{n}", "protocol": "oidc", "client_id": f"down-{n}",
         "client_secret": f"s3cret-{n}-downstream", "redirect_uris": [f"{down_base}/delegated/{n}/callback"],
         "scopes": ["openid", "profile", "email"], "release": ["mail"], "mfa": "required"}
        for n in ("trusted", "plain")
    ]
    up = MfaCastellan(tmp_path_factory.mktemp("mfa-upstream"), label="mfa-upstream",
                      users=mfa_users(["uma"]), services=clients)
    up_oidc = up.base + "/oidc"
    down = Downstream(tmp_path_factory.mktemp("mfa-downstream"), label="mfa-downstream", services=[
        {"name": "secure", "protocol": "cas", "service": r"^https://secure\.example\.test(/.*)?$",
         "release": [], "mfa": "required"},
    ], upstreams=[
        {"name": n, "protocol": "oidc", "issuer": up_oidc, "client_id": f"down-{n}",
         "client_secret": f"s3cret-{n}-downstream", "scopes": ["openid", "email"],
         "principal": n + ":{id}", **({"trust_mfa": True} if n == "trusted" else {})}
        for n in ("trusted", "plain")
    ])
    down.port, down.base, down.public_url = down_port, down_base, down_base
    up.start()
    down.start()
    yield up, down
    down.stop()
    up.stop()


def upstream_login(s: requests.Session, down: Castellan, name: str, totp: list[Totp]) -> requests.Response:
    """Ours → the upstream's password form and second step → our callback's answer."""
    r = s.get(down.url("/login"), params={"service": SECURE, "client_name": name}, allow_redirects=False, timeout=15)
    assert r.status_code == 302, r.text[:300]
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)  # upstream authorize -> its /login
    page = s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    assert form, page.text[:500]
    r = s.post(urljoin(page.url, form.action), data=dict(form.fields, username="uma", password=password_of("uma")),
               allow_redirects=False, timeout=15)
    step = second_step(r)
    assert step is not None, f"the upstream asks its own second factor: {r.status_code} {r.text[:500]}"
    if step.enrolment:
        totp.append(Totp(step.otpauth_uri))
    r = step.form.submit(s, otp=totp[0].fresh())
    assert r.status_code == 302, r.text[:500]
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)  # upstream callback -> ours
    callback = r.headers["Location"]
    assert callback.startswith(down.url(f"/delegated/{name}/callback?")), callback
    return s.get(callback, allow_redirects=False, timeout=30)


def test_a_trusted_upstream_s_second_factor_counts_an_untrusted_one_does_not(pair):
    up, down = pair
    totp: list[Totp] = []
    # Trusted: the upstream's amr says otp+mfa; the MFA service is served.
    s = requests.Session()
    r = upstream_login(s, down, "trusted", totp)
    assert r.status_code == 302 and r.headers["Location"].startswith(SECURE), (r.status_code, r.text[:800])
    client = CASClient(version=3, server_url=down.base + "/", service_url=SECURE)
    user, attributes, _ = client.verify_ticket(ticket_from(r))
    assert user == "trusted:uma", (user, attributes)
    methods = attributes.get("authenticationMethod")
    assert set(methods if isinstance(methods, list) else [methods]) == {"Delegated", "UpstreamMFA"}, attributes

    # Not trusted: the same upstream login gets our own second step.
    s = requests.Session()
    r = upstream_login(s, down, "plain", totp)
    step = second_step(r)
    assert step is not None and step.enrolment, (r.status_code, r.text[:800])
    assert "ticket=" not in r.headers.get("Location", "")
