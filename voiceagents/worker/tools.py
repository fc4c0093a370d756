"""The LLM's tools in a one-to-one conversation, as livekit-agents function tools.

Built-ins (end_call, take_message, transfer_to_human) are switched on per agent
profile; company HTTP tools are signed POSTs to the company's endpoint
(docs/security.md, "Company HTTP tools"). Every call is stored on the session with its
arguments, result or error, and duration. A tool that fails raises ``ToolError``: the
LLM gets the message and can tell the visitor, and the conversation goes on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from django.conf import settings
from livekit.agents import RunContext, ToolError, function_tool
from livekit.agents.llm import FunctionTool, RawFunctionTool

from .reporting import db

logger = logging.getLogger("agentconnect.worker")

SIGNATURE_HEADER = "X-AgentConnect-Signature"
TIMESTAMP_HEADER = "X-AgentConnect-Timestamp"
SESSION_HEADER = "X-AgentConnect-Session"

Tool = FunctionTool | RawFunctionTool


@dataclass(frozen=True)
class HttpToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    secret: str = field(repr=False)
    timeout: float = 5.0
    max_bytes: int = 65536


@dataclass(frozen=True)
class ToolSpec:
    end_call: bool = False
    take_message: bool = False
    transfer_to_human: bool = False
    handoff_timeout: float = 120.0
    http: tuple[HttpToolSpec, ...] = ()

    @property
    def any(self) -> bool:
        return self.end_call or self.take_message or self.transfer_to_human or bool(self.http)


def tool_spec_for_session(session_pk: int) -> ToolSpec:
    """The session's agent profile's tools, read when the job starts (secrets included:
    they live in the job's memory only, never in the dispatch metadata)."""
    from sessions.models import ConversationSession

    session = ConversationSession.objects.select_related("agent").get(pk=session_pk)
    agent = session.agent
    http = tuple(
        HttpToolSpec(
            name=t.name,
            description=t.description,
            parameters=t.parameters,
            url=t.url,
            secret=t.signing_secret,
            timeout=t.timeout_seconds,
            max_bytes=t.max_response_bytes,
        )
        for t in agent.http_tools.filter(is_active=True, company_id=agent.company_id).order_by("name")
    )
    return ToolSpec(
        end_call=agent.tool_end_call,
        take_message=agent.tool_take_message,
        transfer_to_human=agent.tool_transfer_to_human,
        handoff_timeout=float(agent.handoff_timeout_seconds),
        http=http,
    )


# --- company HTTP tools ----------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``timestamp + "." + body``, hex, as the signature header carries it."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class PublicOnlyResolver(ThreadedResolver):
    """Refuses names that resolve to loopback, private or link-local addresses, at the
    moment of connecting (a check when the tool was saved cannot see DNS changes)."""

    def __init__(self, *, allow_private: bool) -> None:
        super().__init__()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        from voiceagents.tool_rules import address_is_private

        results = await super().resolve(host, port, family)
        if not self._allow_private and any(address_is_private(r["host"]) for r in results):
            raise OSError(f"{host} resolves to a private address")
        return results


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.COMPANY_TOOLS_CA_FILE:
        context.load_verify_locations(cafile=settings.COMPANY_TOOLS_CA_FILE)
    return context


async def http_tool_call(spec: HttpToolSpec, arguments: dict[str, Any], *, session_id: str) -> Any:
    """Validate, sign, POST, and return the endpoint's JSON answer; ``ToolError`` otherwise."""
    from django.core.exceptions import ValidationError
    from jsonschema import Draft202012Validator

    from voiceagents.tool_rules import tool_url_validate

    allow_private = settings.COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES
    errors = sorted(Draft202012Validator(spec.parameters).iter_errors(arguments), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "arguments"
        raise ToolError(f"The arguments do not fit the tool ({where}: {errors[0].message}).")
    try:
        tool_url_validate(spec.url, allow_private=allow_private)
    except ValidationError as exc:
        raise ToolError(f"The tool cannot be called: {exc.messages[0]}") from exc

    body = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "AgentConnect-Tools/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(spec.secret, timestamp, body),
        SESSION_HEADER: session_id,
    }
    connector = aiohttp.TCPConnector(
        resolver=PublicOnlyResolver(allow_private=allow_private), ssl=_ssl_context()
    )
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            http.post(spec.url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            payload = await response.content.read(spec.max_bytes + 1)
            if len(payload) > spec.max_bytes:
                raise ToolError(
                    f"The service's answer was larger than {spec.max_bytes} bytes; it was not used."
                )
            if response.status >= 400 or response.status < 200:
                raise ToolError(f"The service answered with an error (HTTP {response.status}).")
            if response.status >= 300:
                raise ToolError("The service answered with a redirect, which is not followed.")
    except TimeoutError as exc:
        raise ToolError(f"The service did not answer within {spec.timeout:g} seconds.") from exc
    except aiohttp.ClientError as exc:
        raise ToolError(f"The service could not be reached ({type(exc).__name__}).") from exc
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError("The service's answer was not valid JSON.") from exc


# --- building the tools ------------------------------------------------------------------


@dataclass
class ToolHooks:
    """What the tools need from the conversation around them."""

    session_pk: int
    session_id: str
    on_end_call: Callable[[], Awaitable[None]]
    on_transfer: Callable[[str], Awaitable[str]]


async def _recorded(
    hooks: ToolHooks, name: str, arguments: dict[str, Any], call: Callable[[], Awaitable[Any]]
) -> Any:
    from sessions.tools import tool_call_record

    started = time.perf_counter()
    result: Any = None
    error = ""
    try:
        result = await call()
        return result
    except ToolError as exc:
        error = exc.message
        raise
    except Exception as exc:
        # an unexpected failure is still an answer the LLM can speak about
        logger.exception("tool %s failed", name, extra={"session_pk": hooks.session_pk})
        error = f"The tool failed unexpectedly ({type(exc).__name__})."
        raise ToolError(error) from exc
    finally:
        duration_ms = (time.perf_counter() - started) * 1000
        try:
            await db(
                tool_call_record,
                session_pk=hooks.session_pk,
                name=name,
                arguments=arguments,
                result=result,
                error=error,
                duration_ms=duration_ms,
            )
        except Exception:
            logger.exception("could not store a tool call", extra={"session_pk": hooks.session_pk})


def build_tools(spec: ToolSpec, hooks: ToolHooks) -> list[Tool]:
    tools: list[Tool] = []
    if spec.end_call:
        tools.append(_end_call_tool(hooks))
    if spec.take_message:
        tools.append(_take_message_tool(hooks))
    if spec.transfer_to_human:
        tools.append(_transfer_tool(hooks))
    tools.extend(_http_tool(t, hooks) for t in spec.http)
    return tools


def _end_call_tool(hooks: ToolHooks) -> Tool:
    async def end_call(context: RunContext) -> str:
        async def run() -> str:
            await hooks.on_end_call()

            # the goodbye is this speech's reply to the tool output; the session ends after it
            def done(_: Any) -> None:
                context.session.shutdown()

            context.speech_handle.add_done_callback(done)
            return "The call is ending: say a short goodbye to the visitor."

        return await _recorded(hooks, "end_call", {}, run)

    return function_tool(
        end_call,
        name="end_call",
        description="End the call when the visitor clearly says they are done (e.g. 'that's all, bye'). "
        "Not for pauses, holds or transfers.",
    )


def _take_message_tool(hooks: ToolHooks) -> Tool:
    async def take_message(name: str, contact: str, message: str) -> str:
        """Take a message for the company's staff when the visitor wants to leave one.

        Args:
            name: the visitor's name
            contact: how to reach the visitor (phone number or email address)
            message: the message, in the visitor's words
        """
        from sessions.tools import visitor_message_add

        arguments = {"name": name, "contact": contact, "message": message}

        async def run() -> str:
            if not (name.strip() and contact.strip() and message.strip()):
                raise ToolError("A message needs the visitor's name, a way to reach them, and the message.")
            await db(visitor_message_add, session_pk=hooks.session_pk, **arguments)
            return "The message is saved; tell the visitor the team will get back to them."

        return await _recorded(hooks, "take_message", arguments, run)

    return function_tool(take_message)


def _transfer_tool(hooks: ToolHooks) -> Tool:
    async def transfer_to_human(reason: str) -> str:
        """Ask a person from the company's staff to join the call, when the visitor asks for a
        person or you cannot help.

        Args:
            reason: why the visitor needs a person, in one sentence for the staff member
        """
        return await _recorded(
            hooks, "transfer_to_human", {"reason": reason}, lambda: hooks.on_transfer(reason)
        )

    return function_tool(transfer_to_human)


def _http_tool(spec: HttpToolSpec, hooks: ToolHooks) -> Tool:
    async def call(raw_arguments: dict[str, Any]) -> Any:
        return await _recorded(
            hooks,
            spec.name,
            raw_arguments,
            lambda: http_tool_call(spec, raw_arguments, session_id=hooks.session_id),
        )

    return function_tool(
        call,
        raw_schema={"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    )
