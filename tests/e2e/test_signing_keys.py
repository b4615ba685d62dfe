"""Token signing keys in data_dir: generated once, published as a JWKS,
rotated by `castellan keys rotate`, and never generated on a node that
shares a Redis with nodes already using keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest
import requests

from conftest import BINARY
from test_multinode import cluster, health  # noqa: F401  (cluster is a fixture)

KEY_FILE = "oidc-signing-keys.json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc7638(jwk: dict) -> str:
    """The thumbprint computed here, independently of the server."""
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def jwks(cas) -> list[dict]:
    r = requests.get(cas.url("/oidc/jwks"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/jwk-set+json")
    return r.json()["keys"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=60)


def test_keys_are_generated_once_published_and_rotated(fresh_castellan):
    cas = fresh_castellan("keys").start()
    keys = jwks(cas)
    assert sorted(k["alg"] for k in keys) == ["ES256", "RS256"]
    for k in keys:
        assert k["kid"] == rfc7638(k), "kid is the RFC 7638 thumbprint"
        assert k["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & k.keys(), "no private member"
    key_file = cas.workdir / "data" / KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    kids = sorted(k["kid"] for k in keys)

    # A restart reuses them.
    cas.stop()
    cas.start()
    assert sorted(k["kid"] for k in jwks(cas)) == kids

    # Rotation: two new active keys; the old ones stay published.
    rotated = cli("keys", "rotate", "--config", str(cas.config_path))
    assert rotated.returncode == 0, rotated.stderr
    listed = cli("keys", "list", "--config", str(cas.config_path)).stdout.split("\n")
    active = [line.split()[0] for line in listed if line.endswith(" active")]
    published = [line.split()[0] for line in listed if line.endswith(" published")]
    assert len(active) == 2 and sorted(published) == kids
    cas.stop()
    cas.start()
    now = sorted(k["kid"] for k in jwks(cas))
    assert now == sorted(active + kids)


def test_a_node_without_keys_never_generates_different_ones(cluster, tmp_path):
    redis = cluster.redis()
    first = cluster.node(redis.url)
    first.start()
    first_kids = sorted(k["kid"] for k in jwks(first))

    # A second node on the same Redis with its own, empty data_dir.
    second = cluster.node(redis.url)
    second.data_dir = tmp_path / "empty-data"
    second.write_config()
    run = subprocess.run([str(BINARY), "serve", "--config", str(second.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0, "it must refuse to start"
    assert "refusing to generate different ones" in run.stderr, run.stderr
    assert not (second.data_dir / KEY_FILE).exists()

    # Given the first node's data_dir, it starts and publishes the same keys.
    shutil.copytree(first.data_dir, second.data_dir, dirs_exist_ok=True)
    second.start()
    assert sorted(k["kid"] for k in jwks(second)) == first_kids


def test_keys_wait_for_a_store_that_is_down_at_first_start(cluster):
    redis = cluster.redis(start=False)
    node = cluster.node(redis.url)
    node.launch()
    assert health(node) == 503
    r = requests.get(node.url("/oidc/jwks"), timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
    assert not (node.data_dir / KEY_FILE).exists(), "nothing generated blind"
    redis.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if requests.get(node.url("/oidc/jwks"), timeout=10).status_code == 200:
            break
        time.sleep(0.2)
    assert len(jwks(node)) == 2
    assert (node.data_dir / KEY_FILE).exists()
