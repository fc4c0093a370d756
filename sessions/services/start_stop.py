"""Starting, stopping and re-dispatching sessions: what the API and the staff console ask for."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agentconnect.errors import Conflict, NotFound, ServiceUnavailable
from voiceagents.catalog import AgentMode
from voiceagents.models import Company, VoiceAgent
from voiceagents.services import agent_config_resolve

from .. import livekit_gateway as lk
from ..models import AgentStatus, ConversationSession
from ..selectors import agent_active_for_company, session_get_for_company
from ..tasks import dispatch_agent as dispatch_agent_task
from ..tasks import stop_agent as stop_agent_task
from .admission import session_admit
from .dispatch import session_task_queue
from .lifecycle import session_transition


@dataclass(frozen=True)
class StartResult:
    session: ConversationSession
    user_token: str
    created: bool


def _visitor_token(session: ConversationSession, *, identity: str, name: str) -> str:
    return lk.user_token(room_name=session.agent_room_name, identity=identity, name=name or "Visitor")


def _room_name(company_id: int) -> str:
    return f"ac-{company_id}-{uuid.uuid4().hex[:16]}"


def _session_create_admitted(**fields: Any) -> ConversationSession:
    """Insert a session and count it in, in one transaction; admission refusals roll both back."""
    session = ConversationSession(status_changed_at=timezone.now(), **fields)
    with transaction.atomic():
        session.save(force_insert=True)
        session_admit(company=session.company)
    return session


def session_start(
    *,
    company: Company,
    agent_id: int,
    session_id: str | None = None,
    participant_name: str = "",
    overrides: dict[str, Any] | None = None,
) -> StartResult:
    """Create a session (pending) and queue its dispatch, or return the live one with that id."""
    agent = agent_active_for_company(agent_id=agent_id, company=company)
    if agent is None:
        raise NotFound("No active agent with that agent_id for this company.")

    # A session_id already in use is found by the insert (the unique constraint),
    # not by a read before it, so a visitor retrying a live session gets it back
    # even when the company is at its limit.
    session_id = session_id or uuid.uuid4().hex
    config = agent_config_resolve(agent=agent, overrides=overrides or {})
    room_name = _room_name(company.pk)
    visitor_identity = f"visitor-{secrets.token_hex(6)}"
    config.update(session_id=session_id, room_name=room_name, visitor_identity=visitor_identity)
    try:
        session = _session_create_admitted(
            session_id=session_id,
            company=company,
            agent=agent,
            mode=agent.mode,
            agent_room_name=room_name,
            visitor_identity=visitor_identity,
            config=config,
        )
    except IntegrityError:
        # That session_id exists: started before, or concurrently by a request that won.
        existing = session_get_for_company(company=company, session_id=session_id)
        if existing is None:
            raise
        return _start_existing(existing, agent, participant_name)

    queued: list[bool] = []
    # Runs at once, or after the commit of an outer transaction (a caller's).
    transaction.on_commit(lambda: queued.append(session_task_queue(dispatch_agent_task, session.pk)))
    if queued == [False]:
        # The broker is down; the session is already failed with the reason, so nothing is left pending.
        session.refresh_from_db()
        raise ServiceUnavailable(
            "Voice sessions cannot start right now: the task queue is unreachable. "
            "Try again in a moment, with a new session_id.",
            details={"session_id": session.session_id, "reason": session.failure_reason},
            headers={"Retry-After": "5"},
        )
    token = _visitor_token(session, identity=visitor_identity, name=participant_name)
    return StartResult(session=session, user_token=token, created=True)


def _start_existing(session: ConversationSession, agent: VoiceAgent, participant_name: str) -> StartResult:
    if session.agent_id != agent.pk:
        raise Conflict("This session_id belongs to a session with another agent.")
    if session.is_terminal:
        raise Conflict(
            f"Session {session.session_id} has ended ({session.agent_status}); "
            "start a new session with a new session_id."
        )
    token = _visitor_token(session, identity=session.visitor_identity, name=participant_name)
    return StartResult(session=session, user_token=token, created=False)


def session_stop(*, session: ConversationSession) -> ConversationSession:
    """Ask for the agent and room to end. Stopping an ended session is a no-op."""
    if not session.is_terminal:
        with transaction.atomic():
            if session_transition(session_pk=session.pk, to=AgentStatus.STOPPING):
                pk = session.pk
                transaction.on_commit(lambda: session_task_queue(stop_agent_task, pk))
    session.refresh_from_db()
    return session


def session_stop_for_company(*, company: Company, session_id: str) -> ConversationSession:
    session = session_get_for_company(company=company, session_id=session_id)
    if session is None:
        raise NotFound("No session with that session_id.")
    return session_stop(session=session)


def session_widget_token(
    *, company: Company, session_id: str, participant_name: str
) -> tuple[ConversationSession, str, str]:
    """A fresh token for a live session's room: (session, token, identity).

    One-to-one: the visitor reconnecting, same identity (the agent is linked
    to it). Conference: a further participant with an identity of their own.
    """
    session = session_get_for_company(company=company, session_id=session_id)
    if session is None:
        raise NotFound("No session with that session_id.")
    if session.is_terminal:
        raise Conflict(f"Session {session_id} has ended ({session.agent_status}).")
    if session.mode == AgentMode.CONFERENCE:
        identity = f"guest-{secrets.token_hex(6)}"
    else:
        identity = session.visitor_identity
    token = _visitor_token(session, identity=identity, name=participant_name)
    return session, token, identity


def session_redispatch(*, session: ConversationSession) -> ConversationSession:
    """Staff action: offer the conversation to an agent again.

    Pending, dispatching or starting: the dispatch is replaced in the same
    room (the visitor stays). Active: refused, stop the agent first. Ended:
    the session keeps its truthful terminal state, and a successor session
    with the same configuration and a new room is started.
    """
    if session.agent_status == AgentStatus.ACTIVE:
        raise Conflict("The agent is active; stop it before dispatching another.")
    if session.agent_status == AgentStatus.STOPPING:
        raise Conflict("The agent is stopping; wait until it has stopped.")
    if not session.is_terminal:
        pk = session.pk
        transaction.on_commit(lambda: session_task_queue(dispatch_agent_task, pk, replace=True))
        return session
    count = ConversationSession.objects.filter(redispatch_of=session).count() + 1
    room_name = _room_name(session.company_id)
    new_id = f"{session.session_id[:56]}-r{count}"
    # A successor is a new live session: the company's and the deployment's limits apply.
    successor = _session_create_admitted(
        session_id=new_id,
        company=session.company,
        agent_id=session.agent_id,
        mode=session.mode,
        agent_room_name=room_name,
        visitor_identity=session.visitor_identity,
        config={**session.config, "session_id": new_id, "room_name": room_name},
        redispatch_of=session,
    )
    transaction.on_commit(lambda: session_task_queue(dispatch_agent_task, successor.pk))
    return successor
