"""The PostgreSQL backend's health check (agentconnect/db/postgresql/base.py), against the real server.

What the server saw is read from pg_stat_activity on a second connection: the
check bypasses Django's cursors, so Django's query log could not tell.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.base import DatabaseWrapper as DjangoPostgreSQLWrapper

from agentconnect.db.postgresql.base import DatabaseWrapper
from tests.factories import CompanyFactory
from voiceagents.models import Company

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = "SELECT 'the last query before the health check'"


@pytest.fixture
def observer() -> Iterator[BaseDatabaseWrapper]:
    """A second connection to the test database, from which to watch the first one's backend."""
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    yield other
    other.close()


def backend_activity(observer: BaseDatabaseWrapper, pid: int) -> tuple[Any, ...]:
    with observer.cursor() as cursor:
        cursor.execute("SELECT query, state, state_change FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    assert row is not None, f"no backend {pid}"
    return tuple(row)


def test_a_live_idle_connection_is_usable_and_the_check_sends_nothing(observer: BaseDatabaseWrapper) -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    assert isinstance(connection, DatabaseWrapper) and connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(MARKER)
    pid = connection.connection.info.backend_pid
    before = backend_activity(observer, pid)
    assert before[:2] == (MARKER, "idle")

    assert connection.is_usable() is True
    assert connection.is_usable() is True
    # Nothing reached the backend: its last query and the time its state last changed are the same.
    assert backend_activity(observer, pid) == before

    # The probe sees a check that does send something: Django's own, a SELECT 1.
    assert DjangoPostgreSQLWrapper.is_usable(connection) is True
    assert backend_activity(observer, pid)[:2] == ("SELECT 1", "idle")


def test_a_connection_the_server_ended_is_unusable_and_the_next_request_reconnects(
    observer: BaseDatabaseWrapper,
) -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    company = CompanyFactory()
    pid = connection.connection.info.backend_pid
    poller = select.poll()
    poller.register(connection.connection.fileno(), select.POLLIN)
    assert connection.is_usable() is True

    with observer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone() == (True,)
    # The backend's goodbye (a FATAL notice, then end of file) reaches the socket.
    assert poller.poll(10_000), "the ended backend's socket stayed quiet for 10 s"

    assert connection.is_usable() is False
    # A new request: Django's request_started runs this, and the first query health-checks.
    close_old_connections()
    assert Company.objects.filter(pk=company.pk).exists()
    assert connection.connection.info.backend_pid != pid
    assert connection.is_usable() is True
