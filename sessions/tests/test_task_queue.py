"""Queueing session tasks (sessions/task_queue.py) on the real Redis broker of the tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from django.conf import settings

from agentconnect.celery import app
from sessions import tasks
from sessions.task_queue import enqueue


def _newest(broker: redis.Redis, queue: str, count: int) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in broker.lrange(queue, 0, count - 1)]  # LPUSH: newest first


def _without_ids(message: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id")}
    properties = {
        k: v for k, v in message["properties"].items() if k not in ("correlation_id", "delivery_tag")
    }
    return {**message, "headers": headers, "properties": properties}


def test_a_queued_task_is_the_message_delay_sends_to_the_same_queue() -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = app.conf.task_default_queue
    try:
        before = broker.llen(queue)
        task_id = enqueue(tasks.dispatch_agent, 4242, replace=True)
        tasks.dispatch_agent.delay(4242, replace=True)
        assert broker.llen(queue) == before + 2
        by_delay, ours = _newest(broker, queue, 2)
        assert ours["headers"]["id"] == task_id and ours["headers"]["task"] == "sessions.tasks.dispatch_agent"
        assert ours["headers"]["root_id"] == task_id  # a first task is its own root, as with delay()
        assert json.loads(base64.b64decode(ours["body"]))[:2] == [[4242], {"replace": True}]
        assert _without_ids(ours) == _without_ids(by_delay)
    finally:
        broker.lrem(queue, 1, broker.lindex(queue, 0) or b"")
        broker.lrem(queue, 1, broker.lindex(queue, 0) or b"")
        broker.close()


def test_each_thread_keeps_its_producer_and_connection() -> None:
    from sessions import task_queue

    enqueue(tasks.dispatch_agent, 1)
    first = task_queue._local.producer
    enqueue(tasks.dispatch_agent, 2)
    assert task_queue._local.producer is first and first.connection.connected
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for _ in range(2):
        broker.lpop(app.conf.task_default_queue)
    broker.close()
