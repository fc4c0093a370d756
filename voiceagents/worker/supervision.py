"""The worker's main process watching its own jobs: heartbeats, lost jobs, drain hand-over.

Self-hosted LiveKit does not re-dispatch a job whose process or worker died
(livekit/agents#1472), so the worker tells the database itself:
- every AGENT_HEARTBEAT_INTERVAL_SECONDS it stamps the sessions its running
  jobs serve; when the whole worker dies the stamps go stale and the watchdog
  (Celery beat) recovers its sessions;
- a job that leaves the worker's job list without having reported how its
  conversation ended (its process was killed: OOM, SIGKILL, a crash) is
  reported lost at once, and its session recovered with a new agent;
- when a drain timeout ends before a conversation does, the conversation is
  handed over the same way before the worker closes its jobs.

The same loop re-checks the worker's capacity (capacity.py) as its jobs end: one
watcher of the job list per worker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from django.conf import settings
from livekit.agents import AgentServer

from .capacity import Capacity
from .reporting import db

logger = logging.getLogger("agentconnect.worker")

JOB_LOST_REASON = "The agent's job process ended without finishing the conversation (crash or out of memory)."
DRAIN_REASON = "The agent's worker was shut down (drain timeout) before the conversation ended."


@dataclass(frozen=True)
class JobSeen:
    room: str
    identity: str


def jobs_running(server: AgentServer) -> dict[str, JobSeen]:
    return {
        info.job.id: JobSeen(room=info.job.room.name, identity=info.accept_arguments.identity)
        for info in server.active_jobs
        if not info.fake_job
    }


async def report_lost(jobs: list[JobSeen], *, reason: str) -> None:
    from sessions.services import session_agent_lost

    for job in jobs:
        try:
            recovered = await db(session_agent_lost, room_name=job.room, identity=job.identity, reason=reason)
        except Exception:
            logger.exception("could not report a lost job for room %s", job.room)
            continue
        if recovered:
            logger.warning("job for room %s lost: %s; a new agent is on its way", job.room, reason)


_taking: set[asyncio.Task[None]] = set()


def note_job_taken(room_name: str) -> None:
    """The request handler accepted a job: tell the session at once, so the watchdog does
    not offer it again while the job launches (off the handler's path: it must not wait)."""
    from sessions.transcripts import session_job_taken

    async def stamp() -> None:
        try:
            await db(session_job_taken, room_name=room_name)
        except Exception:
            # the database is away: at worst the job is offered again, and the second
            # agent leaves the session to the one the database names
            logger.warning("could not record the job taken for room %s", room_name, exc_info=True)

    task = asyncio.get_running_loop().create_task(stamp(), name="job-taken")
    _taking.add(task)
    task.add_done_callback(_taking.discard)


async def watch_sessions(server: AgentServer, capacity: Capacity | None = None) -> None:
    """Run for the worker's life: stamp heartbeats, report jobs that vanished, and let the
    capacity decide on recycling as jobs end."""
    from sessions.transcripts import sessions_heartbeat

    interval = max(settings.AGENT_HEARTBEAT_INTERVAL_SECONDS, 0.05)
    seen: dict[str, JobSeen] = {}
    while True:
        await asyncio.sleep(interval)
        if capacity is not None:
            capacity.check()
        running = jobs_running(server)
        vanished = [job for job_id, job in seen.items() if job_id not in running]
        seen = running
        if vanished:
            await report_lost(vanished, reason=JOB_LOST_REASON)
        if running and server.id:
            try:
                await db(
                    sessions_heartbeat, worker_id=server.id, rooms=sorted(j.room for j in running.values())
                )
            except Exception:
                # the database is away: the stamps go stale, which is the truth
                logger.warning("could not stamp the heartbeat of %d session(s)", len(running), exc_info=True)


async def hand_over(server: AgentServer) -> None:
    """Before a drained worker closes the conversations it still holds: hand them to other workers."""
    jobs = list(jobs_running(server).values())
    if jobs:
        logger.warning("handing %d conversation(s) over to other workers", len(jobs))
        await report_lost(jobs, reason=DRAIN_REASON)


async def wait_until_taken_over(server: AgentServer, timeout: float) -> None:
    """After a hand-over each old agent leaves once its replacement joins (the newest wins)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while jobs_running(server) and loop.time() < deadline:
        await asyncio.sleep(0.1)
