"""gunicorn settings for the web process (`docker-entrypoint.sh web`, agentconnect-web.service).

Override any of them without editing this file through gunicorn's own
environment: WEB_CONCURRENCY (workers) and GUNICORN_CMD_ARGS, e.g.
GUNICORN_CMD_ARGS="--bind 127.0.0.1:8000 --threads 8 --access-logfile -".
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from pathlib import Path
from typing import Any

# The config file is loaded before gunicorn puts the project on sys.path.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gunicorn.glogging import Logger  # noqa: E402

from agentconnect.logconfig import logging_config  # noqa: E402

wsgi_app = "agentconnect.wsgi:application"
bind = ["0.0.0.0:8000"]
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
# Threads: a request waiting on LiveKit or PostgreSQL does not hold a whole process.
# gthread, with new connections spread over the workers (agentconnect/gunicorn_worker.py).
worker_class = "agentconnect.gunicorn_worker.BalancedThreadWorker"
threads = 4
timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, staggered, so a slow leak never becomes an outage.
max_requests = 2000
max_requests_jitter = 200
# The worker heartbeat file on tmpfs: an overlay or network filesystem can stall it.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Access lines are off by default (the load balancer has them; probes would flood them).
accesslog = None

_debug = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes", "on")
_format = os.environ.get("LOG_FORMAT") or ("text" if _debug else "json")
logconfig_dict: dict[str, Any] = logging_config(log_format=_format, level=os.environ.get("LOG_LEVEL", "INFO"))
logconfig_dict["loggers"] = {
    "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
    "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
}


class AccessLinesOnRequest(Logger):
    """Access lines only when asked for (`--access-logfile`): gunicorn writes one for
    every request as soon as logconfig_dict is set, as it is above for the JSON format,
    and formatting it cost the web tier CPU on each request."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = AccessLinesOnRequest


def post_worker_init(worker: Any) -> None:
    """The application is loaded: move what it allocated (Django, DRF, the URL
    conf, ~100,000 objects) out of the garbage collector's sight. A full
    collection walked all of them, about 60 ms during which the worker's
    threads all stood still; they live as long as the process anyway."""
    _connect_every_thread(worker)
    gc.collect()
    gc.freeze()


def _connect_every_thread(worker: Any) -> None:
    """Open each request thread's PostgreSQL and broker connections now, before the worker accepts.

    Django keeps a connection per thread (CONN_MAX_AGE), and so does the task
    queue (sessions/task_queue.py), each opened by the thread's first use: a
    new worker's first requests, one per thread, each waited for them (a new
    PostgreSQL backend process, a Redis connection and the queue's
    declaration) on top of their own work. Workers are new after every deploy
    and every max_requests recycle (2,000 requests: under load, a worker every
    minute or so). Each of the pool's threads opens its own here (a barrier
    makes the executor start them all); if the database or the broker is down,
    the worker boots anyway and its requests connect as before."""
    from concurrent.futures import wait

    from django.db import connection

    from agentconnect.celery import app
    from sessions.task_queue import connect_this_thread

    pool = getattr(worker, "tpool", None)
    if pool is None:  # a worker class without a thread pool serves from this thread
        pool, threads = None, 1
    else:
        threads = worker.cfg.threads
    barrier = threading.Barrier(threads)

    def connect() -> None:
        barrier.wait(timeout=10)
        errors = []
        for opening in (connection.ensure_connection, lambda: connect_this_thread(app)):
            try:
                opening()
            except Exception as exc:  # down: the thread's first request connects, as before
                errors.append(exc)
        if errors:
            raise errors[0]

    if pool is None:
        try:
            connect()
        except Exception as exc:
            worker.log.warning("could not open the database or broker connection at boot: %r", exc)
        return
    jobs = [pool.submit(connect) for _ in range(threads)]
    done, _ = wait(jobs, timeout=30)
    failures = [job.exception() for job in done if job.exception()]
    if failures or len(done) < threads:
        worker.log.warning(
            "could not open every thread's database and broker connections at boot: %r", failures[:1]
        )


def child_exit(server: Any, worker: Any) -> None:
    """A worker died: drop its live gauges from the shared metrics directory (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
