"""How full a worker is, the door that keeps it from overfilling, and when it is replaced.

- Load: the share of conversation slots in use (jobs running and jobs accepted but
  not yet launched), or the share of the memory those slots may use, whichever is
  higher. Never the machine's CPU: on a shared host that reads "full" with no
  conversation at all. LiveKit routes a job only to a node whose available workers
  report a load below its `agents.target_load` (0.7 unless configured): a worker
  reporting its plain share would get no job past 70 % of its slots. The share is
  reported scaled to LIVEKIT_AGENT_TARGET_LOAD, and a full worker reports 1.0.
- Cap: LiveKit spreads jobs by the load a worker reported up to 0.5 s earlier, so a
  burst can offer one worker more jobs than it has slots (livekit/agents#4884). The
  request handler refuses any job beyond AGENT_MAX_JOBS_PER_WORKER itself.
- Recycling: a job process serves one conversation and exits (livekit-agents starts
  a fresh one per job). What lives on is the worker's own process, and with
  AGENT_JOB_EXECUTOR=thread every conversation runs in it. After
  AGENT_RECYCLE_AFTER_CONVERSATIONS conversations, or when the processes running
  conversations exceed their memory (AGENT_JOB_MEMORY_LIMIT_MB each), the worker
  takes no new job, lets the running ones end, then exits EXIT_RECYCLE for its
  supervisor to start a fresh one. A job process over the limit is not stopped: it
  ends with its conversation. Only above AGENT_JOB_MEMORY_KILL_MB does livekit-agents
  kill it; the worker then reports the job lost and a new agent resumes the
  conversation (supervision.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil
from livekit.agents import JobRequest

logger = logging.getLogger("agentconnect.worker")

MEMORY_SAMPLE_SECONDS = 5.0


class HasJobs(Protocol):
    @property
    def active_jobs(self) -> list[Any]: ...


@dataclass
class MemoryWatch:
    """The private memory (PSS) of the processes that run conversations, sampled off the loop.

    A PSS read walks a process's page tables, so it is sampled every few seconds in
    a thread, not on each 0.5 s load report."""

    root_pid: int
    threads: bool  # AGENT_JOB_EXECUTOR=thread: the conversations run in the root process
    interval: float = MEMORY_SAMPLE_SECONDS
    per_process_mb: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> dict[int, float]:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root] if self.threads else self._job_processes(root)
        except psutil.NoSuchProcess:
            return {}
        out: dict[int, float] = {}
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out[proc.pid] = (getattr(info, "pss", 0) or info.uss) / 2**20
        self.per_process_mb = out
        return out

    @staticmethod
    def _job_processes(root: psutil.Process) -> list[psutil.Process]:
        # job processes are the children of the multiprocessing forkserver
        procs = []
        for child in root.children():
            try:
                if "forkserver" in " ".join(child.cmdline()):
                    procs.extend(child.children())
            except psutil.NoSuchProcess:
                continue
        return procs

    def start(self) -> None:
        threading.Thread(target=self._run, name="memory-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


class Capacity:
    """Load, cap and recycling of one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        max_jobs: int,
        memory_limit_mb: float = 0.0,
        recycle_after: int = 0,
        memory: MemoryWatch | None = None,
        target_load: float = 1.0,
        on_accept: Callable[[str], None] | None = None,
    ) -> None:
        self.max_jobs = max(max_jobs, 1)
        self.target_load = target_load
        self.on_accept = on_accept  # called with the room's name as a job is accepted
        self.memory_limit_mb = memory_limit_mb
        self.recycle_after = recycle_after
        self.memory = memory
        self.accepted = 0  # conversations this worker has taken
        self.recycle_reason = ""
        self._pending: set[str] = set()  # accepted, not yet among the server's active jobs
        self._server: HasJobs | None = None
        self._over_limit_logged: set[int] = set()
        self.recycle_due = asyncio.Event()  # set once recycling and no conversation is left

    def attach(self, server: HasJobs) -> None:
        self._server = server

    @property
    def running(self) -> int:
        return len(self._server.active_jobs) if self._server is not None else 0

    @property
    def in_use(self) -> int:
        return self.running + len(self._pending)

    def memory_share(self) -> float:
        """The memory of the processes running conversations (idle pool included) over the
        worker's budget, AGENT_JOB_MEMORY_LIMIT_MB per slot."""
        if self.memory is None or self.memory_limit_mb <= 0:
            return 0.0
        return sum(self.memory.per_process_mb.values()) / (self.memory_limit_mb * self.max_jobs)

    def share(self) -> float:
        """How full the worker is, 0..1: slots in use, or memory, whichever is higher."""
        return min(max(self.in_use / self.max_jobs, self.memory_share()), 1.0)

    def load(self, server: Any = None) -> float:
        """The figure reported to LiveKit: the share scaled to the server's target load,
        so every slot is routed to; 1.0 when full or to be replaced (send it nothing)."""
        share = self.share()
        if self.recycle_reason or share >= 1.0:
            return 1.0
        return share * self.target_load

    def check(self) -> None:
        """Decide whether the worker is to be replaced; called on every request and job end."""
        if self.recycle_reason:
            self._maybe_due()
            return
        if self.recycle_after and self.accepted >= self.recycle_after:
            self.recycle_reason = f"{self.accepted} conversations (AGENT_RECYCLE_AFTER_CONVERSATIONS)"
        elif self.memory is not None and self.memory_limit_mb > 0:
            for pid, mb in self.memory.per_process_mb.items():
                if mb <= self.memory_limit_mb:
                    continue
                if self.memory.threads:
                    if mb > self.memory_limit_mb * self.max_jobs:
                        self.recycle_reason = (
                            f"the worker's memory {mb:.0f} MB is over its conversations' limit"
                        )
                elif pid not in self._over_limit_logged:
                    self._over_limit_logged.add(pid)
                    logger.warning(
                        "job process %d uses %.0f MB, over AGENT_JOB_MEMORY_LIMIT_MB (%.0f): it ends with"
                        " its conversation",
                        pid,
                        mb,
                        self.memory_limit_mb,
                    )
        if self.recycle_reason:
            logger.info("worker to be replaced after its conversations: %s", self.recycle_reason)
        self._maybe_due()

    def _maybe_due(self) -> None:
        if self.recycle_reason and self.in_use == 0:
            self.recycle_due.set()

    async def on_request(self, request: JobRequest) -> None:
        """Accept a job only into a free slot; the check and the reservation happen in one
        step of the event loop, so concurrent requests cannot both take the last slot."""
        self.check()
        if self.recycle_reason or self.in_use >= self.max_jobs:
            logger.info(
                "refusing job %s: %s",
                request.id,
                f"to be replaced ({self.recycle_reason})"
                if self.recycle_reason
                else f"{self.in_use} of {self.max_jobs} slots in use",
            )
            # not terminal: LiveKit offers the job to another worker
            await request.reject(terminate=False)
            return
        self._pending.add(request.id)
        self.accepted += 1
        if self.on_accept is not None:
            self.on_accept(request.room.name)
        try:
            await request.accept()  # returns once the job runs (or could not be launched)
        finally:
            self._pending.discard(request.id)
