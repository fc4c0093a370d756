"""Events from LiveKit (webhooks) and from the agent workers' own reports."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from livekit import api

from ..models import AgentStatus, ConversationSession
from ..tasks import dispatch_agent as dispatch_agent_task
from .dispatch import session_task_queue
from .lifecycle import session_fail, session_transition

logger = logging.getLogger(__name__)


def _session_by_room(room_name: str) -> ConversationSession | None:
    return ConversationSession.objects.filter(agent_room_name=room_name).first()


def session_agent_joined(*, room_name: str, identity: str, worker_id: str = "") -> bool:
    """The agent is in the room: reported both by the webhook and by the worker itself.

    Whichever comes first moves the session to active; the worker's report
    also records its worker id, even when the webhook was first. A replacement
    agent (recovering) takes the session over: from then on the session is its,
    and reports of the agent it replaced no longer apply.
    """
    session = _session_by_room(room_name)
    if session is None:
        return False
    now = timezone.now()
    fields: dict[str, Any] = {"agent_identity": identity, "agent_heartbeat_at": now}
    if worker_id:
        fields["agent_worker_id"] = worker_id
    if session.agent_status == AgentStatus.RECOVERING:
        if identity == session.agent_identity:
            return False  # the lost agent's own join, arriving late: not a replacement
        # the conversation started long ago: agent_started_at keeps that time
        moved = session_transition(
            session_pk=session.pk,
            to=AgentStatus.ACTIVE,
            where={"agent_identity": session.agent_identity},
            **{"agent_worker_id": worker_id or identity, **fields},
        )
    else:
        moved = session_transition(
            session_pk=session.pk,
            to=AgentStatus.ACTIVE,
            agent_started_at=now,
            **{"agent_worker_id": worker_id or identity, **fields},
        )
    if not moved and worker_id:
        # the webhook moved it first (even after this read): the worker's id must still be
        # recorded, or its heartbeats, which name it, would not count and the watchdog
        # would take the conversation from a healthy agent
        ConversationSession.objects.filter(
            pk=session.pk, agent_status=AgentStatus.ACTIVE, agent_identity=identity
        ).update(**fields)
    return moved


# The agent's own end-of-conversation report applies only while it holds the
# session: not once it was declared lost (recovering), nor after a newer agent took over.
_FINISH_FROM = [
    AgentStatus.PENDING,
    AgentStatus.DISPATCHING,
    AgentStatus.STARTING,
    AgentStatus.ACTIVE,
    AgentStatus.STOPPING,
]


def session_agent_finished(*, session_pk: int, error: str = "", identity: str = "") -> bool:
    """The worker's own report at the end of its conversation: stopped, or failed with a reason.

    False when it did not apply: the session ended already, was declared lost,
    or belongs to a newer agent (then the reporting agent leaves the room to it).
    """
    where: dict[str, Any] = {"agent_status__in": _FINISH_FROM}
    if identity:
        where["agent_identity__in"] = [identity, ""]
    if error:
        return session_transition(
            session_pk=session_pk, to=AgentStatus.FAILED, where=where, failure_reason=error
        )
    return session_transition(session_pk=session_pk, to=AgentStatus.STOPPED, where=where)


def session_agent_left(
    *, room_name: str, identity: str = "", aborted: bool = False, reason: str = ""
) -> bool:
    """The agent left the room. Its own report of how the conversation ended comes
    before it leaves; an agent that leaves a live conversation without one (no stop
    was asked for) was lost, and is replaced."""
    how = "its connection was lost" if aborted else "it left without ending the conversation"
    return session_agent_lost(
        room_name=room_name,
        identity=identity,
        reason=reason or f"The agent left the room: {how} (worker crash or network failure).",
    )


def session_agent_lost(*, room_name: str, identity: str = "", reason: str) -> bool:
    """The agent of a live conversation is gone, and no stop was asked for: recover
    the session with a new agent in the same room, or fail it once the attempts are
    used up. True when the session moved (to recovering or failed).

    Reported by the worker's main process (a job process died, a drain timed out),
    by the watchdog (the whole worker stopped its heartbeats) and by LiveKit's
    webhook (the agent left). Only about the agent that holds the session: a
    report about an agent already replaced changes nothing.
    """
    session = (
        ConversationSession.objects.filter(agent_room_name=room_name)
        .only("pk", "agent_status", "agent_identity", "recovery_count")
        .first()
    )
    if session is None or session.agent_status not in (AgentStatus.STARTING, AgentStatus.ACTIVE):
        return False
    if session.agent_identity and identity != session.agent_identity:
        # about another agent (one already replaced), or about no agent in particular
        # while one is recorded: only reports naming the holder recover a session
        return False
    return session_recover(
        session_pk=session.pk, identity=session.agent_identity, lost=identity, reason=reason
    )


def session_recover(*, session_pk: int, identity: str, reason: str, lost: str = "") -> bool:
    """Move the session to recovering and dispatch a new agent to its room; past
    AGENT_MAX_RECOVERIES, fail it. `identity` is the session's agent as the caller
    read it: if another agent took the session over meanwhile, nothing changes.
    The lost agent's identity (`lost`, else `identity`) stays recorded while
    recovering, so that agent can never count as its own replacement."""
    limit: int = settings.AGENT_MAX_RECOVERIES
    holder = {"agent_identity": identity}
    if session_transition(
        session_pk=session_pk,
        to=AgentStatus.RECOVERING,
        where={**holder, "recovery_count__lt": limit},
        recovery_count=F("recovery_count") + 1,
        agent_heartbeat_at=None,
        agent_identity=lost or identity,
        # the new dispatch (dispatch_agent, queued below) sets it: until then the
        # watchdog has no offer of this recovery to check
        dispatched_at=None,
    ):
        logger.warning("session %s: agent lost (%s); recovering", session_pk, reason)
        transaction.on_commit(lambda: session_task_queue(dispatch_agent_task, session_pk, replace=True))
        return True
    return session_transition(
        session_pk=session_pk,
        to=AgentStatus.FAILED,
        where={
            **holder,
            "agent_status__in": [AgentStatus.STARTING, AgentStatus.ACTIVE],
            "recovery_count__gte": limit,
        },
        failure_reason=f"{reason} The agent was already replaced {limit} time(s) in this session "
        f"(AGENT_MAX_RECOVERIES={limit}): giving up.",
    )


def session_room_finished(*, room_name: str) -> bool:
    session = _session_by_room(room_name)
    if session is None or session.is_terminal:
        return False
    if session.agent_status in (AgentStatus.ACTIVE, AgentStatus.STOPPING):
        return session_transition(session_pk=session.pk, to=AgentStatus.STOPPED)
    if session.agent_status == AgentStatus.RECOVERING:
        # the visitor left too while a new agent was on its way: a crash, not a clean stop
        return session_fail(
            session_pk=session.pk, reason="The room closed while a lost agent was being replaced."
        )
    if session.agent_status == AgentStatus.STARTING and session.agent_started_at is None:
        return session_fail(session_pk=session.pk, reason="The room closed before an agent joined it.")
    return session_transition(session_pk=session.pk, to=AgentStatus.STOPPED) or session_fail(
        session_pk=session.pk, reason="The room closed before the agent was dispatched."
    )


def session_handle_webhook(event: api.WebhookEvent) -> str:
    """Apply a verified LiveKit webhook event; returns what was done, for logs and tests."""
    room_name = event.room.name if event.HasField("room") else ""
    if not room_name:
        return "ignored"
    if event.event == "room_finished":
        return "stopped" if session_room_finished(room_name=room_name) else "noop"
    if not event.HasField("participant") or event.participant.kind != api.ParticipantInfo.Kind.AGENT:
        return "ignored"
    participant = event.participant
    if event.event == "participant_joined":
        joined = session_agent_joined(room_name=room_name, identity=participant.identity)
        return "active" if joined else "noop"
    if event.event in ("participant_left", "participant_connection_aborted"):
        lost = session_agent_left(
            room_name=room_name,
            identity=participant.identity,
            aborted=event.event == "participant_connection_aborted",
        )
        return "recovering" if lost else "noop"
    return "ignored"
