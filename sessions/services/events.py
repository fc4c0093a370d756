"""Events from LiveKit (webhooks) and from the agent workers' own reports."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from livekit import api

from ..models import AgentStatus, ConversationSession
from .lifecycle import session_fail, session_transition


def _session_by_room(room_name: str) -> ConversationSession | None:
    return ConversationSession.objects.filter(agent_room_name=room_name).first()


def session_agent_joined(*, room_name: str, identity: str, worker_id: str = "") -> bool:
    """The agent is in the room: reported both by the webhook and by the worker itself.

    Whichever comes first moves the session to active; the worker's report
    also records its worker id, even when the webhook was first.
    """
    session = _session_by_room(room_name)
    if session is None:
        return False
    fields: dict[str, Any] = {"agent_identity": identity}
    if worker_id:
        fields["agent_worker_id"] = worker_id
    moved = session_transition(
        session_pk=session.pk,
        to=AgentStatus.ACTIVE,
        agent_started_at=timezone.now(),
        # The webhook knows no worker id: the agent's identity stands in until the worker reports.
        agent_worker_id=worker_id or identity,
        agent_identity=identity,
    )
    if not moved and worker_id:
        ConversationSession.objects.filter(pk=session.pk, agent_status=AgentStatus.ACTIVE).update(**fields)
    return moved


def session_agent_finished(*, session_pk: int, error: str = "") -> bool:
    """The worker's own report at the end of its conversation: stopped, or failed with a reason."""
    if error:
        return session_fail(session_pk=session_pk, reason=error)
    return session_transition(session_pk=session_pk, to=AgentStatus.STOPPED)


def session_agent_left(*, room_name: str, aborted: bool = False, reason: str = "") -> bool:
    """The agent left the room: a normal end, or a failure when its connection was lost."""
    session = _session_by_room(room_name)
    if session is None or session.is_terminal:
        return False
    if aborted:
        return session_fail(
            session_pk=session.pk,
            reason=reason or "The agent's connection to the room was lost (worker crash or network failure).",
        )
    if session_transition(session_pk=session.pk, to=AgentStatus.STOPPED):
        return True
    return session_fail(
        session_pk=session.pk, reason=reason or "The agent left the room before it had started."
    )


def session_room_finished(*, room_name: str) -> bool:
    session = _session_by_room(room_name)
    if session is None or session.is_terminal:
        return False
    if session.agent_status in (AgentStatus.ACTIVE, AgentStatus.STOPPING):
        return session_transition(session_pk=session.pk, to=AgentStatus.STOPPED)
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
        left = session_agent_left(
            room_name=room_name, aborted=event.event == "participant_connection_aborted"
        )
        return "left" if left else "noop"
    return "ignored"
