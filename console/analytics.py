"""The dashboard's aggregates, computed in PostgreSQL: counts, exact percentiles, sums.

Days are days in the deployment's time zone (settings.TIME_ZONE). Each function takes a
SessionFilter and returns plain data for the page and its charts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Count, ExpressionWrapper, F, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate
from django.urls import reverse
from django.utils.http import urlencode

from sessions.models import AgentStatus, ConversationSession
from voiceagents.models import VoiceAgent

from .forms import SessionFilter, deployment_tz
from .models import TurnLatency
from .stats import TOTAL_METRIC, TURN_METRICS, PercentileCont, seconds_between

# Outcome of a session: how it ended, or "live" while it has not. "recovered": stopped
# after its agent was replaced mid-call at least once (crash resume) and the conversation went on.
OUTCOMES = ("stopped", "recovered", "failed", "live")
TOP_FAILURES = 10
# Which provider serves which figure, for the per-provider latency.
METRIC_PROVIDER = {
    "response_latency": "llm_provider",
    "end_of_turn_delay": "stt_provider",
    "transcription_delay": "stt_provider",
    "llm_ttft": "llm_provider",
    "tts_ttfb": "tts_provider",
}
USAGE_KEYS = ("llm_prompt_tokens", "llm_completion_tokens", "stt_audio_seconds", "tts_characters")


def _outcome(status: str, recovered: bool) -> str:
    if status == AgentStatus.STOPPED:
        return "recovered" if recovered else "stopped"
    return status if status == AgentStatus.FAILED else "live"


def sessions_by_outcome(f: SessionFilter) -> dict[str, list[int]]:
    """Per day of the range, how many sessions started that day ended each way."""
    rows = (
        f.sessions()
        .annotate(
            day=TruncDate("created_at", tzinfo=deployment_tz()),
            recovered=ExpressionWrapper(Q(recovery_count__gt=0), output_field=BooleanField()),
        )
        .values("day", "agent_status", "recovered")
        .annotate(n=Count("pk"))
    )
    index = {day: i for i, day in enumerate(f.days)}
    series = {outcome: [0] * len(index) for outcome in OUTCOMES}
    for row in rows:
        series[_outcome(row["agent_status"], row["recovered"])][index[row["day"]]] += row["n"]
    return series


@dataclass
class FailureReason:
    reason: str
    count: int
    url: str


def top_failure_reasons(f: SessionFilter, limit: int = TOP_FAILURES) -> list[FailureReason]:
    rows = (
        f.sessions()
        .filter(agent_status=AgentStatus.FAILED)
        .values("failure_reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "failure_reason")[:limit]
    )
    base = reverse("admin:conversation_sessions_conversationsession_changelist")
    scope = {"created_at__gte": f.since.isoformat(), "created_at__lt": f.until.isoformat()}
    if f.company:
        scope["company__id__exact"] = str(f.company.pk)
    if f.agent:
        scope["agent__id__exact"] = str(f.agent.pk)
    return [
        FailureReason(
            reason=row["failure_reason"],
            count=row["n"],
            url=f"{base}?{urlencode({'agent_status__exact': 'failed', 'failure_reason': row['failure_reason'], **scope})}",
        )
        for row in rows
    ]


def dispatch_latency(f: SessionFilter) -> dict[str, list[float | None]]:
    """Per day, p50 and p95 of the seconds from the start request to the agent in the room."""
    seconds = seconds_between("created_at", "agent_started_at")
    rows = (
        f.sessions()
        .filter(agent_started_at__isnull=False)
        .annotate(day=TruncDate("created_at", tzinfo=deployment_tz()))
        .values("day")
        .annotate(p50=PercentileCont(seconds, 0.5), p95=PercentileCont(seconds, 0.95), n=Count("pk"))
    )
    index = {day: i for i, day in enumerate(f.days)}
    series: dict[str, list[float | None]] = {"p50": [None] * len(index), "p95": [None] * len(index)}
    for row in rows:
        series["p50"][index[row["day"]]] = row["p50"]
        series["p95"][index[row["day"]]] = row["p95"]
    return series


def _turns(f: SessionFilter) -> QuerySet[TurnLatency]:
    """The turn latencies of the filter's sessions (the narrow copy, console.models)."""
    rows = TurnLatency.objects.order_by().filter(
        session_created_at__gte=f.since, session_created_at__lt=f.until
    )
    if f.company is not None:
        rows = rows.filter(company_id=f.company.pk)
    if f.agent is not None:
        rows = rows.filter(agent_id=f.agent.pk)
    if f.provider:
        rows = rows.filter(
            Q(llm_provider=f.provider) | Q(stt_provider=f.provider) | Q(tts_provider=f.provider)
        )
    return rows


