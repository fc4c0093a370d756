"""Running an AgentServer from a management command: options, signals, draining, exit codes.

Shared by run_voice_agent and run_conference_agent; only the entrypoint and
the agent name differ.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess

logger = logging.getLogger("agentconnect.worker")

EXIT_OK = 0
EXIT_CONNECT_FAILED = 2

# What the openai plugins and their HTTP stack import lazily, on first use: the
# openai SDK (3.x) loads each resource module on first attribute access (so
# livekit-agents' own `import openai.resources` warm-up loads none of them), and
# anyio loads its backend under httpcore's first request. In a job that happened
# on the agent's event loop at session start and at the first turn ("event loop
# blocked ... importing openai.pagination", 0.1-0.6 s on a busy host; ~45 ms of
# CPU on a quiet one; bench/bench_dispatch.py). Imported in the forkserver, they
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


def jobs_load(server: AgentServer) -> float:
    """Load as the share of conversation slots in use.

    livekit-agents' default measures the whole machine's CPU, so on a host
    shared with other services (or a busy CI box) a worker reports itself
    full with no conversation at all, and LiveKit stops offering it jobs.
    Slots are what an operator sizes a worker by; CPU is watched by metrics.
    """
    return min(len(server.active_jobs) / max(settings.AGENT_MAX_JOBS_PER_WORKER, 1), 1.0)


def build_server(spec: WorkerSpec, *, devmode: bool) -> AgentServer:
    """Explicit dispatch only: registering with an agent_name means LiveKit never
    sends this worker a job that was not dispatched to that name."""
    server = AgentServer(
        setup_fnc=spec.prewarm,
        # dev: no idle pool, a process starts per job; start: prewarmed processes
        # so a job begins without paying for imports and model loading.
        num_idle_processes=0 if devmode else settings.AGENT_NUM_IDLE_PROCESSES,
        # dev: never refuse a job for load.
        load_threshold=math.inf if devmode else settings.AGENT_LOAD_THRESHOLD,
        load_fnc=jobs_load,
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
        preload_modules=["voiceagents.providers.factory", spec.entrypoint.__module__, *LAZY_PROVIDER_MODULES],
        prometheus_port=spec.metrics_port or None,
        prometheus_multiproc_dir=(
            str(Path(settings.AGENT_METRICS_DIR) / spec.agent_name) if spec.metrics_port else None
        ),
    )
    server.rtc_session(spec.entrypoint, agent_name=spec.agent_name)
    return server


async def serve(server: AgentServer, *, devmode: bool, drain_timeout: float) -> int:
    """Run until SIGTERM/SIGINT (drain, then exit 0) or until LiveKit cannot be reached (non-zero)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

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
            logger.warning("drain timeout passed; ending the remaining conversations")
        await server.aclose()

    closer = asyncio.create_task(drain_then_close())
    try:
        await server.run(devmode=devmode)
    except Exception as exc:
        logger.error("agent worker stopped: %s", exc)
        await server.aclose()
        return EXIT_CONNECT_FAILED
    finally:
        if not closer.done():
            closer.cancel()
    return EXIT_OK


def run_worker(spec: WorkerSpec, *, mode: str) -> int:
    # livekit plugins register themselves on import, which must happen on the main thread.
    import voiceagents.providers.factory  # noqa: F401

    devmode = mode == "dev"
    if devmode:
        logging.getLogger("agentconnect").setLevel(logging.DEBUG)
        logging.getLogger("livekit.agents").setLevel(logging.DEBUG)
    server = build_server(spec, devmode=devmode)
    return asyncio.run(serve(server, devmode=devmode, drain_timeout=settings.AGENT_DRAIN_TIMEOUT_SECONDS))
