"""A worker's load, its cap in a burst of job requests, and recycling.

Driven through livekit-agents' own JobRequest (what the server's availability handler
hands the request function) with a server whose running jobs the test controls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from livekit.agents import JobRequest
from livekit.protocol import agent, models

from voiceagents.worker.capacity import Capacity, MemoryWatch
from voiceagents.worker.supervision import watch_sessions

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class FakeServer:
    """What Capacity and the worker's watcher read of AgentServer: its running jobs."""

    active_jobs: list[Any] = field(default_factory=list)
    id: str = ""  # not registered: the watcher stamps no heartbeat

    def start(self, job_id: str, room: str = "") -> None:
        self.active_jobs.append(
            SimpleNamespace(
                job=SimpleNamespace(id=job_id, room=SimpleNamespace(name=room)),
                accept_arguments=SimpleNamespace(identity=f"agent-{job_id}"),
                fake_job=False,
            )
        )

    def end(self, job_id: str) -> None:
        self.active_jobs = [j for j in self.active_jobs if j.job.id != job_id]


@dataclass
class Answers:
    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, bool]] = field(default_factory=list)
    expected: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        if len(self.accepted) + len(self.rejected) >= self.expected:
            self.all_in.set()


def request(
    job_id: str, server: FakeServer, answers: Answers, launched: asyncio.Event | None = None
) -> JobRequest:
    """A job request whose acceptance, like the server's, returns once the job runs."""
    job = agent.Job(id=job_id, room=models.Room(name=f"room-{job_id}"))

    async def on_accept(args: Any) -> None:
        answers.accepted.append(job_id)
        answers.note()
        if launched is not None:
            await launched.wait()  # the assignment and the process launch take a while
        server.start(job_id, f"room-{job_id}")

    async def on_reject(terminate: bool) -> None:
        answers.rejected.append((job_id, terminate))
        answers.note()

    return JobRequest(job=job, on_reject=on_reject, on_accept=on_accept)


def test_the_cap_holds_in_a_burst() -> None:
    """Six requests at once for a worker with two slots: two are taken, four refused (not
    terminally, so LiveKit tries another worker), although no job is running yet when
    they arrive (the window in which a load report is stale)."""

    async def body() -> tuple[Answers, float, Answers, Capacity]:
        server, answers = FakeServer(), Answers(expected=6)
        capacity = Capacity(max_jobs=2)
        capacity.attach(server)
        launched = asyncio.Event()
        burst = [
            asyncio.create_task(capacity.on_request(request(f"j{i}", server, answers, launched)))
            for i in range(6)
        ]
        await answers.all_in.wait()  # every request answered, none of the jobs running yet
        full_load = capacity.load()
        launched.set()
        await asyncio.gather(*burst)
        later = Answers()
        await capacity.on_request(request("late", server, later))
        server.end("j0")
        await capacity.on_request(request("after-one-ended", server, later))
        return answers, full_load, later, capacity

    answers, full_load, later, capacity = run(body())
    assert len(answers.accepted) == 2
    assert len(answers.rejected) == 4
    assert all(terminate is False for _, terminate in answers.rejected)
    assert full_load == 1.0  # reserved slots count before the jobs run
    assert later.rejected == [("late", False)]
    assert later.accepted == ["after-one-ended"]
    assert capacity.in_use == 2


def test_the_load_counts_conversations_and_memory_not_cpu() -> None:
    server = FakeServer()
    memory = MemoryWatch(root_pid=0, threads=False)
    capacity = Capacity(max_jobs=4, memory_limit_mb=100, memory=memory)
    capacity.attach(server)
    assert capacity.load() == 0.0
    server.start("a")
    assert capacity.load() == 0.25
    # two job processes and the idle pool using 300 MB of a 4 x 100 MB budget
    memory.per_process_mb = {1: 150.0, 2: 100.0, 3: 50.0}
    assert capacity.load() == 0.75
    memory.per_process_mb = {1: 900.0}
    assert capacity.load() == 1.0


def test_the_load_is_scaled_to_livekits_target_load_so_every_slot_is_routed_to() -> None:
    """LiveKit routes no job to a worker whose load is at or above its agents.target_load
    (0.7 by default): four of five slots in use must still read below it, and a full
    worker must read 1.0."""
    server = FakeServer()
    capacity = Capacity(max_jobs=5, target_load=0.7)
    capacity.attach(server)
    for job_id in "abcd":
        server.start(job_id)
    assert capacity.share() == 0.8
    assert capacity.load() < 0.7
    server.start("e")
    assert capacity.load() == 1.0