def _percentiles(names: list[str] | tuple[str, ...]) -> dict[str, PercentileCont]:
    figures = {}
    for name in names:
        # Only the turns that have the figure go into its sort (a user turn has no LLM time).
        present = Q(**{f"{name}__isnull": False})
        figures[f"{name}_p50"] = PercentileCont(name, 0.5, filter=present)
        figures[f"{name}_p95"] = PercentileCont(name, 0.95, filter=present)
    return figures


def turn_latency_by_agent(f: SessionFilter) -> list[dict[str, Any]]:
    """Per agent: p50 and p95 of every turn latency figure, in seconds, with the turn count."""
    rows = _turns(f).values("agent_id").annotate(turns=Count("pk"), **_percentiles(tuple(TURN_METRICS)))
    names = dict(
        VoiceAgent.objects.filter(pk__in=[row["agent_id"] for row in rows]).values_list("pk", "name")
    )
    return sorted(
        (
            {
                **row,
                "agent_name": names.get(row["agent_id"], f"agent {row['agent_id']}"),
                "figures": [row[f"{name}_{p}"] for name in TURN_METRICS for p in ("p50", "p95")],
            }
            for row in rows
        ),
        key=lambda row: (row["agent_name"], row["agent_id"]),
    )


def turn_latency_by_provider(f: SessionFilter) -> list[dict[str, Any]]:
    """Per provider kind and provider: p50 and p95 of the figures that provider serves."""
    results = []
    for kind in ("stt_provider", "llm_provider", "tts_provider"):
        names = [name for name, k in METRIC_PROVIDER.items() if k == kind]
        rows = _turns(f).values(provider=F(kind)).annotate(**_percentiles(names)).order_by("provider")
        for row in rows:
            for name in names:
                if row[f"{name}_p50"] is not None:
                    results.append(
                        {
                            "kind": kind.removesuffix("_provider"),
                            "provider": row["provider"] or "?",
                            "metric": name,
                            "label": TURN_METRICS[name],
                            "p50": row[f"{name}_p50"],
                            "p95": row[f"{name}_p95"],
                        }
                    )
    return results


_PEAK_SQL = """
WITH scoped AS ({scoped}),
events AS (
    SELECT agent_started_at AS at, 1 AS delta FROM scoped
    UNION ALL
    SELECT agent_stopped_at, -1 FROM scoped WHERE agent_stopped_at IS NOT NULL
    UNION ALL
    -- Each day's first instant: the sessions carried into a day with no start or end in it.
    SELECT unnest(%s::timestamptz[]), 0
),
running AS (
    -- Ends before starts at the same instant: a hand-over is not two sessions at once.
    SELECT at, sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS live FROM events
)
SELECT (at AT TIME ZONE %s)::date AS day, max(live)
FROM running WHERE at >= %s AND at < %s GROUP BY 1
"""


