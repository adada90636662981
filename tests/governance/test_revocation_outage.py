"""Revocation under an outage of the shared version (issue 10, item 9).

The version bump after commit used to fail for good when Redis was down, leaving a revoked key
live in every gateway until some unrelated change. Now the change waits in the outbox and the
`policy_outbox` job publishes it once the version can be written again; the same holds on the
embedded default, where the version is a file.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from governance.models import PolicyChange
from governance.services import keys
from telemetry import scheduler
from tests import factories
from tests.governance.snapshot_support import FakeClock, gateway

pytestmark = pytest.mark.django_db(transaction=True)


def pending_changes() -> int:
    return PolicyChange.objects.filter(published_at__isnull=True).count()


def run_outbox_job() -> dict[str, int]:
    outcome = scheduler.run_job(scheduler.JOBS_BY_NAME["policy_outbox"])
    assert outcome.ok
    return dict(outcome.result)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on 127.0.0.1, without persistence: a restart
    comes back empty, as a cache-only Redis does."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": "", "appendonly": "no"}
        arguments = [part for name, value in options.items() for part in (f"--{name}", value)]
        self.process = subprocess.Popen(
            [self.binary, *arguments, "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the test's redis-server did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    server = PrivateRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_revocation_committed_while_redis_is_down_reaches_gateways_once_it_is_back(
    private_redis: PrivateRedis,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.REDIS_URL = private_redis.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": private_redis.url,
            "KEY_PREFIX": "outage-test",
        }
    }
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(check_seconds=1.0, max_age_seconds=3600.0, clock=clock) as gw:
        assert gw.key(lookup_hash) is not None

        private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="gateway.policy"):
            keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)  # no error: committed
        assert "not yet published" in caplog.text
        assert pending_changes() == 1

        clock.now += 1.0
        assert gw.key(lookup_hash) is not None  # the version cannot be read: still cached
        assert run_outbox_job()["pending"] == 1  # still down: the job keeps the change

        private_redis.start()  # back, and empty
        assert run_outbox_job() == {"published": 1, "pending": 0, "pruned": 0}

        clock.now += 1.0
        assert gw.key(lookup_hash) is None


def test_revocation_committed_while_the_version_file_is_unwritable_reaches_gateways_later(
    tmp_path: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = ""
    state = tmp_path / "state"
    settings.GATEWAY_POLICY_VERSION_FILE = str(state / "policy-version")
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(check_seconds=1.0, max_age_seconds=3600.0, clock=clock) as gw:
        assert gw.key(lookup_hash) is not None

        # A file where the directory should be: the version can be neither written nor read.
        state.rename(tmp_path / "state-away")
        state.write_text("")
        with caplog.at_level(logging.WARNING, logger="gateway.policy"):
            keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)
        assert "not yet published" in caplog.text
        assert pending_changes() == 1

        clock.now += 1.0
        assert gw.key(lookup_hash) is not None
        assert run_outbox_job()["pending"] == 1

        state.unlink()
        (tmp_path / "state-away").rename(state)
        assert run_outbox_job() == {"published": 1, "pending": 0, "pruned": 0}

        clock.now += 1.0
        assert gw.key(lookup_hash) is None
