"""The one-to-one agent with each cloud provider, through the real livekit plugins,
pointed at local stub servers that speak OpenAI's, Groq's and Deepgram's wire protocols.

Also: a provider that errors or hangs mid-conversation ends the session `failed`
with a readable reason — never `active` with a dead agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sessions.models import AgentStatus, ConversationSession, TranscriptTurn
from stubs.server import StubServer
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker
from tests.visitor import Visitor
from voiceagents.providers.offline_tts import synthesize_pcm

from .conftest import start_agent_worker
from .test_voice_e2e import SENTENCE, converse, start_session, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = StubServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub_worker(
    stub: StubServer, django_db_setup: Any, django_db_blocker: Any, live_server: Any
) -> Iterator[Process]:
    """One worker for the module, every cloud provider's base URL pointing at the stub."""
    with django_db_blocker.unblock():
        proc = start_agent_worker(
            OPENAI_API_KEY="test-key",
            OPENAI_BASE_URL=stub.openai_base_url,
            GROQ_API_KEY="test-key",
            GROQ_BASE_URL=stub.groq_base_url,
            DEEPGRAM_API_KEY="test-key",
            DEEPGRAM_BASE_URL=stub.deepgram_base_url,
            # The stubs answer at once; a hung one is given up on quickly.
            AGENT_PROVIDER_TIMEOUT_SECONDS="4",
        )
    yield proc
    proc.stop()
    print(f"--- worker output ---\n{proc.tail(150)}")


@pytest.fixture(autouse=True)
def reset_stub(stub: StubServer) -> None:
    stub.state.apply_control({"reset": True})


@pytest.mark.parametrize(
    "providers, endpoints",
    [
        pytest.param(
            {"llm_provider": "openai", "stt_provider": "openai", "tts_provider": "openai"},
            {"chat", "transcriptions", "speech"},
            id="openai-llm-stt-tts",
        ),
        pytest.param(
            {
                "llm_provider": "groq",
                "llm_model": "llama-3.1-8b-instant",
                "stt_provider": "groq",
                "tts_provider": "openai",
            },
            {"chat", "transcriptions", "speech"},
            id="groq-llm-stt",
        ),
        pytest.param(
            {"llm_provider": "openai", "stt_provider": "deepgram", "tts_provider": "openai"},
            {"chat", "listen", "speech"},
            id="deepgram-stt",
        ),
    ],
)
def test_conversation_through_provider_stubs(
    stub: StubServer, stub_worker: Process, providers: dict[str, str], endpoints: set[str]
) -> None:
    agent = VoiceAgentFactory(greeting_message="Hello from the agent.", tts_voice="nova", **providers)
    session_id = f"stub-{providers['llm_provider']}-{providers['stt_provider']}"
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> None:
            visitor = await converse(body)
            await visitor.leave()

        run_async(scenario(), timeout=180)
        wait_for(lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped")

    for endpoint in endpoints:
        assert stub.state.count(endpoint) > 0, f"the plugin never called {endpoint}"
    chat = stub.state.last("chat")
    assert chat is not None
    if providers["llm_provider"] == "groq":
        assert chat.path.startswith("/openai/v1/")
        assert chat.body["model"] == "llama-3.1-8b-instant"
    assert chat.headers.get("Authorization") == "Bearer test-key"
    assert "You are a test agent." in str(chat.body["messages"])  # the system prompt
    speech = stub.state.last("speech")
    assert speech is not None and speech.body["voice"] == "nova"

    turns = list(TranscriptTurn.objects.filter(session__session_id=session_id).order_by("sequence"))
    user = [t for t in turns if t.role == "user"]
    assert user and user[0].text.strip(), [t.text for t in turns]
    # The visitor's words went through the provider's STT into the LLM's prompt:
    # the stub LLM answers with exactly what it was told.
    replies = [t for t in turns if t.role == "assistant" and t.sequence > user[0].sequence]
    assert replies and replies[0].text == f"Stub reply to: {user[0].text}", [t.text for t in turns]
    assert replies[0].metrics.get("llm_ttft") is not None


def converse_until_failed(body: dict[str, Any], session_id: str, timeout: float) -> None:
    async def scenario() -> None:
        visitor = Visitor()
        await visitor.join(body["livekit_url"], body["user_token"])
        await asyncio.wait_for(visitor.joined_agent.wait(), 30)
        await visitor.wait_for_agent_speech(after=0, timeout=60)
        await visitor.wait_until_agent_quiet()
        pcm, rate = synthesize_pcm(SENTENCE)
        await visitor.speak(pcm, rate)
        await asyncio.to_thread(
            wait_for, lambda: status(session_id) == AgentStatus.FAILED, timeout=timeout, what="failed"
        )
        await visitor.leave()

    run_async(scenario(), timeout=timeout + 120)


def test_llm_errors_mid_conversation_fail_the_session_readably(
    stub: StubServer, stub_worker: Process
) -> None:
    agent = VoiceAgentFactory(llm_provider="openai", stt_provider="openai", tts_provider="openai")
    with celery_worker():
        body = start_session(agent, "stub-llm-error")
        stub.state.apply_control({"endpoint": "chat", "mode": "error", "status": 500})
        converse_until_failed(body, "stub-llm-error", timeout=60)
    session = ConversationSession.objects.get(session_id="stub-llm-error")
    assert session.failure_reason.startswith("LLM provider failed"), session.failure_reason
    assert stub.state.count("chat") >= 2  # the plugin retried before giving up


def test_llm_hanging_mid_conversation_fails_the_session(stub: StubServer, stub_worker: Process) -> None:
    agent = VoiceAgentFactory(llm_provider="openai", stt_provider="openai", tts_provider="openai")
    with celery_worker():
        body = start_session(agent, "stub-llm-hang")

        async def scenario() -> None:
            visitor = Visitor()
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await visitor.wait_for_agent_speech(after=0, timeout=60)
            await visitor.wait_until_agent_quiet()
            stub.state.apply_control({"endpoint": "chat", "mode": "hang"})
            pcm, rate = synthesize_pcm(SENTENCE)
            await visitor.speak(pcm, rate)
            await asyncio.to_thread(
                wait_for, lambda: status("stub-llm-hang") == AgentStatus.FAILED, timeout=100, what="failed"
            )
            await visitor.leave()

        try:
            run_async(scenario(), timeout=180)
        finally:
            stub.release_hangs()
    session = ConversationSession.objects.get(session_id="stub-llm-hang")
    assert session.failure_reason.startswith("LLM provider failed"), session.failure_reason
