"""Log lines: one JSON object per event in production, readable text in development."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from agentconnect.logconfig import ContextFilter, JsonFormatter, TextFormatter, log_context, logging_config
from tests.processes import ROOT


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.logconfig.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_the_fields_and_the_conversation(capture: tuple) -> None:
    logger, stream, _ = capture
    before = datetime.now(UTC)
    logger.info("agent %s joined", "AJ_1", extra={"session_id": "s-1", "room": "ac-1-x", "attempt": 2})
    [line] = lines(stream)
    assert list(line)[:6] == ["ts", "level", "logger", "message", "session_id", "room"]
    assert line["level"] == "INFO"
    assert line["logger"] == logger.name
    assert line["message"] == "agent AJ_1 joined"
    assert line["session_id"] == "s-1" and line["room"] == "ac-1-x"
    assert line["attempt"] == 2
    ts = datetime.fromisoformat(str(line["ts"]))
    assert ts.tzinfo is not None and before - timedelta(seconds=1) <= ts <= datetime.now(UTC)


def test_json_line_without_context_has_no_empty_context_fields(capture: tuple) -> None:
    logger, stream, _ = capture
    logger.warning("plain")
    [line] = lines(stream)
    assert set(line) == {"ts", "level", "logger", "message"}


def test_one_line_per_event_even_with_a_traceback_and_odd_values(capture: tuple) -> None:
    logger, stream, _ = capture
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception(
            "failed for %s", "x", extra={"session_id": uuid.UUID(int=1), "when": datetime(2026, 1, 1)}
        )
    text = stream.getvalue()
    assert text.count("\n") == 1  # newlines inside are escaped: one event, one line
    [line] = lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in str(line["exc_info"]) and "Traceback" in str(line["exc_info"])
    assert line["session_id"] == str(uuid.UUID(int=1))
    assert line["when"] == "2026-01-01 00:00:00"


def test_log_context_reaches_every_record_and_tasks_inside_it(capture: tuple) -> None:
    logger, stream, _ = capture

    async def job() -> None:
        with log_context(session_id="s-9", room="ac-9"):
            logger.info("in job")
            await asyncio.create_task(asyncio.sleep(0, result=None))
            await asyncio.gather(asyncio.to_thread(logger.info, "in a thread"), _log_later(logger))
            logger.info("explicit", extra={"room": "other"})
        logger.info("after")

    asyncio.run(job())
    got = [(line["message"], line.get("session_id"), line.get("room")) for line in lines(stream)]
    assert got == [
        ("in job", "s-9", "ac-9"),
        ("in a thread", "s-9", "ac-9"),
        ("in a task", "s-9", "ac-9"),
        ("explicit", "s-9", "other"),  # an explicit extra wins over the bound context
        ("after", None, None),
    ]


async def _log_later(logger: logging.Logger) -> None:
    await asyncio.sleep(0)
    logger.info("in a task")


def test_text_format_is_readable_and_shows_the_conversation() -> None:
    formatter = TextFormatter()
    record = logging.makeLogRecord(
        {
            "name": "voiceagents.worker",
            "levelname": "INFO",
            "levelno": 20,
            "msg": "hello %s",
            "args": ("you",),
        }
    )
    assert formatter.format(record).endswith("INFO voiceagents.worker hello you")
    record.session_id, record.room = "s-1", "ac-1"
    assert formatter.format(record).endswith("hello you [session_id=s-1 room=ac-1]")


def test_logging_config_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config(log_format="xml", level="INFO")


def test_settings_default_to_json_with_debug_off() -> None:
    assert settings.DEBUG is False
    assert settings.LOG_FORMAT == "json"
    assert settings.LOGGING["formatters"]["main"]["()"] == "agentconnect.logconfig.JsonFormatter"


def _django_log_line(env_overrides: dict[str, str]) -> str:
    code = (
        "import logging, django; django.setup(); "
        "logging.getLogger('sessions.services').warning('moved', extra={'session_id': 's-1', 'room': 'ac-1'})"
    )
    import os

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentconnect.settings", **env_overrides}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_log_format_env_switches_a_real_process_between_json_and_text() -> None:
    line = json.loads(_django_log_line({"LOG_FORMAT": "json"}))
    assert (line["level"], line["logger"], line["message"], line["session_id"], line["room"]) == (
        "WARNING",
        "sessions.services",
        "moved",
        "s-1",
        "ac-1",
    )
    text = _django_log_line({"LOG_FORMAT": "text"})
    assert text.endswith("WARNING sessions.services moved [session_id=s-1 room=ac-1]")
    # Development (DEBUG on) reads as text unless told otherwise.
    debug = _django_log_line({"DJANGO_DEBUG": "true", "LOG_FORMAT": ""})
    assert debug.endswith("WARNING sessions.services moved [session_id=s-1 room=ac-1]")
