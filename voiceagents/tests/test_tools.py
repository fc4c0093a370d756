"""The agent's tools: company HTTP tools as the worker calls them, and a spoken conversation
in a real room where the LLM (the OpenAI openai_stub, through the real plugin) calls each tool."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import ToolError

from sessions.models import END_REASON_AGENT, AgentStatus, ConversationSession, ToolCall, TranscriptTurn
from stubs.server import StubServer
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker
from tests.tool_server import ToolServer
from tests.visitor import Visitor
from voiceagents.models import CompanyTool
from voiceagents.providers.offline_tts import synthesize_pcm
from voiceagents.worker.tools import SIGNATURE_HEADER, TIMESTAMP_HEADER, HttpToolSpec, http_tool_call

from .conftest import start_agent_worker
from .test_voice_e2e import SENTENCE, start_session, status

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"}},
    "required": ["order"],
    "additionalProperties": False,
}
SECRET = "whsec_test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServer]:
    server = ToolServer(tmp_path_factory.mktemp("tools"), big_bytes=4000).start()
    yield server
    server.stop()


def spec(server: ToolServer, path: str, **kw: Any) -> HttpToolSpec:
    return HttpToolSpec(
        name="order_status",
        description="Look up an order.",
        parameters=ORDER_SCHEMA,
        url=server.base_url + path,
        secret=SECRET,
        **{"timeout": 2.0, "max_bytes": 1024, **kw},
    )


@pytest.fixture
def tool_settings(settings: Any, tool_server: ToolServer) -> Any:
    settings.COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES = True
    settings.COMPANY_TOOLS_CA_FILE = str(tool_server.cert)
    return settings


def call(tool: HttpToolSpec, arguments: dict[str, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(http_tool_call(tool, arguments, session_id="s-1"), 20))


# -- the HTTP call ------------------------------------------------------------------------


def test_a_tool_call_is_a_signed_post_and_returns_the_json_answer(
    tool_settings: Any, tool_server: ToolServer
) -> None:
    before = len(tool_server.requests)
    assert call(spec(tool_server, "/ok"), {"order": "A-1234"}) == {"order": "A-1234", "status": "shipped"}
    request = tool_server.requests[before]
    assert json.loads(request.body) == {"order": "A-1234"}
    timestamp = request.headers[TIMESTAMP_HEADER]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == "sha256=" + expected
    assert request.headers["X-AgentConnect-Session"] == "s-1"
    assert SECRET not in json.dumps(request.headers)


@pytest.mark.parametrize(
    "path, kw, arguments, says",
    [
        ("/fail", {}, {"order": "A-1"}, "HTTP 500"),
        ("/slow", {"timeout": 0.5}, {"order": "A-1"}, "did not answer within 0.5 seconds"),
        ("/big", {}, {"order": "A-1"}, "larger than 1024 bytes"),
        ("/garbage", {}, {"order": "A-1"}, "not valid JSON"),
        ("/ok", {}, {"order": "nope"}, "do not fit the tool"),
        ("/ok", {}, {}, "do not fit the tool"),
    ],
    ids=["server-error", "timeout", "oversized", "garbage", "bad-argument", "missing-argument"],
)
def test_a_failing_tool_is_an_error_the_llm_can_speak_about(
    tool_settings: Any,
    tool_server: ToolServer,
    path: str,
    kw: dict[str, Any],
    arguments: dict[str, Any],
    says: str,
) -> None:
    before = len(tool_server.requests)
    with pytest.raises(ToolError) as raised:
        call(spec(tool_server, path, **kw), arguments)
    assert says in raised.value.message
    if "fit the tool" in says:
        assert len(tool_server.requests) == before  # never sent


def test_private_addresses_are_refused_unless_allowed(settings: Any, tool_server: ToolServer) -> None:
    settings.COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES = False
    settings.COMPANY_TOOLS_CA_FILE = str(tool_server.cert)
    before = len(tool_server.requests)
    for url in (tool_server.base_url + "/ok", "https://localhost:9/ok", "https://169.254.169.254/latest"):
        with pytest.raises(ToolError, match="private, loopback or link-local"):
            call(HttpToolSpec("t", "", ORDER_SCHEMA, url, SECRET), {"order": "A-1"})
    assert len(tool_server.requests) == before


def test_a_name_resolving_to_a_private_address_is_refused_at_connect(
    settings: Any, tool_server: ToolServer
) -> None:
    import socket

    host = socket.gethostname()  # a name (not an address literal) passes the URL check
    if not host or host == "localhost" or socket.gethostbyname(host) != "127.0.0.1":
        pytest.skip("this machine's name does not resolve to loopback")
    settings.COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES = False
    before = len(tool_server.requests)
    with pytest.raises(ToolError, match="could not be reached"):
        call(
            HttpToolSpec("t", "", ORDER_SCHEMA, f"https://{host}:{tool_server.port}/ok", SECRET),
            {"order": "A-1"},
        )
    assert len(tool_server.requests) == before


# -- a spoken conversation in a real room ---------------------------------------------------


@pytest.fixture(scope="module")
def tools_worker(
    openai_stub: StubServer,
    tool_server: ToolServer,
    django_db_setup: Any,
    django_db_blocker: Any,
    live_server: Any,
) -> Iterator[Process]:
    with django_db_blocker.unblock():
        proc = start_agent_worker(
            OPENAI_API_KEY="test-key",
            OPENAI_BASE_URL=openai_stub.openai_base_url,
            AGENT_PROVIDER_TIMEOUT_SECONDS="8",
            COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES="true",
            COMPANY_TOOLS_CA_FILE=str(tool_server.cert),
        )
    yield proc
    proc.stop()
    print(f"--- worker output ---\n{proc.tail(200)}")


def _assistant_after(session_id: str, sequence: int, contains: str) -> TranscriptTurn | None:
    return (
        TranscriptTurn.objects.filter(
            session__session_id=session_id, role="assistant", sequence__gt=sequence, text__icontains=contains
        )
        .order_by("sequence")
        .first()
    )


def _last_sequence(session_id: str) -> int:
    turn = TranscriptTurn.objects.filter(session__session_id=session_id).order_by("-sequence").first()
    return turn.sequence if turn else 0


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_tools_in_a_spoken_conversation(
    openai_stub: StubServer, tools_worker: Process, tool_server: ToolServer
) -> None:
    """The visitor's words (the stub STT's fixed transcript) trigger each tool call in the stub
    LLM; each answer or error is spoken, the conversation goes on, and end_call ends it."""
    openai_stub.state.reset()
    openai_stub.state.tool_triggers = {
        "where is my order": {"name": "order_status", "arguments": {"order": "A-1234"}},
        "check the stock": {"name": "stock_level", "arguments": {"order": "A-1"}},
        "slow lookup": {"name": "slow_lookup", "arguments": {"order": "A-1"}},
        "big report": {"name": "big_report", "arguments": {"order": "A-1"}},
        "leave a message": {
            "name": "take_message",
            "arguments": {"name": "Maya", "contact": "maya@example.com", "message": "Call me back"},
        },
        "goodbye": {"name": "end_call", "arguments": {}},
    }
    agent = VoiceAgentFactory(
        greeting_message="Hello from the agent.",
        llm_provider="openai",
        stt_provider="openai",
        tts_provider="openai",
        vad_enabled=True,
        tool_end_call=True,
        tool_take_message=True,
    )
    made = [
        ("order_status", "/ok", 5.0, 65536),
        ("stock_level", "/fail", 5.0, 65536),
        ("slow_lookup", "/slow", 1.0, 65536),
        ("big_report", "/big", 5.0, 1024),
    ]
    for name, path, timeout, size in made:
        tool = CompanyTool.objects.create(
            company=agent.company,
            name=name,
            description=f"The {name} tool.",
            parameters=ORDER_SCHEMA,
            url=tool_server.base_url + path,
            signing_secret=SECRET,
            timeout_seconds=timeout,
            max_response_bytes=size,
        )
        agent.http_tools.add(tool)
    session_id = "tools-e2e"
    steps = [
        ("where is my order", "shipped"),
        ("check the stock", "HTTP 500"),
        ("slow lookup", "did not answer within 1 seconds"),
        ("big report", "larger than 1024 bytes"),
        ("hello again", "Stub reply to: hello again"),  # the conversation still works
        ("please leave a message", "message is saved"),
        ("goodbye", "say a short goodbye"),
    ]
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> None:
            visitor = Visitor("maya")
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await visitor.wait_for_agent_speech(after=0, timeout=60)  # the greeting
            await visitor.wait_until_agent_quiet()
            pcm, rate = synthesize_pcm(SENTENCE)
            for phrase, expected in steps:
                openai_stub.state.fixed_transcript = phrase
                before = await asyncio.to_thread(_last_sequence, session_id)
                await visitor.speak(pcm, rate)
                await asyncio.to_thread(
                    wait_for,
                    lambda: _assistant_after(session_id, before, expected),
                    timeout=60,
                    what=f"the agent speaking about {expected!r}",
                )
                if phrase != "goodbye":
                    await visitor.wait_until_agent_quiet()
            await asyncio.to_thread(
                wait_for, lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped"
            )
            await visitor.leave()

        run_async(scenario(), timeout=400)

    session = ConversationSession.objects.get(session_id=session_id)
    assert session.agent_status == AgentStatus.STOPPED
    assert session.end_reason == END_REASON_AGENT
    calls = {c.name: c for c in ToolCall.objects.filter(session=session)}
    assert calls["order_status"].result == {"order": "A-1234", "status": "shipped"}
    assert calls["order_status"].arguments == {"order": "A-1234"} and not calls["order_status"].error
    assert "HTTP 500" in calls["stock_level"].error
    assert "did not answer" in calls["slow_lookup"].error and calls["slow_lookup"].duration_ms >= 900
    assert "larger than" in calls["big_report"].error
    assert "end_call" in calls
    message = session.messages.get()
    assert (message.name, message.contact, message.message) == ("Maya", "maya@example.com", "Call me back")
    # the company's endpoint received a correctly signed request
    request = next(r for r in tool_server.requests if r.path == "/ok")
    timestamp = request.headers[TIMESTAMP_HEADER]
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == "sha256=" + mac
    # the stub LLM was offered exactly the profile's tools
    offered = {t["function"]["name"] for t in openai_stub.state.requests("chat")[-1].body["tools"]}
    assert offered == {"end_call", "take_message", "order_status", "stock_level", "slow_lookup", "big_report"}
    # the secret never reached the worker's logs
    assert SECRET not in tools_worker.tail(100000)
