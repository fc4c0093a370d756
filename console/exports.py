"""Transcripts and per-turn metrics for a filter, streamed as CSV or JSON lines of one array."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.db.models import F, QuerySet
from django.http import StreamingHttpResponse

from sessions.models import TranscriptTurn

from .forms import SessionFilter
from .stats import TURN_METRICS

# Rows fetched from PostgreSQL at a time (a server-side cursor): memory stays flat however
# many turns the filter matches.
CHUNK_SIZE = 2000
FORMATS = ("csv", "json")
COLUMNS = (
    "session_id",
    "company",
    "agent",
    "session_status",
    "session_created_at",
    "sequence",
    "role",
    "speaker_identity",
    "speaker_name",
    "started_at",
    "ended_at",
    "interrupted",
    "text",
)


def export_turns(f: SessionFilter) -> QuerySet[TranscriptTurn, dict[str, Any]]:
    return (
        f.scope(TranscriptTurn.objects.order_by(), prefix="session__")
        .filter(session__created_at__gte=f.since, session__created_at__lt=f.until)
        .order_by("session__created_at", "session_id", "sequence")
        .values(
            "sequence",
            "role",
            "speaker_identity",
            "speaker_name",
            "started_at",
            "ended_at",
            "interrupted",
            "text",
            "metrics",
            session_id_=F("session__session_id"),
            company=F("session__company__name"),
            agent=F("session__agent__name"),
            session_status=F("session__agent_status"),
            session_created_at=F("session__created_at"),
        )
    )


def _record(row: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"session_id": row["session_id_"]}
    for column in COLUMNS[1:]:
        value = row[column]
        record[column] = value.isoformat() if hasattr(value, "isoformat") else value
    metrics = row["metrics"] or {}
    for name in TURN_METRICS:
        record[name] = metrics.get(name)
    return record


class _Line:
    """A file-like sink for csv.writer that hands back each line it is given."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow([*COLUMNS, *TURN_METRICS])
    for row in rows:
        record = _record(row)
        yield writer.writerow(["" if record[c] is None else record[c] for c in (*COLUMNS, *TURN_METRICS)])


def json_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    first = True
    for row in rows:
        yield ("\n" if first else ",\n") + json.dumps(_record(row), ensure_ascii=False)
        first = False
    yield "\n]\n"


def export_response(f: SessionFilter, fmt: str) -> StreamingHttpResponse:
    rows = export_turns(f).iterator(chunk_size=CHUNK_SIZE)
    name = f"transcripts-{f.start.isoformat()}-{f.end.isoformat()}.{fmt}"
    if fmt == "csv":
        response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(json_chunks(rows), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
