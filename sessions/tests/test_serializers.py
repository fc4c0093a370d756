"""The API's input and output shapes."""

from __future__ import annotations

from sessions.serializers import AgentStatusOutput, StartVoiceSessionInput


def test_start_input_validates_each_instance_on_its_own() -> None:
    bad = StartVoiceSessionInput(data={"agent_id": 0, "company_id": 1, "session_id": "no spaces"})
    good = StartVoiceSessionInput(
        data={"agent_id": 1, "company_id": 1, "session_id": "ok", "voice_id": "alloy"}
    )
    assert not bad.is_valid() and set(bad.errors) == {"agent_id", "session_id"}
    assert good.is_valid(), good.errors
    assert good.validated_data["voice_id"] == "alloy"


def test_start_input_refuses_unknown_fields_and_wrong_json_types() -> None:
    typo = StartVoiceSessionInput(data={"agent_id": 1, "company_id": 1, "voice": "alloy"})
    assert not typo.is_valid() and typo.errors == {"voice": ["Unknown field."]}
    strings = StartVoiceSessionInput(data={"agent_id": "1", "company_id": 1, "session_id": 5})
    assert not strings.is_valid() and set(strings.errors) == {"agent_id", "session_id"}


def test_agent_status_output() -> None:
    row = type(
        "Row",
        (),
        {
            "session_id": "s",
            "agent_room_name": "r",
            "agent_status": "failed",
            "agent_started_at": None,
            "agent_stopped_at": None,
            "agent_worker_id": "",
            "failure_reason": "no worker",
            "recovery_count": 1,
        },
    )()
    assert AgentStatusOutput(row).data == {
        "success": True,
        "session_id": "s",
        "room_name": "r",
        "status": "failed",
        "started_at": None,
        "stopped_at": None,
        "worker_id": "",
        "recovery_count": 1,
        "failure_reason": "no worker",
    }
