"""Local stand-ins for the cloud AI providers, speaking their real wire protocols.

The real livekit plugins (openai, groq, deepgram) are pointed at these servers with
``base_url``; nothing in the plugins is mocked. Speech is real: transcriptions come from
pocketsphinx, synthesized audio from espeak-ng.

This module holds what the endpoints share: ``StubState`` (replies, per-endpoint
latency and failure modes, and the log of requests received). ``StubServer`` lives in
``stubs.server``; it is re-exported here lazily.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from aiohttp import web

if TYPE_CHECKING:
    from .server import StubServer

Mode = Literal["ok", "error", "hang", "stall"]
"""How an endpoint behaves.

- ok: answer normally (after ``latency``).
- error: answer with HTTP ``status`` (500 by default) and the provider's error body; an
  open Deepgram socket is closed with code 1011.
- hang: never answer (a websocket handshake never completes).
- stall: start answering, then stop: one SSE chunk / audio chunk, then silence; a
  Deepgram socket stays open and swallows audio without sending results.
"""

Endpoint = Literal["chat", "transcriptions", "speech", "models", "listen"]
ENDPOINTS: tuple[str, ...] = get_args(Endpoint)
MODES: tuple[str, ...] = get_args(Mode)


_SETTINGS = (
    "reply_template",
    "greeting_reply",
    "fixed_transcript",
    "fallback_transcript",
    "api_key",
    "min_endpointing_ms",
    "energy_threshold",
    "tool_triggers",
    "tool_reply_template",
)


@dataclass
class Behaviour:
    latency: float = 0.0
    """seconds before the first byte of the answer (for Deepgram: before the handshake)"""
    mode: Mode = "ok"
    status: int = 500
    """HTTP status in error mode"""


@dataclass
class RecordedRequest:
    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    """JSON body; form fields for multipart (the file as its size); for a Deepgram socket,
    a live summary: audio bytes received and the text frames the client sent"""
    transcript: str | None = None
    """what the stub heard in the audio of this request, when it had any"""
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StubState:
    """Shared by every endpoint of one stub server; safe to change from any thread.

    Attribute writes take effect on the next request (for an open Deepgram socket: on its
    next message), which lets a test break a provider in the middle of a conversation.
    """

    def __init__(
        self,
        *,
        reply_template: str = "Stub reply to: {text}",
        greeting_reply: str = "Hello from the stub.",
        fixed_transcript: str | None = None,
        fallback_transcript: str = "",
        api_key: str | None = None,
        min_endpointing_ms: int = 300,
        energy_threshold: float = 300.0,
        tool_triggers: dict[str, dict[str, Any]] | None = None,
        tool_reply_template: str = "The tool {name} answered: {content}",
    ) -> None:
        self.reply_template = reply_template
        """chat reply to the last user message; ``{text}`` is that message"""
        self.greeting_reply = greeting_reply
        """chat reply when the request has no user message"""
        self.fixed_transcript = fixed_transcript
        """when set, every transcription returns it and pocketsphinx is not run"""
        self.fallback_transcript = fallback_transcript
        """returned when pocketsphinx hears no words (empty: return the empty transcript)"""
        self.api_key = api_key
        """when set, requests must carry exactly this key; otherwise any non-empty key"""
        self.min_endpointing_ms = min_endpointing_ms
        """Deepgram: shortest silence that ends an utterance, whatever ``endpointing`` asks
        (the plugin asks for 25 ms, which an energy endpointer would split words on)"""
        self.energy_threshold = energy_threshold
        """Deepgram: RMS (int16 units) above which a 10 ms window counts as speech"""
        self.tool_triggers: dict[str, dict[str, Any]] = dict(tool_triggers or {})
        """chat: a phrase (matched case-insensitively in the last user message) -> the tool
        call to make instead of a text reply, ``{"name": ..., "arguments": {...}}``; made
        only when the request offers a function of that name"""
        self.tool_reply_template = tool_reply_template
        """chat reply when the last message is a tool's output: ``{name}``, ``{content}``"""
        self._initial_settings = {name: getattr(self, name) for name in _SETTINGS}
        self._lock = threading.Condition()
        self._behaviours: dict[str, Behaviour] = {e: Behaviour() for e in ENDPOINTS}
        self._requests: dict[str, list[RecordedRequest]] = {e: [] for e in ENDPOINTS}

    # -- behaviour ---------------------------------------------------------------------

    def behave(
        self,
        endpoint: str,
        *,
        mode: Mode | None = None,
        latency: float | None = None,
        status: int | None = None,
    ) -> None:
        """Change how ``endpoint`` (or ``"*"`` for all) answers from now on."""
        names = ENDPOINTS if endpoint == "*" else (endpoint,)
        for name in names:
            if name not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {name!r}; expected one of {ENDPOINTS}")
            if mode is not None and mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        with self._lock:
            for name in names:
                b = self._behaviours[name]
                if mode is not None:
                    b.mode = mode
                if latency is not None:
                    b.latency = float(latency)
                if status is not None:
                    b.status = int(status)

    def behaviour(self, endpoint: str) -> Behaviour:
        with self._lock:
            return copy.copy(self._behaviours[endpoint])

    def reset(self) -> None:
        """Back to how this state was constructed: the constructor's settings, every
        endpoint ok with no latency, no recorded requests."""
        with self._lock:
            for name, value in self._initial_settings.items():
                setattr(self, name, copy.copy(value))
            self._behaviours = {e: Behaviour() for e in ENDPOINTS}
            self._requests = {e: [] for e in ENDPOINTS}

    # -- replies -------------------------------------------------------------------------

    def reply_for(self, user_text: str | None) -> str:
        if not user_text:
            return self.greeting_reply
        return self.reply_template.format(text=user_text)

    def tool_call_for(self, user_text: str, offered: set[str]) -> dict[str, Any] | None:
        """The tool call a trigger phrase in ``user_text`` asks for, among ``offered`` tools."""
        lowered = user_text.lower()
        for phrase, call in self.tool_triggers.items():
            if phrase.lower() in lowered and call.get("name") in offered:
                return {"name": str(call["name"]), "arguments": dict(call.get("arguments") or {})}
        return None

    def reply_for_tool(self, name: str, content: str) -> str:
        return self.tool_reply_template.format(name=name, content=content)

    def check_key(self, presented: str | None) -> bool:
        if not presented:
            return False
        return self.api_key is None or presented == self.api_key

    # -- request log ---------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> RecordedRequest:
        with self._lock:
            self._requests[request.endpoint].append(request)
            self._lock.notify_all()
        return request

    def requests(self, endpoint: str) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests[endpoint])

    def count(self, endpoint: str) -> int:
        with self._lock:
            return len(self._requests[endpoint])

    def last(self, endpoint: str) -> RecordedRequest | None:
        with self._lock:
            reqs = self._requests[endpoint]
            return reqs[-1] if reqs else None

    def wait_for_requests(self, endpoint: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``endpoint`` has received ``count`` requests in all; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests[endpoint]) >= count, timeout)

    async def await_requests(self, endpoint: str, count: int = 1, timeout: float = 10.0) -> bool:
        """``wait_for_requests`` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_requests, endpoint, count, timeout)

    # -- remote control (POST /_control) -------------------------------------------------

    def apply_control(self, payload: dict[str, Any]) -> None:
        """Apply a control message: ``{"reset": true}``, ``{"endpoint": "chat", "mode":
        "error", "latency": 0.5, "status": 503}`` and/or ``{"settings": {...}}`` with any
        of reply_template, greeting_reply, fixed_transcript, fallback_transcript, api_key,
        min_endpointing_ms, energy_threshold, tool_triggers, tool_reply_template."""
        if payload.get("reset"):
            self.reset()
        if "endpoint" in payload:
            self.behave(
                str(payload["endpoint"]),
                mode=payload.get("mode"),
                latency=payload.get("latency"),
                status=payload.get("status"),
            )
        settings = payload.get("settings") or {}
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; allowed: {sorted(_SETTINGS)}")
        for name, value in settings.items():
            setattr(self, name, value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "behaviours": {e: asdict(b) for e, b in self._behaviours.items()},
                "requests": {
                    e: {"count": len(reqs), "last": reqs[-1].to_dict() if reqs else None}
                    for e, reqs in self._requests.items()
                },
                "settings": {
                    "reply_template": self.reply_template,
                    "greeting_reply": self.greeting_reply,
                    "fixed_transcript": self.fixed_transcript,
                    "fallback_transcript": self.fallback_transcript,
                    "api_key_required": self.api_key is not None,
                    "min_endpointing_ms": self.min_endpointing_ms,
                    "energy_threshold": self.energy_threshold,
                    "tool_triggers": self.tool_triggers,
                    "tool_reply_template": self.tool_reply_template,
                },
            }


class HangReleaser:
    """What hanging handlers wait on. ``release`` frees those hanging now and re-arms, so
    a request made after it hangs again (in hang mode). Use on the server's loop only."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    def release(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


STATE_KEY = web.AppKey("stub_state", StubState)
RELEASE_KEY = web.AppKey("stub_release", HangReleaser)


async def hang(app: web.Application) -> None:
    """Wait "forever": until ``StubServer.release_hangs`` or the server stops."""
    await app[RELEASE_KEY].wait()


def record_http(request: web.Request, endpoint: str, body: Any) -> RecordedRequest:
    return request.app[STATE_KEY].record(
        RecordedRequest(
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
        )
    )


def __getattr__(name: str) -> Any:
    if name == "StubServer":
        from .server import StubServer

        return StubServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENDPOINTS",
    "RELEASE_KEY",
    "STATE_KEY",
    "MODES",
    "Behaviour",
    "HangReleaser",
    "Endpoint",
    "Mode",
    "RecordedRequest",
    "StubServer",
    "StubState",
]
