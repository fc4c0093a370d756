"""The conference agent's job: hear everyone in the room, know who said what, answer the group.

One AgentSession speaks for the agent (LLM, TTS, audio out to the room, the
transcript). How it hears is CONFERENCE_STT_STRATEGY:

- per_participant (default): each person's microphone feeds their own STT
  stream (`ParticipantListener`), so every final transcript carries its
  speaker; the `Floor` puts "Name: words" into the agent's context and asks
  for a reply when the reply policy says so.
- mixed: every microphone goes through the `ConferenceMixer` into the
  session's single audio input; the framework's own turn detection runs on
  the mix, and each transcript segment is named after whoever was loudest
  while it was spoken (the mixer's per-stream energy), before the framework
  sees it, so its preemptive reply stays valid.

Both follow people joining, leaving and republishing (`Audience`), never hear
the agent itself or other agents, and end the conversation when the last
person has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from django.conf import settings
from livekit import rtc
from livekit.agents import (
    Agent,
    AutoSubscribe,
    JobContext,
    JobProcess,
    ModelSettings,
    StopResponse,
    llm,
    room_io,
    stt,
)

from .conference_audience import Audience, Member
from .conference_policy import ReplyPolicy
from .conference_turns import Floor, ParticipantListener, tag
from .conversation import SESSION_HOST, Conversation, Speaker, build_agent_session
from .mixer import ConferenceMixer, MixerAudioInput

logger = logging.getLogger("agentconnect.worker.conference")

PER_PARTICIPANT = "per_participant"
MIXED = "mixed"
# speech models (silero VAD, pocketsphinx, Whisper) work at 16 kHz: the rtc.AudioStream
# resamples natively once, instead of every VAD and STT stream resampling in Python
SAMPLE_RATE = 16000
# 20 ms frames and blocks: half the wakeups of 10 ms per stream (RoomIO uses 50 ms for
# one visitor), for 20 ms of jitter buffer in the mix
FRAME_MS = 20
# frames an rtc.AudioStream may queue while the event loop is busy; beyond that
# the oldest are dropped, so a stuck loop cannot grow memory without bound
STREAM_CAPACITY = 250

GROUP_INSTRUCTIONS = (
    "You are talking with a group of people at once, by voice. Each user message starts "
    "with the name of the person speaking, like 'Maya: ...'. Keep track of who said what, "
    "and when you answer someone, address them by name."
)
UNKNOWN_SPEAKER = Speaker(identity="", name="Someone")
# how much earlier than a VAD's start-of-speech report the words began
SEGMENT_LEAD_SECONDS = 0.5
MAX_PENDING_TAGS = 20


def prewarm(proc: JobProcess) -> None:
    from .voice import prewarm as voice_prewarm

    voice_prewarm(proc)


class ConferenceConversation(Conversation):
    def __init__(self, ctx: JobContext) -> None:
        super().__init__(ctx)
        # mixed strategy: speaker tags by message text, for the framework's own copy of a
        # message (a preemptive reply keeps the message it started with, not ours)
        self.tags: dict[str, dict[str, str]] = {}

    def speaker_for(self, item: Any) -> Speaker | None:
        extra = getattr(item, "extra", None)
        if extra is None:
            return None
        if "speaker_identity" not in extra and (tagged := self.tags.pop(item.text_content or "", None)):
            extra.update(tagged)
        identity = extra.get("speaker_identity")
        if identity is None:
            return None
        return Speaker(identity=str(identity), name=str(extra.get("speaker_name") or identity))


class ConferenceAgent(Agent):
    def __init__(
        self, *, instructions: str, conference: Conference, chat_ctx: llm.ChatContext | None = None
    ) -> None:
        super().__init__(instructions=instructions, chat_ctx=chat_ctx)
        self._conference = conference

    # Both hooks only run with the mixed strategy: per_participant turns never pass
    # the session's own ears.

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent]:
        async for event in Agent.default.stt_node(self, audio, model_settings):
            yield self._conference.name_transcript(event)

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        await self._conference.mixed_turn(new_message)


def listener_stt(providers: Any) -> tuple[stt.STT, Any]:
    """What hears one person, as a session would: (streaming STT, VAD for turns or None).

    A non-streaming STT is cut into utterances by a VAD (StreamAdapter), whose
    speech start and end events are also the turns; a streaming STT gets the
    session's VAD beside it when VAD turn detection is on.
    """
    engine: stt.STT = providers.stt
    if engine.capabilities.streaming:
        return engine, providers.vad
    from voiceagents.providers.factory import settings_vad

    return stt.StreamAdapter(stt=engine, vad=providers.vad or settings_vad(settings)), None


class Conference:
    def __init__(
        self,
        ctx: JobContext,
        conversation: ConferenceConversation,
        providers: Any,
        *,
        strategy: str,
        history: llm.ChatContext | None = None,
    ) -> None:
        self.ctx = ctx
        self.conversation = conversation
        self.config = conversation.config
        self.providers = providers
        self.strategy = strategy
        mixed = strategy == MIXED
        self.mixer = ConferenceMixer(
            sample_rate=SAMPLE_RATE, frame_ms=FRAME_MS, jitter_ms=FRAME_MS, mix=mixed, levels=mixed
        )
        self.audience = Audience(
            ctx.room, on_audio=self._on_audio, on_audio_gone=self._on_audio_gone, on_left=self._on_left
        )
        self.session = build_agent_session(self.config, providers)
        prompt = str(self.config.get("system_prompt") or settings.AGENT_SYSTEM_PROMPT)
        # a replacement agent (crash recovery) starts from every stored turn, names included
        self.agent = ConferenceAgent(
            instructions=f"{prompt}\n\n{GROUP_INSTRUCTIONS}", conference=self, chat_ctx=history
        )
        self.listeners: dict[str, ParticipantListener] = {}
        self._listener_stt: stt.STT | None = None
        self._listener_vad: Any = None
        if not mixed:
            self._listener_stt, self._listener_vad = listener_stt(providers)
        self._closing_listeners: set[asyncio.Task[None]] = set()
        self._ending: asyncio.Task[None] | None = None
        self.floor: Floor | None = None
        # mixed strategy: when the current speech segment began, and the named
        # transcript segments of the turn in progress
        self._segment_started: float | None = None
        self._turn_parts: list[tuple[Speaker, str]] = []

    async def run(self, first: rtc.RemoteParticipant) -> None:
        recorder = self.conversation.attach(self.session, user=UNKNOWN_SPEAKER)
        options = self.session.options
        self.floor = Floor(
            session=self.session,
            agent=self.agent,
            recorder=recorder,
            policy=ReplyPolicy(
                str(self.config.get("reply_policy") or "always"), str(self.config.get("agent_name") or "")
            ),
            names_in_room=lambda: {m.identity: m.display_name for m in self.audience.members.values()},
            allow_interruptions=self.providers.allow_interruptions,
            min_delay=float(options.endpointing["min_delay"]),
            max_delay=float(options.endpointing["max_delay"]),
        )
        self.ctx.add_shutdown_callback(self.aclose)
        self.mixer.start()
        if self.strategy == MIXED:
            self.session.input.audio = MixerAudioInput(self.mixer)
        await self.session.start(
            agent=self.agent,
            room=self.ctx.room,
            room_options=room_io.RoomOptions(
                audio_input=False,  # we feed the session (mixed) or bypass its ears (per_participant)
                text_input=False,
                video_input=False,
                text_output=room_io.TextOutputOptions(sync_transcription=settings.AGENT_SYNC_TRANSCRIPTION),
                participant_identity=first.identity,
                close_on_disconnect=False,  # one person leaving does not end a conference
                # the room is deleted once the session's end is recorded (Conversation._on_shutdown)
                delete_room_on_close=False,
            ),
            session_host=SESSION_HOST,  # no participant reads or drives the session
        )
        self.audience.start()
        logger.info(
            "conference started (%s strategy, reply policy %s)",
            self.strategy,
            self.floor.policy.policy,
            extra=self.ctx.log_context_fields,
        )
        # a replacement agent says its resume line instead of greeting the room again
        if self.conversation.recovering:
            line = str(self.config.get("resume_message") or settings.AGENT_RESUME_MESSAGE)
        else:
            line = str(self.config.get("greeting_message") or "")
        if line:
            self.session.say(line, allow_interruptions=self.providers.allow_interruptions)

    # --- audience -------------------------------------------------------------------

    def _on_audio(self, member: Member, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream(
            track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS, capacity=STREAM_CAPACITY
        )
        if self._listener_stt is None:
            self.mixer.add_source(member.identity, stream)
            return
        assert self.floor is not None
        listener = self.listeners.get(member.identity)
        if listener is None:
            speaker = Speaker(identity=member.identity, name=member.display_name)
            listener = ParticipantListener(
                speaker, self._listener_stt, self.floor, sample_rate=SAMPLE_RATE, vad=self._listener_vad
            )
            self.listeners[member.identity] = listener
        self.mixer.add_source(member.identity, stream, tap=listener.push)

    def _on_audio_gone(self, member: Member) -> None:
        self.mixer.remove_source(member.identity)
        listener = self.listeners.pop(member.identity, None)
        if listener is not None:
            # their last words still become an utterance; a new track gets a new listener
            task = asyncio.create_task(listener.aclose(flush=True))
            self._closing_listeners.add(task)
            task.add_done_callback(self._closing_listeners.discard)

    def _on_left(self, member: Member) -> None:
        if not self.audience.members and self._ending is None:
            self._ending = asyncio.create_task(self._end_when_flushed())

    async def _end_when_flushed(self) -> None:
        if self._closing_listeners:
            await asyncio.wait(set(self._closing_listeners), timeout=15)
        if self.audience.members:  # someone came back meanwhile
            self._ending = None
            return
        logger.info("everyone has left; ending the conference", extra=self.ctx.log_context_fields)
        self.session.shutdown(drain=False)

    # --- mixed strategy -------------------------------------------------------------

    def name_transcript(self, event: stt.SpeechEvent) -> stt.SpeechEvent:
        """Put the speaker's name on a transcript of the mix: "Maya: words".

        The speaker is whoever put the most energy into the mix between the start
        of this speech segment and its end.
        """
        kind = event.type
        if kind == stt.SpeechEventType.START_OF_SPEECH:
            # the VAD reports a start once it is sure; the words began a little earlier
            self._segment_started = time.time() - SEGMENT_LEAD_SECONDS
            return event
        if kind not in (stt.SpeechEventType.FINAL_TRANSCRIPT, stt.SpeechEventType.PREFLIGHT_TRANSCRIPT):
            return event
        if not event.alternatives or not event.alternatives[0].text.strip():
            return event
        text = event.alternatives[0].text.strip()
        ended = event.speech_end_time or time.time()
        started = self._segment_started or ended - 30.0
        key = self.mixer.dominant_source(started, ended + 0.1)
        speaker = Speaker(identity=key, name=self.audience.name_of(key)) if key else UNKNOWN_SPEAKER
        if kind == stt.SpeechEventType.FINAL_TRANSCRIPT:
            self._turn_parts.append((speaker, text))
        event.alternatives[0] = dataclasses.replace(event.alternatives[0], text=f"{speaker.name}: {text}")
        return event

    async def mixed_turn(self, message: llm.ChatMessage) -> None:
        assert self.floor is not None
        parts, self._turn_parts = self._turn_parts, []
        if parts:
            words: dict[str, int] = {}
            for who, text in parts:
                words[who.identity] = words.get(who.identity, 0) + len(text.split())
            speaker = next(who for who, _ in parts if who.identity == max(words, key=words.__getitem__))
            bare = " ".join(text for _, text in parts)
            # one speaker: the bare words; several in one turn: keep their names in the text
            stored = bare if len(words) == 1 else (message.text_content or bare)
        else:
            speaker, bare = UNKNOWN_SPEAKER, (message.text_content or "").strip()
            stored = bare
        tag(message, speaker, stored)
        if not self.floor.wants_reply(speaker, bare):
            logger.info("%s: %s (no reply: not addressed)", speaker.name, bare)
            await self.floor.remember(message, speaker)
            raise StopResponse()
        tags = self.conversation.tags
        tags[message.text_content or ""] = dict(message.extra)
        while len(tags) > MAX_PENDING_TAGS:  # replies that never got scheduled
            tags.pop(next(iter(tags)))
        logger.info("%s: %s", speaker.name, bare)

    # --- closing --------------------------------------------------------------------

    async def aclose(self, reason: str = "") -> None:
        self.audience.stop()
        if self.floor is not None:
            self.floor.close()
        listeners = list(self.listeners.values())
        self.listeners.clear()
        await asyncio.gather(
            *(listener.aclose(flush=False) for listener in listeners), return_exceptions=True
        )
        for task in list(self._closing_listeners):
            task.cancel()
        logger.info(
            "conference mixer: %s", dataclasses.asdict(self.mixer.stats), extra=self.ctx.log_context_fields
        )
        await self.mixer.aclose()
        if self._listener_stt is not None and self._listener_stt is not self.providers.stt:
            with contextlib.suppress(Exception):
                await self._listener_stt.aclose()


async def conference_entrypoint(ctx: JobContext) -> None:
    from voiceagents.providers.factory import ProviderConfigError, build_providers

    conversation = ConferenceConversation(ctx)
    if not await conversation.prepare():
        ctx.shutdown("no session for this room")
        return
    try:
        providers = build_providers(conversation.config, settings=settings)
    except ProviderConfigError as exc:
        await conversation.fail(str(exc))
        return

    # subscriptions are ours: only people's microphones (conference_audience.py)
    await conversation.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
    await conversation.report_joined()

    timeout = settings.AGENT_VISITOR_JOIN_TIMEOUT_SECONDS
    try:
        first = await asyncio.wait_for(ctx.wait_for_participant(), timeout)
    except TimeoutError:
        await conversation.fail(f"Nobody joined the conference within {timeout} s.")
        return
    history = await conversation.resume_history(named=True)
    conference = Conference(
        ctx, conversation, providers, strategy=settings.CONFERENCE_STT_STRATEGY, history=history
    )
    await conference.run(first)
