"""Celery tasks: thin, idempotent, retried only on errors that may pass."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings

from .livekit_gateway import LiveKitRejected, LiveKitUnavailable

logger = logging.getLogger(__name__)

MAX_RETRIES = 5  # the default of settings.CELERY_TASK_MAX_RETRIES


def _backoff(retries: int) -> int:
    return int(min(2 ** (retries + 1), settings.CELERY_RETRY_BACKOFF_MAX_SECONDS))


def _retries_left(task: Task) -> bool:
    return bool(task.request.retries < settings.CELERY_TASK_MAX_RETRIES)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def dispatch_agent(self: Task, session_pk: int, replace: bool = False) -> None:
    from .services import session_dispatch, session_fail

    try:
        session_dispatch(session_pk=session_pk, replace=replace)
    except LiveKitRejected as exc:
        session_fail(session_pk=session_pk, reason=f"Dispatch refused: {exc}")
    except LiveKitUnavailable as exc:
        if not _retries_left(self):
            session_fail(
                session_pk=session_pk,
                reason=f"Could not dispatch an agent after {self.request.retries + 1} attempts: {exc}",
            )
            return
        raise self.retry(
            exc=exc, countdown=_backoff(self.request.retries), max_retries=settings.CELERY_TASK_MAX_RETRIES
        ) from exc


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def stop_agent(self: Task, session_pk: int) -> None:
    from .services import session_finish_stop

    try:
        session_finish_stop(session_pk=session_pk)
    except LiveKitUnavailable as exc:
        if not _retries_left(self):
            # Stays `stopping`; reconcile closes the room once LiveKit is back.
            logger.error("could not close the room of session %s: %s", session_pk, exc)
            return
        raise self.retry(
            exc=exc, countdown=_backoff(self.request.retries), max_retries=settings.CELERY_TASK_MAX_RETRIES
        ) from exc


@shared_task(acks_late=True, ignore_result=True)
def reconcile_sessions() -> dict[str, int]:
    from .services import sessions_reconcile

    try:
        report = sessions_reconcile()
    except LiveKitUnavailable as exc:
        # Next beat tick tries again; nothing to retry here.
        logger.warning("reconcile skipped: %s", exc)
        return {}
    return vars(report)


@shared_task(acks_late=True, ignore_result=True)
def watchdog_sessions() -> dict[str, int]:
    from .services import sessions_watchdog

    return vars(sessions_watchdog())
