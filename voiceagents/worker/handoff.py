"""Handoff to a person in a one-to-one conversation, as the agent lives it.

transfer_to_human marks the session waiting and the agent tells the visitor someone is
being fetched. A staff member's arrival (an identity from session_staff_token) is
recorded; the agent introduces them in one line and becomes a silent scribe: it no
longer answers, and it transcribes the visitor (its own STT, as before) and each staff
member (one STT stream per person), every turn attributed to its speaker. When nobody
comes within the profile's timeout, the agent comes back and offers to take a message.

The agent's ``agentconnect.handoff`` attribute (waiting, connected, missed) tells the
widget what to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from livekit import rtc
from livekit.agents import Agent, AgentSession, StopResponse, stt
from livekit.agents.llm import ChatChunk, ChatContext, ChatMessage, Tool
from livekit.agents.voice import ModelSettings

from .backchannel import BackchannelTolerantAgent
from .conversation import Speaker, TranscriptRecorder
from .reporting import db

logger = logging.getLogger("agentconnect.worker")

HANDOFF_ATTRIBUTE = "agentconnect.handoff"
FETCHING = "Tell the visitor, in one short sentence, that a person from the team is being fetched and will join shortly."
ALREADY_WAITING = "A person has already been asked for; tell the visitor they are on their way."
MISSED_LINE = (
    "I'm sorry, nobody from the team could join just now. I can take a message for them: "
    "your name, how to reach you, and what it is about."
)


class HandoffAgent(BackchannelTolerantAgent):
    """The profile's agent (backchannels over its replies ignored), silent once a person has joined (its scribe keeps writing)."""

    def __init__(self, *, handoff: Handoff, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handoff = handoff

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        if self.handoff.scribe:
            # the turn is not answered, so the framework does not add it to the
            # conversation: record it here, the visitor's words kept in the transcript
            self.handoff.record_visitor(new_message)
            raise StopResponse()

    async def llm_node(
        self,
        chat_ctx: ChatContext,
        tools: list[Tool],
        model_settings: ModelSettings,
    ) -> AsyncIterator[ChatChunk | str]:
        # preemptive generation asks for a reply before the turn is complete; a scribe
        # has none to give, so the LLM is not called at all
        if self.handoff.scribe:
            return
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk  # type: ignore[misc]


class Handoff:
    def __init__(
        self,
        *,
        room: rtc.Room,
        session_pk: int,
        timeout: float,
        recorder: TranscriptRecorder,
        visitor: Speaker,
        stt_plugin: stt.STT,
    ) -> None:
        self.room = room
        self.session_pk = session_pk
        self.timeout = timeout
        self.recorder = recorder
        self.visitor = visitor
        self.stt_plugin = stt_plugin
        self.session: AgentSession | None = None
        self.scribe = False
        self._waiting: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        self._scribes: dict[str, asyncio.Task[None]] = {}
        self._stt: stt.STT | None = None
        room.on("participant_connected", self._on_participant)
        room.on("track_subscribed", self._on_track)

    def bind(self, session: AgentSession) -> None:
        self.session = session

    # -- the tool ----------------------------------------------------------------------

    async def request(self, reason: str) -> str:
        from sessions.handoff import session_handoff_request

        if self._waiting is not None and not self._waiting.done():
            return ALREADY_WAITING
        if not await db(session_handoff_request, session_pk=self.session_pk, reason=reason):
            return ALREADY_WAITING
        await self._attribute("waiting")
        self._joined.clear()
        self._waiting = asyncio.create_task(self._wait_for_person(), name="handoff-wait")
        # someone may already be in the room (joined before the agent asked)
        for participant in list(self.room.remote_participants.values()):
            self._on_participant(participant)
        return FETCHING

    async def _wait_for_person(self) -> None:
        from sessions.handoff import session_handoff_missed

        try:
            await asyncio.wait_for(self._joined.wait(), self.timeout)
            return
        except TimeoutError:
            pass
        if not await db(session_handoff_missed, session_pk=self.session_pk):
            return
        logger.info("handoff missed: nobody joined within %.0f s", self.timeout)
        await self._attribute("missed")
        if self.session is not None:
            self.session.say(MISSED_LINE)

    # -- a person arrives ----------------------------------------------------------------

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        from sessions.handoff import is_staff_identity

        if is_staff_identity(participant.identity):
            asyncio.create_task(self._person_joined(participant), name="handoff-joined")

    async def _person_joined(self, participant: rtc.RemoteParticipant) -> None:
        from sessions.handoff import session_handoff_joined

        if self._joined.is_set():
            return
        if not await db(session_handoff_joined, session_pk=self.session_pk, identity=participant.identity):
            return  # not waiting (never asked, or already missed): the agent carries on
        self._joined.set()
        # the person's words are transcribed from the moment they are in
        for publication in participant.track_publications.values():
            if isinstance(publication.track, rtc.RemoteAudioTrack):
                self._start_scribe(participant, publication.track)
        name = participant.name or "A member of our team"
        await self._attribute("connected")
        # no reply from here on: the one line below is said without the LLM
        self.scribe = True
        if self.session is not None:
            # what the agent was still saying (the "being fetched" line, say) gives way
            # to the person, so nothing of the agent's comes after its last line
            await self.session.interrupt(force=True)
            handle = self.session.say(f"{name} from our team has joined. I'll leave you with them.")
            await handle

    def _on_track(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        from sessions.handoff import is_staff_identity

        if (
            isinstance(track, rtc.RemoteAudioTrack)
            and is_staff_identity(participant.identity)
            and self._joined.is_set()
        ):
            self._start_scribe(participant, track)

    # -- the scribe ------------------------------------------------------------------------

    def record_visitor(self, message: ChatMessage) -> None:
        self.recorder.on_item(message, speaker=self.visitor)

    def _streaming_stt(self) -> stt.STT:
        if self._stt is None:
            from voiceagents.providers.factory import settings_vad

            plugin = self.stt_plugin
            if not plugin.capabilities.streaming:
                plugin = stt.StreamAdapter(stt=plugin, vad=settings_vad(settings))
            self._stt = plugin
        return self._stt

    def _start_scribe(self, participant: rtc.RemoteParticipant, track: rtc.RemoteAudioTrack) -> None:
        if participant.identity in self._scribes and not self._scribes[participant.identity].done():
            return
        speaker = Speaker(identity=participant.identity, name=participant.name or "Staff")
        self._scribes[participant.identity] = asyncio.create_task(
            self._transcribe(speaker, track), name=f"scribe-{participant.identity}"
        )

    async def _transcribe(self, speaker: Speaker, track: rtc.RemoteAudioTrack) -> None:
        audio = rtc.AudioStream(track, sample_rate=16000, num_channels=1)
        stream = self._streaming_stt().stream()

        async def push() -> None:
            async for event in audio:
                stream.push_frame(event.frame)
            stream.end_input()

        pusher = asyncio.create_task(push())
        try:
            async for event in stream:
                if event.type != stt.SpeechEventType.FINAL_TRANSCRIPT or not event.alternatives:
                    continue
                text = event.alternatives[0].text.strip()
                if text:
                    self.recorder.on_item(ChatMessage(role="user", content=[text]), speaker=speaker)
        except Exception:
            logger.exception("the scribe stopped transcribing %s", speaker.identity)
        finally:
            pusher.cancel()
            with contextlib.suppress(Exception):
                await stream.aclose()
                await audio.aclose()

    async def _attribute(self, value: str) -> None:
        try:
            await self.room.local_participant.set_attributes({HANDOFF_ATTRIBUTE: value})
        except Exception:
            logger.warning("could not set the handoff attribute", exc_info=True)

    async def aclose(self) -> None:
        self.room.off("participant_connected", self._on_participant)
        self.room.off("track_subscribed", self._on_track)
        tasks = [t for t in (self._waiting, *self._scribes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
