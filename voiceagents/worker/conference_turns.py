"""Turns in a group: who said what, what the LLM sees, and when the agent answers.

`Floor` is shared by both STT strategies. Every utterance becomes a user
message whose text starts with the speaker's name ("Maya: ..."), so the LLM
knows who spoke and can answer "Tom, ..."; the message's `extra` carries the
identity, the display name and the bare words, which is what the transcript
stores. The reply policy decides whether the utterance gets an answer;
utterances that don't still go into the context and the transcript.

"per_participant": a `ParticipantListener` per person runs their own STT
stream (with its VAD, when the STT does not stream) on the mixer's tap of
their microphone, and hands the Floor speech starts, ends and final
transcripts. The Floor answers once nobody is speaking and the configured
endpointing delay has passed since the last speech ended, so two people
talking at once each get their own transcript and the group one answer.

"mixed": the AgentSession hears the mix and detects turns itself; each
transcript segment is named after whoever was loudest in the mix while it was
spoken (`ConferenceAgent.stt_node`, conference.py), and
`ConferenceAgent.on_user_turn_completed` applies the policy to the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, llm, stt

from .conference_policy import ReplyPolicy
from .conversation import Speaker, TranscriptRecorder

logger = logging.getLogger("agentconnect.worker.conference")

# silence pushed into a departing speaker's STT so their last words end as an utterance
FLUSH_SILENCE_SECONDS = 1.0
LISTENER_CLOSE_TIMEOUT = 10.0


def user_message(
    speaker: Speaker, text: str, *, started_at: float | None, ended_at: float | None
) -> llm.ChatMessage:
    metrics: llm.MetricsReport = {}
    if started_at:
        metrics["started_speaking_at"] = started_at
    if ended_at:
        metrics["stopped_speaking_at"] = ended_at
        metrics["transcription_delay"] = max(0.0, time.time() - ended_at)
    return llm.ChatMessage(
        role="user",
        content=[f"{speaker.name}: {text}"],
        extra={"speaker_identity": speaker.identity, "speaker_name": speaker.name, "transcript_text": text},
        metrics=metrics,
    )


def tag(message: llm.ChatMessage, speaker: Speaker, transcript_text: str) -> None:
    """Who said a user message the framework made (mixed strategy), for the transcript.

    Only `extra` changes: the content already carries the names (they were put on
    the transcripts), and changing it here would throw away the framework's
    preemptive reply, which it checks against the content.
    """
    message.extra.update(
        speaker_identity=speaker.identity, speaker_name=speaker.name, transcript_text=transcript_text
    )


class Floor:
    def __init__(
        self,
        *,
        session: AgentSession,
        agent: Agent,
        recorder: TranscriptRecorder,
        policy: ReplyPolicy,
        names_in_room: Callable[[], dict[str, str]],
        allow_interruptions: bool,
        min_delay: float,
        max_delay: float,
    ) -> None:
        self.session = session
        self.agent = agent
        self.recorder = recorder
        self.policy = policy
        self._names_in_room = names_in_room
        self.allow_interruptions = allow_interruptions
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.speaking: dict[str, float] = {}  # identity -> when their speech started
        self.agent_spoke_last = False
        self._reply_due_since: float | None = None
        self._last_speech_end = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            self.agent_spoke_last = True

    # --- policy ---------------------------------------------------------------------

    def wants_reply(self, speaker: Speaker, text: str) -> bool:
        others = [name for identity, name in self._names_in_room().items() if identity != speaker.identity]
        return self.policy.should_reply(text, agent_spoke_last=self.agent_spoke_last, other_names=others)

    async def remember(self, message: llm.ChatMessage, speaker: Speaker) -> None:
        """Into the agent's context and the transcript, without asking for a reply."""
        async with self._lock:
            ctx = self.agent.chat_ctx.copy()
            ctx.insert(message)
            await self.agent.update_chat_ctx(ctx)
        self.recorder.on_item(message, speaker=speaker)
        self.agent_spoke_last = False

    # --- per-participant events -----------------------------------------------------

    def speech_started(self, speaker: Speaker) -> None:
        self.speaking[speaker.identity] = time.time()
        self._cancel_timer()
        if self.allow_interruptions and self.policy.policy == "always":
            # as in one-to-one: someone talking over the agent stops it. Under
            # when_addressed a side conversation must not; an addressed utterance does.
            self._interrupt()

    def speech_ended(self, speaker: Speaker, ended_at: float | None) -> None:
        self.speaking.pop(speaker.identity, None)
        self._last_speech_end = max(self._last_speech_end, ended_at or time.time())
        self._schedule()

    def speaker_gone(self, speaker: Speaker) -> None:
        self.speaking.pop(speaker.identity, None)
        self._schedule()

    async def utterance(
        self, speaker: Speaker, text: str, *, started_at: float | None, ended_at: float | None
    ) -> None:
        text = text.strip()
        if not text:
            return
        self.speaking.pop(speaker.identity, None)
        # the name they have now (a participant may rename themselves mid-conference)
        speaker = Speaker(speaker.identity, self._names_in_room().get(speaker.identity, speaker.name))
        message = user_message(speaker, text, started_at=started_at, ended_at=ended_at)
        reply = self.wants_reply(speaker, text)
        logger.info("%s: %s%s", speaker.name, text, "" if reply else " (no reply: not addressed)")
        await self.remember(message, speaker)
        if ended_at:
            self._last_speech_end = max(self._last_speech_end, ended_at)
        if reply:
            if self._reply_due_since is None:
                self._reply_due_since = time.time()
            if self.allow_interruptions and self.policy.policy != "always":
                self._interrupt()
        self._schedule()

    # --- answering ------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._reply_due_since is None:
            return
        self._cancel_timer()
        now = time.time()
        if self.speaking and now - self._reply_due_since < self.max_delay:
            # someone is still talking: answer when they stop, or at max_delay at the latest
            delay = self._reply_due_since + self.max_delay - now
        else:
            delay = max(0.0, self._last_speech_end + self.min_delay - now)
        self._timer = asyncio.get_running_loop().call_later(delay, self._answer)

    def _answer(self) -> None:
        self._timer = None
        if self._reply_due_since is None:
            return
        if self.speaking and time.time() - self._reply_due_since < self.max_delay:
            self._schedule()
            return
        self._reply_due_since = None
        try:
            self.session.generate_reply()
        except RuntimeError:
            logger.warning("could not reply: the session is closing")

    def _interrupt(self) -> None:
        if self.session.current_speech is None:
            return
        with contextlib.suppress(RuntimeError):  # an uninterruptible speech, or closing
            self.session.interrupt()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel_timer()
        self._reply_due_since = None
        self.session.off("conversation_item_added", self._on_item)


