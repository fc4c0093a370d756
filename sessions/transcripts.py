"""Writes from agent workers: transcript turns, usage totals; and the transcript read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from .models import ConversationSession, TranscriptTurn

MAX_TURN_TEXT = 20_000


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def transcript_turn_add(
    *,
    session_pk: int,
    role: str,
    text: str,
    speaker_identity: str = "",
    speaker_name: str = "",
    started_at: float | None = None,
    ended_at: float | None = None,
    interrupted: bool = False,
    metrics: dict[str, float] | None = None,
) -> TranscriptTurn:
    """Append a turn; the sequence is taken under a row lock so concurrent writers never collide."""
    with transaction.atomic():
        ConversationSession.objects.select_for_update().filter(pk=session_pk).first()
        last = TranscriptTurn.objects.filter(session_id=session_pk).aggregate(m=Max("sequence"))["m"]
        return TranscriptTurn.objects.create(
            session_id=session_pk,
            sequence=(last or 0) + 1,
            role=role,
            text=text[:MAX_TURN_TEXT],
            speaker_identity=speaker_identity[:128],
            speaker_name=speaker_name[:128],
            started_at=_ts(started_at),
            ended_at=_ts(ended_at),
            interrupted=interrupted,
            metrics={k: round(float(v), 4) for k, v in (metrics or {}).items() if v is not None},
        )


def session_usage_record(*, session_pk: int, usage: dict[str, Any]) -> None:
    """Replace the session's usage totals (the worker reports running totals)."""
    ConversationSession.objects.filter(pk=session_pk).update(usage=usage)


def transcript_for_resume(*, session_pk: int) -> list[dict[str, Any]]:
    """Every stored turn, in order, for a replacement agent's chat context.

    A gap in the sequence (a turn that was never stored, or deleted by hand) is
    not an error: the conversation goes on with the turns that exist, and the
    caller is told how many are missing.
    """
    rows = (
        TranscriptTurn.objects.filter(session_id=session_pk)
        .order_by("sequence")
        .values("sequence", "role", "speaker_name", "text", "interrupted")
    )
    return [dict(row) for row in rows]


def sessions_heartbeat(*, worker_id: str, rooms: list[str]) -> int:
    """A worker's main process stamps the sessions its running jobs serve; how many it stamped.

    Only sessions still recorded as this worker's: once a newer agent took one
    over, an old worker that comes back does not keep it alive.
    """
    from django.utils import timezone

    from .models import AgentStatus

    if not rooms:
        return 0
    return ConversationSession.objects.filter(
        agent_room_name__in=rooms, agent_worker_id=worker_id, agent_status=AgentStatus.ACTIVE
    ).update(agent_heartbeat_at=timezone.now())


def latency_summary(turns: list[TranscriptTurn]) -> dict[str, dict[str, float]]:
    """Median and max of each per-turn latency figure, in seconds."""
    values: dict[str, list[float]] = {}
    for turn in turns:
        for name, value in (turn.metrics or {}).items():
            values.setdefault(name, []).append(float(value))
    summary = {}
    for name, series in sorted(values.items()):
        series.sort()
        mid = len(series) // 2
        median = series[mid] if len(series) % 2 else (series[mid - 1] + series[mid]) / 2
        summary[name] = {"median": round(median, 4), "max": round(series[-1], 4), "count": len(series)}
    return summary


def session_job_taken(*, room_name: str) -> int:
    """A worker took a job for this room (its request handler accepted it): the
    session's latest offer needs no new one (sessions_watchdog). How many it stamped."""
    from django.utils import timezone

    from .models import AgentStatus

    return ConversationSession.objects.filter(
        agent_room_name=room_name, agent_status__in=(AgentStatus.STARTING, AgentStatus.RECOVERING)
    ).update(job_taken_at=timezone.now())
