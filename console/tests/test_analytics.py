"""The dashboard's aggregates on known data: exact percentiles, counts, cost, days in the deployment's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from console import analytics
from console.forms import SessionFilter
from sessions.models import ConversationSession
from tests.factories import VoiceAgentFactory
from voiceagents.models import Company, VoiceAgent

from .conftest import add_turn, make_session

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 2)
NOON = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def one_day(**kwargs: Any) -> SessionFilter:
    return SessionFilter(start=DAY, end=DAY, **kwargs)


def test_outcome_counts_per_day(agent: VoiceAgent) -> None:
    for status in ("stopped", "stopped", "failed", "active", "pending", "recovering"):
        make_session(agent=agent, status=status, created_at=NOON)
    make_session(agent=agent, status="stopped", created_at=NOON + timedelta(days=1))
    resumed = make_session(agent=agent, status="stopped", created_at=NOON + timedelta(days=1))
    lost = make_session(agent=agent, status="failed", created_at=NOON + timedelta(days=1))
    ConversationSession.objects.filter(pk__in=[resumed.pk, lost.pk]).update(recovery_count=1)
    series = analytics.sessions_by_outcome(SessionFilter(start=DAY, end=DAY + timedelta(days=1)))
    assert series == {"stopped": [2, 1], "recovered": [0, 1], "failed": [1, 1], "live": [3, 0]}


def test_dispatch_latency_percentiles_are_exact(agent: VoiceAgent) -> None:
    for seconds in (1.0, 2.0, 3.0, 4.0):
        make_session(agent=agent, created_at=NOON, dispatch_seconds=seconds)
    make_session(agent=agent, status="failed", created_at=NOON, dispatch_seconds=None)  # never joined
    series = analytics.dispatch_latency(one_day())
    assert series["p50"] == [pytest.approx(2.5)]
    # percentile_cont interpolates: rank 0.95 * 3 = 2.85 between 3 and 4
    assert series["p95"] == [pytest.approx(3.85)]


def test_a_day_is_a_day_in_the_deployments_time_zone(settings: Any, agent: VoiceAgent) -> None:
    settings.TIME_ZONE = "Europe/Berlin"  # UTC+1 in November
    make_session(agent=agent, created_at=datetime(2026, 11, 1, 22, 30, tzinfo=UTC))  # 23:30 on the 1st
    make_session(agent=agent, created_at=datetime(2026, 11, 1, 23, 30, tzinfo=UTC))  # 00:30 on the 2nd
    make_session(agent=agent, created_at=datetime(2026, 11, 2, 22, 59, tzinfo=UTC))  # 23:59 on the 2nd
    make_session(agent=agent, created_at=datetime(2026, 11, 2, 23, 0, tzinfo=UTC))  # midnight: the 3rd
    f = SessionFilter(start=date(2026, 11, 1), end=date(2026, 11, 3))
    assert analytics.sessions_by_outcome(f)["stopped"] == [1, 2, 1]
    assert analytics.sessions_by_outcome(one_day())["stopped"] == [2]


def test_turn_latency_per_agent_and_provider(agent: VoiceAgent) -> None:
    other = VoiceAgentFactory(company=agent.company, name="Sales")
    fast = make_session(agent=agent, created_at=NOON, config={"stt_provider": "deepgram"})
    slow = make_session(agent=other, created_at=NOON, config={"stt_provider": "groq", "llm_provider": "groq"})
    for i, v2v in enumerate((1.0, 2.0, 3.0), 1):
        add_turn(fast, i * 2 - 1, "user", "q", end_of_turn_delay=0.1 * i)
        add_turn(fast, i * 2, "assistant", "a", response_latency=v2v, llm_ttft=0.5, tts_ttfb=0.2)
    add_turn(slow, 1, "user", "q", end_of_turn_delay=0.9)
    add_turn(slow, 2, "assistant", "a", response_latency=5.0, llm_ttft=0.3)
    by_agent = {row["agent_name"]: row for row in analytics.turn_latency_by_agent(one_day())}
    assert by_agent["Support"]["turns"] == 6
    assert by_agent["Support"]["response_latency_p50"] == pytest.approx(2.0)
    assert by_agent["Support"]["response_latency_p95"] == pytest.approx(2.9)
    assert by_agent["Support"]["end_of_turn_delay_p50"] == pytest.approx(0.2)
    assert by_agent["Sales"]["response_latency_p50"] == pytest.approx(5.0)
    assert by_agent["Sales"]["tts_ttfb_p50"] is None
    by_provider = {
        (r["kind"], r["provider"], r["metric"]): r for r in analytics.turn_latency_by_provider(one_day())
    }
    assert by_provider[("stt", "deepgram", "end_of_turn_delay")]["p50"] == pytest.approx(0.2)
    assert by_provider[("stt", "groq", "end_of_turn_delay")]["p50"] == pytest.approx(0.9)
    assert by_provider[("llm", "groq", "llm_ttft")]["p95"] == pytest.approx(0.3)
    assert by_provider[("llm", "openai", "llm_ttft")]["p50"] == pytest.approx(0.5)
    assert by_provider[("tts", "openai", "tts_ttfb")]["p50"] == pytest.approx(0.2)
    assert ("tts", "openai", "response_latency") not in by_provider
    # the agent filter narrows every figure
    assert [r["agent_name"] for r in analytics.turn_latency_by_agent(one_day(agent=other))] == ["Sales"]


def test_peak_concurrency_counts_overlaps_and_carries_long_sessions(
    company: Company, agent: VoiceAgent, settings: Any
) -> None:
    settings.MAX_LIVE_SESSIONS = 50
    start = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    # A: 10:00-10:30, B: 10:10-10:20, C: 10:20-11:00 (starts as B ends: not three at once)
    make_session(agent=agent, created_at=start - timedelta(seconds=1), duration_seconds=1800)
    make_session(
        agent=agent, created_at=start + timedelta(minutes=10) - timedelta(seconds=1), duration_seconds=600
    )
    make_session(
        agent=agent, created_at=start + timedelta(minutes=20) - timedelta(seconds=1), duration_seconds=2400
    )
    # Began the day before the range and is still live: it counts on every day.
    make_session(agent=agent, status="active", created_at=start - timedelta(days=1))
    # Another company's session does not count for this company.
    make_session(agent=VoiceAgentFactory(), created_at=start)
    f = SessionFilter(start=DAY, end=DAY + timedelta(days=1), company=company)
    result = analytics.peak_concurrent(f)
    assert result["peak"] == [3, 1]
    assert result["company_limit"] == 4
    assert result["deployment_limit"] == 50


def test_cost_arithmetic(agent: VoiceAgent, settings: Any) -> None:
    settings.CONSOLE_PROVIDER_PRICES = {
        "openai": {
            "llm_prompt_per_million_tokens": 0.15,
            "llm_completion_per_million_tokens": 0.60,
            "tts_per_million_characters": 15.0,
        },
        "deepgram": {"stt_per_minute": 0.0043},
    }
    usage = {
        "llm_prompt_tokens": 1_000_000,
        "llm_completion_tokens": 500_000,
        "stt_audio_seconds": 300,
        "tts_characters": 50_000,
    }
    make_session(agent=agent, created_at=NOON, usage=usage)
    make_session(agent=agent, created_at=NOON, usage=usage)
    make_session(
        agent=agent, created_at=NOON, usage={"stt_audio_seconds": 60}, config={"stt_provider": "local"}
    )
    cost = analytics.usage_and_cost(one_day())
    assert cost["totals"]["llm_prompt_tokens"] == 2_000_000
    assert cost["totals"]["stt_audio_seconds"] == 660
    assert cost["by_provider"]["openai"] == pytest.approx(0.30 + 0.60 + 1.50)
    assert cost["by_provider"]["deepgram"] == pytest.approx(10 * 0.0043)
    assert cost["by_provider"]["local"] == 0.0  # no price: free
    assert cost["total_cost"] == pytest.approx(2.443)


def test_top_failure_reasons_count_and_link(agent: VoiceAgent) -> None:
    for reason in ("agent did not join", "agent did not join", "LLM timeout"):
        make_session(agent=agent, status="failed", failure_reason=reason, created_at=NOON)
    failures = analytics.top_failure_reasons(one_day())
    assert [(r.reason, r.count) for r in failures] == [("agent did not join", 2), ("LLM timeout", 1)]
    assert "failure_reason=agent+did+not+join" in failures[0].url
    assert failures[0].url.startswith(
        "/admin/conversation_sessions/conversationsession/?agent_status__exact=failed"
    )


def test_the_latency_copy_follows_the_turns(agent: VoiceAgent) -> None:
    from console.models import TurnLatency
    from sessions.models import TranscriptTurn

    session = make_session(agent=agent, created_at=NOON, config={"stt_provider": "groq"})
    add_turn(session, 1, "assistant", "a", response_latency=1.5, llm_ttft=0.4)
    add_turn(session, 2, "user", "q", end_of_turn_delay=0.3)
    turn = TranscriptTurn.objects.get(session=session, sequence=2)
    turn.metrics = {"end_of_turn_delay": 0.6, "transcription_delay": "n/a"}
    turn.save()
    copies = {c.turn.sequence: c for c in TurnLatency.objects.select_related("turn")}
    assert copies[1].response_latency == 1.5 and copies[1].llm_ttft == 0.4 and copies[1].tts_ttfb is None
    assert copies[1].session_created_at == NOON and copies[1].agent_id == agent.pk
    assert (copies[1].llm_provider, copies[1].stt_provider, copies[1].tts_provider) == (
        "openai",
        "groq",
        "openai",
    )
    assert copies[2].end_of_turn_delay == 0.6 and copies[2].transcription_delay is None  # not a number
    TranscriptTurn.objects.filter(pk=turn.pk).delete()
    assert TurnLatency.objects.count() == 1
    session.delete()
    assert TurnLatency.objects.count() == 0
