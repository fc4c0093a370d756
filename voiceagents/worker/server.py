"""Running an AgentServer from a management command: options, signals, draining, exit codes.

Shared by run_voice_agent and run_conference_agent; only the entrypoint and
the agent name differ.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess

from .capacity import Capacity, MemoryWatch
from .supervision import hand_over, note_job_taken, wait_until_taken_over, watch_sessions

logger = logging.getLogger("agentconnect.worker")

EXIT_OK = 0
EXIT_CONNECT_FAILED = 2
# how long a drained worker lets replacement agents arrive before it closes its jobs
HANDOVER_WAIT_SECONDS = 10.0
# replaced after AGENT_RECYCLE_AFTER_CONVERSATIONS or over its memory: the supervisor
# starts a fresh worker (docker's restart policy, systemd Restart=always)
EXIT_RECYCLE = 3

# What the openai plugins and their HTTP stack import lazily, on first use: the
# openai SDK (3.x) loads each resource module on first attribute access (so
# livekit-agents' own `import openai.resources` warm-up loads none of them), and
# anyio loads its backend under httpcore's first request. In a job that happened
# on the agent's event loop at session start and at the first turn ("event loop
# blocked ... importing openai.pagination"; bench/bench_dispatch.py). Imported in the forkserver, they
# are paid once per worker. The forkserver skips a name that fails to import.
LAZY_PROVIDER_MODULES = (
    "openai.pagination",
    "openai.resources.models",
    "openai.resources.chat.completions",
    "openai.resources.audio.speech",
    "openai.resources.audio.transcriptions",
    "openai.resources.audio.voices",
    "openai.lib.streaming.chat",
    "anyio._backends._asyncio",
    "anyio.streams.stapled",
    "anyio.streams.memory",
)


@dataclass(frozen=True)
class WorkerSpec:
    agent_name: str
    entrypoint: Callable[[JobContext], Awaitable[None]]
    prewarm: Callable[[JobProcess], None]
    http_port: int
    # Prometheus endpoint of the worker (0: none). Job processes report per-turn
    # latency into a multiprocess directory that this endpoint aggregates.
    metrics_port: int = 0


def worker_capacity(*, devmode: bool) -> Capacity:
    """Load, cap and recycling as the settings configure them (capacity.py)."""
    threads = settings.AGENT_JOB_EXECUTOR == "thread"
    return Capacity(
        # dev: never refuse a job
        max_jobs=10**6 if devmode else settings.AGENT_MAX_JOBS_PER_WORKER,
        memory_limit_mb=settings.AGENT_JOB_MEMORY_LIMIT_MB,
        recycle_after=0 if devmode else settings.AGENT_RECYCLE_AFTER_CONVERSATIONS,
        target_load=settings.LIVEKIT_AGENT_TARGET_LOAD,
        on_accept=note_job_taken,
        memory=MemoryWatch(root_pid=os.getpid(), threads=threads)
        if settings.AGENT_JOB_MEMORY_LIMIT_MB
        else None,
    )


def build_server(spec: WorkerSpec, *, devmode: bool, capacity: Capacity | None = None) -> AgentServer:
    """Explicit dispatch only: registering with an agent_name means LiveKit never
    sends this worker a job that was not dispatched to that name."""
    capacity = capacity or worker_capacity(devmode=devmode)
    server = AgentServer(
        setup_fnc=spec.prewarm,
        # dev: no idle pool, a process starts per job; start: prewarmed processes
        # so a job begins without paying for imports and model loading.
        num_idle_processes=0 if devmode else settings.AGENT_NUM_IDLE_PROCESSES,
        # dev: never refuse a job for load.
        load_threshold=math.inf if devmode else settings.AGENT_LOAD_THRESHOLD,
        load_fnc=capacity.load,
        # upstream's monitor kills a job process over this, mid-conversation: the last
        # resort above our own limit, which lets a conversation finish (capacity.py)
        job_memory_limit_mb=settings.AGENT_JOB_MEMORY_KILL_MB,
        job_memory_warn_mb=settings.AGENT_JOB_MEMORY_LIMIT_MB or 1000,
        job_executor_type=(
            JobExecutorType.THREAD if settings.AGENT_JOB_EXECUTOR == "thread" else JobExecutorType.PROCESS
        ),
        drain_timeout=settings.AGENT_DRAIN_TIMEOUT_SECONDS,
        max_retry=settings.AGENT_WORKER_MAX_RETRY,
        ws_url=settings.LIVEKIT_URL,
        api_key=settings.LIVEKIT_API_KEY,
        api_secret=settings.LIVEKIT_API_SECRET,
        host=settings.AGENT_HTTP_HOST,
        port=0 if devmode else spec.http_port,
        initialize_process_timeout=60.0,
        shutdown_process_timeout=15.0,
        log_level="DEBUG" if devmode else "INFO",
        # Imported once in the forkserver, so each job process starts with the
        # plugins and our runtime already loaded.
        preload_modules=[
            *(["voiceagents.worker.preload"] if settings.AGENT_PRELOAD_DJANGO else []),
            "voiceagents.providers.factory",
            spec.entrypoint.__module__,
            *LAZY_PROVIDER_MODULES,
        ],
        prometheus_port=spec.metrics_port or None,
        prometheus_multiproc_dir=(
            str(Path(settings.AGENT_METRICS_DIR) / spec.agent_name) if spec.metrics_port else None
        ),
    )
    server.rtc_session(spec.entrypoint, agent_name=spec.agent_name, on_request=capacity.on_request)
    capacity.attach(server)
    return server


async def serve(
    server: AgentServer, *, devmode: bool, drain_timeout: float, capacity: Capacity | None = None
) -> int:
    """Run until SIGTERM/SIGINT (drain, then exit 0), until the worker is due for
    replacement (EXIT_RECYCLE) or until LiveKit cannot be reached (non-zero)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    recycled = False

    def request_stop(signame: str) -> None:
        if stopping.is_set():
            logger.warning("%s again: closing now without waiting for conversations", signame)
            asyncio.ensure_future(server.aclose())
            return
        logger.info(
            "%s: draining (no new jobs; up to %.0f s for active conversations)", signame, drain_timeout
        )
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)

    async def drain_then_close() -> None:
        await stopping.wait()
        try:
            await server.drain(timeout=int(drain_timeout))
            logger.info("drained: every conversation ended")
        except TimeoutError:
            logger.warning("drain timeout passed; moving the remaining conversations to other workers")
            await hand_over(server)
            await wait_until_taken_over(server, timeout=HANDOVER_WAIT_SECONDS)
        await server.aclose()

    async def recycle() -> None:
        nonlocal recycled
        assert capacity is not None
        await capacity.recycle_due.wait()
        logger.info("replacing this worker: %s; no conversation is running", capacity.recycle_reason)
        recycled = True
        stopping.set()

    closer = asyncio.create_task(drain_then_close())
    watcher = asyncio.create_task(watch_sessions(server, capacity), name="watch-sessions")
    helpers: list[asyncio.Task[None]] = []
    if capacity is not None:
        if capacity.memory is not None:
            capacity.memory.start()
        helpers = [asyncio.create_task(recycle(), name="recycle")]
    try:
        await server.run(devmode=devmode)
    except Exception as exc:
        logger.error("agent worker stopped: %s", exc)
        await server.aclose()
        return EXIT_CONNECT_FAILED
    finally:
        watcher.cancel()
        if not closer.done():
            closer.cancel()
        for task in helpers:
            task.cancel()
        if capacity is not None and capacity.memory is not None:
            capacity.memory.stop()
    return EXIT_RECYCLE if recycled else EXIT_OK


def run_worker(spec: WorkerSpec, *, mode: str) -> int:
    # livekit plugins register themselves on import, which must happen on the main thread.
    import voiceagents.providers.factory  # noqa: F401

    devmode = mode == "dev"
    if devmode:
        logging.getLogger("agentconnect").setLevel(logging.DEBUG)
        logging.getLogger("livekit.agents").setLevel(logging.DEBUG)
    capacity = worker_capacity(devmode=devmode)
    server = build_server(spec, devmode=devmode, capacity=capacity)
    return asyncio.run(
        serve(server, devmode=devmode, drain_timeout=settings.AGENT_DRAIN_TIMEOUT_SECONDS, capacity=capacity)
    )
