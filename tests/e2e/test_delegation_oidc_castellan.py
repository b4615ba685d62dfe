"""Delegated authentication to an upstream OpenID Connect provider and a
plain OAuth2 provider, both played by a second Castellan (its OIDC
provider; for OAuth2 its authorize and token endpoints and its userinfo as
the profile URL)."""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests
from cas import CASClient

from conftest import APP, PASSWORD, Castellan, free_port, parse_login_form, ticket_from, toml_table


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
def pair(tmp_path_factory, services):
    down_port = free_port()
    down_base = f"http://127.0.0.1:{down_port}/cas"
    up = Castellan(tmp_path_factory.mktemp("upstream-op"), label="upstream-op", services=[
        {"name": "downstream", "protocol": "oidc", "client_id": "castellan", "client_secret": "s3cret-downstream",
         "redirect_uris": [f"{down_base}/delegated/partner/callback"],
         "scopes": ["openid", "profile", "email"], "release": ["mail", "cn"]},
        {"name": "downstream-oauth2", "protocol": "oidc", "client_id": "castellan-oauth2",
         "client_secret": "s3cret-oauth2", "redirect_uris": [f"{down_base}/delegated/forge/callback"],
         "scopes": ["openid", "email"], "release": ["mail"]},
    ])
    up_oidc = up.base + "/oidc"
    down = Downstream(tmp_path_factory.mktemp("downstream-oidc"), label="downstream-oidc", services=services,
                      upstreams=[
                          {"name": "partner", "protocol": "oidc", "issuer": up_oidc, "client_id": "castellan",
                           "client_secret": "s3cret-downstream", "scopes": ["openid", "email", "profile"],
                           "principal": "partner:{id}", "rename": {"email": "mail"}, "userinfo": True,
                           "display_name": "Partner"},
                          {"name": "forge", "protocol": "oauth2", "authorize_url": up_oidc + "/authorize",
                           "token_url": up_oidc + "/token", "profile_url": up_oidc + "/userinfo",
                           "client_id": "castellan-oauth2", "client_secret": "s3cret-oauth2",
                           "scopes": ["openid", "email"], "id_attribute": "sub", "principal": "forge:{id}",
                           "rename": {"email": "mail"}},
                      ])
    down.port, down.base, down.public_url = down_port, down_base, down_base
    up.start()
    down.start()
    yield up, down
    down.stop()
    up.stop()


def through_upstream(s: requests.Session, up: Castellan, down: Castellan, name: str) -> requests.Response:
    """/login?client_name=NAME at the downstream, the upstream's form, back."""
    r = s.get(down.url("/login"), params={"service": APP, "client_name": name}, allow_redirects=False, timeout=15)
    assert r.status_code == 302, r.text[:300]
    assert r.headers["Location"].startswith(up.base + "/oidc/authorize"), r.headers["Location"]
    q = parse_qs(urlparse(r.headers["Location"]).query)
    assert q.get("state") and q.get("code_challenge_method") == ["S256"], q
    if name == "partner":
        assert q.get("nonce"), q
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)  # -> upstream /login
    page = s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=15)
    form = parse_login_form(page)
    assert form, page.text[:300]
    r = s.post(form.action if form.action.startswith("http") else urljoin(page.url, form.action),
               data=dict(form.fields, username="casuser", password=PASSWORD), allow_redirects=False, timeout=15)
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=15)  # upstream callback -> our callback
    callback = r.headers["Location"]
    assert callback.startswith(down.url(f"/delegated/{name}/callback?")), callback
    return s.get(callback, allow_redirects=False, timeout=30)


@pytest.mark.parametrize("name,user", [("partner", "partner:casuser"), ("forge", "forge:casuser")])
def test_delegated_login_through_oidc_and_oauth2(pair, name, user):
    up, down = pair
    s = requests.Session()
    r = through_upstream(s, up, down, name)
    assert r.status_code == 302 and r.headers["Location"].startswith(APP), (r.status_code, r.text[:500])
    client = CASClient(version=3, server_url=down.base + "/", service_url=APP)
    got, attributes, _ = client.verify_ticket(ticket_from(r))
    assert got == user, (got, attributes)
    assert attributes.get("mail") == "casuser@example.org", attributes


def test_a_callback_with_an_upstream_error_shows_a_clear_page(pair):
    _, down = pair
    s = requests.Session()
    r = s.get(down.url("/login"), params={"service": APP, "client_name": "partner"}, allow_redirects=False, timeout=15)
    state = parse_qs(urlparse(r.headers["Location"]).query)["state"][0]
    r = s.get(down.url("/delegated/partner/callback"), params={"state": state, "error": "access_denied"},
              allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers and "access_denied" in r.text
    assert "Back to sign-in" in r.text


def test_a_forged_code_is_refused(pair):
    _, down = pair
    s = requests.Session()
    r = s.get(down.url("/login"), params={"service": APP, "client_name": "partner"}, allow_redirects=False, timeout=15)
    state = parse_qs(urlparse(r.headers["Location"]).query)["state"][0]
    r = s.get(down.url("/delegated/partner/callback"), params={"state": state, "code": "OC-1-" + "f" * 32},
              allow_redirects=False, timeout=15)
    assert r.status_code == 403 and "Location" not in r.headers, (r.status_code, r.text[:300])
