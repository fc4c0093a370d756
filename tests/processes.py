"""Start the project's own processes (Celery worker, agent workers) for end-to-end tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_env() -> dict[str, str]:
    """Environment for a child process that must see the test database (not the dev one)."""
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        if not db.get("PASSWORD")
        else f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    env.setdefault("DJANGO_SETTINGS_MODULE", "agentconnect.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


test_database_env.__test__ = False  # type: ignore[attr-defined]


class Process:
    """A child process whose output is read line by line on a thread, so waits can have timeouts."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_output(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if needle in line:
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {needle!r} within {timeout}s; output:\n" + self.tail())
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.poll()}) before {needle!r}:\n" + self.tail()
                )
            if needle in item:
                return item

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def signal(self, sig: int, *, group: bool = True) -> None:
        """Signal the process group (all its children), or with group=False the main process
        alone, as `docker stop` or systemd's KillMode=mixed do."""
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.proc.returncode


@contextmanager
def celery_worker(env: dict[str, str] | None = None) -> Iterator[Process]:
    proc = Process(
        [
            sys.executable,
            "celery_worker.py",
            "--pool=solo",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        env or test_database_env(),
        "celery worker",
    )
    try:
        proc.wait_for_output("ready.", timeout=60)
        yield proc
    finally:
        proc.stop()


@contextmanager
def celery_beat(env: dict[str, str] | None = None) -> Iterator[Process]:
    """Celery beat (the reconcile and watchdog schedule), its schedule file in a temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ac-beat-") as folder:
        proc = Process(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "agentconnect",
                "beat",
                "--loglevel=INFO",
                "-s",
                str(Path(folder) / "schedule"),
            ],
            env or test_database_env(),
            "celery beat",
        )
        try:
            proc.wait_for_output("beat: Starting", timeout=60)
            yield proc
        finally:
            proc.stop()
