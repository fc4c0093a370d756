"""Transcript storage and the transcript endpoint."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from sessions.models import AgentStatus, ConversationSession
from sessions.services import events, session_agent_finished, session_agent_joined, session_start
from sessions.transcripts import session_usage_record, sessions_heartbeat, transcript_turn_add
from tests.factories import CompanyFactory

URL = "/api/v1/livekit-agents/sessions/{}/transcript"


def make(company: Any, agent: Any) -> ConversationSession:
    session = session_start(company=company, agent_id=agent.pk, session_id="talk").session
    now = time.time()
    transcript_turn_add(
        session_pk=session.pk, role="assistant", text="Hello!", speaker_name="Agent", started_at=now
    )
    transcript_turn_add(
        session_pk=session.pk,
        role="user",
        text="What time is it?",
        speaker_identity=session.visitor_identity,
        speaker_name="Maya",
        started_at=now + 1,
        ended_at=now + 2,
        metrics={"end_of_turn_delay": 0.5},
    )
    transcript_turn_add(
        session_pk=session.pk,
        role="assistant",
        text="Noon.",
        started_at=now + 3,
        metrics={"llm_ttft": 0.2, "tts_ttfb": 0.1, "response_latency": 0.9},
    )
    session_usage_record(session_pk=session.pk, usage={"llm_prompt_tokens": 12, "tts_characters": 11})
    return session


def test_owner_reads_transcript_in_order_with_latency(widget: APIClient, company: Any, agent: Any) -> None:
    make(company, agent)
    response = widget.get(URL.format("talk"))
    assert response.status_code == 200
    body = response.json()
    assert [t["sequence"] for t in body["turns"]] == [1, 2, 3]
    assert [t["role"] for t in body["turns"]] == ["assistant", "user", "assistant"]
    assert body["turns"][1]["speaker_name"] == "Maya"
    assert body["turns"][1]["metrics"] == {"end_of_turn_delay": 0.5}
    assert body["latency"]["response_latency"] == {"median": 0.9, "max": 0.9, "count": 1}
    assert body["usage"]["llm_prompt_tokens"] == 12


def test_other_company_cannot_read_transcript(company: Any, agent: Any) -> None:
    make(company, agent)
    intruder = APIClient()
    intruder.credentials(HTTP_X_WIDGET_KEY=CompanyFactory().widget_key)
    response = intruder.get(URL.format("talk"))
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert APIClient().get(URL.format("talk")).status_code in (401, 403)


def test_staff_read_any_transcript(company: Any, agent: Any) -> None:
    make(company, agent)
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    response = client.get(URL.format("talk"))
    assert response.status_code == 200 and len(response.json()["turns"]) == 3
    assert client.get(URL.format("talk") + "?company_id=abc").status_code == 400
    assert client.get(URL.format("talk") + f"?company_id={company.pk + 1000}").status_code == 404


def test_worker_reports_join_then_end(company: Any, agent: Any) -> None:
    session = session_start(company=company, agent_id=agent.pk, session_id="w").session
    ConversationSession.objects.filter(pk=session.pk).update(agent_status=AgentStatus.STARTING)
    # The webhook came first (identity only), then the worker's own report adds its id.
    assert session_agent_joined(room_name=session.agent_room_name, identity="agent-AJ_1")
    assert not session_agent_joined(
        room_name=session.agent_room_name, identity="agent-AJ_1", worker_id="AW_abc"
    )
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.ACTIVE and session.agent_worker_id == "AW_abc"
    assert session_agent_finished(session_pk=session.pk, error="LLM provider failed: timeout")
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.FAILED
    assert session.failure_reason == "LLM provider failed: timeout"
    assert not session_agent_finished(session_pk=session.pk)  # terminal stays terminal


def test_a_replacements_worker_id_is_recorded_when_the_webhook_wins_the_race(
    company: Any, agent: Any, monkeypatch: Any
) -> None:
    """Recovering: the worker read the session, then the webhook moved it to active before
    the worker wrote. The worker's id is still recorded, so its heartbeats keep the session."""
    session = session_start(company=company, agent_id=agent.pk, session_id="race").session
    ConversationSession.objects.filter(pk=session.pk).update(
        agent_status=AgentStatus.RECOVERING, agent_identity="agent-AJ_lost", recovery_count=1
    )
    read_before_the_webhook = ConversationSession.objects.get(pk=session.pk)
    room = session.agent_room_name
    assert session_agent_joined(room_name=room, identity="agent-AJ_new")  # the webhook
    monkeypatch.setattr(events, "_session_by_room", lambda room_name: read_before_the_webhook)
    assert not session_agent_joined(room_name=room, identity="agent-AJ_new", worker_id="AW_new")
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.ACTIVE
    assert (session.agent_identity, session.agent_worker_id) == ("agent-AJ_new", "AW_new")
    assert sessions_heartbeat(worker_id="AW_new", rooms=[room]) == 1
