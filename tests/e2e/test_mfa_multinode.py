"""Second factors on several nodes: `[mfa] store = "postgres"`.

Two Castellan nodes share a redis-server (tickets, sessions) and a real
PostgreSQL 15 (the factors), started here in temp dirs on their own ports,
and one data_dir (the key that encrypts TOTP secrets, as the signing keys).
A user enrols on one node and signs in on the other with the same app; a
code accepted by one node is refused by the other (one acceptance per time
step, decided by the database); a node holding another key refuses to
start rather than fail every code.
"""

from __future__ import annotations

import base64

import pytest

import postgres as pg
from conftest import toml_table
from mfa_helpers import MfaBrowser, mfa_users, no_ticket, ticket_of
from test_multinode import Node, RedisProc

MFA_APP = "https://secure.example.test/home"
SERVICES = [
    {
        "name": "secure",
        "protocol": "cas",
        "service": r"^https://secure\.example\.test(/.*)?$",
        "release": [],
        "mfa": "required",
    }
]
USERS = mfa_users(["nina", "omar"])

pytestmark = pytest.mark.skipif(pg.available() is not None, reason=str(pg.available()))


class MfaNode(Node):
    def __init__(self, *args, mfa: dict, **kw) -> None:
        super().__init__(*args, **kw)
        self.mfa_table = mfa

    def config_text(self) -> str:
        return super().config_text() + toml_table("mfa", self.mfa_table)


@pytest.fixture(scope="module")
def db():
    d = pg.Postgres()
    yield d
    d.cleanup()


@pytest.fixture
def nodes(tmp_path, db):
    # A fresh store for each test: it remembers the key it was written with.
    db.psql("DROP TABLE IF EXISTS castellan_mfa_meta, castellan_mfa_factors, castellan_mfa_recovery_codes")
    redis = RedisProc(tmp_path / "redis").start()
    made: list[Node] = []
    mfa = {"store": "postgres", "postgres_url": db.url, "issuer": "Campus"}

    def node(data_dir=tmp_path / "shared-data", **extra) -> MfaNode:
        n = MfaNode(tmp_path / f"node{len(made) + 1}", data_dir=data_dir, users=USERS,
                    services=SERVICES, mfa={**mfa, **extra},
                    tickets={"store": "redis", "redis_url": f"redis://127.0.0.1:{redis.port}"},
                    label=f"node{len(made) + 1}")
        made.append(n)
        return n

    yield node
    for n in made:
        try:
            n.stop()
        except Exception:  # pragma: no cover
            pass
    redis.stop()


def validate_on(node: Node, ticket: str) -> str:
    r = node.get("/p3/serviceValidate", service=MFA_APP, ticket=ticket)
    assert "<cas:authenticationSuccess>" in r.text, r.text
    return r.text


def test_enrol_on_one_node_sign_in_on_the_other_codes_once_across_nodes(nodes, db):
    a = nodes().launch()
    b = nodes().launch()
    # Enrolment on A; the ticket validates on B (shared Redis).
    enrolled = MfaBrowser(a).enrol(MFA_APP, "nina")
    body = validate_on(b, ticket_of(enrolled.final, MFA_APP))
    assert "<cas:authenticationMethod>TOTP</cas:authenticationMethod>" in body
    # The factor lives in PostgreSQL, its secret sealed.
    rows = db.psql("SELECT kind, secret FROM castellan_mfa_factors WHERE username = 'nina'")
    assert "totp" in rows, rows
    assert enrolled.totp.secret not in rows, "the secret is stored sealed"

    # B knows the factor: the second step asks for a code, not an enrolment.
    on_b = MfaBrowser(b)
    step = on_b.expect_second_step(on_b.password(MFA_APP, "nina"), "password on B")
    assert not step.enrolment, "B must see the factor enrolled on A"
    code = enrolled.totp.fresh()
    ok = on_b.send_code(step, code)
    ticket_of(ok, MFA_APP)

    # The same code on A, in another browser: already accepted once.
    on_a = MfaBrowser(a)
    step = on_a.expect_second_step(on_a.password(MFA_APP, "nina"), "password on A")
    replay = on_a.send_code(step, code)
    assert replay.status_code == 401, replay.status_code
    no_ticket(replay)


def test_a_node_with_another_key_refuses_to_start(nodes, tmp_path):
    first = nodes().launch()
    MfaBrowser(first).enrol(MFA_APP, "omar")
    other_key = base64.b64encode(bytes(range(32))).decode()
    stranger = nodes(data_dir=tmp_path / "elsewhere", encryption_key=other_key)
    with pytest.raises(RuntimeError) as refused:
        stranger.launch(timeout=20)
    assert "key" in str(refused.value).lower(), str(refused.value)
