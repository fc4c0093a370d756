"""A narrow copy of every turn's latency figures, for the dashboard's percentiles.

The turns table is wide (text, JSON metrics) and the dashboard's percentiles need a few
numbers from hundreds of thousands of its rows, grouped by the session's agent and
providers. This table holds just those, typed, with the session's fields beside them,
indexed by the session's start: a month of turns is a range scan of narrow rows, with
no JSON to parse and no join (docs/benchmarks.md, "Staff console"). A PostgreSQL
trigger writes it in the statement that writes the turn (console/migrations/0001); a
session's company, agent, configuration and creation time never change, so the copy
cannot go stale.
"""

from __future__ import annotations

from django.db import models

from sessions.models import TranscriptTurn


class TurnLatency(models.Model):
    turn = models.OneToOneField(
        TranscriptTurn, primary_key=True, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    session_id = models.BigIntegerField()
    session_created_at = models.DateTimeField()
    company_id = models.BigIntegerField()
    agent_id = models.BigIntegerField()
    llm_provider = models.CharField(max_length=20, blank=True)
    stt_provider = models.CharField(max_length=20, blank=True)
    tts_provider = models.CharField(max_length=20, blank=True)
    response_latency = models.FloatField(null=True)
    end_of_turn_delay = models.FloatField(null=True)
    transcription_delay = models.FloatField(null=True)
    llm_ttft = models.FloatField(null=True)
    tts_ttfb = models.FloatField(null=True)

    class Meta:
        db_table = "console_turn_latency"
        indexes = [
            models.Index(fields=["session_created_at"], name="turn_latency_created"),
            models.Index(fields=["company_id", "session_created_at"], name="turn_latency_company"),
        ]

    def __str__(self) -> str:
        return f"turn {self.turn_id}"