def peak_concurrent(f: SessionFilter) -> dict[str, Any]:
    """Per day, the most sessions with an agent in the room at once, and the limits to hold it against.

    Counts every matching session that overlaps the range, including ones that began
    before it; a session still live is open-ended.
    """
    scoped = f.scope(ConversationSession.objects.order_by()).filter(
        Q(agent_stopped_at__isnull=True) | Q(agent_stopped_at__gt=f.since),
        agent_started_at__isnull=False,
        agent_started_at__lt=f.until,
    )
    # The ORM writes the scoped query (filters, joins, parameters); the window function
    # over its start and end events has no ORM form.
    sql, params = scoped.values("agent_started_at", "agent_stopped_at").query.sql_with_params()
    day_starts = [datetime.combine(day, time.min, tzinfo=deployment_tz()) for day in f.days]
    with connection.cursor() as cursor:
        cursor.execute(
            _PEAK_SQL.format(scoped=sql), [*params, day_starts, settings.TIME_ZONE, f.since, f.until]
        )
        by_day: dict[date, int] = {row[0]: int(row[1]) for row in cursor.fetchall()}
    return {
        "peak": [by_day.get(day, 0) for day in f.days],
        "company_limit": f.company.max_concurrent_sessions if f.company else None,
        "deployment_limit": settings.MAX_LIVE_SESSIONS or None,
    }


def usage_and_cost(f: SessionFilter) -> dict[str, Any]:
    """Usage totals by provider and their estimated cost from CONSOLE_PROVIDER_PRICES."""
    sums = {key: Sum(Cast(KT(f"usage__{key}"), FloatField())) for key in USAGE_KEYS}
    rows = (
        f.sessions()
        .values(
            llm=KT("config__llm_provider"), stt=KT("config__stt_provider"), tts=KT("config__tts_provider")
        )
        .annotate(sessions=Count("pk"), **sums)
    )
    usage: dict[tuple[str, str], float] = {}
    for row in rows:
        for key in USAGE_KEYS:
            provider = row[key.split("_", 1)[0]] or "?"
            usage[(provider, key)] = usage.get((provider, key), 0.0) + (row[key] or 0.0)
    return cost_table(usage)


def cost_table(usage: dict[tuple[str, str], float]) -> dict[str, Any]:
    """(provider, usage key) -> amount, priced. Separate from the query so the arithmetic is testable."""
    prices = settings.CONSOLE_PROVIDER_PRICES
    rates = {
        "llm_prompt_tokens": ("llm_prompt_per_million_tokens", 1e-6),
        "llm_completion_tokens": ("llm_completion_per_million_tokens", 1e-6),
        "stt_audio_seconds": ("stt_per_minute", 1 / 60),
        "tts_characters": ("tts_per_million_characters", 1e-6),
    }
    lines: list[dict[str, Any]] = []
    for (provider, key), amount in sorted(usage.items()):
        if not amount:
            continue
        price_name, scale = rates[key]
        price = prices.get(provider, {}).get(price_name)
        cost = amount * scale * price if price is not None else 0.0
        lines.append({"provider": provider, "usage": key, "amount": amount, "price": price, "cost": cost})
    by_provider: dict[str, float] = {}
    for line in lines:
        by_provider[line["provider"]] = by_provider.get(line["provider"], 0.0) + line["cost"]
    totals = {key: sum(line["amount"] for line in lines if line["usage"] == key) for key in USAGE_KEYS}
    return {
        "lines": lines,
        "by_provider": by_provider,
        "totals": totals,
        "total_cost": sum(by_provider.values()),
    }


def dashboard(f: SessionFilter) -> dict[str, Any]:
    """Everything the dashboard shows, in one dict (the page embeds it as JSON for its charts)."""
    return {
        "days": [day.isoformat() for day in f.days],
        "outcomes": sessions_by_outcome(f),
        "failures": [vars(r) for r in top_failure_reasons(f)],
        "dispatch": dispatch_latency(f),
        "latency_by_agent": turn_latency_by_agent(f),
        "latency_by_provider": turn_latency_by_provider(f),
        "concurrency": peak_concurrent(f),
        "cost": usage_and_cost(f),
        "metric_labels": TURN_METRICS,
        "total_metric": TOTAL_METRIC,
    }
