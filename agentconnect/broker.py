"""The Redis broker transport, with one Redis client per channel instead of one per message.

kombu's Redis channel builds a new `redis.Redis` client for every message it
publishes (`Channel.conn_or_acquire`), on the channel's own connection pool.
Building one registers redis-py's ~170 response callbacks: about a fifth of
the CPU of queueing a dispatch task from start-voice-session, measured in
process. The client holds no connection of its own (each command borrows one
from the channel's pool and returns it) and is safe to share, so this channel
builds it once, on first use, and reuses it for every publish and read that
does not bring its own. What goes over the wire is unchanged.

Used when the broker is Redis (`redis://`): agentconnect/celery.py sets
`broker_transport` to this class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        if self._shared_client is None:
            self._shared_client = self._create_client()
        yield self._shared_client


class Transport(redis.Transport):  # type: ignore[misc]
    Channel = Channel
