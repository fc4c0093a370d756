"""Celery hooks for operations: task outcome metrics, the worker's metrics endpoint, logging.

Connected from agentconnect/celery.py. Everything heavy is imported inside
the handlers: this module is imported with the Celery app, before Django's
settings (and `.env`) are loaded.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

logger = logging.getLogger(__name__)


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender or "unknown")


def _on_success(sender: Any = None, **_: Any) -> None:
    from agentconnect.metrics import observe_task

    observe_task(task=_task_name(sender), outcome="success")


def _on_failure(sender: Any = None, **_: Any) -> None:
    from agentconnect.metrics import observe_task

    observe_task(task=_task_name(sender), outcome="failure")


def _on_retry(sender: Any = None, **_: Any) -> None:
    from agentconnect.metrics import observe_task

    observe_task(task=_task_name(sender), outcome="retry")


def _serve_worker_metrics(sender: Any = None, **_: Any) -> None:
    """In a worker's main process: serve this worker's metrics (all pool children) over HTTP."""
    from django.conf import settings
    from prometheus_client import start_http_server

    from agentconnect.metrics import scrape_registry

    port: int = settings.CELERY_METRICS_PORT
    if not port:
        return
    host: str = settings.CELERY_METRICS_HOST
    start_http_server(port, addr=host, registry=scrape_registry(include_database=False))
    logger.info("celery worker metrics on http://%s:%s/metrics", host, port)


def _configure_logging(**_: Any) -> None:
    """Use the project's LOGGING (JSON or text) instead of Celery's own log format."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


def connect() -> None:
    signals.task_success.connect(_on_success, weak=False, dispatch_uid="agentconnect.task_success")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="agentconnect.task_failure")
    signals.task_retry.connect(_on_retry, weak=False, dispatch_uid="agentconnect.task_retry")
    # worker_ready: after the prefork pool has started, so its children do not inherit the socket.
    signals.worker_ready.connect(
        _serve_worker_metrics, weak=False, dispatch_uid="agentconnect.worker_metrics"
    )
    # Connecting setup_logging stops Celery from replacing the root logger's handlers.
    signals.setup_logging.connect(_configure_logging, weak=False, dispatch_uid="agentconnect.logging")
