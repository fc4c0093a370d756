"""Log formatting: one JSON object per line in production, readable text in development.

Not named `logging.py`: a module of that name would shadow the standard
library for relative imports inside this package.

Every record carries the conversation it belongs to when one is known: pass
`extra={"session_id": ..., "room": ...}` to a logging call, or bind them once
for a whole job with `log_context(session_id=..., room=...)` (a context
variable, so it follows asyncio tasks started inside it) and let
`ContextFilter` copy them onto every record, the framework's own included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("session_id", "room")

_context: ContextVar[dict[str, Any]] = ContextVar(
    "agentconnect_log_context",
    default={},  # noqa: B039 - never mutated: log_context sets a new dict
)

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach `fields` (e.g. session_id, room) to every record logged inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v not in (None, "")}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound log context onto each record, without overriding an explicit `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then session_id, room and other extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = _extras(record)
        for key in CONTEXT_FIELDS:
            if key in extras:
                payload[key] = extras.pop(key)
        for key, value in extras.items():
            payload.setdefault(key, value)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot encode (a UUID, a datetime) is
        # written as text rather than losing the whole line.
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for development, with the session and room appended when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS if getattr(record, key, None)
        )
        if not context:
            return line
        first, sep, rest = line.partition("\n")  # keep a traceback below the context
        return f"{first} [{context}]{sep}{rest}"


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING dict for settings: `log_format` is "json" or "text"."""
    if log_format not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be 'json' or 'text', not {log_format!r}")
    formatter = (
        "agentconnect.logconfig.JsonFormatter"
        if log_format == "json"
        else "agentconnect.logconfig.TextFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "agentconnect.logconfig.ContextFilter"}},
        "formatters": {"main": {"()": formatter}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["context"]}
        },
        "root": {"handlers": ["console"], "level": level},
    }
