"""The agent status state machine and the one door through which a status changes.

pending → dispatching → starting → active → stopping → stopped, and any
non-terminal status → failed. An agent lost mid-conversation (starting or
active, no stop asked for) → recovering → active again with a new agent; a
stop (stopping) is never recovered. A few shortcuts exist because events race:
the agent can join (webhook) before the dispatch task records `starting`, and
a room can finish while an agent is still starting or active.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from agentconnect.metrics import observe_status_change

from ..models import LIVE_STATUSES, TERMINAL_STATUSES, ConversationSession
from ..models import AgentStatus as S

__all__ = [
    "ALLOWED",
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
    "session_fail",
    "session_transition",
    "sources_for",
]

logger = logging.getLogger(__name__)

MAX_FAILURE_REASON = 1000

ALLOWED: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.DISPATCHING, S.STOPPING, S.FAILED}),
    S.DISPATCHING: frozenset({S.STARTING, S.ACTIVE, S.STOPPING, S.FAILED}),
    S.STARTING: frozenset({S.ACTIVE, S.RECOVERING, S.STOPPING, S.STOPPED, S.FAILED}),
    S.ACTIVE: frozenset({S.RECOVERING, S.STOPPING, S.STOPPED, S.FAILED}),
    # A new agent joins (active), or the visitor stops, leaves or no worker takes over.
    S.RECOVERING: frozenset({S.ACTIVE, S.STOPPING, S.STOPPED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.STOPPED: frozenset(),
    S.FAILED: frozenset(),
}


def sources_for(target: str) -> list[str]:
    """Every status from which `target` may be reached."""
    return [source for source, targets in ALLOWED.items() if target in targets]


def session_transition(
    *, session_pk: int, to: str, where: dict[str, Any] | None = None, **fields: Any
) -> bool:
    """Move a session to `to` if its current status allows it; True when it moved.

    A conditional UPDATE, so concurrent webhook, worker and task updates
    cannot clobber each other: of two racing transitions exactly one wins.
    `where` narrows the condition further (e.g. only while a given agent holds it).
    """
    now = timezone.now()
    if to == S.FAILED:
        fields["failure_reason"] = (fields.get("failure_reason") or "unknown failure")[:MAX_FAILURE_REASON]
    if to in TERMINAL_STATUSES:
        fields.setdefault("agent_stopped_at", now)
    # Ending a session also gives its company's counted place back, in this same
    # statement: a database trigger (migrations 0004, 0005) decrements CompanyLiveSessions.
    moved = (
        ConversationSession.objects.filter(pk=session_pk, agent_status__in=sources_for(to))
        .filter(**(where or {}))
        .update(agent_status=to, status_changed_at=now, updated_at=now, **fields)
        == 1
    )
    if moved:
        logger.info("session %s -> %s", session_pk, to, extra={"session_pk": session_pk})
        observe_status_change(session_pk=session_pk, to=to, fields=fields)  # dispatch latency, failures
    return moved


def session_fail(*, session_pk: int, reason: str) -> bool:
    return session_transition(session_pk=session_pk, to=S.FAILED, failure_reason=reason)
