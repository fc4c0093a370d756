"""Queueing a session's tasks, and what the dispatch and stop tasks do."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from django.conf import settings
from django.utils import timezone

from voiceagents.catalog import AgentMode
from voiceagents.services import agent_dispatch_name

from .. import livekit_gateway as lk
from ..models import TERMINAL_STATUSES, AgentStatus, ConversationSession
from .lifecycle import session_fail, session_transition

logger = logging.getLogger(__name__)


def session_task_queue(task: Task, session_pk: int, **kwargs: Any) -> bool:
    """Queue a session's task; False (and the session failed) when the broker is down.

    Called from `transaction.on_commit`, so a task never sees a row its request rolled back.
    """
    try:
        task.delay(session_pk, **kwargs)
    except Exception as exc:  # the broker is down: the session must not wait for a task that never comes
        what = task.name.rsplit(".", 1)[-1].replace("_", " ")
        logger.error("could not queue %s for session %s: %r", task.name, session_pk, exc)
        session_fail(
            session_pk=session_pk,
            reason=f"Could not queue the {what} task: the task broker is unreachable.",
        )
        return False
    return True


def _room_spec(session: ConversationSession) -> lk.RoomSpec:
    return lk.RoomSpec(
        name=session.agent_room_name,
        agent_name=agent_dispatch_name(session.mode),
        metadata=session.config,
        max_participants=(
            settings.LIVEKIT_CONFERENCE_MAX_PARTICIPANTS if session.mode == AgentMode.CONFERENCE else 2
        ),
        empty_timeout=settings.LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS,
        departure_timeout=settings.LIVEKIT_ROOM_DEPARTURE_TIMEOUT_SECONDS,
    )


def session_dispatch(*, session_pk: int, replace: bool = False) -> None:
    """Create the room and the agent dispatch. Safe to run twice (redelivery).

    With `replace`, an existing dispatch is deleted and a new one created, so
    a fresh job is offered to the workers (staff re-dispatch, and always for a
    recovering session, whose lost agent's job is gone).
    """
    session = ConversationSession.objects.filter(pk=session_pk).first()
    if session is None:
        return
    if session.agent_status == AgentStatus.PENDING:
        session_transition(session_pk=session_pk, to=AgentStatus.DISPATCHING)
        session.refresh_from_db()
    if session.agent_status not in (AgentStatus.DISPATCHING, AgentStatus.STARTING, AgentStatus.RECOVERING):
        return
    recovering = session.agent_status == AgentStatus.RECOVERING
    if recovering and session.agent_identity:
        # The server may still list the lost agent (until its connection times out);
        # removing it frees its place in the room and makes sure it cannot come back.
        lk.participant_remove(session.agent_room_name, session.agent_identity)

    # stamped before the offer: a worker that takes it stamps job_taken_at after
    ConversationSession.objects.filter(pk=session_pk).update(dispatched_at=timezone.now())
    dispatch_id = lk.room_ensure_with_dispatch(
        _room_spec(session),
        # a recovering session needs a new job: its old dispatch's job died with its agent
        replace=replace or recovering,
    )
    ConversationSession.objects.filter(pk=session_pk).update(dispatch_id=dispatch_id)
    if recovering:
        return  # recovering until the new agent joins (session_agent_joined)
    if session.agent_status == AgentStatus.STARTING:
        # A repeat for a session already starting: restart its clock for reconcile.
        ConversationSession.objects.filter(pk=session_pk, agent_status=AgentStatus.STARTING).update(
            status_changed_at=timezone.now()
        )
        return
    if session_transition(session_pk=session_pk, to=AgentStatus.STARTING):
        return
    session.refresh_from_db()
    if session.agent_status in (AgentStatus.STOPPING, *TERMINAL_STATUSES):
        # Stopped while we were creating the room: do not leave it behind.
        lk.room_close(session.agent_room_name, dispatch_id)


def session_dispatch_again(*, session_pk: int) -> bool:
    """Offer again the job of a session still waiting for its agent (starting,
    recovering) that no worker took; True when it did.

    Queued by the watchdog once an offer is AGENT_REDISPATCH_AFTER_SECONDS old with
    no worker's stamp after it (sessions_watchdog). LiveKit offers a job once and
    drops it when every worker refuses it in that moment. The session's status and
    clock stay as they are: the start and recovery timeouts count from the first offer.
    """
    session = ConversationSession.objects.filter(
        pk=session_pk, agent_status__in=(AgentStatus.STARTING, AgentStatus.RECOVERING)
    ).first()
    if session is None or not session.dispatch_id:
        return False
    if session.job_taken_at and session.dispatched_at and session.job_taken_at >= session.dispatched_at:
        return False  # a worker took the offer meanwhile: its agent is on its way
    logger.warning("session %s: no worker took its job (all full at that moment); offered again", session_pk)
    dispatch_id = lk.dispatch_add(_room_spec(session))
    ConversationSession.objects.filter(pk=session_pk).update(dispatch_id=dispatch_id)
    return True


def session_finish_stop(*, session_pk: int) -> None:
    """Close the dispatch and room of a stopping session, then mark it stopped."""
    session = ConversationSession.objects.filter(pk=session_pk).first()
    if session is None or session.agent_status != AgentStatus.STOPPING:
        return
    lk.room_close(session.agent_room_name, session.dispatch_id)
    session_transition(session_pk=session_pk, to=AgentStatus.STOPPED)
