"""One conversation as the worker runs it: providers, lifecycle reports, transcript recording.

Shared by the one-to-one and the conference entrypoints; they differ in how
the session hears the room (one linked visitor, or everyone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from django.conf import settings
from livekit import rtc
from livekit.agents import Agent, AgentSession, AutoSubscribe, JobContext
from livekit.agents.llm import ChatContext, ChatMessage
from livekit.agents.types import ATTRIBUTE_AGENT_STATE
from livekit.agents.voice import events as ev

from agentconnect.metrics import observe_turn

from .backchannel import BackchannelTolerantAgent
from .reporting import db, session_for_room

logger = logging.getLogger("agentconnect.worker")

USAGE_FLUSH_SECONDS = 2.0


# livekit-agents' session host answers requests on the room's `lk.agent.session` topic
# from any participant (the agent's instructions, its chat history, text turns to run,
# muting its captions) and sends every session event to the whole room. Visitors may
# publish data (text streams), so with it on a visitor could read the system prompt;
# the widget needs none of it, and each event cost the job's event loop a data send.
SESSION_HOST = False


class BadConfig(ValueError):
    """The dispatch metadata is not the configuration snapshot the API sends."""


def job_config(ctx: JobContext) -> dict[str, Any]:
    """The configuration snapshot the API resolved, sent as dispatch metadata."""
    try:
        config = json.loads(ctx.job.metadata or "{}")
    except json.JSONDecodeError as exc:
        raise BadConfig(f"The agent's configuration (dispatch metadata) is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise BadConfig("The agent's configuration (dispatch metadata) is not a JSON object.")
    return config


INTERRUPTED_MARK = " [interrupted]"


def resume_context(turns: list[dict[str, Any]], *, named: bool = False) -> ChatContext:
    """The conversation so far, from the stored turns, as a replacement agent's chat context.

    A reply the visitor cut off is marked in its text as well as flagged: the
    LLM sees only the text, and should know the visitor did not hear the rest.
    `named` (a conference): each person's words carry their name, "Name: words",
    as the conference agent's own context has them.
    """
    chat_ctx = ChatContext.empty()
    for turn in turns:
        role: Literal["user", "assistant"] = "assistant" if turn["role"] == "assistant" else "user"
        text = str(turn["text"])
        if turn["interrupted"] and role == "assistant":
            text += INTERRUPTED_MARK
        if named and role == "user" and turn.get("speaker_name"):
            text = f"{turn['speaker_name']}: {text}"
        chat_ctx.add_message(role=role, content=text, interrupted=bool(turn["interrupted"]))
    return chat_ctx


def missing_turns(turns: list[dict[str, Any]]) -> int:
    """How many sequence numbers are missing before the last stored turn."""
    return turns[-1]["sequence"] - len(turns) if turns else 0


@dataclass
class Speaker:
    identity: str
    name: str


def usage_totals(session: AgentSession) -> dict[str, float]:
    totals = {
        "llm_prompt_tokens": 0.0,
        "llm_completion_tokens": 0.0,
        "stt_audio_seconds": 0.0,
        "tts_characters": 0.0,
        "tts_audio_seconds": 0.0,
    }
    from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage

    for usage in session.usage.model_usage:
        if isinstance(usage, LLMModelUsage):
            totals["llm_prompt_tokens"] += usage.input_tokens
            totals["llm_completion_tokens"] += usage.output_tokens
        elif isinstance(usage, STTModelUsage):
            totals["stt_audio_seconds"] += usage.audio_duration
        elif isinstance(usage, TTSModelUsage):
            totals["tts_characters"] += usage.characters_count
            totals["tts_audio_seconds"] += usage.audio_duration
    return {k: round(v, 3) for k, v in totals.items()}


@dataclass
class TranscriptRecorder:
    """Writes each conversation item as a transcript turn, in order, off the audio path."""

    session_pk: int
    agent_speaker: Speaker
    user_speaker: Speaker
    _queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    _writer: asyncio.Task[None] | None = None
    _last_user_stopped: float | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="transcript-writer")

    def on_item(self, item: Any, speaker: Speaker | None = None) -> None:
        if not isinstance(item, ChatMessage) or item.role not in ("user", "assistant"):
            return
        # conference turns show the LLM "Name: words"; the transcript stores the words
        # (extra["transcript_text"]) and the name in the speaker columns
        text = str(item.extra.get("transcript_text") or item.text_content or "").strip()
        if not text:
            return
        m = item.metrics or {}
        metrics: dict[str, float] = {}
        if item.role == "user":
            who = speaker or self.user_speaker
            for name in ("end_of_turn_delay", "transcription_delay"):
                if name in m:
                    metrics[name] = m[name]
            self._last_user_stopped = m.get("stopped_speaking_at") or self._last_user_stopped
        else:
            who = self.agent_speaker
            if "llm_node_ttft" in m:
                metrics["llm_ttft"] = m["llm_node_ttft"]
            if "tts_node_ttfb" in m:
                metrics["tts_ttfb"] = m["tts_node_ttfb"]
            started = m.get("started_speaking_at")
            if started and self._last_user_stopped and started >= self._last_user_stopped:
                metrics["response_latency"] = started - self._last_user_stopped
                self._last_user_stopped = None
        self._queue.put_nowait(
            {
                "role": item.role,
                "text": text,
                "speaker_identity": who.identity,
                "speaker_name": who.name,
                "started_at": m.get("started_speaking_at") or item.created_at,
                "ended_at": m.get("stopped_speaking_at"),
                "interrupted": bool(item.interrupted),
                "metrics": metrics,
            }
        )

    async def _write_loop(self) -> None:
        from sessions.transcripts import transcript_turn_add

        while (turn := await self._queue.get()) is not None:
            try:
                await db(transcript_turn_add, session_pk=self.session_pk, **turn)
            except Exception:
                logger.exception("could not store a transcript turn", extra={"session_pk": self.session_pk})
            observe_turn(turn["metrics"])

    async def aclose(self) -> None:
        if self._writer is None:
            return
        self._queue.put_nowait(None)
        await asyncio.wait_for(self._writer, timeout=10)


class Conversation:
    """Lifecycle of one job: report active, run the AgentSession, report how it ended."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.config_error = ""
        try:
            self.config = job_config(ctx)
        except BadConfig as exc:
            self.config, self.config_error = {}, str(exc)
        self.room_name = ctx.job.room.name
        self.session_pk: int | None = None
        # A replacement for an agent that was lost mid-conversation: no greeting.
        self.recovering = False
        # A newer agent took over this session: leave without ending it.
        self.superseded = False
        self._reported = asyncio.Event()
        # the identity this agent joined the room as; "" until it has joined
        self.joined_as = ""
        self._checks: set[asyncio.Task[None]] = set()
        self.session: AgentSession | None = None
        self.recorder: TranscriptRecorder | None = None
        self._error: str = ""
        self._finished = False
        self._usage_flushed_at = 0.0
        ctx.log_context_fields = {
            "session_id": self.config.get("session_id", ""),
            "room": self.room_name,
        }

    async def prepare(self) -> bool:
        """Find the session; False when there is none, or it has ended (a stale or foreign job),
        or when the job's configuration cannot be read (the session is failed with the reason)."""
        found = await db(session_for_room, room_name=self.room_name)
        if found is None:
            logger.warning("no live session for room %s; not joining", self.room_name)
            return False
        self.session_pk, self.recovering = found.pk, found.recovering
        # the process id lets an operator (and the crash tests) tell which process holds which room
        logger.info(
            "job for room %s in process %d%s",
            self.room_name,
            os.getpid(),
            " (replacing a lost agent)" if self.recovering else "",
            extra=self.ctx.log_context_fields,
        )
        self.ctx.add_shutdown_callback(self._on_shutdown)
        if self.config_error:
            await self.fail(self.config_error)
            return False
        return True

    async def resume_history(self, *, named: bool = False) -> ChatContext | None:
        """For a replacement agent: every stored turn as chat context (resume_context);
        None for a first agent."""
        from sessions.transcripts import transcript_for_resume

        if not self.recovering or self.session_pk is None:
            return None
        turns = await db(transcript_for_resume, session_pk=self.session_pk)
        if missing := missing_turns(turns):
            logger.warning(
                "resuming with %d stored turns; %d turn(s) missing from the transcript",
                len(turns),
                missing,
                extra=self.ctx.log_context_fields,
            )
        return resume_context(turns, named=named)

    async def fail(self, reason: str) -> None:
        """Record a failure the visitor can read, then end the job and its room."""
        logger.error("conversation failed: %s", reason, extra=self.ctx.log_context_fields)
        self._error = reason
        await self._finish()
        self.ctx.shutdown(reason)  # _on_shutdown deletes the room

    async def connect(self, *, auto_subscribe: AutoSubscribe) -> None:
        """Join the room and make the agent visible to everyone in it at once.

        livekit-server announces a participant that has published nothing only in
        3 s batches (pkg/rtc/room.go, subscriberUpdateInterval), while a change of
        attributes is broadcast immediately. Setting the agent's state attribute
        the moment it joins lets the visitor see the agent (and that it is
        initializing) ~1 round trip after the join instead of up to 3 s later or
        only once its session publishes audio. The framework updates the same
        attribute from then on (listening, thinking, speaking).
        """
        await self.ctx.connect(auto_subscribe=auto_subscribe)
        self.joined_as = self.ctx.room.local_participant.identity
        self.ctx.room.on("participant_connected", self._on_participant_connected)
        await self.ctx.room.local_participant.set_attributes({ATTRIBUTE_AGENT_STATE: "initializing"})

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT or self.superseded:
            return
        task = asyncio.create_task(self._leave_if_superseded(participant.identity), name="superseded-check")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _leave_if_superseded(self, other: str) -> None:
        """A second agent in the room: the database says which one holds the session.

        The newest dispatch wins, whatever the order the two joined in: a lost
        agent back after a partition may rejoin after its replacement did.
        This agent's own join report is awaited first, so a replacement is
        recorded as the holder before it compares.
        """
        from .reporting import session_held_by

        try:
            await asyncio.wait_for(self._reported.wait(), timeout=10)
        except TimeoutError:
            pass
        mine = self.ctx.room.local_participant.identity
        if self.session_pk is None or await db(session_held_by, session_pk=self.session_pk, identity=mine):
            logger.info(
                "agent %s joined; this agent holds the session", other, extra=self.ctx.log_context_fields
            )
            return
        logger.warning(
            "another agent (%s) holds this session now; leaving", other, extra=self.ctx.log_context_fields
        )
        self.superseded = True
        self.ctx.shutdown("a newer agent took over")

    async def report_joined(self) -> None:
        from sessions.services import session_agent_joined

        try:
            await db(
                session_agent_joined,
                room_name=self.room_name,
                identity=self.ctx.room.local_participant.identity,
                worker_id=self.ctx.worker_id,
            )
        finally:
            self._reported.set()

    def attach(self, session: AgentSession, *, user: Speaker) -> TranscriptRecorder:
        assert self.session_pk is not None
        self.session = session
        agent_speaker = Speaker(
            identity=self.ctx.room.local_participant.identity,
            name=str(self.config.get("agent_name") or "Agent"),
        )
        self.recorder = TranscriptRecorder(self.session_pk, agent_speaker, user)
        self.recorder.start()

        @session.on("conversation_item_added")
        def _on_item(event: ev.ConversationItemAddedEvent) -> None:
            assert self.recorder is not None
            self.recorder.on_item(event.item, speaker=self.speaker_for(event.item))

        @session.on("session_usage_updated")
        def _on_usage(event: ev.SessionUsageUpdatedEvent) -> None:
            if time.monotonic() - self._usage_flushed_at > USAGE_FLUSH_SECONDS:
                self._usage_flushed_at = time.monotonic()
                asyncio.create_task(self._flush_usage())

        @session.on("error")
        def _on_error(event: ev.ErrorEvent) -> None:
            error = event.error
            if getattr(error, "recoverable", True):
                logger.warning("provider error (recoverable): %r", error, extra=self.ctx.log_context_fields)

        @session.on("close")
        def _on_close(event: ev.CloseEvent) -> None:
            if event.error is not None:
                self._error = describe_error(event.error)
            self.ctx.shutdown(f"session closed: {event.reason.value}")

        return self.recorder

    def speaker_for(self, item: Any) -> Speaker | None:
        """The conference agent overrides this to attribute user turns; 1:1 has one visitor."""
        return None

    async def _flush_usage(self) -> None:
        from sessions.transcripts import session_usage_record

        if self.session is None or self.session_pk is None:
            return
        try:
            await db(session_usage_record, session_pk=self.session_pk, usage=usage_totals(self.session))
        except Exception:
            logger.exception("could not store usage", extra=self.ctx.log_context_fields)

    async def _finish(self) -> bool:
        """Report how the conversation ended; False when the report did not apply (a newer
        agent took over, or the session was declared lost and is being recovered)."""
        from sessions.services import session_agent_finished

        if self._finished or self.session_pk is None:
            return False
        self._finished = True
        if self.recorder is not None:
            await self.recorder.aclose()
        if self.superseded:
            return False  # the session, its usage and its room are the newer agent's now
        await self._flush_usage()
        return bool(
            await db(
                session_agent_finished,
                session_pk=self.session_pk,
                error=self._error,
                # Before it joined, the job held nothing another agent could take over. Once
                # joined it reports as that agent even when no longer connected: a lost agent
                # removed from the room (its replacement is on its way) must not end the session.
                identity=self.joined_as,
            )
        )

    async def _on_shutdown(self, reason: str) -> None:
        # Every way out of a job (visitor left, session error, drain timeout,
        # stop from the API) passes here: the database hears how it ended, and
        # only then is the room deleted. Deleted first (RoomIO's
        # delete_room_on_close), the agent's departure reached the API as a
        # webhook that could record "stopped" before this report of a failure.
        logger.info("job shutting down: %s", reason, extra=self.ctx.log_context_fields)
        if self.session is not None:
            try:
                await asyncio.wait_for(self.session.aclose(), timeout=5)
            except Exception:
                logger.warning("session did not close cleanly", exc_info=True)
        if not await self._finish():
            # The room still serves the conversation, with a newer agent (or one on its way).
            return
        try:
            await asyncio.wait_for(self.ctx.delete_room(), timeout=5)
        except Exception:
            logger.warning("could not delete the room", exc_info=True)


