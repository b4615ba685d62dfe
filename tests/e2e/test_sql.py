"""SQL authentication ([[authenticators]] kind "sql") against a real
PostgreSQL 15 (Debian's, started by tests/e2e/postgres.py as the postgres
user) and a SQLite file made here with Python's sqlite3.

What is proved here, through the real login form and the CAS validation:
each stored hash format (argon2, bcrypt 2a/2b/2y, Django pbkdf2_sha256,
SHA-512/SHA-256 crypt with and without rounds=) logs its user in and the
query's other columns are released as attributes (NULL ones absent); a
wrong password is 401; a user the database does not know falls through to
the next source; a username that looks like SQL is only a value; an
unknown hash format and duplicate rows never log in; an unknown user costs
what a wrong password costs; a database that is down (or a statement that
runs too long) gives 503 "try again later", the server stays up and
recovers; `check-config --probe` and `authenticators test` work.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import statistics
import subprocess
import time

import pytest
import requests

import postgres as pg_mod
from conftest import APP, BINARY, Castellan, toml_table
from postgres import Postgres

pytestmark = pytest.mark.skipif(pg_mod.available() is not None, reason=pg_mod.available() or "")

NO_THROTTLE = {"failures_per_user": 10000, "failures_per_ip": 10000}
LOCAL_USERS = [{"username": "other", "password": "local-password"}]

# SHA-crypt vectors made by glibc's crypt(3) for "correct horse" (Python's
# crypt module is gone from 3.13): with the default 5000 rounds and with rounds=.
SHA_CRYPT = {
    "sha512": "$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0",
    "sha512rounds": "$6$rounds=1234$abcdefgh$fnpIuhaCV2VDdBD8TdaAnkiKvTftprgrPrajgofRE8UidZvrM0dFMpFTXKrhbsgA1Klo2.FFmcL48y9L5aiAP0",
    "sha256": "$5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4/",
    "sha256rounds": "$5$rounds=2000$xyz$jybNny/HO/6zcwKAOpxQ3TMBs6ChgQXYqa54xa4MiR.",
}
SHA_PASSWORD = "correct horse"


def hashes() -> dict[str, tuple[str, str]]:
    """username -> (stored hash, password), one user per format."""
    import argon2
    import bcrypt

    out: dict[str, tuple[str, str]] = {}
    pw = "argon2-pass"
    out["u_argon2id"] = (argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(pw), pw)
    pw = "argon2i-pass"
    out["u_argon2i"] = (argon2.PasswordHasher(time_cost=2, memory_cost=4096, parallelism=1,
                                              type=argon2.Type.I).hash(pw), pw)
    pw = "bcrypt-pass"
    out["u_bcrypt2b"] = (bcrypt.hashpw(pw.encode(), bcrypt.gensalt(6)).decode(), pw)
    out["u_bcrypt2a"] = (bcrypt.hashpw(pw.encode(), bcrypt.gensalt(6, prefix=b"2a")).decode(), pw)
    out["u_bcrypt2y"] = ("$2y$" + bcrypt.hashpw(pw.encode(), bcrypt.gensalt(6)).decode()[4:], pw)
    pw = "dj\u00e4ngo-pass"
    key = hashlib.pbkdf2_hmac("sha256", pw.encode(), b"NaClNaCl", 30000)
    out["u_django"] = ("pbkdf2_sha256$30000$NaClNaCl$" + base64.b64encode(key).decode(), pw)
    for k, v in SHA_CRYPT.items():
        out[f"u_{k}"] = (v, SHA_PASSWORD)
    return out


HASHES = hashes()
FORMAT_USERS = sorted(HASHES)
MD5_CRYPT = "$1$abc$mEYYKBYwc4Odg5SoPgnFr/"  # "correct horse"; not supported


def rows() -> list[tuple]:
    """(username, password, mail, cn, role) rows for both databases."""
    out = [(u, h, f"{u}@db.example.org", f"User {u}", "staff") for u, (h, _) in HASHES.items()]
    bc = HASHES["u_bcrypt2b"][0]
    out += [
        ("nomail", bc, None, "No Mail", None),
        ("md5user", MD5_CRYPT, "md5@db.example.org", "Md5", None),
        ("twin", bc, "a@db.example.org", "A", None),
        ("twin", bc, "b@db.example.org", "B", None),
        ("nopass", None, "np@db.example.org", "No Pass", None),
        ("other", bc, "other@db.example.org", "Other", None),
    ]
    return out


class SqlCastellan(Castellan):
    def __init__(self, *a, authenticators: list[dict], **kw) -> None:
        super().__init__(*a, **kw)
        self.authenticators = authenticators

    def config_text(self) -> str:
        return super().config_text() + "".join(
            toml_table("authenticators", a, array=True) for a in self.authenticators)


PG_QUERY = 'SELECT password, mail, cn, role AS "memberOf" FROM users WHERE username = $1'


def fill_postgres(db: Postgres) -> None:
    db.psql("CREATE TABLE users (username text NOT NULL, password text, mail text, cn text, role text);"
            f"ALTER TABLE users OWNER TO {pg_mod.ROLE};")

    def lit(v):
        return "NULL" if v is None else "'" + str(v).replace("'", "''") + "'"

    values = ",".join("(" + ",".join(lit(v) for v in r) + ")" for r in rows())
    db.psql(f"INSERT INTO users VALUES {values}")


def make_sqlite(path, extra: list[tuple] = ()) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (username TEXT NOT NULL, password TEXT, mail TEXT, cn TEXT, role TEXT)")
    con.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows() + list(extra))
    con.commit()
    con.close()


def pg_source(db: Postgres, name: str = "appdb", **over) -> dict:
    entry = {"name": name, "kind": "sql", "url": db.url, "query": PG_QUERY,
             "pool_size": 4, "pool_timeout": "1s", "statement_timeout": "2s"}
    entry.update(over)
    return entry


def sqlite_source(path, name: str = "litedb", query: str | None = None) -> dict:
    return {"name": name, "kind": "sql", "url": f"sqlite://{path}",
            "query": query or "SELECT password, mail, cn, role AS memberOf FROM users WHERE username = ?"}


@pytest.fixture(scope="module")
def db():
    d = Postgres()
    fill_postgres(d)
    yield d
    d.cleanup()


@pytest.fixture(scope="module")
def sqlite_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("sqlite") / "app.db"
    make_sqlite(p)
    return p


@pytest.fixture(scope="module")
def make(tmp_path_factory, pki, services):
    made: list[Castellan] = []

    def build(name: str, authenticators: list[dict], **kw) -> SqlCastellan:
        kw.setdefault("services", services)
        kw.setdefault("users", LOCAL_USERS)
        kw.setdefault("throttle", NO_THROTTLE)
        c = SqlCastellan(tmp_path_factory.mktemp(name), label=name, authenticators=authenticators, **kw)
        made.append(c)
        return c.start()

    yield build
    for c in made:
        c.stop()


@pytest.fixture(scope="module")
def cas(make, db):
    return make("sql-pg", [pg_source(db)])


@pytest.fixture(scope="module")
def lite(make, sqlite_path):
    return make("sql-lite", [sqlite_source(sqlite_path)])


def login(cas: Castellan, username: str, password: str) -> requests.Response:
    return cas.browser().login(APP, username=username, password=password)


def ticket(r: requests.Response) -> str:
    assert r.status_code == 302, f"{r.status_code}: {r.text[:1200]}"
    loc = r.headers["Location"]
    assert "ticket=ST-" in loc, loc
    return loc.split("ticket=", 1)[1]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
@pytest.mark.parametrize("user", FORMAT_USERS)
def test_each_hash_format_logs_in_and_releases_columns(request, backend, user):
    c = request.getfixturevalue("cas" if backend == "postgres" else "lite")
    password = HASHES[user][1]
    t = ticket(login(c, user, password))
    res = c.validate("/p3/serviceValidate", APP, t)
    assert res.success, res
    assert res.user == user
    assert res.attributes["mail"] == [f"{user}@db.example.org"]
    assert res.attributes["cn"] == [f"User {user}"]
    assert res.attributes["memberOf"] == ["staff"]
    r = login(c, user, password + "x")
    assert r.status_code == 401, r.status_code


def test_null_columns_are_absent(cas):
    t = ticket(login(cas, "nomail", HASHES["u_bcrypt2b"][1]))
    res = cas.validate("/p3/serviceValidate", APP, t)
    assert res.user == "nomail"
    assert "mail" not in res.attributes and "memberOf" not in res.attributes
    assert res.attributes["cn"] == ["No Mail"]


def test_wrong_password_and_unknown_user_look_the_same(cas):
    wrong = login(cas, "u_bcrypt2b", "not-the-password")
    unknown = login(cas, "nobody-here", "whatever")
    for r in (wrong, unknown):
        assert r.status_code == 401, r.status_code
        assert "The username or password you entered is incorrect." in r.text


def test_unknown_user_costs_what_a_wrong_password_costs(make, db):
    import bcrypt
    slow = bcrypt.hashpw(b"slow-pass", bcrypt.gensalt(12)).decode()
    db.psql(f"INSERT INTO users (username, password) VALUES ('slowuser', '{slow}')")
    c = make("sql-timing", [pg_source(db, query="SELECT password FROM users WHERE username = $1 AND username LIKE 'slow%'")])
    login(c, "slowuser", "warm-up")  # the decoy follows the first hash read: bcrypt 12

    def timed(user: str) -> float:
        t0 = time.monotonic()
        assert login(c, user, "wrong").status_code == 401
        return time.monotonic() - t0

    wrong = statistics.median(timed("slowuser") for _ in range(5))
    unknown = statistics.median(timed("slownobody") for _ in range(5))
    # bcrypt 12 is ~0.2 s here; without a decoy an unknown user would take
    # a few milliseconds.
    assert wrong > 0.1, wrong
    assert unknown > 0.6 * wrong, (unknown, wrong)


def test_unknown_user_falls_through_to_the_next_source(make, db, tmp_path):
    lite_path = tmp_path / "second.db"
    make_sqlite(lite_path, extra=[("lite_only", HASHES["u_bcrypt2b"][0], "lite@db.example.org", "Lite", None)])
    c = make("sql-chain", [pg_source(db), sqlite_source(lite_path, query=(
        "SELECT password, 'from-sqlite' AS cn FROM users WHERE username = $1"))])
    # PostgreSQL has no row for lite_only: the SQLite source decides.
    t = ticket(login(c, "lite_only", HASHES["u_bcrypt2b"][1]))
    res = c.validate("/p3/serviceValidate", APP, t)
    assert res.user == "lite_only" and res.attributes["cn"] == ["from-sqlite"]
    # A user PostgreSQL knows is decided there (its attributes).
    t = ticket(login(c, "u_bcrypt2a", HASHES["u_bcrypt2a"][1]))
    assert c.validate("/p3/serviceValidate", APP, t).attributes["cn"] == ["User u_bcrypt2a"]
    # [[users]] first: "other" has its local password, not the database's.
    assert login(c, "other", "local-password").status_code == 302
    assert login(c, "other", HASHES["u_bcrypt2b"][1]).status_code == 401
    # Known nowhere.
    assert login(c, "nobody-anywhere", "x").status_code == 401


@pytest.mark.parametrize("username", [
    "' OR '1'='1", "u_bcrypt2b' --", "x'; DROP TABLE users; --", "u_bcrypt2b\x00", "%", "u_bcrypt%",
])
@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_username_that_looks_like_sql_is_a_value(request, backend, username):
    c = request.getfixturevalue("cas" if backend == "postgres" else "lite")
    r = login(c, username, HASHES["u_bcrypt2b"][1])
    assert r.status_code in (400, 401), (username, r.status_code, r.text[:500])
    # the table is still there
    assert login(c, "u_bcrypt2b", HASHES["u_bcrypt2b"][1]).status_code == 302


def test_unknown_hash_format_never_matches_and_is_named_in_the_log(cas):
    r = login(cas, "md5user", SHA_PASSWORD)
    assert r.status_code == 401, r.status_code
    log = cas.log_text()
    assert "format Castellan does not verify ($1$)" in log
    assert MD5_CRYPT not in log
    assert login(cas, "nopass", "").status_code in (400, 401)
    assert login(cas, "nopass", "anything").status_code == 401


def test_several_rows_never_log_in(cas):
    r = login(cas, "twin", HASHES["u_bcrypt2b"][1])
    assert r.status_code != 302, r.headers
    assert "incorrect" not in r.text
    assert "more than one row" in cas.log_text()


def test_database_down_is_try_again_later_and_recovers(make):
    own = Postgres()
    try:
        fill_postgres(own)
        c = make("sql-down", [pg_source(own)])
        user, pw = "u_bcrypt2b", HASHES["u_bcrypt2b"][1]
        assert login(c, user, pw).status_code == 302  # pool opened
        own.stop()
        for _ in range(3):
            t0 = time.monotonic()
            r = login(c, user, pw)
            assert r.status_code == 503, (r.status_code, r.text[:500])
            assert "try again" in r.text
            assert "incorrect" not in r.text
            assert time.monotonic() - t0 < 10
        assert c.alive()
        assert requests.get(c.url("/health"), timeout=5).status_code == 200
        own.start()
        assert login(c, user, pw).status_code == 302
    finally:
        own.cleanup()


def test_a_statement_that_runs_too_long_is_try_again_later(make, db):
    c = make("sql-slow", [pg_source(db, statement_timeout="300ms", query=(
        "SELECT password, mail FROM users, pg_sleep(2) WHERE username = $1"))])
    t0 = time.monotonic()
    r = login(c, "u_bcrypt2b", HASHES["u_bcrypt2b"][1])
    assert r.status_code == 503, r.status_code
    assert time.monotonic() - t0 < 1.8
    assert "statement timeout" in c.log_text()


def test_pooled_connections_are_reused(make, db):
    c = make("sql-pool", [pg_source(db, pool_size=2)])
    assert login(c, "u_bcrypt2b", HASHES["u_bcrypt2b"][1]).status_code == 302
    before = db.connections()
    for _ in range(10):
        assert login(c, "u_bcrypt2b", HASHES["u_bcrypt2b"][1]).status_code == 302
    time.sleep(0.2)
    assert db.connections() - before <= 1, db.connections() - before


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_cli_probe_and_test(make, db, sqlite_path):
    c = make("sql-cli", [pg_source(db), sqlite_source(sqlite_path)])
    ok = cli("check-config", "--probe", "--config", str(c.config_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ("authenticator appdb: ok: SELECT 1 answered; the query reads the hash from password, "
            "attributes mail, cn, memberOf") in ok.stdout
    assert "authenticator litedb: ok: SELECT 1 answered" in ok.stdout
    for source in ("appdb", "litedb"):
        r = cli("authenticators", "test", "--config", str(c.config_path), source, "u_django",
                stdin=HASHES["u_django"][1] + "\n")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "stored hash: pbkdf2_sha256 (Django)" in r.stdout
        assert "result: accepted" in r.stdout
        assert "attribute mail: u_django@db.example.org" in r.stdout
    r = cli("authenticators", "test", "--config", str(c.config_path), "appdb", "u_django", stdin="nope\n")
    assert r.returncode == 1 and "result: wrong password" in r.stdout, r.stdout
    r = cli("authenticators", "test", "--config", str(c.config_path), "appdb", "nobody", stdin="nope\n")
    assert r.returncode == 1 and "result: unknown user" in r.stdout, r.stdout
    # a wrong database password, a missing table: the probe says FAILED
    bad = c.workdir / "bad.toml"
    bad.write_text(c.config_path.read_text().replace(pg_mod.ROLE_PW, "wrong-secret"))
    r = cli("check-config", "--probe", "--config", str(bad))
    assert r.returncode == 1 and "authenticator appdb: FAILED" in r.stdout, r.stdout
    assert "wrong-secret" not in r.stdout
    bad.write_text(c.config_path.read_text().replace("FROM users", "FROM accounts"))
    r = cli("check-config", "--probe", "--config", str(bad))
    assert r.returncode == 1 and "authenticator appdb: FAILED" in r.stdout and "accounts" in r.stdout, r.stdout
    # a query without its parameter is refused by check-config itself
    bad.write_text(c.config_path.read_text().replace("username = $1", "username = 'x'"))
    r = cli("check-config", "--config", str(bad))
    assert r.returncode != 0 and "$1" in (r.stdout + r.stderr), r.stdout + r.stderr
