from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

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
