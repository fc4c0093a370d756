"""The Redis broker transport (agentconnect/broker.py), against the real Redis of the tests."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from django.conf import settings
from kombu import Connection

from agentconnect.broker import Channel, Transport
from agentconnect.celery import app


def test_the_celery_app_uses_the_transport_for_a_redis_broker() -> None:
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)


def test_publishes_share_one_redis_client_and_every_message_arrives(monkeypatch: Any) -> None:
    built: list[Any] = []
    create = Channel._create_client

    def counted(self: Channel, asynchronous: bool = False) -> Any:
        client = create(self, asynchronous=asynchronous)
        if not asynchronous:  # the consumer's own (BRPOP) client is built once anyway
            built.append(client)
        return client

    monkeypatch.setattr(Channel, "_create_client", counted)
    name = f"test-broker-{uuid.uuid4().hex}"
    raw = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        with Connection(settings.CELERY_BROKER_URL, transport="agentconnect.broker:Transport") as conn:
            queue = conn.SimpleQueue(name)
            for n in range(3):
                queue.put({"n": n})
            assert raw.llen(name) == 3  # really on the Redis list, as plain kombu puts them
            assert len(built) == 1  # kombu's own channel builds a client per message: 3
            received = []
            for _ in range(3):
                message = queue.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            assert received == [0, 1, 2]
            queue.close()
    finally:
        raw.delete(name)
        raw.close()
