"""Prometheus metrics (prometheus_client).

Metric names (all prefixed `agentconnect_`):

| name | type | labels | from |
| --- | --- | --- | --- |
| `agentconnect_sessions` | gauge | status | the database, at scrape time (web `/metrics` only); terminal statuses count all sessions ever ended so |
| `agentconnect_active_agents` | gauge | mode | the database, at scrape time: sessions whose agent is active in its room |
| `agentconnect_metrics_database_up` | gauge | | 1 when the two gauges above could be read |
| `agentconnect_dispatch_latency_seconds` | histogram | mode | session created → agent active (observed where the status becomes active) |
| `agentconnect_session_failures_total` | counter | reason | sessions moved to failed, by reason category (FAILURE_CATEGORIES) |
| `agentconnect_celery_tasks_total` | counter | task, outcome | Celery task outcomes: success, failure, retry |
| `agentconnect_turn_latency_seconds` | histogram | stage | per-turn latencies reported by the agent workers (`observe_turn`) |

Counters and histograms live in the process that observed them: the web
tier, a Celery worker or an agent worker. Each process group serves its own:
web at `/metrics`, a Celery worker on CELERY_METRICS_PORT, an agent worker on
its livekit-agents Prometheus port; sum across targets in queries.

Several processes of one group (gunicorn workers, Celery's prefork children,
agent job processes) share one directory named by the environment variable
PROMETHEUS_MULTIPROC_DIR, prometheus_client's multiprocess mode: set it to a
directory that is empty at the group's start and not shared with another
group. It must be in the real environment (prometheus_client reads it at
import, before `.env` is loaded).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_DIR_ENV):
    # Metric values are files in this directory; a missing one would crash the first observation.
    os.makedirs(os.environ[MULTIPROC_DIR_ENV], exist_ok=True)

DISPATCH_LATENCY = Histogram(
    "agentconnect_dispatch_latency_seconds",
    "Time from a session's creation to its agent being active in the room.",
    ["mode"],
    buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300),
)

SESSION_FAILURES = Counter(
    "agentconnect_session_failures",
    "Sessions that ended failed, by reason category.",
    ["reason"],
)

CELERY_TASKS = Counter(
    "agentconnect_celery_tasks",
    "Celery task outcomes.",
    ["task", "outcome"],
)

TURN_LATENCY = Histogram(
    "agentconnect_turn_latency_seconds",
    "Per-turn latency of the voice pipeline, by stage, as reported by the agent workers.",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20),
)

# Keys of a turn's metrics (TranscriptTurn.metrics, or livekit-agents' own
# ChatMessage.metrics names) → the `stage` label of TURN_LATENCY.
TURN_STAGES: Mapping[str, str] = {
    "end_of_turn_delay": "end_of_turn_delay",
    "transcription_delay": "transcription_delay",
    "llm_ttft": "llm_ttft",
    "llm_node_ttft": "llm_ttft",
    "tts_ttfb": "tts_ttfb",
    "tts_node_ttfb": "tts_ttfb",
    "response_latency": "response_latency",
    "e2e_latency": "response_latency",
}

# A failure reason (free text for humans) → a small, fixed set of label values.
# Matched in order by a phrase of the reasons written in sessions/services.py
# and sessions/tasks.py; anything else (e.g. an agent worker's own error) is "other".
FAILURE_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("broker_unreachable", "task broker is unreachable"),
    ("dispatch_refused", "dispatch refused"),
    ("livekit_unreachable", "could not dispatch an agent after"),
    ("dispatch_timeout", "was not dispatched within"),
    ("no_worker", "no agent worker joined"),
    ("room_closed_before_join", "room closed before"),
    ("agent_connection_lost", "connection to the room was lost"),
    ("agent_left_early", "left the room before it had started"),
)


def failure_category(reason: str) -> str:
    text = reason.lower()
    return next((category for category, phrase in FAILURE_CATEGORIES if phrase in text), "other")


# --- observations ---------------------------------------------------------------------


def observe_turn(metrics: Mapping[str, Any]) -> None:
    """Record one conversation turn's latencies (seconds), as the agent worker measured them.

    Accepts the keys of TranscriptTurn.metrics (end_of_turn_delay,
    transcription_delay, llm_ttft, tts_ttfb, response_latency) and their
    livekit-agents names (llm_node_ttft, tts_node_ttfb, e2e_latency); other
    keys and missing or negative values are ignored. Never raises: a metrics
    problem must not disturb a conversation.
    """
    for key, value in metrics.items():
        stage = TURN_STAGES.get(key)
        if stage is None or value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            TURN_LATENCY.labels(stage=stage).observe(seconds)


def observe_status_change(*, session_pk: int, to: str, fields: Mapping[str, Any]) -> None:
    """Called by session_transition (sessions/services/lifecycle.py) after a session's status moved.

    Never raises: metrics must not break a status change that already happened.
    """
    from sessions.models import AgentStatus

    try:
        if to == AgentStatus.ACTIVE:
            _observe_dispatch_latency(session_pk, fields.get("agent_started_at"))
        elif to == AgentStatus.FAILED:
            SESSION_FAILURES.labels(reason=failure_category(str(fields.get("failure_reason", "")))).inc()
    except Exception:
        logger.exception("could not record metrics for session %s -> %s", session_pk, to)


def _observe_dispatch_latency(session_pk: int, started_at: datetime | None) -> None:
    from sessions.models import ConversationSession

    row = (
        ConversationSession.objects.filter(pk=session_pk)
        .values("created_at", "mode", "agent_started_at")
        .first()
    )
    if row is None:
        return
    started = started_at or row["agent_started_at"]
    if started is None:
        return
    DISPATCH_LATENCY.labels(mode=row["mode"]).observe(max(0.0, (started - row["created_at"]).total_seconds()))


def observe_task(*, task: str, outcome: str) -> None:
    CELERY_TASKS.labels(task=task, outcome=outcome).inc()


# --- exposition -----------------------------------------------------------------------


class SessionsCollector(Collector):
    """Session counts read from the database at scrape time, so every process agrees."""

    def collect(self) -> Iterator[Metric]:
        from django.db.models import Count

        from sessions.models import AgentStatus, ConversationSession

        up = GaugeMetricFamily(
            "agentconnect_metrics_database_up", "1 when the session gauges could be read from the database."
        )
        try:
            by_status = dict(
                ConversationSession.objects.order_by()
                .values_list("agent_status")
                .annotate(n=Count("pk"))
                .values_list("agent_status", "n")
            )
            active = dict(
                ConversationSession.objects.order_by()
                .filter(agent_status=AgentStatus.ACTIVE)
                .values_list("mode")
                .annotate(n=Count("pk"))
                .values_list("mode", "n")
            )
        except Exception as exc:
            # The scrape still answers (with the process metrics); this gauge says why numbers are missing.
            logger.warning("metrics: could not read sessions from the database: %r", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        from voiceagents.catalog import AgentMode

        sessions = GaugeMetricFamily(
            "agentconnect_sessions",
            "Sessions in each agent status (terminal statuses: all sessions that ended so).",
            labels=["status"],
        )
        for status in AgentStatus.values:
            sessions.add_metric([status], by_status.get(status, 0))
        yield sessions

        agents = GaugeMetricFamily(
            "agentconnect_active_agents", "Agents active in a room now, by mode.", labels=["mode"]
        )
        for mode in AgentMode.values:
            agents.add_metric([mode], active.get(mode, 0))
        yield agents


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def scrape_registry(*, include_database: bool) -> CollectorRegistry:
    """A registry for one scrape: this process group's metrics, plus the database gauges when asked."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_enabled():
        MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    if include_database:
        registry.register(SessionsCollector())
    return registry


def render(*, include_database: bool = True) -> bytes:
    return generate_latest(scrape_registry(include_database=include_database))


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics in Prometheus text format; with METRICS_TOKEN set, only for `Bearer <token>`."""
    token: str = settings.METRICS_TOKEN
    if token:
        from agentconnect.errors import error_body

        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response: HttpResponse = JsonResponse(
                error_body("not_authenticated", "A valid metrics bearer token is required."), status=401
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    response = HttpResponse(render(include_database=True), content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response
