"""Resolving an agent's configuration: request overrides, then the profile, then AGENT_* defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .catalog import AgentMode
from .models import VoiceAgent

OVERRIDABLE = (
    "llm_provider",
    "llm_model",
    "stt_provider",
    "tts_provider",
    "tts_voice",
    "system_prompt",
    "greeting_message",
)


def _defaults() -> dict[str, Any]:
    return {
        "llm_provider": settings.AGENT_LLM_PROVIDER,
        "llm_model": settings.AGENT_LLM_MODEL,
        "stt_provider": settings.AGENT_STT_PROVIDER,
        "tts_provider": settings.AGENT_TTS_PROVIDER,
        "tts_voice": settings.AGENT_TTS_VOICE,
        "system_prompt": settings.AGENT_SYSTEM_PROMPT,
        "greeting_message": settings.AGENT_GREETING_MESSAGE,
        "resume_message": settings.AGENT_RESUME_MESSAGE,
        "vad_enabled": settings.AGENT_VAD_ENABLED,
        "allow_interruptions": settings.AGENT_ALLOW_INTERRUPTIONS,
    }


def agent_config_resolve(*, agent: VoiceAgent, overrides: dict[str, Any]) -> dict[str, Any]:
    """The configuration snapshot a session keeps and the worker receives.

    Overrides win where given (non-empty), then the profile's non-blank fields,
    then the deployment defaults. VAD and interruptions are not overridable by
    a widget: they are the operator's choice.
    """
    config = _defaults()
    for field in config:
        value = getattr(agent, field)
        if value not in ("", None):
            config[field] = value
    for field in OVERRIDABLE:
        value = overrides.get(field)
        if value not in ("", None):
            config[field] = value
    config.update(
        agent_id=agent.pk,
        agent_name=agent.name,
        company_id=agent.company_id,
        mode=agent.mode,
        reply_policy=agent.reply_policy,
    )
    return config


def agent_dispatch_name(mode: str) -> str:
    """The LiveKit agent_name that workers of this mode register under."""
    if mode == AgentMode.CONFERENCE:
        return str(settings.LIVEKIT_CONFERENCE_AGENT_NAME)
    return str(settings.LIVEKIT_VOICE_AGENT_NAME)