class ParticipantListener:
    """One person's own STT stream (and VAD); events go to the Floor with their name on them.

    With a `vad`, speech starts and ends come from it and only final transcripts
    from the STT: what a session does with a streaming STT when VAD turn
    detection is on. Without one, the STT's own events are used (a
    StreamAdapter's come from its VAD; a streaming STT's from its endpointing).
    """

    def __init__(
        self, speaker: Speaker, stt_engine: stt.STT, floor: Floor, *, sample_rate: int, vad: Any = None
    ) -> None:
        self.speaker = speaker
        self.sample_rate = sample_rate
        self.floor = floor
        self._stream = stt_engine.stream()
        self._vad_stream = vad.stream() if vad is not None else None
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._closed = False
        self._tasks = [asyncio.create_task(self._stt_events(), name=f"conference-stt-{speaker.identity}")]
        if self._vad_stream is not None:
            self._tasks.append(
                asyncio.create_task(self._vad_events(), name=f"conference-vad-{speaker.identity}")
            )

    def push(self, frame: rtc.AudioFrame) -> None:
        if self._closed:
            return
        self._stream.push_frame(frame)
        if self._vad_stream is not None:
            self._vad_stream.push_frame(frame)

    async def _stt_events(self) -> None:
        async for event in self._stream:
            try:
                await self._handle(event)
            except Exception:
                logger.exception("could not handle %s from %s", event.type, self.speaker.identity)

    async def _vad_events(self) -> None:
        from livekit.agents import vad

        assert self._vad_stream is not None
        async for event in self._vad_stream:
            if event.type == vad.VADEventType.START_OF_SPEECH:
                self._speech_started(time.time() - event.speech_duration)
            elif event.type == vad.VADEventType.END_OF_SPEECH:
                self._speech_ended(time.time() - event.silence_duration - event.inference_duration)

    def _speech_started(self, at: float) -> None:
        self._started_at = at
        self._ended_at = None
        self.floor.speech_started(self.speaker)

    def _speech_ended(self, at: float) -> None:
        self._ended_at = at
        self.floor.speech_ended(self.speaker, at)

    async def _handle(self, event: stt.SpeechEvent) -> None:
        kind = event.type
        if kind == stt.SpeechEventType.START_OF_SPEECH and self._vad_stream is None:
            self._speech_started(event.speech_start_time or time.time())
        elif kind == stt.SpeechEventType.END_OF_SPEECH and self._vad_stream is None:
            self._speech_ended(event.speech_end_time or time.time())
        elif kind == stt.SpeechEventType.FINAL_TRANSCRIPT and event.alternatives:
            text = event.alternatives[0].text
            ended = self._ended_at or event.speech_end_time or time.time()
            await self.floor.utterance(self.speaker, text, started_at=self._started_at, ended_at=ended)
            self._started_at = None

    async def aclose(self, *, flush: bool = True) -> None:
        """Stop listening; with `flush`, the words said just before leaving still count."""
        if self._closed:
            return
        if flush:
            silence = rtc.AudioFrame.create(self.sample_rate, 1, self.sample_rate // 50)
            for _ in range(int(FLUSH_SILENCE_SECONDS * 50)):
                self.push(silence)
        self._closed = True
        self._stream.end_input()
        if self._vad_stream is not None:
            self._vad_stream.end_input()
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), LISTENER_CLOSE_TIMEOUT)
        except (TimeoutError, Exception):
            for task in self._tasks:
                task.cancel()
        with contextlib.suppress(Exception):
            await self._stream.aclose()
        if self._vad_stream is not None:
            with contextlib.suppress(Exception):
                await self._vad_stream.aclose()
        self.floor.speaker_gone(self.speaker)
