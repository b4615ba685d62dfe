"""`[tickets] store = "redis"`: tickets and SSO sessions kept in Redis (our own
redis-server on a free port, nothing persisted to disk)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

from conftest import APP, free_port, wait_for_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture
def redis_server(tmp_path):
    if not os.path.exists(REDIS):
        pytest.fail("redis-server not installed (tests/run.sh installs it)")
    port = free_port()
    log = open(tmp_path / "redis.log", "wb")
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for_port(port)

    class R:
        pass

    r = R()
    r.port, r.proc, r.url = port, proc, f"redis://127.0.0.1:{port}/0"
    yield r
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


def test_redis_store_tickets_and_restart(fresh_castellan, redis_server):
    cas = fresh_castellan("redis", tickets={"store": "redis", "redis_url": redis_server.url}).start()
    b = cas.browser()
    t = b.ticket_for(APP)
    assert cas.validate("/p3/serviceValidate", APP, t).success
    assert cas.validate("/p3/serviceValidate", APP, t).code == "INVALID_TICKET"

    # tickets and the SSO session live in Redis: they survive a restart
    t2 = b.ticket_for(APP)
    assert cas.stop() == 0
    cas.start()
    res = cas.validate("/p3/serviceValidate", APP, t2)
    assert res.success and res.user == "casuser", res
    t3 = b.ticket_for(APP)  # via the CASTGC from before the restart
    assert cas.validate("/serviceValidate", APP, t3).success


def test_health_reports_unreachable_redis(fresh_castellan, redis_server):
    cas = fresh_castellan("redis-down", tickets={"store": "redis", "redis_url": redis_server.url}).start()
    assert requests.get(cas.url("/health"), timeout=5).status_code == 200
    redis_server.proc.kill()
    redis_server.proc.wait(5)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = requests.get(cas.url("/health"), timeout=10).status_code
        if status == 503:
            break
        time.sleep(0.2)
    assert status == 503, f"/health answered {status} with Redis down"
    # a login now fails cleanly, without a ticket, and the server stays up
    page = cas.browser().get_login(APP)
    assert page.status_code < 600
    assert cas.alive()
