"""Resolving an agent's configuration: request overrides, then the profile, then AGENT_* defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .catalog import AgentMode, TurnDetection
from .models import VoiceAgent

OVERRIDABLE = (
    "llm_provider",
    "llm_model",
    "stt_provider",
    "tts_provider",
    "tts_voice",
    "system_prompt",
    "greeting_message",
    "turn_detection",
    "min_endpointing_delay",
    "max_endpointing_delay",
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
        "turn_detection": "",
        "min_endpointing_delay": None,
        "max_endpointing_delay": None,
    }


def endpointing_resolve(
    *,
    turn_detection: str,
    vad_enabled: bool,
    min_delay: float | None,
    max_delay: float | None,
    agent_mode: str = AgentMode.ONE_TO_ONE,
) -> tuple[str, float, float]:
    """(turn detection, min delay, max delay), the blanks filled from the deployment.

    A blank turn detection is the deployment's, or stt where the VAD is off. The
    minimum's default depends on the mode: with the end-of-turn model it is short,
    because the model asks for the maximum when a sentence sounds unfinished. A
    maximum below the minimum (one of them a default) is raised to the minimum.
    A conference agent's floor decides turns per person from the VAD; the
    end-of-turn model listens to one voice, so there ``model`` means ``vad``.
    """
    mode = turn_detection or (settings.AGENT_TURN_DETECTION if vad_enabled else TurnDetection.STT)
    if agent_mode == AgentMode.CONFERENCE and mode == TurnDetection.MODEL:
        mode = TurnDetection.VAD
    if min_delay is None:
        min_delay = (
            settings.AGENT_MODEL_ENDPOINTING_DELAY_SECONDS
            if mode == TurnDetection.MODEL
            else settings.AGENT_ENDPOINTING_DELAY_SECONDS
        )
    if max_delay is None:
        max_delay = settings.AGENT_MAX_ENDPOINTING_DELAY_SECONDS
    return mode, float(min_delay), max(float(max_delay), float(min_delay))


def agent_config_resolve(*, agent: VoiceAgent, overrides: dict[str, Any]) -> dict[str, Any]:
    """The configuration snapshot a session keeps and the worker receives.

    Overrides win where given (non-empty), then the profile's non-blank fields,
    then the deployment defaults. VAD and interruptions are not overridable by
    a widget: they are the operator's choice. Turn detection and its delays are,
    checked by the start serializer as the profile's are by the model.
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
    config["turn_detection"], config["min_endpointing_delay"], config["max_endpointing_delay"] = (
        endpointing_resolve(
            turn_detection=config["turn_detection"],
            vad_enabled=bool(config["vad_enabled"]),
            min_delay=config["min_endpointing_delay"],
            max_delay=config["max_endpointing_delay"],
            agent_mode=agent.mode,
        )
    )
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
