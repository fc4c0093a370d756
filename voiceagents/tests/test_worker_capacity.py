"""A worker's load, its cap in a burst of job requests, recycling, and lost jobs.

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

from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_start, session_transition
from tests.factories import VoiceAgentFactory
from voiceagents.worker.capacity import (
    Capacity,
    MemoryWatch,
    session_fail_if_open,
    watch_jobs,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class FakeServer:
    """What Capacity reads of AgentServer: its running jobs."""

    active_jobs: list[Any] = field(default_factory=list)

    def start(self, job_id: str, room: str = "") -> None:
        self.active_jobs.append(
            SimpleNamespace(job=SimpleNamespace(id=job_id, room=SimpleNamespace(name=room)))
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


@pytest.mark.django_db(transaction=True)
def test_a_job_that_ends_without_recording_its_end_has_its_session_recovered() -> None:
    """A job process killed (over AGENT_JOB_MEMORY_KILL_MB, or crashed) never records how the
    conversation ended; when it leaves the worker's running jobs its session is recovered
    with a new agent (sessions/tests/test_recovery.py). A job that ended normally has
    recorded its end, and is left alone."""
    agent_profile = VoiceAgentFactory()
    killed = session_start(
        company=agent_profile.company, agent_id=agent_profile.pk, session_id="killed"
    ).session
    ended = session_start(
        company=agent_profile.company, agent_id=agent_profile.pk, session_id="ended"
    ).session
    for s in (killed, ended):
        session_transition(session_pk=s.pk, to=AgentStatus.DISPATCHING)
        session_transition(session_pk=s.pk, to=AgentStatus.STARTING)
        session_transition(session_pk=s.pk, to=AgentStatus.ACTIVE)
    session_transition(session_pk=ended.pk, to=AgentStatus.STOPPING)
    session_transition(session_pk=ended.pk, to=AgentStatus.STOPPED)

    def fail_if_open(room: str) -> None:
        from django.db import connection

        try:
            session_fail_if_open(room)
        finally:
            connection.close()  # this thread's own connection, not left for teardown

    async def body() -> list[str]:
        passes = asyncio.Event()

        class Watched(Capacity):
            def check(self) -> None:  # called once per pass of the watcher
                super().check()
                passes.set()

        server = FakeServer()
        capacity = Watched(max_jobs=4)
        capacity.attach(server)
        server.start("k", killed.agent_room_name)
        server.start("e", ended.agent_room_name)
        seen: list[str] = []
        checked = asyncio.Event()

        async def on_lost(room: str) -> None:
            seen.append(room)
            await asyncio.to_thread(fail_if_open, room)
            if len(seen) == 2:
                checked.set()

        watcher = asyncio.create_task(watch_jobs(capacity, server, on_lost, interval=0.01))
        await passes.wait()  # the watcher has seen both jobs running
        server.end("k")
        server.end("e")
        await checked.wait()
        watcher.cancel()
        return seen

    seen = run(body())
    assert sorted(seen) == sorted([killed.agent_room_name, ended.agent_room_name])
    killed_row = ConversationSession.objects.get(pk=killed.pk)
    assert killed_row.agent_status == AgentStatus.RECOVERING and killed_row.recovery_count == 1
    assert ConversationSession.objects.get(pk=ended.pk).agent_status == AgentStatus.STOPPED
