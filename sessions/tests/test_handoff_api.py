"""The staff side of a handoff through the API: who may list, join and end, and what a
staff token grants."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from sessions.handoff import session_handoff_request, session_staff_token
from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_start
from tests.factories import VoiceAgentFactory
from tests.queueing import tasks_not_queued

pytestmark = pytest.mark.django_db

BASE = "/api/v1/livekit-agents"


@pytest.fixture
def no_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks_not_queued(monkeypatch)


@pytest.fixture
def waiting(no_dispatch: None) -> ConversationSession:
    agent = VoiceAgentFactory(tool_transfer_to_human=True)
    session = session_start(company=agent.company, agent_id=agent.pk).session
    assert session_handoff_request(session_pk=session.pk, reason="Wants a refund over the limit.")
    session.refresh_from_db()
    return session


def staff_login(*, is_staff: bool = True, username: str = "sam") -> tuple[APIClient, Any]:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=is_staff, first_name="Sam")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client, user


def csrf_post(client: APIClient, url: str) -> Any:
    # a CSRF cookie and the matching header, as the staff call page sends them
    token = "k" * 32
    client.cookies["csrftoken"] = token
    return client.post(url, HTTP_X_CSRFTOKEN=token)


def test_staff_list_join_and_end(waiting: ConversationSession, settings: Any) -> None:
    client, user = staff_login()
    listed = client.get(f"{BASE}/handoffs").json()
    assert [h["session_id"] for h in listed["handoffs"]] == [waiting.session_id]
    assert listed["handoffs"][0]["reason"] == "Wants a refund over the limit."
    response = csrf_post(client, f"{BASE}/handoffs/{waiting.pk}/join")
    assert response.status_code == 200, response.content
    body = response.json()
    claims = jwt.decode(body["token"], settings.LIVEKIT_API_SECRET, algorithms=["HS256"])
    assert claims["sub"] == body["identity"] and body["identity"].startswith(f"staff-{user.pk}-")
    assert claims["name"] == "Sam"
    video = claims["video"]
    assert video["room"] == waiting.agent_room_name and video["roomJoin"] is True
    assert video.get("canPublish") is True and video.get("canSubscribe") is True
    assert video.get("canPublishData") is False
    for grant in ("roomAdmin", "roomCreate", "roomList", "roomRecord", "agent", "hidden"):
        assert not video.get(grant), grant
    assert claims["exp"] - claims["nbf"] == settings.LIVEKIT_STAFF_TOKEN_TTL_SECONDS
    # the call page shows the reason
    page = client.get(f"/staff/handoffs/{waiting.pk}/").content.decode()
    assert "Wants a refund over the limit." in page and "staff-call.js" in page
    assert csrf_post(client, f"{BASE}/handoffs/{waiting.pk}/end").status_code == 200
    waiting.refresh_from_db()
    assert waiting.agent_status in (AgentStatus.STOPPING, AgentStatus.STOPPED)
    # an ended session cannot be joined
    response = csrf_post(client, f"{BASE}/handoffs/{waiting.pk}/join")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_a_widget_key_cannot_mint_a_staff_token(waiting: ConversationSession) -> None:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=waiting.company.widget_key)
    for method, url in (
        ("post", f"{BASE}/handoffs/{waiting.pk}/join"),
        ("get", f"{BASE}/handoffs"),
        ("get", f"{BASE}/handoffs/{waiting.pk}"),
        ("post", f"{BASE}/handoffs/{waiting.pk}/end"),
    ):
        response = getattr(client, method)(url)
        assert response.status_code in (401, 403), (url, response.status_code)
        assert response.json()["success"] is False
        assert "token" not in response.json()
    # nor can a visitor's widget token endpoint hand out a staff identity
    response = client.post(
        f"{BASE}/widget-voice-token",
        {"session_id": waiting.session_id, "participant_name": "staff-1-abc"},
        format="json",
    )
    assert response.status_code == 200
    assert not response.json().get("identity", "").startswith("staff-")
    waiting.refresh_from_db()
    assert waiting.agent_status != AgentStatus.STOPPED


def test_a_non_staff_user_cannot_join_or_see_handoffs(waiting: ConversationSession) -> None:
    client, _ = staff_login(is_staff=False, username="visitor")
    assert client.get(f"{BASE}/handoffs").status_code == 403
    response = csrf_post(client, f"{BASE}/handoffs/{waiting.pk}/join")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    page = client.get(f"/staff/handoffs/{waiting.pk}/")
    assert page.status_code == 302 and "/admin/login/" in page["Location"]


def test_join_without_the_csrf_token_is_refused_in_the_api_shape(waiting: ConversationSession) -> None:
    client, _ = staff_login()
    response = client.post(f"{BASE}/handoffs/{waiting.pk}/join")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["success"] is False


def test_a_session_not_waiting_cannot_be_joined(no_dispatch: None) -> None:
    agent = VoiceAgentFactory()
    session = session_start(company=agent.company, agent_id=agent.pk).session
    user = get_user_model().objects.create_user("sam", is_staff=True)
    from agentconnect.errors import Conflict

    with pytest.raises(Conflict):
        session_staff_token(session=session, user=user)
    client, _ = staff_login(username="kim")
    response = csrf_post(client, f"{BASE}/handoffs/{session.pk}/join")
    assert response.status_code == 409
    assert csrf_post(client, f"{BASE}/handoffs/999999/join").status_code == 404
    assert csrf_post(client, f"{BASE}/handoffs/null,null/join").status_code == 404
    assert Client().get("/staff/handoffs/").status_code == 302
