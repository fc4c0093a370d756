"""The agent's tools: company HTTP tools as the worker calls them, and a spoken conversation
in a real room where the LLM (the OpenAI stub, through the real plugin) calls each tool."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import ToolError

from tests.tool_server import ToolServer
from voiceagents.worker.tools import SIGNATURE_HEADER, TIMESTAMP_HEADER, HttpToolSpec, http_tool_call

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
