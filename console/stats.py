"""PostgreSQL aggregate building blocks for the console: exact percentiles and turn metrics."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Aggregate, F, FloatField, Func
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

# The per-turn latency figures the agent worker writes (TranscriptTurn.metrics), with the
# names staff read. response_latency is the whole voice-to-voice delay; the others are parts.
TURN_METRICS: dict[str, str] = {
    "response_latency": "voice-to-voice",
    "end_of_turn_delay": "end-of-turn delay",
    "transcription_delay": "transcription delay",
    "llm_ttft": "LLM time to first token",
    "tts_ttfb": "TTS time to first byte",
}
TOTAL_METRIC = "response_latency"
PART_METRICS = tuple(name for name in TURN_METRICS if name != TOTAL_METRIC)


def exact_percentiles() -> bool:
    """percentile_cont is PostgreSQL's; the SQLite of `make run` has no such aggregate."""
    return connection.vendor == "postgresql"


class PercentileCont(Aggregate):
    """percentile_cont(p) WITHIN GROUP (ORDER BY expr): the exact, interpolated percentile."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, percentile: float, **extra: Any) -> None:
        if not 0 <= percentile <= 1:
            raise ValueError("percentile must be between 0 and 1")
        # A float formatted by us, never input: safe to place in the SQL.
        super().__init__(expression, percentile=repr(float(percentile)), **extra)


def metric(name: str) -> Cast:
    """A turn's latency figure in seconds (NULL where the turn has none)."""
    return Cast(KT(f"metrics__{name}"), FloatField())


class Epoch(Func):
    """The seconds in an interval (or since 1970 for a timestamp), as a float."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def seconds_between(start: str, end: str) -> Epoch:
    return Epoch(F(end) - F(start))
