"""The widget API's contract: shapes, validation, errors, isolation."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from livekit import api
from rest_framework.test import APIClient

from agentconnect.errors import TooManySessions
from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_redispatch, session_transition
from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.catalog import AgentMode

START = "/api/v1/livekit-agents/start-voice-session"
STOP = "/api/v1/livekit-agents/stop-voice-session"
STATUS = "/api/v1/livekit-agents/agent-status/{}"
ACTIVE = "/api/v1/livekit-agents/active-agents"
TOKEN = "/api/v1/livekit-agents/widget-voice-token"


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body


def claims(token: str) -> Any:
    return api.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).verify(token)


# --- start-voice-session -------------------------------------------------------------------


def test_start_creates_pending_session_and_queues_dispatch(
    widget: APIClient, start_body: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = widget.post(START, start_body, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "success",
        "session_id",
        "room_name",
        "livekit_url",
        "user_token",
        "status",
        "message",
    }
    assert body["success"] is True
    assert body["session_id"] == "visitor-1"
    assert body["status"] == "pending"
    assert body["livekit_url"] == settings.LIVEKIT_PUBLIC_URL
    assert "agent_token" not in body
    session = ConversationSession.objects.get(session_id="visitor-1")
    assert session.agent_room_name == body["room_name"]
    assert session.agent_status == AgentStatus.PENDING
    assert len(callbacks) == 1  # the dispatch task, enqueued only after commit
    token = claims(body["user_token"])
    assert token.video is not None and token.video.room == body["room_name"]
    assert token.identity == session.visitor_identity


def test_start_resolves_configuration_request_then_profile_then_defaults(
    widget: APIClient, start_body: dict[str, Any], agent: Any
) -> None:
    agent.llm_provider = "groq"
    agent.llm_model = "llama-3.1-8b-instant"
    agent.save()
    body = {**start_body, "voice_id": "nova", "greeting_message": "Hi there"}
    assert widget.post(START, body, format="json").status_code == 201
    config = ConversationSession.objects.get(session_id="visitor-1").config
    assert config["tts_voice"] == "nova"  # request
    assert config["greeting_message"] == "Hi there"  # request
    assert config["llm_provider"] == "groq"  # profile
    assert config["llm_model"] == "llama-3.1-8b-instant"  # profile
    assert config["stt_provider"] == settings.AGENT_STT_PROVIDER  # environment default
    assert config["system_prompt"] == "You are a test agent."  # profile
    assert config["vad_enabled"] is settings.AGENT_VAD_ENABLED
    assert config["session_id"] == "visitor-1"
    assert config["room_name"].startswith("ac-")


def test_start_without_session_id_generates_one(widget: APIClient, start_body: dict[str, Any]) -> None:
    del start_body["session_id"]
    response = widget.post(START, start_body, format="json")
    assert response.status_code == 201
    assert len(response.json()["session_id"]) == 32


def test_start_same_live_session_returns_it_with_fresh_token(
    widget: APIClient, start_body: dict[str, Any]
) -> None:
    first = widget.post(START, start_body, format="json").json()
    second = widget.post(START, start_body, format="json")
    assert second.status_code == 200
    assert second.json()["room_name"] == first["room_name"]
    assert ConversationSession.objects.count() == 1
    assert claims(second.json()["user_token"]).identity == claims(first["user_token"]).identity


def test_start_ended_session_id_is_a_conflict(widget: APIClient, start_body: dict[str, Any]) -> None:
    widget.post(START, start_body, format="json")
    session = ConversationSession.objects.get()
    assert session_transition(session_pk=session.pk, to=AgentStatus.FAILED, failure_reason="x")
    assert_error(widget.post(START, start_body, format="json"), 409, "conflict")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"session_id": "has space"}, "session_id"),
        ({"session_id": "x" * 65}, "session_id"),
        ({"session_id": "../etc"}, "session_id"),
        ({"session_id": ""}, "session_id"),
        ({"agent_id": "abc"}, "agent_id"),
        ({"agent_id": None}, "agent_id"),
        ({"agent_id": -1}, "agent_id"),
        ({"company_id": 10**30}, "company_id"),
        ({"llm_provider": "anthropic"}, "llm_provider"),
        ({"stt_provider": "whisper.cpp"}, "stt_provider"),
        ({"tts_provider": "elevenlabs"}, "tts_provider"),
        ({"voice_id": "darth"}, "voice_id"),
        ({"llm_model": "gpt 4; rm -rf"}, "llm_model"),
        ({"system_prompt": "x" * 4001}, "system_prompt"),
        ({"greeting_message": "x" * 501}, "greeting_message"),
        ({"participant_name": "x" * 65}, "participant_name"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_start_rejects_bad_input(
    widget: APIClient, start_body: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    body = assert_error(widget.post(START, {**start_body, **change}, format="json"), 400, "invalid_input")
    assert field in body["error"]["details"]
    assert ConversationSession.objects.count() == 0


def test_start_requires_agent_and_company(widget: APIClient) -> None:
    body = assert_error(widget.post(START, {}, format="json"), 400, "invalid_input")
    assert {"agent_id", "company_id"} <= set(body["error"]["details"])


def test_malformed_json_is_a_clear_400(widget: APIClient) -> None:
    response = widget.post(START, data='{"agent_id": 1,', content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_json_that_is_not_an_object_is_a_400(widget: APIClient) -> None:
    assert_error(widget.post(START, data="[1, 2]", content_type="application/json"), 400, "invalid_input")


def test_form_encoded_body_is_unsupported(widget: APIClient, start_body: dict[str, Any]) -> None:
    assert_error(widget.post(START, start_body), 415, "unsupported_media_type")


def test_wrong_method_is_a_405_in_the_error_shape(widget: APIClient) -> None:
    assert_error(widget.get(START), 405, "method_not_allowed")
    assert_error(widget.put(STOP, {}, format="json"), 405, "method_not_allowed")


def test_unknown_api_url_is_a_404_in_the_error_shape(widget: APIClient) -> None:
    assert_error(widget.get("/api/v1/livekit-agents/nope"), 404, "not_found")
    assert_error(widget.get("/api/v2/whatever"), 404, "not_found")


def test_inactive_or_foreign_agent_is_not_found(
    widget: APIClient, start_body: dict[str, Any], agent: Any
) -> None:
    foreign = VoiceAgentFactory()
    assert_error(widget.post(START, {**start_body, "agent_id": foreign.pk}, format="json"), 404, "not_found")
    agent.is_active = False
    agent.save()
    assert_error(widget.post(START, start_body, format="json"), 404, "not_found")


def test_company_id_must_match_the_widget_key(widget: APIClient, start_body: dict[str, Any]) -> None:
    other = CompanyFactory()
    assert_error(widget.post(START, {**start_body, "company_id": other.pk}, format="json"), 404, "not_found")


# --- authentication, origins, CORS ---------------------------------------------------------


def test_missing_widget_key_is_401(start_body: dict[str, Any]) -> None:
    response = APIClient().post(START, start_body, format="json")
    assert_error(response, 401, "not_authenticated")


def test_wrong_widget_key_is_401(start_body: dict[str, Any]) -> None:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY="wk_not-a-key")
    assert_error(client.post(START, start_body, format="json"), 401, "authentication_failed")


def test_inactive_company_key_is_401(widget: APIClient, start_body: dict[str, Any], company: Any) -> None:
    company.is_active = False
    company.save()
    assert_error(widget.post(START, start_body, format="json"), 401, "authentication_failed")


def test_disallowed_origin_is_refused(widget: APIClient, start_body: dict[str, Any]) -> None:
    response = widget.post(START, start_body, format="json", HTTP_ORIGIN="https://evil.example.net")
    body = assert_error(response, 403, "permission_denied")
    assert "evil.example.net" in body["error"]["message"]
    assert "Access-Control-Allow-Origin" not in response


def test_allowed_origin_gets_cors_headers(widget: APIClient, start_body: dict[str, Any]) -> None:
    response = widget.post(START, start_body, format="json", HTTP_ORIGIN="https://shop.example.com")
    assert response.status_code == 201
    assert response["Access-Control-Allow-Origin"] == "https://shop.example.com"


def test_cors_preflight_for_allowed_origin(company: Any) -> None:
    response = APIClient().options(
        START,
        HTTP_ORIGIN="https://shop.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type,x-widget-key",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert "x-widget-key" in response["Access-Control-Allow-Headers"]


# --- isolation between companies -----------------------------------------------------------


def test_another_companys_key_sees_nothing(widget: APIClient, start_body: dict[str, Any]) -> None:
    widget.post(START, start_body, format="json")
    intruder = APIClient()
    intruder.credentials(HTTP_X_WIDGET_KEY=CompanyFactory().widget_key)
    assert_error(intruder.get(STATUS.format("visitor-1")), 404, "not_found")
    assert_error(intruder.post(STOP, {"session_id": "visitor-1"}, format="json"), 404, "not_found")
    assert_error(intruder.post(TOKEN, {"session_id": "visitor-1"}, format="json"), 404, "not_found")
    assert ConversationSession.objects.get().agent_status == AgentStatus.PENDING


def test_same_session_id_in_two_companies_are_two_sessions(
    widget: APIClient, start_body: dict[str, Any]
) -> None:
    other_agent = VoiceAgentFactory()
    other = APIClient()
    other.credentials(HTTP_X_WIDGET_KEY=other_agent.company.widget_key)
    a = widget.post(START, start_body, format="json").json()
    b = other.post(
        START,
        {"session_id": "visitor-1", "agent_id": other_agent.pk, "company_id": other_agent.company_id},
        format="json",
    ).json()
    assert a["room_name"] != b["room_name"]


# --- stop, status, widget token ------------------------------------------------------------


def test_stop_moves_to_stopping_and_queues_stop(
    widget: APIClient, start_body: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    widget.post(START, start_body, format="json")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = widget.post(STOP, {"session_id": "visitor-1"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "stopping"
    assert len(callbacks) == 1


def test_stop_of_ended_session_is_a_noop_success(widget: APIClient, start_body: dict[str, Any]) -> None:
    widget.post(START, start_body, format="json")
    session = ConversationSession.objects.get()
    session_transition(session_pk=session.pk, to=AgentStatus.STOPPING)
    session_transition(session_pk=session.pk, to=AgentStatus.STOPPED)
    for _ in range(2):
        response = widget.post(STOP, {"session_id": "visitor-1"}, format="json")
        assert response.status_code == 200
        assert response.json()["status"] == "stopped"


def test_stop_unknown_session_is_404(widget: APIClient) -> None:
    assert_error(widget.post(STOP, {"session_id": "nobody"}, format="json"), 404, "not_found")


def test_agent_status_shape(widget: APIClient, start_body: dict[str, Any]) -> None:
    widget.post(START, start_body, format="json")
    response = widget.get(STATUS.format("visitor-1"))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "success",
        "session_id",
        "room_name",
        "status",
        "started_at",
        "stopped_at",
        "worker_id",
        "recovery_count",
        "failure_reason",
    }
    assert body["status"] == "pending" and body["failure_reason"] is None
    session = ConversationSession.objects.get()
    session_fail_reason = "No agent worker joined within 60 s"
    session_transition(session_pk=session.pk, to=AgentStatus.FAILED, failure_reason=session_fail_reason)
    body = widget.get(STATUS.format("visitor-1")).json()
    assert body["status"] == "failed"
    assert body["failure_reason"] == session_fail_reason
    assert body["stopped_at"] is not None


def test_agent_status_reads_the_company_and_the_session_only(
    widget: APIClient, start_body: dict[str, Any], django_assert_num_queries: Any
) -> None:
    # agent-status is polled by every open widget: one query for the widget key, one for the session.
    widget.post(START, start_body, format="json")
    with django_assert_num_queries(2):
        response = widget.get(STATUS.format("visitor-1"))
    assert response.status_code == 200, response.content


def test_widget_token_one_to_one_reconnects_as_the_visitor(
    widget: APIClient, start_body: dict[str, Any]
) -> None:
    started = widget.post(START, start_body, format="json").json()
    response = widget.post(TOKEN, {"session_id": "visitor-1", "participant_name": "Maya"}, format="json")
    assert response.status_code == 200
    body = response.json()
    token = claims(body["user_token"])
    assert token.identity == claims(started["user_token"]).identity == body["participant_identity"]
    assert token.name == "Maya"
    assert token.video.room == started["room_name"]


def test_widget_token_conference_gives_each_person_an_identity(widget: APIClient, company: Any) -> None:
    conference = VoiceAgentFactory(company=company, mode=AgentMode.CONFERENCE)
    widget.post(
        START, {"session_id": "meet", "agent_id": conference.pk, "company_id": company.pk}, format="json"
    )
    tom = widget.post(TOKEN, {"session_id": "meet", "participant_name": "Tom"}, format="json").json()
    ann = widget.post(TOKEN, {"session_id": "meet", "participant_name": "Ann"}, format="json").json()
    assert tom["participant_identity"] != ann["participant_identity"]
    assert claims(tom["user_token"]).name == "Tom"


def test_widget_token_for_ended_session_is_a_conflict(widget: APIClient, start_body: dict[str, Any]) -> None:
    widget.post(START, start_body, format="json")
    session = ConversationSession.objects.get()
    session_transition(session_pk=session.pk, to=AgentStatus.FAILED, failure_reason="gone")
    assert_error(widget.post(TOKEN, {"session_id": "visitor-1"}, format="json"), 409, "conflict")


# --- staff ------------------------------------------------------------------------------------


def test_active_agents_is_staff_only(widget: APIClient, start_body: dict[str, Any], db: Any) -> None:
    widget.post(START, start_body, format="json")
    assert_error(APIClient().get(ACTIVE), 403)
    assert_error(widget.get(ACTIVE), 403)
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=False)
    client = APIClient()
    client.force_login(user)
    assert_error(client.get(ACTIVE), 403)


def test_active_agents_lists_live_sessions_only(widget: APIClient, start_body: dict[str, Any]) -> None:
    widget.post(START, start_body, format="json")
    widget.post(START, {**start_body, "session_id": "visitor-2"}, format="json")
    ended = ConversationSession.objects.get(session_id="visitor-2")
    session_transition(session_pk=ended.pk, to=AgentStatus.FAILED, failure_reason="x")
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    body = client.get(ACTIVE).json()
    assert body["count"] == 1
    row = body["agents"][0]
    assert row["session_id"] == "visitor-1"
    assert row["status"] == "pending"
    assert {"company", "agent", "room_name", "created_at", "started_at"} <= set(row)


def test_company_session_limit_is_enforced(
    widget: APIClient, start_body: dict[str, Any], company: Any
) -> None:
    company.max_concurrent_sessions = 1
    company.save()
    assert widget.post(START, start_body, format="json").status_code == 201
    body = assert_error(
        widget.post(START, {**start_body, "session_id": "second"}, format="json"), 429, "too_many_sessions"
    )
    assert body["error"]["details"]["limit"] == 1


def test_retrying_a_live_session_at_the_limit_gets_it_back_and_a_refusal_leaves_nothing(
    widget: APIClient, start_body: dict[str, Any], company: Any
) -> None:
    # Admission counts after the insert: neither a retry (the unique constraint
    # answers first) nor a refused start (rolled back) may change what is live.
    company.max_concurrent_sessions = 1
    company.save()
    first = widget.post(START, start_body, format="json")
    assert first.status_code == 201
    again = widget.post(START, start_body, format="json")
    assert again.status_code == 200
    assert again.json()["room_name"] == first.json()["room_name"]
    assert_error(
        widget.post(START, {**start_body, "session_id": "second"}, format="json"), 429, "too_many_sessions"
    )
    assert list(ConversationSession.objects.values_list("session_id", flat=True)) == ["visitor-1"]
    ended = ConversationSession.objects.get(session_id="visitor-1")
    assert session_transition(session_pk=ended.pk, to=AgentStatus.FAILED, failure_reason="test")
    assert_error(widget.post(START, start_body, format="json"), 409, "conflict")
    assert widget.post(START, {**start_body, "session_id": "second"}, format="json").status_code == 201


def test_staff_redispatch_of_an_ended_session_starts_a_successor_within_the_company_limit(
    widget: APIClient, start_body: dict[str, Any], company: Any
) -> None:
    company.max_concurrent_sessions = 1
    company.save()
    assert widget.post(START, start_body, format="json").status_code == 201
    live = ConversationSession.objects.get(session_id="visitor-1")
    # not ended: the dispatch is replaced in the same room, no session is added
    assert session_redispatch(session=live).pk == live.pk
    assert session_transition(session_pk=live.pk, to=AgentStatus.FAILED, failure_reason="test")
    ended = ConversationSession.objects.get(pk=live.pk)

    successor = session_redispatch(session=ended)

    assert successor.pk != ended.pk and successor.redispatch_of_id == ended.pk
    assert successor.agent_status == AgentStatus.PENDING
    assert successor.agent_room_name != ended.agent_room_name
    # the successor holds the company's one place: a second re-dispatch is refused, leaving nothing
    with pytest.raises(TooManySessions):
        session_redispatch(session=ended)
    assert ConversationSession.objects.count() == 2
