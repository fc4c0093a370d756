"""The one-to-one agent end to end, in a real room, with a real worker process.

API → Celery worker → livekit-server → `run_voice_agent` worker → a simulated
visitor (livekit rtc SDK) that hears the greeting, speaks real (espeak-ng)
speech and hears the agent's reply; the transcript lands in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from sessions import livekit_gateway as lk
from sessions.models import AgentStatus, ConversationSession, TranscriptTurn
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker, test_database_env
from tests.visitor import Visitor
from voiceagents.providers.offline_tts import synthesize_pcm

from .conftest import start_agent_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

SENTENCE = "hello world"

OFFLINE = {"llm_provider": "echo", "stt_provider": "local", "tts_provider": "local"}


def start_session(agent: Any, session_id: str) -> dict[str, Any]:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=agent.company.widget_key)
    response = client.post(
        "/api/v1/livekit-agents/start-voice-session",
        {
            "session_id": session_id,
            "agent_id": agent.pk,
            "company_id": agent.company_id,
            "participant_name": "Maya",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def stop_session(agent: Any, session_id: str) -> None:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=agent.company.widget_key)
    assert (
        client.post(
            "/api/v1/livekit-agents/stop-voice-session", {"session_id": session_id}, format="json"
        ).status_code
        == 200
    )


def status(session_id: str) -> str:
    return ConversationSession.objects.get(session_id=session_id).agent_status


async def converse(body: dict[str, Any], sentence: str = SENTENCE) -> Visitor:
    """Join, hear the greeting, say a sentence, hear the reply."""
    visitor = Visitor("maya")
    await visitor.join(body["livekit_url"], body["user_token"])
    await asyncio.wait_for(visitor.joined_agent.wait(), 30)
    await visitor.wait_for_agent_speech(after=0, timeout=60)  # the greeting
    await visitor.wait_until_agent_quiet()
    pcm, rate = synthesize_pcm(sentence)
    ended = await visitor.speak(pcm, rate)
    await visitor.wait_for_agent_speech(after=ended, timeout=60)
    await visitor.wait_until_agent_quiet()
    return visitor


def test_offline_conversation_end_to_end(live_server: Any, voice_worker: Process) -> None:
    agent = VoiceAgentFactory(greeting_message="Hello, how can I help?", **OFFLINE)
    with celery_worker():
        body = start_session(agent, "e2e-offline")

        async def scenario() -> None:
            visitor = await converse(body)
            assert await asyncio.to_thread(status, "e2e-offline") == AgentStatus.ACTIVE
            await visitor.leave()

        run_async(scenario(), timeout=180)
        wait_for(lambda: status("e2e-offline") == AgentStatus.STOPPED, timeout=30, what="session stopped")

    session = ConversationSession.objects.get(session_id="e2e-offline")
    assert session.agent_started_at and session.agent_stopped_at
    assert session.agent_worker_id.startswith("AW_"), session.agent_worker_id
    turns = list(TranscriptTurn.objects.filter(session=session).order_by("sequence"))
    roles = [t.role for t in turns]
    assert roles[0] == "assistant" and turns[0].text == "Hello, how can I help?"
    user_turns = [t for t in turns if t.role == "user"]
    assert user_turns, roles
    # pocketsphinx on espeak speech sent through a loaded machine's real-time audio
    # path mishears a word now and then; one of the two must come through.
    assert {"hello", "world"} & set(user_turns[0].text.lower().split()), user_turns[0].text
    assert user_turns[0].speaker_name == "Maya"
    replies = [t for t in turns if t.role == "assistant" and t.sequence > user_turns[0].sequence]
    assert replies and replies[0].text.lower().startswith("you said")
    assert "response_latency" in replies[0].metrics or "llm_ttft" in replies[0].metrics
    assert session.usage.get("tts_characters", 0) > 0

    # The worker's own Prometheus endpoint aggregates what its job process measured.
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{voice_worker.metrics_port}/metrics", timeout=10) as r:
        exposition = r.read().decode()
    assert 'agentconnect_turn_latency_seconds_count{stage="llm_ttft"}' in exposition, exposition[:2000]
    assert body["room_name"] not in lk.rooms_existing([body["room_name"]]) or not [
        p for p in lk.room_participants(body["room_name"]) if p.kind == 4
    ]


def test_a_visitor_can_neither_read_nor_drive_the_agent_session(
    live_server: Any, voice_worker: Process
) -> None:
    """The framework's session host would answer any participant on `lk.agent.session`
    (the system prompt among its answers) and send it every session event."""
    from livekit.agents.voice.remote_session import TOPIC_SESSION_MESSAGES, RemoteSession

    agent = VoiceAgentFactory(
        system_prompt="Internal: never offer refunds.", greeting_message="Hello.", **OFFLINE
    )
    with celery_worker():
        body = start_session(agent, "e2e-session-host")

        async def scenario() -> tuple[list[str], BaseException | None]:
            visitor = Visitor()
            streams: list[str] = []
            visitor.room.register_byte_stream_handler(
                TOPIC_SESSION_MESSAGES, lambda reader, identity: streams.append(identity)
            )
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            # the greeting: agent state changes and a conversation item, each an event
            await visitor.wait_for_agent_speech(after=0, timeout=60)
            await visitor.wait_until_agent_quiet()
            assert visitor.agent_identity
            visitor.room.unregister_byte_stream_handler(TOPIC_SESSION_MESSAGES)  # the client's own
            remote = RemoteSession.from_room(visitor.room, visitor.agent_identity)
            await remote.start()
            refused: BaseException | None = None
            try:
                # an unanswered request can only be timed out
                await remote.wait_for_ready(timeout=3.0)
            except (TimeoutError, RuntimeError) as exc:
                refused = exc
            finally:
                await remote.aclose()
                await visitor.leave()
            return streams, refused

        streams, refused = run_async(scenario(), timeout=120)
    assert refused is not None, "the agent answered a visitor's session request"
    assert streams == [], f"session events reached the visitor from {streams}"


def test_stop_voice_session_makes_the_agent_leave(live_server: Any, voice_worker: Process) -> None:
    agent = VoiceAgentFactory(**OFFLINE)
    with celery_worker():
        body = start_session(agent, "e2e-stop")

        async def scenario() -> None:
            visitor = Visitor()
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await asyncio.to_thread(
                wait_for, lambda: status("e2e-stop") == AgentStatus.ACTIVE, timeout=15, what="active"
            )
            await asyncio.to_thread(stop_session, agent, "e2e-stop")
            await asyncio.to_thread(
                wait_for, lambda: status("e2e-stop") == AgentStatus.STOPPED, timeout=30, what="stopped"
            )
            left = asyncio.Event()
            visitor.room.on("disconnected", lambda *_: left.set())
            if visitor.room.isconnected():
                await asyncio.wait_for(left.wait(), 15)

        run_async(scenario(), timeout=120)
    assert body["room_name"] not in lk.rooms_existing([body["room_name"]])


def test_sigterm_drains_then_exits_zero_and_hands_the_conversation_over(
    live_server: Any, transactional_db: Any
) -> None:
    worker = start_agent_worker(AGENT_DRAIN_TIMEOUT_SECONDS="8")
    agent = VoiceAgentFactory(**OFFLINE)
    try:
        with celery_worker():
            body = start_session(agent, "e2e-drain")

            async def scenario() -> float:
                visitor = Visitor()
                await visitor.join(body["livekit_url"], body["user_token"])
                await asyncio.wait_for(visitor.joined_agent.wait(), 30)
                await visitor.wait_for_agent_speech(after=0, timeout=60)
                await visitor.wait_until_agent_quiet()
                worker.signal(signal.SIGTERM, group=False)
                signalled = time.monotonic()
                await asyncio.to_thread(worker.wait_for_output, "draining", 10)
                # The conversation goes on while the worker drains.
                pcm, rate = synthesize_pcm(SENTENCE)
                ended = await visitor.speak(pcm, rate)
                await visitor.wait_for_agent_speech(after=ended, timeout=30)
                assert await asyncio.to_thread(status, "e2e-drain") == AgentStatus.ACTIVE
                return signalled

            signalled = run_async(scenario(), timeout=180)
            code = worker.proc.wait(timeout=60)
            assert code == 0, worker.tail()
            assert time.monotonic() - signalled >= 7  # it waited for the drain timeout
            # The conversation outlasted the drain: handed over for another worker to take
            # (none runs here), not cut off as stopped.
            wait_for(lambda: status("e2e-drain") == AgentStatus.RECOVERING, timeout=30, what="handed over")
            assert "moving the remaining conversations" in "\n".join(worker.lines)
    finally:
        worker.stop()
        print(f"--- worker output ---\n{worker.tail(150)}")


def test_worker_exits_non_zero_when_livekit_is_unreachable(transactional_db: Any) -> None:
    env = test_database_env()
    env.update(LIVEKIT_URL="ws://127.0.0.1:9", AGENT_WORKER_MAX_RETRY="1")
    proc = Process([sys.executable, "manage.py", "run_voice_agent", "dev"], env, "voice agent")
    code = proc.proc.wait(timeout=90)
    proc.stop()
    assert code != 0
    assert "failed to connect to livekit" in proc.tail().lower()
