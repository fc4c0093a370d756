"""Two livekit-server nodes on loopback that share the test Redis: one LiveKit cluster.

As upstream's own multi-node tests do (livekit test/agent_test.go TestAgentMultiNode,
test/multinode_test.go): each node has its own ports and node IP 127.0.0.1, and
Redis routes rooms and agent jobs between them. Ports: TEST_LIVEKIT_PORT+100
(node 1) and +110 (node 2), each with its two RTC ports after it; the test
Redis's database 7 keeps the cluster's keys apart from the broker's.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import requests
from django.conf import settings

from agentconnect.livekit_config import NodeConfig, render
from tests.processes import ROOT

LIVEKIT_BIN = ROOT / ".bin" / "livekit-server"
WEBHOOK = "/api/v1/livekit-agents/webhook"
CLUSTER_REDIS_DB = 7


class LiveKitNode:
    def __init__(self, config: NodeConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.file = Path(tempfile.mkstemp(prefix=f"ac-{name}-", suffix=".yaml")[1])
        self.file.write_text(render(config))
        self.log = Path(tempfile.mkstemp(prefix=f"ac-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(LIVEKIT_BIN), "--config", str(self.file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if requests.get(self.http_url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} does not answer on {self.http_url}:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.file.unlink(missing_ok=True)
        self.log.unlink(missing_ok=True)


def _redis() -> tuple[str, int]:
    parsed = urlparse(os.environ["REDIS_URL"])
    return str(parsed.hostname), int(parsed.port or 6379)


@contextmanager
def livekit_cluster(webhook_port: int, nodes: int = 2) -> Iterator[list[LiveKitNode]]:
    """Start `nodes` livekit-server processes sharing the test Redis; stop them afterwards."""
    import redis

    base = int(os.environ.get("TEST_LIVEKIT_PORT", "7980")) + 100
    # A cluster left in Redis by an earlier run would route rooms to nodes that are gone.
    host, port = _redis()
    redis.Redis(host=host, port=port, db=CLUSTER_REDIS_DB).flushdb()
    started: list[LiveKitNode] = []
    try:
        for i in range(nodes):
            node = LiveKitNode(
                NodeConfig(
                    port=base + 10 * i,
                    key=settings.LIVEKIT_API_KEY,
                    secret=settings.LIVEKIT_API_SECRET,
                    webhook_urls=(f"http://127.0.0.1:{webhook_port}{WEBHOOK}",),
                    redis_address=f"{host}:{port}",
                    redis_db=CLUSTER_REDIS_DB,
                    log_level="warn",
                    development=True,
                    empty_timeout=10,
                    departure_timeout=5,
                ),
                name=f"livekit-node{i + 1}",
            )
            started.append(node)
            node.start()
        yield started
    finally:
        for node in reversed(started):
            node.stop()
