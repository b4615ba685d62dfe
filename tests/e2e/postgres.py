"""A throwaway PostgreSQL server for the SQL tests.

Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin): `initdb` into a temp
dir owned by the `postgres` system user (PostgreSQL refuses to run as
root, and the tests run as root), started in the foreground as that user
on its own port on 127.0.0.1, with its unix socket in the temp dir. Local
(socket) connections are trusted, for setting up; TCP connections, which
Castellan makes, need the password (scram-sha-256).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
DB = "app"
ROLE = "castellan"
ROLE_PW = "db-secret"


def available() -> str | None:
    """Why the tests cannot run here, or None."""
    for tool in ("initdb", "postgres", "psql"):
        if not (BIN / tool).exists() and not (tool == "psql" and shutil.which("psql")):
            return f"{BIN / tool} missing (Debian package postgresql)"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return f"no system user {OS_USER!r} to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: its parents are private to root.
        self.dir = Path(tempfile.mkdtemp(prefix="castellan-pg-"))
        user = pwd.getpwnam(OS_USER)
        self.uid, self.gid = user.pw_uid, user.pw_gid
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.sockets = self.dir
        self.port = _free_port()
        self.log_path = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None
        pwfile = self.dir / "pw"
        pwfile.write_text("superuser-unused\n")
        os.chown(pwfile, self.uid, self.gid)
        self._as_postgres([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                           "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
                           "--pwfile", str(pwfile)])
        self.start()
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PW}'", db="postgres")
        self.psql(f"CREATE DATABASE {DB} OWNER {ROLE}", db="postgres")

    def _as_postgres(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(argv, user=self.uid, group=self.gid, cwd=self.dir,
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, **kw)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
        return r

    @property
    def url(self) -> str:
        return f"postgres://{ROLE}:{ROLE_PW}@127.0.0.1:{self.port}/{DB}"

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=50", "-c", "log_connections=on"],
            user=self.uid, group=self.gid, cwd=self.dir, env={"LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            r = subprocess.run([str(BIN / "pg_isready"), "-h", str(self.sockets), "-p", str(self.port), "-q"])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start within {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        """Fast shutdown: clients (Castellan's pool) are disconnected."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql: str, db: str = DB) -> str:
        """Runs SQL over the socket as the superuser; returns the output (unaligned, tuples only)."""
        return self._as_postgres(
            [str(BIN / "psql") if (BIN / "psql").exists() else "psql", "-h", str(self.sockets),
             "-p", str(self.port), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql]
        ).stdout

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connections(self) -> int:
        """Connections opened by clients since start (log_connections)."""
        return self.log_text().count("connection authorized: user=castellan")
