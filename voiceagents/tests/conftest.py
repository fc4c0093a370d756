from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from stubs.server import StubServer
from tests.processes import Process, test_database_env


def start_agent_worker(command: str = "run_voice_agent", mode: str = "dev", **env: str) -> Process:
    environment = test_database_env()
    environment.update(env)
    proc = Process([sys.executable, "manage.py", command, mode], environment, command)
    proc.wait_for_output("registered worker", timeout=120)
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def voice_worker(live_server: Any, transactional_db: Any, tmp_path: Any) -> Iterator[Process]:
    """A real `manage.py run_voice_agent dev` process, registered with the test livekit-server,
    with its Prometheus endpoint on `proc.metrics_port`."""
    port = free_port()
    proc = start_agent_worker(VOICE_AGENT_METRICS_PORT=str(port), AGENT_METRICS_DIR=str(tmp_path / "metrics"))
    proc.metrics_port = port
    yield proc
    proc.stop()
    print(f"--- {proc.name} output ---\n{proc.tail(120)}")  # shown when the test failed


@pytest.fixture(scope="module")
def openai_stub() -> Iterator[StubServer]:
    """A stub speaking OpenAI's protocol (LLM, STT, TTS), its transcript and reply set per test."""
    server = StubServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_stub_worker(
    openai_stub: StubServer, django_db_setup: Any, django_db_blocker: Any, live_server: Any
) -> Iterator[Process]:
    """One voice worker for the module, its OpenAI providers pointed at ``openai_stub``."""
    with django_db_blocker.unblock():
        proc = start_agent_worker(OPENAI_API_KEY="test-key", OPENAI_BASE_URL=openai_stub.openai_base_url)
    yield proc
    proc.stop()
    print(f"--- worker output ---\n{proc.tail(150)}")
