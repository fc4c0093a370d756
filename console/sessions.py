"""Reads and presentation for one session's page and the sessions list (the admin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, FloatField, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from sessions.models import ConversationSession, TranscriptTurn

from .stats import PART_METRICS, TOTAL_METRIC, TURN_METRICS, PercentileCont, exact_percentiles, metric


def sessions_with_turn_stats(queryset: QuerySet[ConversationSession]) -> QuerySet[ConversationSession]:
    """Each session with its number of turns and the median voice-to-voice latency of its replies."""
    turns = TranscriptTurn.objects.filter(session=OuterRef("pk")).order_by().values("session")
    count = turns.annotate(n=Count("pk")).values("n")
    median = (
        turns.filter(metrics__has_key=TOTAL_METRIC)
        .annotate(m=PercentileCont(metric(TOTAL_METRIC), 0.5))
        .values("m")
    )
    return queryset.annotate(
        turn_count=Coalesce(Subquery(count, output_field=IntegerField()), 0),
        median_turn_latency=Subquery(median) if exact_percentiles() else Value(None, FloatField()),
    )


@dataclass
class TimelineTurn:
    sequence: int
    role: str
    speaker: str
    started_at: datetime | None
    offset_seconds: float | None
    text: str
    interrupted: bool
    total: float | None
    # (label, seconds, slowest) per latency part the turn has, in TURN_METRICS order.
    parts: list[tuple[str, float, bool]] = field(default_factory=list)


def session_timeline(session: ConversationSession) -> list[TimelineTurn]:
    """The turns in order, each with its latency parts and the slowest one marked; the agent's
    tool calls between them, each with its arguments, its result or error, and its duration."""
    import json
    from datetime import timedelta

    origin = session.agent_started_at or session.created_at
    timed: list[tuple[datetime, int, TimelineTurn]] = []
    for turn in session.turns.order_by("sequence"):
        figures = {k: float(v) for k, v in (turn.metrics or {}).items() if k in TURN_METRICS}
        parts = [(name, figures[name]) for name in PART_METRICS if name in figures]
        slowest = max(parts, key=lambda p: p[1])[0] if parts else None
        row = TimelineTurn(
            sequence=turn.sequence,
            role=turn.role,
            speaker=turn.speaker_name or turn.speaker_identity or turn.role,
            started_at=turn.started_at,
            offset_seconds=(turn.started_at - origin).total_seconds() if turn.started_at and origin else None,
            text=turn.text,
            interrupted=turn.interrupted,
            total=figures.get(TOTAL_METRIC),
            parts=[(TURN_METRICS[name], value, name == slowest) for name, value in parts],
        )
        timed.append((turn.started_at or turn.created_at, len(timed), row))
    for call in session.tool_calls.order_by("created_at", "pk"):
        started = call.created_at - timedelta(milliseconds=call.duration_ms)
        outcome = f"error: {call.error}" if call.error else json.dumps(call.result, ensure_ascii=False)
        row = TimelineTurn(
            sequence=0,
            role="tool",
            speaker=f"tool {call.name}",
            started_at=started,
            offset_seconds=(started - origin).total_seconds() if origin else None,
            text=f"{json.dumps(call.arguments, ensure_ascii=False)} → {outcome}",
            interrupted=False,
            total=None,
            parts=[("duration", call.duration_ms / 1000, bool(call.error))],
        )
        timed.append((started, len(timed), row))
    return [row for _, _, row in sorted(timed, key=lambda t: (t[0], t[1]))]


def as_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """A JSON object as (key, value) rows for a two-column table; nested values as compact JSON."""
    import json

    rows = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, (dict, list)):
            text = json.dumps(value, ensure_ascii=False)
        elif value is None or value == "":
            text = "—"
        else:
            text = str(value)
        rows.append((key.replace("_", " "), text))
    return rows
