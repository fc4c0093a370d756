"""Queueing a session's task from a web request: Celery's own message, a lighter way to the broker.

`task.delay()` is about a fifth of a start-voice-session's CPU (~1.7 ms of
~7.5 measured in a request). Most of that is Celery's general-purpose
`send_task` (options, routing, argument reprs, a producer borrowed from the
pool and given back) and kombu re-binding and re-checking the queue's
declaration on every message, none of which changes between two dispatches
of a session. Here:

- the message is built by Celery's own `app.amqp.create_task_message` and
  sent by `app.amqp.send_task_message` (its signals, serializer and publish
  retry policy as configured), so a worker sees exactly what `delay()` sends;
- each web thread keeps one producer on a broker connection of its own,
  which declares the task's queue once, when it is made (the workers declare
  their queues too; on Redis, publishing to a queue needs no declaration);
  kombu reconnects it when the broker comes back, under the publish retry
  policy, as it does pooled ones;
- with `task_always_eager` (the task runs here), with task routes, or from
  inside a task (reconcile's re-dispatch: the message records its parent
  task), it is plain `apply_async`.

Only for tasks called with positional and keyword arguments, no options
(countdown, expires, queue...): the session tasks.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Task
from celery.local import Proxy
from kombu import Producer
from kombu.common import maybe_declare
from kombu.utils.uuid import uuid

_local = threading.local()


def enqueue(task: Task, *args: Any, **kwargs: Any) -> str:
    """Queue task(*args, **kwargs); its id. Raises what the broker raises once the publish retries are spent."""
    if isinstance(
        task, Proxy
    ):  # @shared_task: the task itself, not a look-up through the proxy per attribute
        task = task._get_current_object()
    app = task.app
    if (
        app.conf.task_always_eager
        or app.conf.task_routes
        or getattr(task, "queue", None)
        or app.current_worker_task  # a task queued by a task records its parent: Celery's way
    ):
        return str(task.apply_async(args, kwargs).id)
    queue = app.amqp.queues[app.conf.task_default_queue]
    producer = _producer(app, queue)
    task_id = uuid()
    message = app.amqp.create_task_message(
        task_id,
        task.name,
        args,
        kwargs,
        reply_to=app.thread_oid,
        time_limit=task.time_limit,
        soft_time_limit=task.soft_time_limit,
        create_sent_event=app.conf.task_send_sent_event,
        ignore_result=task.ignore_result,
        # Celery's saferepr of plain ids, without walking them generically.
        argsrepr=repr(args),
        kwargsrepr=repr(kwargs),
    )
    app.amqp.send_task_message(producer, task.name, message, queue=queue, declare=[])
    return task_id


def connect_this_thread(app: Any) -> None:
    """Make this thread's producer and connect it now (a web thread at boot), not at its first task."""
    if not (app.conf.task_always_eager or app.conf.task_routes):
        _producer(app, app.amqp.queues[app.conf.task_default_queue])


def _producer(app: Any, queue: Any) -> Producer:
    """This thread's producer; its connection declares `queue` when it is made."""
    producer: Producer | None = getattr(_local, "producer", None)
    if producer is None:
        producer = app.amqp.Producer(app.connection_for_write(), auto_declare=False)
        maybe_declare(queue, producer.channel, retry=True, **app.conf.task_publish_retry_policy)
        _local.producer = producer
    return producer
