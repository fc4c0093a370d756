"""The Celery app. Broker: Redis in production, an embedded filesystem broker otherwise."""

from __future__ import annotations

import os

from celery import Celery

from agentconnect import celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentconnect.settings")

app = Celery("agentconnect")
app.config_from_object("django.conf:settings", namespace="CELERY")


EMBEDDED_BROKER_POLLING_SECONDS = 0.05


def _configure_embedded_broker() -> None:
    from django.conf import settings

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return
    folder = settings.CELERY_BROKER_FILESYSTEM_DIR
    for sub in ("in", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder / "in"),
        "data_folder_out": str(folder / "in"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        # Without this kombu keeps its broadcast (pidbox) files in the working directory.
        "control_folder": str(folder / "control"),
        # kombu lists the folder once a second by default, and a session's dispatch waited
        # for that; a listing of a near-empty folder is cheap (bench/bench_embedded_broker.py)
        "polling_interval": EMBEDDED_BROKER_POLLING_SECONDS,
    }


app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    timezone="UTC",
)
_configure_embedded_broker()
app.autodiscover_tasks()
celery_signals.connect()  # task outcome metrics, the worker's /metrics, JSON logs


@app.on_after_finalize.connect
def _schedule_reconcile(sender: Celery, **_: object) -> None:
    from django.conf import settings

    sender.add_periodic_task(
        settings.CELERY_RECONCILE_INTERVAL_SECONDS,
        sender.signature("sessions.tasks.reconcile_sessions"),
        name="reconcile agent sessions with LiveKit",
    )
    # lost workers must be noticed within seconds: a cheap query of its own, often
    sender.add_periodic_task(
        settings.CELERY_WATCHDOG_INTERVAL_SECONDS,
        sender.signature(
            "sessions.tasks.watchdog_sessions", expires=settings.CELERY_WATCHDOG_INTERVAL_SECONDS * 2
        ),
        name="recover sessions whose agent worker is gone",
    )