def test_each_accepted_job_is_reported_taken_and_a_refused_one_is_not() -> None:
    async def body() -> list[str]:
        server, answers, taken = FakeServer(), Answers(), []
        capacity = Capacity(max_jobs=1, on_accept=taken.append)
        capacity.attach(server)
        await capacity.on_request(request("a", server, answers))
        await capacity.on_request(request("b", server, answers))  # no slot: refused
        assert answers.accepted == ["a"]
        return taken

    assert run(body()) == ["room-a"]


def test_recycling_replaces_the_worker_only_between_conversations() -> None:
    """After AGENT_RECYCLE_AFTER_CONVERSATIONS the worker takes no new job, and is due for
    replacement only when the last running conversation has ended."""

    async def body() -> tuple[Answers, list[bool], Capacity]:
        server, answers = FakeServer(), Answers()
        capacity = Capacity(max_jobs=8, recycle_after=2)
        capacity.attach(server)
        for job_id in ("a", "b", "c"):
            await capacity.on_request(request(job_id, server, answers))
        due = [capacity.recycle_due.is_set()]
        server.end("a")
        capacity.check()
        due.append(capacity.recycle_due.is_set())
        await capacity.on_request(request("d", server, answers))  # still refused
        server.end("b")
        capacity.check()
        due.append(capacity.recycle_due.is_set())
        return answers, due, capacity

    answers, due, capacity = run(body())
    assert answers.accepted == ["a", "b"]
    assert [job for job, _ in answers.rejected] == ["c", "d"]
    assert due == [False, False, True]
    assert capacity.load() == 1.0  # while it waits, LiveKit sends it nothing
    assert "AGENT_RECYCLE_AFTER_CONVERSATIONS" in capacity.recycle_reason


def test_a_job_process_over_the_memory_limit_ends_with_its_conversation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job process serves one conversation: over the limit it is not stopped (it exits
    when the conversation ends); the worker is not recycled for it and says so once."""
    server = FakeServer()
    memory = MemoryWatch(root_pid=0, threads=False)
    capacity = Capacity(max_jobs=4, memory_limit_mb=100, memory=memory)
    capacity.attach(server)
    server.start("a")
    memory.per_process_mb = {4242: 180.0}
    with caplog.at_level(logging.WARNING, logger="agentconnect.worker"):
        capacity.check()
        capacity.check()
    assert capacity.recycle_reason == ""
    assert not capacity.recycle_due.is_set()
    warnings = [r for r in caplog.records if "4242" in r.getMessage()]
    assert len(warnings) == 1 and "ends with its conversation" in warnings[0].getMessage()


def test_a_thread_worker_over_its_memory_is_replaced_after_its_conversations() -> None:
    server = FakeServer()
    memory = MemoryWatch(root_pid=0, threads=True)
    capacity = Capacity(max_jobs=2, memory_limit_mb=100, memory=memory)
    capacity.attach(server)
    server.start("a")
    memory.per_process_mb = {1: 250.0}  # over 2 x 100 MB
    capacity.check()
    assert capacity.recycle_reason
    assert not capacity.recycle_due.is_set()  # a conversation is still running in it
    server.end("a")
    capacity.check()
    assert capacity.recycle_due.is_set()


def test_memory_watch_samples_the_job_processes_of_a_real_process_tree() -> None:
    import os

    memory = MemoryWatch(root_pid=os.getpid(), threads=True)
    sampled = memory.sample()
    assert list(sampled) == [os.getpid()] and sampled[os.getpid()] > 1


@pytest.mark.django_db(transaction=True)  # the ended job is reported to the sessions (none match)
def test_the_watcher_replaces_the_worker_once_its_last_conversation_ends(settings: Any) -> None:
    settings.AGENT_HEARTBEAT_INTERVAL_SECONDS = 0.01

    async def body() -> bool:
        server, answers = FakeServer(), Answers()
        capacity = Capacity(max_jobs=4, recycle_after=1)
        capacity.attach(server)
        await capacity.on_request(request("a", server, answers))
        watcher = asyncio.create_task(watch_sessions(server, capacity))
        try:
            due_while_running = capacity.recycle_due.is_set()
            server.end("a")
            await asyncio.wait_for(capacity.recycle_due.wait(), 5)
            return due_while_running
        finally:
            watcher.cancel()

    assert run(body()) is False
