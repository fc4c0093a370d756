"""The sessions list's columns and the read-only, readable session page."""

from __future__ import annotations

import pytest
from django.test import Client

from voiceagents.models import VoiceAgent

from .conftest import add_turn, make_session

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/conversation_sessions/conversationsession/"


def test_list_shows_started_duration_turns_and_median_latency(
    staff_client: Client, agent: VoiceAgent
) -> None:
    session = make_session(agent=agent, duration_seconds=125)
    add_turn(session, 1, "assistant", "Hello", tts_ttfb=0.2)
    add_turn(session, 2, "user", "Hi", end_of_turn_delay=0.5)
    add_turn(session, 3, "assistant", "Sure", response_latency=1.0)
    add_turn(session, 4, "assistant", "Yes", response_latency=2.0)
    response = staff_client.get(LIST_URL)
    assert response.status_code == 200
    html = response.content.decode()
    for column in ("started", "duration", "turns", "median_turn_latency"):
        assert f"column-{column}" in html
    row = html[html.index(session.session_id) :]
    row = row[: row.index("</tr>")]
    assert '<td class="field-turns">4</td>' in row
    assert '<td class="field-median_turn_latency">1.500</td>' in row
    assert '<td class="field-duration">2:05</td>' in row
    assert '<nav class="toplinks">' in html  # the date hierarchy
    # read-only pages, but the actions that call the services stay
    assert 'value="stop_agent"' in html and 'value="redispatch_agent"' in html


def test_session_page_is_readable_and_read_only(staff_client: Client, agent: VoiceAgent) -> None:
    session = make_session(
        agent=agent,
        status="failed",
        failure_reason="LLM provider unreachable after 3 retries",
        usage={"llm_prompt_tokens": 120, "stt_audio_seconds": 4.5},
    )
    add_turn(session, 1, "user", "Where is my parcel?", end_of_turn_delay=0.4, transcription_delay=0.1)
    add_turn(session, 2, "assistant", "Let me check.", llm_ttft=0.9, tts_ttfb=0.3, response_latency=1.6)
    response = staff_client.get(f"{LIST_URL}{session.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="console-failure" role="alert"' in html
    assert "LLM provider unreachable after 3 retries" in html
    # configuration and usage as tables, not JSON
    assert '<th scope="row">llm provider</th><td>openai</td>' in html
    assert '<th scope="row">llm prompt tokens</th><td>120</td>' in html
    # the timeline: who, text, and the slowest part of each turn marked
    assert 'data-turns="2"' in html
    assert "Where is my parcel?" in html and "Maya" in html
    assert 'latency-slowest" title="slowest part">LLM time to first token 0.900' in html
    assert 'latency-slowest" title="slowest part">end-of-turn delay 0.400' in html
    assert "1.600" in html
    # nothing to save
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert staff_client.post(f"{LIST_URL}{session.pk}/change/", {}).status_code == 403


def test_tool_calls_messages_and_the_handoff_are_on_the_session_page(
    staff_client: Client, agent: VoiceAgent
) -> None:
    from sessions.handoff import session_handoff_missed, session_handoff_request
    from sessions.tools import tool_call_record, visitor_message_add

    session = make_session(agent=agent, status="active")
    add_turn(session, 1, "user", "Where is order A-1?")
    tool_call_record(
        session_pk=session.pk,
        name="order_status",
        arguments={"order": "A-1"},
        result={"status": "shipped"},
        duration_ms=42,
    )
    tool_call_record(
        session_pk=session.pk,
        name="stock_level",
        arguments={},
        error="The service answered with an error (HTTP 500).",
    )
    visitor_message_add(
        session_pk=session.pk, name="Maya", contact="maya@example.com", message="Call me back"
    )
    assert session_handoff_request(session_pk=session.pk, reason="Wants a person.")
    assert session_handoff_missed(session_pk=session.pk)
    html = staff_client.get(f"{LIST_URL}{session.pk}/change/").content.decode()
    assert "tool order_status" in html and "shipped" in html and "duration 0.042" in html
    assert "tool stock_level" in html and "error: The service answered with an error (HTTP 500)." in html
    assert "maya@example.com" in html and "Call me back" in html
    assert "Wants a person." in html and "nobody joined in time" in html
