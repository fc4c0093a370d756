"""Celery tasks: thin, idempotent, retried only on errors that may pass."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task, shared_task
from django.conf import settings

from .livekit_gateway import LiveKitError, LiveKitRejected, LiveKitUnavailable

logger = logging.getLogger(__name__)

R = TypeVar("R")
GiveUp = Callable[[int, int, Exception], None]


def retry(
    *, on: tuple[type[Exception], ...], exclude: tuple[type[Exception], ...] = (), give_up: GiveUp
) -> Callable[[Callable[..., R]], Callable[..., R | None]]:
    """The one retry policy of the session tasks (bound, first argument the session's pk).

    An error in `on` (and not in `exclude`) may pass next time: the task is retried
    with exponential backoff (2, 4, 8 ... s, capped at CELERY_RETRY_BACKOFF_MAX_SECONDS),
    CELERY_TASK_MAX_RETRIES times; then `give_up(session_pk, attempts, error)` says why.
    Any other error is not retried.
    """

    def decorator(run: Callable[..., R]) -> Callable[..., R | None]:
        @functools.wraps(run)
        def wrapper(self: Task, session_pk: int, *args: Any, **kwargs: Any) -> R | None:
            try:
                return run(self, session_pk, *args, **kwargs)
            except exclude:
                raise
            except on as exc:
                retries: int = self.request.retries
                max_retries: int = settings.CELERY_TASK_MAX_RETRIES
                if retries >= max_retries:
                    give_up(session_pk, retries + 1, exc)
                    return None
                countdown = min(2 ** (retries + 1), settings.CELERY_RETRY_BACKOFF_MAX_SECONDS)
                raise self.retry(exc=exc, countdown=countdown, max_retries=max_retries) from exc

        return wrapper

    return decorator


def _dispatch_given_up(session_pk: int, attempts: int, exc: Exception) -> None:
    from .services import session_fail

    session_fail(
        session_pk=session_pk, reason=f"Could not dispatch an agent after {attempts} attempts: {exc}"
    )


def _stop_given_up(session_pk: int, attempts: int, exc: Exception) -> None:
    # Stays `stopping`; reconcile closes the room once LiveKit is back.
    logger.error("could not close the room of session %s after %s attempts: %s", session_pk, attempts, exc)


@shared_task(bind=True, acks_late=True)
@retry(on=(LiveKitError,), exclude=(LiveKitRejected,), give_up=_dispatch_given_up)
def dispatch_agent(self: Task, session_pk: int, replace: bool = False) -> None:
    from .services import session_dispatch, session_fail

    try:
        session_dispatch(session_pk=session_pk, replace=replace)
    except LiveKitRejected as exc:
        session_fail(session_pk=session_pk, reason=f"Dispatch refused: {exc}")


@shared_task(acks_late=True, ignore_result=True)
def dispatch_again(session_pk: int) -> None:
    from .services import session_dispatch_again

    try:
        session_dispatch_again(session_pk=session_pk)
    except LiveKitError as exc:
        # the watchdog queues the check again on a later tick; the timeouts still hold
        logger.warning("could not check the dispatch of session %s: %s", session_pk, exc)


@shared_task(bind=True, acks_late=True)
@retry(on=(LiveKitError,), exclude=(LiveKitRejected,), give_up=_stop_given_up)
def stop_agent(self: Task, session_pk: int) -> None:
    from .services import session_finish_stop

    session_finish_stop(session_pk=session_pk)


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
