"""Turn-detection settings of an agent profile and of a start request: validation, resolution."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from rest_framework.test import APIClient

from sessions.models import ConversationSession
from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.catalog import AgentMode
from voiceagents.models import VoiceAgent

START = "/api/v1/livekit-agents/start-voice-session"

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent() -> VoiceAgent:
    return VoiceAgentFactory(company=CompanyFactory())


def start(agent: VoiceAgent, **fields: Any) -> Any:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=agent.company.widget_key)
    body = {"session_id": "turns-1", "agent_id": agent.pk, "company_id": agent.company_id, **fields}
    return client.post(START, body, format="json")


def config_of(session_id: str = "turns-1") -> dict[str, Any]:
    return ConversationSession.objects.get(session_id=session_id).config


def test_a_blank_profile_gets_the_model_and_its_short_minimum(agent: VoiceAgent) -> None:
    assert start(agent).status_code == 201
    config = config_of()
    assert config["turn_detection"] == settings.AGENT_TURN_DETECTION == "model"
    assert config["min_endpointing_delay"] == settings.AGENT_MODEL_ENDPOINTING_DELAY_SECONDS
    assert config["max_endpointing_delay"] == settings.AGENT_MAX_ENDPOINTING_DELAY_SECONDS


def test_profile_settings_reach_the_session(agent: VoiceAgent) -> None:
    agent.turn_detection = "vad"
    agent.min_endpointing_delay = 0.35
    agent.max_endpointing_delay = 1.5
    agent.save()
    assert start(agent).status_code == 201
    config = config_of()
    assert (config["turn_detection"], config["min_endpointing_delay"], config["max_endpointing_delay"]) == (
        "vad",
        0.35,
        1.5,
    )


def test_vad_mode_defaults_to_the_fixed_delay(agent: VoiceAgent) -> None:
    agent.turn_detection = "vad"
    agent.save()
    assert start(agent).status_code == 201
    assert config_of()["min_endpointing_delay"] == settings.AGENT_ENDPOINTING_DELAY_SECONDS


def test_a_profile_without_vad_and_no_turn_detection_keeps_stt_endpointing(agent: VoiceAgent) -> None:
    agent.vad_enabled = False
    agent.save()
    assert start(agent).status_code == 201
    assert config_of()["turn_detection"] == "stt"


def test_a_conference_agent_turns_model_into_vad(agent: VoiceAgent) -> None:
    agent.mode = AgentMode.CONFERENCE
    agent.turn_detection = "model"
    agent.save()
    assert start(agent).status_code == 201
    assert config_of()["turn_detection"] == "vad"


def test_request_overrides_win_over_the_profile(agent: VoiceAgent) -> None:
    agent.turn_detection = "vad"
    agent.min_endpointing_delay = 0.6
    agent.save()
    response = start(agent, turn_detection="model", min_endpointing_delay=0.2, max_endpointing_delay=2.0)
    assert response.status_code == 201, response.content
    config = config_of()
    assert (config["turn_detection"], config["min_endpointing_delay"], config["max_endpointing_delay"]) == (
        "model",
        0.2,
        2.0,
    )


def test_a_request_maximum_below_the_profile_minimum_is_raised_to_it(agent: VoiceAgent) -> None:
    agent.min_endpointing_delay = 1.0
    agent.save()
    assert start(agent, max_endpointing_delay=0.5).status_code == 201
    assert config_of()["max_endpointing_delay"] == 1.0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"turn_detection": "psychic"}, "turn_detection"),
        ({"turn_detection": 1}, "turn_detection"),
        ({"min_endpointing_delay": -0.1}, "min_endpointing_delay"),
        ({"max_endpointing_delay": -1}, "max_endpointing_delay"),
        ({"min_endpointing_delay": 11}, "min_endpointing_delay"),
        ({"min_endpointing_delay": "0.3"}, "min_endpointing_delay"),
        ({"min_endpointing_delay": True}, "min_endpointing_delay"),
        ({"min_endpointing_delay": 1.0, "max_endpointing_delay": 0.5}, "max_endpointing_delay"),
    ],
)
def test_bad_request_values_are_a_clear_400(agent: VoiceAgent, fields: dict[str, Any], field: str) -> None:
    response = start(agent, **fields)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "invalid_input"
    assert field in body["error"]["details"], body
    assert not ConversationSession.objects.exists()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"turn_detection": "psychic"}, "turn_detection"),
        ({"min_endpointing_delay": -0.1}, "min_endpointing_delay"),
        ({"max_endpointing_delay": 10.5}, "max_endpointing_delay"),
        ({"min_endpointing_delay": 1.0, "max_endpointing_delay": 0.5}, "max_endpointing_delay"),
    ],
)
def test_bad_profile_values_fail_validation_on_the_field(
    agent: VoiceAgent, values: dict[str, Any], field: str
) -> None:
    for name, value in values.items():
        setattr(agent, name, value)
    with pytest.raises(ValidationError) as caught:
        agent.full_clean()
    assert field in caught.value.message_dict, caught.value.message_dict


@pytest.mark.parametrize(
    "values",
    [{"turn_detection": "psychic"}, {"min_endpointing_delay": 1.0, "max_endpointing_delay": 0.5}],
)
def test_the_database_refuses_what_validation_would(agent: VoiceAgent, values: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        VoiceAgent.objects.filter(pk=agent.pk).update(**values)


def test_the_admin_shows_the_error_beside_the_field(agent: VoiceAgent) -> None:
    staff = get_user_model().objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(staff)
    url = f"/admin/voiceagents/voiceagent/{agent.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(company=agent.company_id, min_endpointing_delay="1.0", max_endpointing_delay="0.5")
    data.pop("created_at", None)
    data.pop("updated_at", None)
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    assert "max_endpointing_delay" in errors, errors
    agent.refresh_from_db()
    assert agent.min_endpointing_delay is None


@pytest.mark.parametrize(
    ("text", "backchannel"),
    [
        ("mhm", True),
        ("Uh huh.", True),
        ("yeah okay", True),
        ("", False),
        ("yes I want the blue one", False),
        ("stop", False),
        ("mhm mhm mhm mhm", False),
    ],
)
def test_what_counts_as_a_backchannel(text: str, backchannel: bool) -> None:
    from voiceagents.worker.backchannel import is_backchannel

    assert is_backchannel(text) is backchannel
