"""A rolling upgrade: nodes of the previous release and of this one on one
Redis serve one flow, in both directions.

Set CASTELLAN_OLD_BIN to the previous release's binary (for example a build
of the last commit before a change to the store or a flow record); without
it these tests are skipped. The multi-node tests of test_multinode.py and
test_oidc_protocol.py run here with node 1 on one version and node 2 on the
other: the CAS login form, SSO, validation, single logout and throttling,
and the OIDC code flow and refresh rotation.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import conftest
from conftest import free_port
from test_multinode import THROTTLE, Node, RedisProc
from test_multinode import (  # noqa: F401  (collected here with this module's fixtures)
    test_two_nodes_share_forms_sessions_tickets_logout_and_throttling,
)
from test_oidc_protocol import OIDC_CONFIG, clients  # noqa: F401  (the fixture)
from test_oidc_protocol import (  # noqa: F401
    test_two_nodes_refresh_rotation,
    test_two_nodes_serve_one_flow,
)

OLD = os.environ.get("CASTELLAN_OLD_BIN")

pytestmark = pytest.mark.skipif(
    not OLD, reason="CASTELLAN_OLD_BIN (the previous release's binary) is not set"
)


class VersionedNode(Node):
    """A node running a given binary."""

    def __init__(self, *a, binary: Path, **kw) -> None:
        super().__init__(*a, **kw)
        self.binary = binary

    def spawn(self) -> None:
        saved = conftest.BINARY
        conftest.BINARY = self.binary
        try:
            super().spawn()
        finally:
            conftest.BINARY = saved


@pytest.fixture(params=["old-then-new", "new-then-old"])
def binaries(request) -> list[Path]:
    old, new = Path(OLD or ""), conftest.BINARY
    return [old, new] if request.param == "old-then-new" else [new, old]


@pytest.fixture
def cluster(tmp_path, services, pki, binaries):
    """test_multinode's cluster, node 1 and node 2 on different versions."""
    nodes: list[Node] = []
    redises: list[RedisProc] = []
    shared_data = tmp_path / "shared-data"

    class Cluster:
        def redis(self, port: int | None = None, start: bool = True) -> RedisProc:
            r = RedisProc(tmp_path / f"redis{len(redises) + 1}", port)
            redises.append(r)
            return r.start() if start else r

        def node(self, redis_url: str) -> Node:
            i = len(nodes)
            n = VersionedNode(tmp_path / f"node{i + 1}", data_dir=shared_data, services=services,
                              ssl_cert_file=pki.ca_pem, throttle=THROTTLE,
                              tickets={"store": "redis", "redis_url": redis_url},
                              label=f"node{i + 1}-{binaries[i % 2].name}", binary=binaries[i % 2])
            nodes.append(n)
            return n

    yield Cluster()
    for n in nodes:
        try:
            n.stop()
        except Exception:  # pragma: no cover - keep stopping the others
            pass
    for r in redises:
        r.stop()


@pytest.fixture
def two_nodes(tmp_path, services, clients, pki, binaries):  # noqa: F811
    """test_oidc_protocol's two nodes, on different versions."""
    redis = RedisProc(tmp_path / "redis").start()
    public = f"http://127.0.0.1:{free_port()}/cas"
    nodes = []
    try:
        for i in (0, 1):
            n = VersionedNode(tmp_path / f"node{i + 1}", data_dir=tmp_path / "shared-data",
                              services=services + clients.services(), ssl_cert_file=pki.ca_pem,
                              oidc=OIDC_CONFIG, public_url=public, label=f"oidc-node{i + 1}",
                              tickets={"store": "redis", "redis_url": redis.url}, binary=binaries[i])
            nodes.append(n)
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        redis.stop()