def describe_error(error: Any) -> str:
    """A reason a human can read: which provider failed, and how."""
    inner = getattr(error, "error", error)
    source = type(error).__name__.replace("Error", "").upper() or "agent"
    label = getattr(inner, "message", None) or str(inner) or type(inner).__name__
    return f"{source} provider failed: {label}"[:900]


def build_agent_session(config: dict[str, Any], providers: Any) -> AgentSession:
    from livekit.agents import APIConnectOptions
    from livekit.agents.voice.agent_session import SessionConnectOptions

    # Each provider call is already retried by its plugin; a turn that still
    # fails leaves the visitor with silence. After AGENT_PROVIDER_FAILURES_TO_END
    # such turns in a row the session closes with the error, and the database
    # records `failed` with the reason instead of an agent that no longer answers.
    failures = max(settings.AGENT_PROVIDER_FAILURES_TO_END, 1)
    # A provider that stops answering is given up on after this long per attempt.
    per_call = APIConnectOptions(timeout=settings.AGENT_PROVIDER_TIMEOUT_SECONDS)
    return AgentSession(
        **providers.session_kwargs(),
        conn_options=SessionConnectOptions(
            stt_conn_options=per_call,
            llm_conn_options=per_call,
            tts_conn_options=per_call,
            max_unrecoverable_errors=failures - 1,
        ),
    )


def instructions_for(config: dict[str, Any]) -> str:
    return str(config.get("system_prompt") or settings.AGENT_SYSTEM_PROMPT)


def agent_for(config: dict[str, Any], history: ChatContext | None = None) -> Agent:
    if history is None:
        return BackchannelTolerantAgent(instructions=instructions_for(config))
    return BackchannelTolerantAgent(instructions=instructions_for(config), chat_ctx=history)


def resume_line(config: dict[str, Any]) -> str:
    return str(config.get("resume_message") or settings.AGENT_RESUME_MESSAGE)


async def wait_for_identity(ctx: JobContext, identity: str, timeout: float) -> rtc.RemoteParticipant | None:
    try:
        return await asyncio.wait_for(ctx.wait_for_participant(identity=identity), timeout)
    except TimeoutError:
        return None
