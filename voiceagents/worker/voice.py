"""The one-to-one voice agent's job: greet the visitor and converse until they leave."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from livekit.agents import AgentSession, AutoSubscribe, JobContext, JobProcess, room_io
from livekit.agents.llm import ChatContext

from . import captions
from .conversation import (
    SESSION_HOST,
    Conversation,
    Speaker,
    build_agent_session,
    instructions_for,
    resume_line,
    wait_for_identity,
)
from .handoff import Handoff, HandoffAgent
from .reporting import db
from .tools import ToolHooks, build_tools, tool_spec_for_session

logger = logging.getLogger("agentconnect.worker")

AUDIO_INPUT_FRAME_MS = 20


def prewarm(proc: JobProcess) -> None:
    """Runs once in every job process before it takes a job: Django, the VAD and end-of-turn
    models, HTTP clients, the captions' speaking-rate detector."""
    import django

    django.setup()
    from voiceagents.providers.factory import load_turn_detector, prewarm_clients, settings_vad

    settings_vad(settings)  # cached for the process; every session in it reuses the model
    load_turn_detector()  # weights in memory and one prediction run: the first turn pays no load
    prewarm_clients(settings)  # SSL contexts built here, not while the visitor waits
    captions.install()  # synced captions without stalling each reply's first audio


def voice_room_options(visitor_identity: str) -> room_io.RoomOptions:
    """How the one-to-one agent sits in the room: it hears only the visitor, and the
    conversation (and the room) end when the visitor leaves."""
    return room_io.RoomOptions(
        participant_identity=visitor_identity,
        # 20 ms frames instead of RoomIO's 50: the VAD hears the end of speech up
        # to 30 ms sooner, for a few more wakeups a second (the conference agent's
        # per-person streams use 20 ms too)
        audio_input=room_io.AudioInputOptions(
            frame_size_ms=AUDIO_INPUT_FRAME_MS,
            # browsers already level the microphone (getUserMedia's autoGainControl)
            auto_gain_control=settings.AGENT_AUTO_GAIN_CONTROL,
        ),
        video_input=False,
        text_output=room_io.TextOutputOptions(sync_transcription=settings.AGENT_SYNC_TRANSCRIPTION),
        close_on_disconnect=True,
        # the room is deleted once the session's end is recorded (Conversation._on_shutdown)
        delete_room_on_close=False,
    )


async def voice_agent(
    conversation: Conversation,
    session: AgentSession,
    *,
    visitor: Speaker,
    stt_plugin: Any,
    history: ChatContext | None = None,
) -> HandoffAgent:
    """The profile's agent with its tools, bound to this conversation and its handoff."""
    from sessions.models import END_REASON_AGENT
    from sessions.tools import session_end_reason_set

    assert conversation.session_pk is not None and conversation.recorder is not None
    session_pk = conversation.session_pk
    spec = await db(tool_spec_for_session, session_pk=session_pk)
    handoff = Handoff(
        room=conversation.ctx.room,
        session_pk=session_pk,
        timeout=spec.handoff_timeout,
        recorder=conversation.recorder,
        visitor=visitor,
        stt_plugin=stt_plugin,
    )
    handoff.bind(session)

    async def close_handoff(_: str) -> None:
        await handoff.aclose()

    conversation.ctx.add_shutdown_callback(close_handoff)

    async def on_end_call() -> None:
        await db(session_end_reason_set, session_pk=session_pk, reason=END_REASON_AGENT)

    hooks = ToolHooks(
        session_pk=session_pk,
        session_id=str(conversation.config.get("session_id") or ""),
        on_end_call=on_end_call,
        on_transfer=handoff.request,
    )
    config = conversation.config
    if history is None:
        return HandoffAgent(
            handoff=handoff, instructions=instructions_for(config), tools=build_tools(spec, hooks)
        )
    # a resumed conversation carries on from every stored turn
    return HandoffAgent(
        handoff=handoff,
        instructions=instructions_for(config),
        tools=build_tools(spec, hooks),
        chat_ctx=history,
    )


async def voice_entrypoint(ctx: JobContext) -> None:
    from voiceagents.providers.factory import ProviderConfigError, build_providers, with_one_vad_stream

    conversation = Conversation(ctx)
    if not await conversation.prepare():
        ctx.shutdown("no session for this room")
        return
    config = conversation.config
    try:
        providers = build_providers(config, settings=settings)
        # a staff member's words in a handoff need a VAD stream of their own, not the
        # visitor's shared one: the scribe wraps this STT itself
        scribe_stt = providers.stt
        if settings.AGENT_VAD_SHARED_STREAM:
            providers = with_one_vad_stream(providers)
    except ProviderConfigError as exc:
        await conversation.fail(str(exc))
        return

    await conversation.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    # the database write runs beside the session start: the visitor waits for the agent's
    # voice, not for our bookkeeping
    joined = asyncio.create_task(conversation.report_joined(), name="report-joined")

    visitor_identity = str(config.get("visitor_identity") or "")
    visitor = await wait_for_identity(ctx, visitor_identity, settings.AGENT_VISITOR_JOIN_TIMEOUT_SECONDS)
    if visitor is None:
        await joined
        await conversation.fail(
            f"The visitor did not join within {settings.AGENT_VISITOR_JOIN_TIMEOUT_SECONDS} s."
        )
        return

    history = await conversation.resume_history()
    session = build_agent_session(config, providers)
    speaker = Speaker(identity=visitor.identity, name=visitor.name or "Visitor")
    conversation.attach(session, user=speaker)
    await session.start(
        agent=await voice_agent(
            conversation, session, visitor=speaker, stt_plugin=scribe_stt, history=history
        ),
        room=ctx.room,
        room_options=voice_room_options(visitor.identity),
        session_host=SESSION_HOST,
    )
    allow_interruptions = bool(config.get("allow_interruptions", True))
    if conversation.recovering:
        # The visitor was greeted by the agent that was lost: one short line, then carry on.
        session.say(resume_line(config), allow_interruptions=allow_interruptions)
    elif greeting := str(config.get("greeting_message") or ""):
        session.say(greeting, allow_interruptions=allow_interruptions)
    await joined
