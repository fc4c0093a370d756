"""The API's flat serializers: per-instance field copies that bind independently."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from sessions.serializers import AgentStatusOutput, FlatSerializer, StartVoiceSessionInput


def test_each_instance_binds_its_own_fields_and_the_declared_ones_stay_unbound() -> None:
    bad = StartVoiceSessionInput(data={"agent_id": 0, "company_id": 1, "session_id": "no spaces"})
    good = StartVoiceSessionInput(
        data={"agent_id": 1, "company_id": 1, "session_id": "ok", "voice_id": "alloy"}
    )
    assert not bad.is_valid() and set(bad.errors) == {"agent_id", "session_id"}
    assert good.is_valid(), good.errors
    assert good.validated_data["voice_id"] == "alloy"
    for name, declared in StartVoiceSessionInput._declared_fields.items():
        assert bad.fields[name] is not good.fields[name] is not declared
        assert bad.fields[name].parent is bad and good.fields[name].parent is good
        assert declared.parent is None and declared.field_name is None


def test_output_fields_bind_their_sources_and_methods_per_instance() -> None:
    row = type(
        "Row",
        (),
        {
            "session_id": "s",
            "agent_room_name": "r",
            "agent_status": "pending",
            "agent_started_at": None,
            "agent_stopped_at": None,
            "agent_worker_id": "",
            "failure_reason": "",
        },
    )()
    assert (
        AgentStatusOutput(row).data
        == AgentStatusOutput(row).data
        == {
            "success": True,
            "session_id": "s",
            "room_name": "r",
            "status": "pending",
            "started_at": None,
            "stopped_at": None,
            "worker_id": "",
            "failure_reason": None,
        }
    )
    assert AgentStatusOutput._declared_fields["success"].method_name is None


def test_a_field_holding_other_fields_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="tags"):
        type("Tagged", (FlatSerializer,), {"tags": serializers.ListField(child=serializers.CharField())})
