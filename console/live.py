"""The live view's rows: every live session with its state, worker, turns and last latency."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from sessions.models import LIVE_STATUSES, AgentStatus, ConversationSession, HandoffStatus, TranscriptTurn

from .stats import TOTAL_METRIC, metric

MAX_ROWS = 500
# States a session passes through on its way somewhere: staying in one long means it is stuck.
TRANSIENT_STATUSES = frozenset(LIVE_STATUSES - {AgentStatus.ACTIVE})


def sessions_live_with_stats() -> QuerySet[ConversationSession]:
    turns = TranscriptTurn.objects.filter(session=OuterRef("pk")).order_by()
    count = turns.values("session").annotate(n=Count("pk")).values("n")
    last_latency = (
        turns.filter(metrics__has_key=TOTAL_METRIC)
        .order_by("-sequence")
        .annotate(v=metric(TOTAL_METRIC))
        .values("v")[:1]
    )
    return (
        ConversationSession.objects.filter(agent_status__in=LIVE_STATUSES)
        .select_related("company", "agent")
        .annotate(
            turn_count=Coalesce(Subquery(count, output_field=IntegerField()), 0),
            last_latency=Subquery(last_latency),
        )
        .order_by("created_at")
    )


def is_stuck(session: ConversationSession, now: datetime) -> bool:
    age = (now - session.status_changed_at).total_seconds()
    return session.agent_status in TRANSIENT_STATUSES and age > settings.CONSOLE_STUCK_AFTER_SECONDS


def row_actions(session: ConversationSession) -> list[dict[str, str]]:
    actions = [
        {
            "name": "stop",
            "label": "Stop",
            "url": reverse("console:live-stop", args=[session.pk]),
            "confirm": f"Stop the agent of {session.session_id}?",
        }
    ]
    if session.agent_status not in (AgentStatus.ACTIVE, AgentStatus.STOPPING):
        actions.append(
            {
                "name": "redispatch",
                "label": "Re-dispatch",
                "url": reverse("console:live-redispatch", args=[session.pk]),
                "confirm": "",
            }
        )
    return actions


def live_row(session: ConversationSession, now: datetime) -> dict[str, Any]:
    return {
        "id": session.pk,
        "session_id": session.session_id,
        "url": reverse("admin:conversation_sessions_conversationsession_change", args=[session.pk]),
        "company": session.company.name,
        "agent": session.agent.name,
        "status": session.agent_status,
        "status_seconds": round((now - session.status_changed_at).total_seconds(), 1),
        "stuck": is_stuck(session, now),
        "worker": session.agent_worker_id,
        "turns": getattr(session, "turn_count", 0),
        "last_latency": getattr(session, "last_latency", None),
        "actions": row_actions(session),
        "handoff": handoff_cell(session),
    }


def handoff_cell(session: ConversationSession) -> dict[str, Any] | None:
    """A handoff to a person, if one was asked for; a waiting one is highlighted with Join."""
    if not session.handoff_status:
        return None
    wait = session.handoff_wait_seconds
    return {
        "status": session.handoff_status,
        "waiting": session.handoff_status == HandoffStatus.REQUESTED,
        "reason": session.handoff_reason,
        "wait_seconds": round(wait, 1) if wait is not None else None,
        "join_url": reverse("staff-call", args=[session.pk]),
    }


# Each adds fields to a row (a later feature's columns); the JavaScript renders them
# through AgentConnectConsole.liveColumns.
ROW_EXTENSIONS: list[Callable[[ConversationSession, dict[str, Any]], None]] = []


def live_rows() -> list[dict[str, Any]]:
    now = timezone.now()
    rows = []
    for session in sessions_live_with_stats()[:MAX_ROWS]:
        row = live_row(session, now)
        for extend in ROW_EXTENSIONS:
            extend(session, row)
        rows.append(row)
    return rows
