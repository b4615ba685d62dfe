"""One-time OIDC values across nodes sharing one Redis: a private_key_jwt
client assertion used at one node is refused at the other (its `jti` is a
store record), and a pushed authorization request (RFC 9126) pushed at one
node is used once, at either node.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from test_multinode import THROTTLE, Node, RedisProc

CLIENT_ID = "rp-jwt-multinode"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def key():
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(private_key) -> dict:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": "k1", "use": "sig"}


@pytest.fixture
def two_nodes(tmp_path, services, pki, recorder, key):
    redis = RedisProc(tmp_path / "redis").start()
    client = {
        "name": "JWT client",
        "protocol": "oidc",
        "client_id": CLIENT_ID,
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": json.dumps({"keys": [public_jwk(key)]}),
        "redirect_uris": [f"http://127.0.0.1:{recorder.port}/jwt/callback"],
        "scopes": ["openid", "api"],
        "grant_types": ["authorization_code", "client_credentials"],
    }
    nodes = []
    try:
        for i in (1, 2):
            # One public URL, as behind a load balancer: one issuer.
            shared = {"public_url": nodes[0].public_url} if nodes else {}
            n = Node(tmp_path / f"node{i}", data_dir=tmp_path / "shared-data",
                     services=[*services, client], ssl_cert_file=pki.ca_pem, throttle=THROTTLE,
                     tickets={"store": "redis", "redis_url": redis.url}, label=f"node{i}", **shared)
            nodes.append(n)
            n.start()
        yield nodes, f"http://127.0.0.1:{recorder.port}/jwt/callback"
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def assertion(key, aud: str) -> str:
    now = int(time.time())
    claims = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": aud, "exp": now + 60, "iat": now,
              "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


def test_a_client_assertion_is_used_once_across_nodes(two_nodes, key):
    (a, b), _ = two_nodes
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(key, f"{a.public_url}/oidc/token")}
    first = requests.post(a.url("/oidc/token"), data=form, timeout=10)
    assert first.status_code == 200, first.text
    replay = requests.post(b.url("/oidc/token"), data=form, timeout=10)
    assert replay.status_code == 401, replay.text
    assert replay.json()["error"] == "invalid_client", replay.text
    # A fresh assertion works at the other node.
    fresh = {**form, "client_assertion": assertion(key, f"{a.public_url}/oidc/token")}
    assert requests.post(b.url("/oidc/token"), data=fresh, timeout=10).status_code == 200


def test_a_pushed_request_is_used_once_at_either_node(two_nodes, key):
    (a, b), redirect_uri = two_nodes
    pushed = requests.post(a.url("/oidc/par"), data={
        "response_type": "code", "redirect_uri": redirect_uri, "scope": "openid", "state": "s1",
        "client_assertion_type": JWT_BEARER, "client_assertion": assertion(key, f"{a.public_url}/oidc/par"),
    }, timeout=10)
    assert pushed.status_code == 201, pushed.text
    query = urlencode({"client_id": CLIENT_ID, "request_uri": pushed.json()["request_uri"]})
    at_b = requests.get(b.url(f"/oidc/authorize?{query}"), allow_redirects=False, timeout=10)
    assert at_b.status_code in (302, 303), f"{at_b.status_code} {at_b.text[:300]}"
    assert "/login?" in at_b.headers["Location"], at_b.headers["Location"]
    again_at_a = requests.get(a.url(f"/oidc/authorize?{query}"), allow_redirects=False, timeout=10)
    assert again_at_a.status_code == 400, f"replay at the other node: {again_at_a.status_code}"
