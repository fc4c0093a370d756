"""Input and output shapes of the voice-session API."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

from voiceagents.catalog import (
    ENDPOINTING_DELAY_MAX,
    GREETING_MAX_LENGTH,
    LLM_MODEL_MAX_LENGTH,
    LLM_MODEL_PATTERN,
    SYSTEM_PROMPT_MAX_LENGTH,
    LLMProvider,
    STTProvider,
    TTSProvider,
    TurnDetection,
    Voice,
)

from .models import SESSION_ID_PATTERN, ConversationSession, TranscriptTurn


def session_id_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(
        max_length=64,
        validators=[
            RegexValidator(SESSION_ID_PATTERN, "Use 1 to 64 characters: letters, digits, '-' and '_'.")
        ],
        **kwargs,
    )


def display_name_field() -> serializers.CharField:
    return serializers.CharField(max_length=64, required=False, allow_blank=True, trim_whitespace=True)


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, so a typo is not silently ignored; and JSON types
    are what the schema says (DRF alone would take 0 for "0" and "5" for 5)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return attrs

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        wrong: dict[str, list[str]] = {}
        for name, field in self.fields.items():
            value = data.get(name)
            if value is None:
                continue  # absent, or null: the field itself says whether that is allowed
            if isinstance(field, serializers.CharField | serializers.ChoiceField) and not isinstance(
                value, str
            ):
                wrong[name] = ["Expected a string."]
            elif isinstance(field, serializers.IntegerField) and (
                not isinstance(value, int) or isinstance(value, bool)
            ):
                wrong[name] = ["Expected an integer."]
            elif isinstance(field, serializers.FloatField) and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                wrong[name] = ["Expected a number."]
        if wrong:
            raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)


class TranscriptQuery(serializers.Serializer):
    company_id = serializers.IntegerField(min_value=1, max_value=2**62, required=False)


class StartVoiceSessionInput(StrictSerializer):
    session_id = session_id_field(required=False)
    agent_id = serializers.IntegerField(min_value=1, max_value=2**62)
    company_id = serializers.IntegerField(min_value=1, max_value=2**62)
    llm_provider = serializers.ChoiceField(choices=LLMProvider.choices, required=False)
    llm_model = serializers.RegexField(LLM_MODEL_PATTERN, max_length=LLM_MODEL_MAX_LENGTH, required=False)
    stt_provider = serializers.ChoiceField(choices=STTProvider.choices, required=False)
    tts_provider = serializers.ChoiceField(choices=TTSProvider.choices, required=False)
    voice_id = serializers.ChoiceField(choices=Voice.choices, required=False)
    system_prompt = serializers.CharField(
        max_length=SYSTEM_PROMPT_MAX_LENGTH, required=False, allow_blank=True, trim_whitespace=False
    )
    greeting_message = serializers.CharField(max_length=GREETING_MAX_LENGTH, required=False, allow_blank=True)
    turn_detection = serializers.ChoiceField(choices=TurnDetection.choices, required=False)
    min_endpointing_delay = serializers.FloatField(
        min_value=0.0, max_value=ENDPOINTING_DELAY_MAX, required=False
    )
    max_endpointing_delay = serializers.FloatField(
        min_value=0.0, max_value=ENDPOINTING_DELAY_MAX, required=False
    )
    participant_name = display_name_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        low, high = attrs.get("min_endpointing_delay"), attrs.get("max_endpointing_delay")
        if low is not None and high is not None and high < low:
            raise serializers.ValidationError(
                {"max_endpointing_delay": ["Must not be below min_endpointing_delay."]}
            )
        return attrs


class StopVoiceSessionInput(StrictSerializer):
    session_id = session_id_field()
    company_id = serializers.IntegerField(min_value=1, max_value=2**62, required=False)


class WidgetVoiceTokenInput(StrictSerializer):
    session_id = session_id_field()
    company_id = serializers.IntegerField(min_value=1, max_value=2**62, required=False)
    participant_name = display_name_field()


class StartVoiceSessionOutput(serializers.Serializer):
    success = serializers.BooleanField(default=True)
    session_id = serializers.CharField()
    room_name = serializers.CharField()
    livekit_url = serializers.CharField()
    user_token = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField()


class AgentStatusOutput(serializers.Serializer):
    success = serializers.SerializerMethodField()
    session_id = serializers.CharField(max_length=64)
    room_name = serializers.CharField(source="agent_room_name")
    status = serializers.CharField(source="agent_status")
    started_at = serializers.DateTimeField(source="agent_started_at", allow_null=True)
    stopped_at = serializers.DateTimeField(source="agent_stopped_at", allow_null=True)
    worker_id = serializers.CharField(source="agent_worker_id")
    # how many times a lost agent was replaced (status `recovering` while it happens)
    recovery_count = serializers.IntegerField()
    failure_reason = serializers.SerializerMethodField()

    def get_success(self, obj: ConversationSession) -> bool:
        return True

    def get_failure_reason(self, obj: ConversationSession) -> str | None:
        return obj.failure_reason or None


class ActiveAgentOutput(serializers.ModelSerializer):
    company = serializers.CharField(source="company.slug")
    company_id = serializers.IntegerField()
    agent = serializers.CharField(source="agent.name")
    agent_id = serializers.IntegerField()
    room_name = serializers.CharField(source="agent_room_name")
    status = serializers.CharField(source="agent_status")
    started_at = serializers.DateTimeField(source="agent_started_at", allow_null=True)
    worker_id = serializers.CharField(source="agent_worker_id")

    class Meta:
        model = ConversationSession
        fields = [
            "session_id",
            "company",
            "company_id",
            "agent",
            "agent_id",
            "mode",
            "room_name",
            "status",
            "recovery_count",
            "worker_id",
            "created_at",
            "started_at",
            "status_changed_at",
        ]


class ActiveAgentsOutput(serializers.Serializer):
    success = serializers.BooleanField(default=True)
    count = serializers.IntegerField()
    agents = ActiveAgentOutput(many=True)


class WidgetVoiceTokenOutput(serializers.Serializer):
    success = serializers.BooleanField(default=True)
    session_id = serializers.CharField()
    room_name = serializers.CharField()
    livekit_url = serializers.CharField()
    user_token = serializers.CharField()
    participant_identity = serializers.CharField()
    status = serializers.CharField()


class StopVoiceSessionOutput(serializers.Serializer):
    success = serializers.BooleanField(default=True)
    session_id = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField()


class TranscriptTurnOutput(serializers.ModelSerializer):
    class Meta:
        model = TranscriptTurn
        fields = [
            "sequence",
            "role",
            "speaker_identity",
            "speaker_name",
            "text",
            "started_at",
            "ended_at",
            "interrupted",
            "metrics",
        ]


class TranscriptOutput(serializers.Serializer):
    success = serializers.BooleanField(default=True)
    session_id = serializers.CharField()
    status = serializers.CharField()
    turns = TranscriptTurnOutput(many=True)
    usage = serializers.DictField()
    latency = serializers.DictField()
