"""Test rig: the suite runs against real PostgreSQL, Redis and livekit-server.

`make test` starts them (scripts/test-services.sh) and exports their
addresses. A missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any
from urllib.parse import urlparse

import pytest

# Tests run with DEBUG off (as production); give them a secret that is not one.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production")

REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


@pytest.fixture(autouse=True)
def _isolated_rate_limits(settings: Any) -> None:
    """Each test counts its own requests against the rate limits: every request
    comes from 127.0.0.1, and several test runs may share one Redis."""
    settings.RATE_LIMIT_KEY_PREFIX = f"ratelimit-test-{uuid.uuid4().hex}"


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=2):
            return True
    except OSError:
        return False


def _flush_outlasting_late_webhooks() -> None:
    """livekit-server sends webhooks whenever a room changes, also after the test
    that made the room has ended. One that ends a session updates the session and
    (by trigger) the company's live-session counter while the next flush's
    TRUNCATE locks the same tables in an arbitrary order (Django lists them from a
    set), and PostgreSQL breaks the deadlock by failing one side. If it fails the
    flush, flush again: the webhook's statement has committed by then."""
    from django.db import OperationalError
    from django.db.backends.base.operations import BaseDatabaseOperations

    flush = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: Any, sql_list: list[str]) -> None:
        for attempt in range(5):
            try:
                return flush(self, sql_list)
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == 4:
                    raise

    BaseDatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign,assignment]


def pytest_configure(config: pytest.Config) -> None:
    _flush_outlasting_late_webhooks()
    # Django's live server (pytest-django's live_server) on the same port as the
    # tests that serve the API themselves: TEST_LIVESERVER_PORT moves both, so two
    # checkouts' suites can run side by side.
    if not config.option.liveserver:
        config.option.liveserver = f"127.0.0.1:{os.environ.get('TEST_LIVESERVER_PORT', '18765')}"
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            f"test services not configured ({', '.join(missing)} unset): run `make test`, "
            "or `make services-up && . .run/test/env` before pytest"
        )
    down = [name for name in ("DATABASE_URL", "REDIS_URL", "LIVEKIT_URL") if not _reachable(os.environ[name])]
    if down:
        raise pytest.UsageError(f"test services not reachable: {', '.join(down)} (run `make services-up`)")
