"""Django's PostgreSQL backend, with a connection health check that sends nothing.

settings.py puts this package in ENGINE whenever DATABASE_URL names PostgreSQL;
everything but `is_usable` (vendor "postgresql" included) is Django's.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper
from psycopg import pq

# No command in flight and no failed transaction: a query could be sent right now.
_READY = (pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS)


class DatabaseWrapper(PostgreSQLDatabaseWrapper):
    def is_usable(self) -> bool:
        """Whether the kept-alive connection can serve the next query, told without a round trip.

        With CONN_HEALTH_CHECKS, Django asks this before a request's first
        query. Django's own answer sends `SELECT 1` and waits for it: one more
        round trip on every request. An idle connection gets nothing from the
        server unasked, so bytes waiting on its socket (the FATAL "terminating
        connection" a backend sends when PostgreSQL shuts down or restarts, an
        administrator ends it, or idle_session_timeout fires), end of file or a
        socket error all mean the server has let it go. A zero-timeout poll
        sees them. Go's drivers check a pooled connection the same way, by
        reading without writing: go-sql-driver/mysql's connCheck (for
        database/sql) and pgx's PgConn.CheckConn.

        What it cannot see, nor could the `SELECT 1` without hanging first: a
        server gone without closing the connection (host powered off, network
        cut). The request's query then fails and psycopg marks the connection
        broken, so it is replaced at the next request. A LISTEN would make an
        idle connection receive notifications, which this would take for a
        hang-up (a reconnect, no harm); nothing here listens.
        """
        connection = self.connection
        if connection is None or connection.closed:
            return False
        if connection.info.transaction_status not in _READY:
            return False
        try:
            poller = select.poll()
            poller.register(connection.fileno(), select.POLLIN)  # POLLHUP and POLLERR come regardless
            return not poller.poll(0)
        except (psycopg.Error, OSError, ValueError):
            return False
