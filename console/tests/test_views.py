"""The console's pages: staff only, bad filters answered with a form error, the live rows, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from sessions.models import AgentStatus, ConversationSession
from tests.factories import VoiceAgentFactory
from voiceagents.models import Company, VoiceAgent

from .conftest import add_turn, make_session

pytestmark = pytest.mark.django_db

PAGES = [
    "/admin/console/dashboard/",
    "/admin/console/live/",
    "/admin/console/live.json",
    "/admin/console/export",
]
API_EXPORT = "/api/v1/console/export"


@pytest.mark.parametrize("url", PAGES)
def test_pages_send_anyone_but_staff_to_the_login(client: Client, plain_client: Client, url: str) -> None:
    for who in (client, plain_client):
        response = who.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_actions_refuse_non_staff(plain_client: Client, agent: VoiceAgent) -> None:
    session = make_session(agent=agent, status="active")
    response = plain_client.post(f"/admin/console/live/{session.pk}/stop")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    session.refresh_from_db()
    assert session.agent_status == "active"


def test_staff_export_api_refuses_a_widget_key_and_non_staff(company: Company, plain_client: Client) -> None:
    widget = APIClient()
    widget.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    for who in (widget, plain_client):
        response = who.get(API_EXPORT)
        assert response.status_code in (401, 403)
        assert response.json()["success"] is False


def test_dashboard_renders_every_section(staff_client: Client, agent: VoiceAgent) -> None:
    session = make_session(agent=agent, usage={"llm_prompt_tokens": 1000})
    make_session(agent=agent, status="failed", failure_reason="agent never joined")
    add_turn(session, 1, "assistant", "hi", response_latency=1.2, llm_ttft=0.4, tts_ttfb=0.2)
    response = staff_client.get("/admin/console/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    for chart in ("outcomes", "dispatch", "latency-agent", "latency-provider", "concurrency", "cost"):
        assert f'id="chart-{chart}"' in html
    assert "agent never joined" in html
    assert "/static/agentconnect/console.js" in html
    data = response.context["data"]
    assert sum(data["outcomes"]["stopped"]) == 1 and sum(data["outcomes"]["failed"]) == 1
    assert len(data["days"]) == 7  # the default range: the last 7 days


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-11-10", "end": "2026-11-01"}, "The start date is after the end date."),
        ({"start": "yesterday"}, "Enter a valid date."),
        ({"end": "2026-13-45"}, "Enter a valid date."),
        ({"company": "999999"}, "Select a valid choice."),
        ({"company": "abc"}, "Select a valid choice."),
        ({"provider": "skynet"}, "Select a valid choice."),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "Choose at most 366 days."),
    ],
)
def test_bad_filters_get_a_form_error(staff_client: Client, query: dict[str, str], message: str) -> None:
    for url in ("/admin/console/dashboard/", "/admin/console/export"):
        response = staff_client.get(url, query)
        assert response.status_code == 400
        assert message in response.content.decode()


def test_an_agent_of_another_company_is_a_form_error(staff_client: Client, company: Company) -> None:
    other = VoiceAgentFactory()
    response = staff_client.get("/admin/console/dashboard/", {"company": company.pk, "agent": other.pk})
    assert response.status_code == 400
    assert "This agent belongs to another company." in response.content.decode()


def test_api_export_bad_filter_is_a_400_in_the_error_shape(staff_client: Client) -> None:
    response = staff_client.get(API_EXPORT, {"start": "2026-11-10", "end": "2026-11-01", "as": "xml"})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "invalid_input"
    assert "as" in body["error"]["details"] and "__all__" in body["error"]["details"]


def test_live_rows_mark_stuck_sessions_and_offer_actions(
    staff_client: Client, agent: VoiceAgent, settings: Any
) -> None:
    settings.CONSOLE_STUCK_AFTER_SECONDS = 60
    active = make_session(agent=agent, status="active", worker="AW_1")
    add_turn(active, 1, "assistant", "hello", response_latency=0.8)
    add_turn(active, 2, "assistant", "again", response_latency=1.1)
    stuck = make_session(agent=agent, status="starting", dispatch_seconds=None)
    ConversationSession.objects.filter(pk=stuck.pk).update(
        status_changed_at=timezone.now() - timedelta(minutes=5)
    )
    make_session(agent=agent, status="stopped")
    rows = {row["session_id"]: row for row in staff_client.get("/admin/console/live.json").json()["rows"]}
    assert set(rows) == {active.session_id, stuck.session_id}
    assert rows[active.session_id]["turns"] == 2
    assert rows[active.session_id]["last_latency"] == pytest.approx(1.1)
    assert rows[active.session_id]["worker"] == "AW_1"
    assert rows[active.session_id]["stuck"] is False
    assert [a["name"] for a in rows[active.session_id]["actions"]] == ["stop"]
    assert rows[stuck.session_id]["stuck"] is True
    assert rows[stuck.session_id]["status_seconds"] >= 300
    assert [a["name"] for a in rows[stuck.session_id]["actions"]] == ["stop", "redispatch"]


def test_live_stop_action_stops_the_session(
    staff_client: Client, agent: VoiceAgent, django_capture_on_commit_callbacks: Any
) -> None:
    session = make_session(agent=agent, status="active")
    response = staff_client.post(f"/admin/console/live/{session.pk}/stop")
    assert response.status_code == 200 and response.json()["success"] is True
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.STOPPING
    refused = staff_client.post(f"/admin/console/live/{session.pk}/redispatch")
    assert refused.status_code == 409
    assert "stopping" in refused.json()["message"]
    assert staff_client.get(f"/admin/console/live/{session.pk}/stop").status_code == 405


def _seed_export(agent: VoiceAgent) -> ConversationSession:
    session = make_session(agent=agent)
    add_turn(session, 1, "user", 'Hello, "agent"', end_of_turn_delay=0.3)
    add_turn(session, 2, "assistant", "Hi, how can I help?\nAsk away.", response_latency=1.25, llm_ttft=0.5)
    make_session(agent=agent, created_at=timezone.now() - timedelta(days=30))  # outside the range
    return session


def test_export_csv_and_json_from_the_admin(staff_client: Client, agent: VoiceAgent) -> None:
    session = _seed_export(agent)
    response = staff_client.get("/admin/console/export", {"as": "csv"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["session_id"], r["sequence"], r["role"]) for r in rows] == [
        (session.session_id, "1", "user"),
        (session.session_id, "2", "assistant"),
    ]
    assert rows[0]["text"] == 'Hello, "agent"' and rows[0]["end_of_turn_delay"] == "0.3"
    assert rows[1]["text"] == "Hi, how can I help?\nAsk away." and rows[1]["response_latency"] == "1.25"
    response = staff_client.get("/admin/console/export", {"as": "json"})
    records = json.loads(b"".join(response.streaming_content))
    assert [r["sequence"] for r in records] == [1, 2]
    assert (
        records[1]["llm_ttft"] == 0.5 and records[1]["company"] == "Acme" and records[1]["agent"] == "Support"
    )


def test_export_from_the_staff_api(staff_client: Client, agent: VoiceAgent) -> None:
    _seed_export(agent)
    response = staff_client.get(API_EXPORT, {"as": "json", "agent": agent.pk})
    assert response.status_code == 200
    assert len(json.loads(b"".join(response.streaming_content))) == 2
    empty = staff_client.get(API_EXPORT, {"as": "json", "provider": "groq"})
    assert json.loads(b"".join(empty.streaming_content)) == []


def test_live_rows_show_a_visitor_waiting_for_a_person_with_join(
    staff_client: Client, agent: VoiceAgent
) -> None:
    from sessions.handoff import session_handoff_joined, session_handoff_request

    waiting = make_session(agent=agent, status="active")
    joined = make_session(agent=agent, status="active")
    plain = make_session(agent=agent, status="active")
    assert session_handoff_request(session_pk=waiting.pk, reason="Wants a person.")
    assert session_handoff_request(session_pk=joined.pk, reason="Billing.")
    assert session_handoff_joined(session_pk=joined.pk, identity="staff-999-abc")
    rows = {row["session_id"]: row for row in staff_client.get("/admin/console/live.json").json()["rows"]}
    cell = rows[waiting.session_id]["handoff"]
    assert cell["waiting"] is True and cell["reason"] == "Wants a person." and cell["wait_seconds"] >= 0
    assert cell["join_url"] == f"/staff/handoffs/{waiting.pk}/"
    assert rows[joined.session_id]["handoff"]["status"] == "joined"
    assert rows[joined.session_id]["handoff"]["waiting"] is False
    assert rows[plain.session_id]["handoff"] is None
