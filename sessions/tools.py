"""Writes from agent workers about tools: each call, messages taken, an agent's hang-up."""

from __future__ import annotations

from typing import Any

from .models import ConversationSession, ToolCall, VisitorMessage

MAX_TOOL_ERROR = 2000
MAX_RESULT_CHARS = 65536


def tool_call_record(
    *,
    session_pk: int,
    name: str,
    arguments: dict[str, Any],
    result: Any = None,
    error: str = "",
    duration_ms: float = 0.0,
) -> ToolCall:
    if result is not None and len(str(result)) > MAX_RESULT_CHARS:
        result = {"truncated": str(result)[:MAX_RESULT_CHARS]}
    return ToolCall.objects.create(
        session_id=session_pk,
        name=name[:64],
        arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
        result=result,
        error=error[:MAX_TOOL_ERROR],
        duration_ms=round(duration_ms, 1),
    )


def visitor_message_add(*, session_pk: int, name: str, contact: str, message: str) -> VisitorMessage:
    return VisitorMessage.objects.create(
        session_id=session_pk, name=name[:200], contact=contact[:200], message=message[:4000]
    )


def session_end_reason_set(*, session_pk: int, reason: str) -> None:
    """Why the session is about to end; recorded before the agent leaves, kept once ended."""
    ConversationSession.objects.filter(pk=session_pk, end_reason="").update(end_reason=reason[:200])
