"""Set-up shared by the voice-agent benchmarks: a private stack on 127.0.0.1.

Each benchmark starts what it needs, in its own process group, and stops it by
pid when it ends (also on Ctrl-C or an error):

  livekit-server  its own config (/tmp/ac-bench/livekit.yaml): port 7950, rtc
                  7951/7952, webhooks to the Django server below
  Django          `manage.py runserver 127.0.0.1:18805 --noreload` (API + webhooks);
                  BENCH_PORT_OFFSET=N adds N to these ports
  Celery worker   broker redis db 8 (tests.processes.celery_worker)
  voice worker    `manage.py run_voice_agent start` (prewarmed idle processes)
  stub server     `python -m stubs.server` (OpenAI protocol for LLM, STT and TTS)

PostgreSQL and Redis are the shared test services (scripts/test-services.sh);
the benchmarks use their own database `bench` and Redis db 8. Credentials come
from .run/test/env (read here when the variables are not already set).

The subprocess helpers are the tests' own (tests.processes.Process,
celery_worker), so benchmarks and end-to-end tests start processes alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORK = Path("/tmp/ac-bench")
# BENCH_PORT_OFFSET moves the stack's ports, for a second checkout (or a port left taken)
PORT_OFFSET = int(os.environ.get("BENCH_PORT_OFFSET", "0"))
LIVEKIT_PORT = 7950 + PORT_OFFSET
RTC_TCP_PORT = 7951 + PORT_OFFSET
RTC_UDP_PORT = 7952 + PORT_OFFSET
DJANGO_PORT = 18805 + PORT_OFFSET
REDIS_DB = 8
DB_NAME = "bench"
LIVEKIT_KEY = "testkey"
PYTHON = sys.executable

STUB_PROVIDERS = {"llm_provider": "openai", "stt_provider": "openai", "tts_provider": "openai"}
OFFLINE_PROVIDERS = {"llm_provider": "echo", "stt_provider": "local", "tts_provider": "local"}


# --- environment ----------------------------------------------------------------------------


def _test_env_file() -> dict[str, str]:
    path = ROOT / ".run" / "test" / "env"
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            values[key] = value.strip().strip("'\"")
    return values


def _with_db(url: str, db: str | int) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{db}"))


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every benchmark process (and of the benchmark itself)."""
    test = _test_env_file()
    secret = os.environ.get("LIVEKIT_API_SECRET") or test.get("LIVEKIT_API_SECRET")
    base_db = os.environ.get("DATABASE_URL") or test.get("DATABASE_URL")
    redis = os.environ.get("REDIS_URL") or test.get("REDIS_URL", "redis://127.0.0.1:63799/0")
    if not secret or not base_db:
        raise SystemExit("no LIVEKIT_API_SECRET / DATABASE_URL: run scripts/test-services.sh start first")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="agentconnect.settings",
        DJANGO_SECRET_KEY="bench",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_DEBUG="false",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        LIVEKIT_URL=f"ws://127.0.0.1:{LIVEKIT_PORT}",
        LIVEKIT_PUBLIC_URL=f"ws://127.0.0.1:{LIVEKIT_PORT}",
        LIVEKIT_API_KEY=LIVEKIT_KEY,
        LIVEKIT_API_SECRET=secret,
        DATABASE_URL=_with_db(base_db, DB_NAME),
        REDIS_URL=_with_db(redis, REDIS_DB),
        CELERY_BROKER_URL=_with_db(redis, REDIS_DB),
        CELERY_TASK_ALWAYS_EAGER="false",
        # what is measured here is not admission control
        RATE_LIMIT_START_PER_IP="off",
        RATE_LIMIT_START_PER_KEY="off",
        RATE_LIMIT_TOKEN_PER_IP="off",
        RATE_LIMIT_TOKEN_PER_KEY="off",
        LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS="30",
        LIVEKIT_ROOM_DEPARTURE_TIMEOUT_SECONDS="5",
        AGENT_VISITOR_JOIN_TIMEOUT_SECONDS="30",
    )
    # a stray setting from the caller's shell must not point a child elsewhere
    for name in ("TEST_LIVESERVER_PORT",):
        env.pop(name, None)
    env.update(extra)
    return env


def setup_django(env: dict[str, str]) -> None:
    """Configure this process for the bench database, then django.setup()."""
    os.environ.update(env)
    import logging

    import django

    django.setup()
    # the rtc SDK logs every signalling step at INFO; the figures are what this process prints
    logging.getLogger("livekit").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)


# --- services and database ------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_services() -> None:
    """The shared PostgreSQL and Redis (started if down; never stopped here: others use them),
    on the ports scripts/test-services.sh wrote to .run/test/env (its defaults before a first start)."""
    test = _test_env_file()
    pg = urlparse(
        os.environ.get("DATABASE_URL") or test.get("DATABASE_URL", "postgres://127.0.0.1:54329")
    ).port
    redis = urlparse(os.environ.get("REDIS_URL") or test.get("REDIS_URL", "redis://127.0.0.1:63799")).port
    if port_open(pg or 54329) and port_open(redis or 63799):
        return
    subprocess.run([str(ROOT / "scripts" / "test-services.sh"), "start"], cwd=ROOT, check=True, timeout=180)


def ensure_database(env: dict[str, str]) -> None:
    """Create the `bench` database if missing, then migrate it."""
    import psycopg

    base = urlparse(env["DATABASE_URL"])._replace(path="/postgres")
    with psycopg.connect(urlunparse(base), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300
    )


def livekit_config(env: dict[str, str]) -> Path:
    from agentconnect.livekit_config import NodeConfig, render

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "livekit.yaml"
    path.write_text(
        render(
            NodeConfig(
                port=LIVEKIT_PORT,
                rtc_tcp_port=RTC_TCP_PORT,
                rtc_udp_port=RTC_UDP_PORT,
                key=LIVEKIT_KEY,
                secret=env["LIVEKIT_API_SECRET"],
                webhook_urls=(f"http://127.0.0.1:{DJANGO_PORT}/api/v1/livekit-agents/webhook",),
                empty_timeout=30,
                departure_timeout=5,
            )
        )
    )
    path.chmod(0o600)
    return path


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    env: dict[str, str]
    procs: dict[str, Any] = field(default_factory=dict)
    stub_url: str = ""
    worker_http_port: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{DJANGO_PORT}"

    def logs(self, name: str) -> list[str]:
        proc = self.procs.get(name)
        return list(proc.lines) if proc is not None else []

    def save_logs(self, prefix: str) -> None:
        for name, proc in self.procs.items():
            (WORK / f"{prefix}-{name}.log").write_text("\n".join(proc.lines) + "\n")


def _process(args: list[str], env: dict[str, str], name: str) -> Any:
    from tests.processes import Process

    return Process(args, env, name)


@contextlib.contextmanager
def stack(
    *,
    celery: bool = True,
    worker: bool = True,
    stub: bool = True,
    worker_env: dict[str, str] | None = None,
    django_env: dict[str, str] | None = None,
    stub_args: list[str] | None = None,
    log_prefix: str = "bench",
) -> Iterator[Stack]:
    """Start the benchmark's own livekit-server, Django, Celery, stub and voice worker."""
    for port, what in ((LIVEKIT_PORT, "livekit"), (DJANGO_PORT, "django")):
        if port_open(port):
            raise SystemExit(f"127.0.0.1:{port} ({what}) is in use: another benchmark is running?")
    env = bench_env()
    st = Stack(env=env)
    with contextlib.ExitStack() as stack_:

        def stopper(name: str) -> Callable[[], None]:
            def stop() -> None:
                proc = st.procs.get(name)
                if proc is not None:
                    proc.stop()

            return stop

        lk = _process(
            [str(ROOT / ".bin" / "livekit-server"), "--config", str(livekit_config(env))], env, "livekit"
        )
        st.procs["livekit"] = lk
        stack_.callback(stopper("livekit"))
        wait_port(LIVEKIT_PORT, 30, "livekit-server")

        if stub:
            port = free_port()
            args = [PYTHON, "-m", "stubs.server", "--port", str(port), *(stub_args or [])]
            st.procs["stub"] = _process(args, env, "stub")
            stack_.callback(stopper("stub"))
            wait_port(port, 60, "stub server")
            st.stub_url = f"http://127.0.0.1:{port}"
            env.update(OPENAI_API_KEY="stub", OPENAI_BASE_URL=st.stub_url + "/v1")

        st.procs["django"] = _process(
            [PYTHON, "manage.py", "runserver", f"127.0.0.1:{DJANGO_PORT}", "--noreload"],
            {**env, **(django_env or {})},
            "django",
        )
        stack_.callback(stopper("django"))
        wait_port(DJANGO_PORT, 60, "django runserver")

        if celery:
            from tests.processes import celery_worker

            st.procs["celery"] = stack_.enter_context(celery_worker(env))

        if worker:
            st.worker_http_port = free_port()
            wenv = {
                **env,
                "AGENT_NUM_IDLE_PROCESSES": "2",
                "VOICE_AGENT_HTTP_PORT": str(st.worker_http_port),
                **(worker_env or {}),
            }
            proc = _process([PYTHON, "manage.py", "run_voice_agent", "start"], wenv, "worker")
            st.procs["worker"] = proc
            stack_.callback(stopper("worker"))
            proc.wait_for_output("registered worker", timeout=120)
            if wenv.get("AGENT_JOB_EXECUTOR") != "thread":  # job threads live in the worker itself
                wait_idle_pool(proc.proc.pid, int(wenv["AGENT_NUM_IDLE_PROCESSES"]), timeout=120)
        try:
            yield st
        finally:
            WORK.mkdir(parents=True, exist_ok=True)
            st.save_logs(log_prefix)


def restart_django(st: Stack, extra_env: dict[str, str]) -> None:
    """Replace the Django server (e.g. with CELERY_TASK_ALWAYS_EAGER) on the same port."""
    old = st.procs["django"]
    old.stop()
    st.procs[f"django-{sum(1 for n in st.procs if n.startswith('django'))}"] = old
    deadline = time.monotonic() + 20
    while port_open(DJANGO_PORT) and time.monotonic() < deadline:
        time.sleep(0.1)
    st.procs["django"] = _process(
        [PYTHON, "manage.py", "runserver", f"127.0.0.1:{DJANGO_PORT}", "--noreload"],
        {**st.env, **extra_env},
        "django",
    )
    wait_port(DJANGO_PORT, 60, "django runserver")


# --- worker processes (psutil) -----------------------------------------------------------------


def job_processes(worker_pid: int) -> list[Any]:
    """The worker's job processes: the children of its multiprocessing forkserver."""
    import psutil

    try:
        main = psutil.Process(worker_pid)
        children = main.children()
    except psutil.NoSuchProcess:
        return []
    procs = []
    for child in children:
        try:
            if "forkserver" in " ".join(child.cmdline()):
                procs.extend(child.children())
        except psutil.NoSuchProcess:
            continue
    return procs


def in_room(proc: Any) -> bool:
    """A job process running a conversation holds a connection to livekit-server."""
    import psutil

    try:
        return any(c.raddr and c.raddr.port == LIVEKIT_PORT for c in proc.net_connections(kind="tcp"))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def wait_idle_pool(worker_pid: int, idle: int, timeout: float) -> bool:
    """Until the worker has exactly `idle` job processes and none of them is in a room.

    A process is spawned to refill the pool after each job starts, and a job's
    process exits after it ends; sequential measurements each begin with a
    full, quiet pool. Polled (no event to await from another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = job_processes(worker_pid)
        if len(procs) == idle and not any(in_room(p) for p in procs):
            return True
        time.sleep(0.1)
    return False


@dataclass
class MemorySample:
    processes: int
    rss_mb: list[float]
    pss_mb: list[float]
    uss_mb: list[float]
    in_room: list[bool]


def memory_sample(worker_pid: int) -> MemorySample:
    import psutil

    sample = MemorySample(0, [], [], [], [])
    for proc in job_processes(worker_pid):
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        sample.processes += 1
        sample.rss_mb.append(info.rss / 2**20)
        sample.pss_mb.append(getattr(info, "pss", 0) / 2**20)
        sample.uss_mb.append(info.uss / 2**20)
        sample.in_room.append(in_room(proc))
    return sample


def tree_cpu_seconds(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                total += t.user + t.system
    except psutil.NoSuchProcess:
        pass
    return total


# --- the API, as the widget calls it ------------------------------------------------------------


def make_agent(**fields: Any) -> Any:
    """A company (generous session limit) and a one-to-one agent in the bench database."""
    from tests.factories import CompanyFactory, VoiceAgentFactory

    company = CompanyFactory(
        slug=f"bench-{int(time.time() * 1000)}", name=f"Bench {time.time():.3f}", max_concurrent_sessions=100
    )
    return VoiceAgentFactory(company=company, **fields)


def _post(url: str, key: str, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Widget-Key": key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"POST {url}: {exc.code} {exc.read()[:500]!r}") from exc


def start_session(st: Stack, agent: Any, session_id: str) -> dict[str, Any]:
    return _post(
        f"{st.api}/api/v1/livekit-agents/start-voice-session",
        agent.company.widget_key,
        {
            "session_id": session_id,
            "agent_id": agent.pk,
            "company_id": agent.company_id,
            "participant_name": "Bench",
        },
    )


def stop_session(st: Stack, agent: Any, session_id: str) -> dict[str, Any]:
    return _post(
        f"{st.api}/api/v1/livekit-agents/stop-voice-session",
        agent.company.widget_key,
        {"session_id": session_id},
    )


def session_row(session_id: str) -> Any:
    from sessions.models import ConversationSession

    return ConversationSession.objects.filter(session_id=session_id).order_by("-pk").first()


async def wait_status(session_id: str, statuses: tuple[str, ...], timeout: float) -> str:
    """Poll the database (another process writes it) until the session reaches a status."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        row = await asyncio.to_thread(session_row, session_id)
        status = row.agent_status if row is not None else ""
        if status in statuses:
            return status
        await asyncio.sleep(0.1)
    return status


# --- figures ---------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def fmt_ms(stats: dict[str, float], keys: tuple[str, ...] = ("median", "p95", "min", "max")) -> str:
    if not stats.get("n"):
        return "n=0"
    return f"n={stats['n']} " + " ".join(f"{k} {stats[k] * 1000:.0f} ms" for k in keys)


def log_records(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON log lines of a process, each with `t` (epoch seconds) added."""
    records = []
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "ts" not in record:
            continue
        with contextlib.suppress(ValueError):
            record["t"] = datetime.fromisoformat(record["ts"]).timestamp()
            records.append(record)
    return records


def machine_note(when: str = "start") -> str:
    import psutil

    load1, load5, _ = os.getloadavg()
    if when != "start":
        return f"load average {load1:.1f}/{load5:.1f} (1/5 min) at the {when}"
    return (
        f"{os.cpu_count()} CPUs, load average {load1:.1f}/{load5:.1f} (1/5 min) at start, "
        f"{psutil.virtual_memory().available / 2**30:.1f} GiB available; the machine is shared "
        "with other engineers' test runs, so compare ratios within a run"
    )


# --- conversations ---------------------------------------------------------------------------


def speech(text: str) -> tuple[bytes, int, float]:
    """espeak-ng speech for `text`, trimmed to the first and last loud 10 ms window.

    The visitor's speak() reports when its last sample was played out; with the
    trailing silence cut, that is when the speech really stopped (which is when
    the agent's VAD starts counting silence). Returns (pcm, rate, seconds)."""
    from tests.visitor import SILENCE_RMS
    from voiceagents.providers.offline_tts import synthesize_pcm

    pcm, rate = synthesize_pcm(text)
    samples = np.frombuffer(pcm, dtype=np.int16)
    window = rate // 100
    usable = samples[: samples.size // window * window].astype(np.float32).reshape(-1, window)
    loud = np.nonzero(np.sqrt(np.mean(usable**2, axis=1)) > SILENCE_RMS)[0]
    if loud.size:
        samples = samples[loud[0] * window : (loud[-1] + 1) * window]
    return samples.tobytes(), rate, samples.size / rate


@dataclass
class Turn:
    latency: float  # visitor's speech ended -> first agent audio at the visitor
    ended_wall: float


async def conversation_turns(
    visitor: Any,
    pcm: bytes,
    rate: int,
    *,
    turns: int,
    pause: float,
    deadline: float,
    reply_timeout: float = 20.0,
    on_turn: Callable[[int, Turn], None] | None = None,
) -> tuple[list[Turn], int]:
    """Speak, time the agent's answer, wait for it to finish, pause; `turns` times or until `deadline`.

    Returns the turns timed and how many got no answer within reply_timeout."""
    out: list[Turn] = []
    missed = 0
    for i in range(turns):
        if time.monotonic() > deadline:
            break
        # a microphone keeps sending after the words; 1 s is longer than any VAD silence window
        ended = await visitor.speak(pcm, rate, trailing_silence=1.0)
        ended_wall = time.time() - (time.monotonic() - ended)
        try:
            heard = await visitor.wait_for_agent_speech(after=ended, timeout=reply_timeout)
        except AssertionError:
            missed += 1
            continue
        turn = Turn(latency=heard - ended, ended_wall=ended_wall)
        out.append(turn)
        if on_turn is not None:
            on_turn(i, turn)
        await visitor.wait_until_agent_quiet(quiet_for=0.6, timeout=30)
        await asyncio.sleep(pause)  # a listener's pause before the next question
    return out, missed


def prepare() -> dict[str, str]:
    """What every benchmark does first: its environment, the shared services, its
    database, Django; prints the machine's state. Returns the environment."""
    env = bench_env()
    ensure_services()
    ensure_database(env)
    setup_django(env)
    print("machine:", machine_note())
    return env


def endpointing_config() -> dict[str, float]:
    """The delays that end a user's turn, as the agent worker configures them.

    The worker reads AGENT_VAD_MIN_SILENCE_SECONDS and AGENT_ENDPOINTING_DELAY_SECONDS
    from the same environment as this process (Django settings, set up before this is
    called); the factory passes them to silero and to the session's endpointing."""
    from django.conf import settings
    from livekit.agents.voice import turn as lk_turn

    from voiceagents.providers.factory import turn_settings, vad_settings

    min_silence, min_delay, preemptive_tts = turn_settings(settings)
    defaults = dict(getattr(lk_turn, "_ENDPOINTING_DEFAULTS", {}))
    return {
        "endpointing_min_delay": min_delay,
        "endpointing_max_delay": float(defaults.get("max_delay", 3.0)),
        "vad_min_silence_duration": min_silence,
        "vad_deactivation_threshold": vad_settings(settings)[1],
        "preemptive_tts": float(preemptive_tts),
    }


def turn_metrics(session_id: str) -> dict[str, list[float]]:
    """The agent's own per-turn metrics, as the runtime stored them (TranscriptTurn.metrics)."""
    from sessions.models import TranscriptTurn

    out: dict[str, list[float]] = {}
    rows = TranscriptTurn.objects.filter(session__session_id=session_id).order_by("sequence")
    for row in rows:
        for key, value in (row.metrics or {}).items():
            if isinstance(value, (int, float)):
                out.setdefault(f"{row.role}.{key}", []).append(float(value))
    return out


async def echo_round_trips(
    env: dict[str, str], pcm: bytes, rate: int, duration: float, n: int
) -> list[float]:
    """Audio round trip through livekit-server with no agent: a participant that republishes
    every frame it receives from the visitor. Visitor's speech start -> first echoed sound."""
    from livekit import api, rtc

    from tests.visitor import Visitor

    def token(identity: str, room: str) -> str:
        grant = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        return (
            api.AccessToken(LIVEKIT_KEY, env["LIVEKIT_API_SECRET"])
            .with_identity(identity)
            .with_grants(grant)
            .to_jwt()
        )

    url = env["LIVEKIT_URL"]
    room_name = f"bench-echo-{int(time.time())}"
    echo = rtc.Room()
    source = rtc.AudioSource(48000, 1)
    tasks: set[asyncio.Task[None]] = set()

    async def relay(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        try:
            async for event in stream:
                await source.capture_frame(event.frame)
        finally:
            await stream.aclose()

    @echo.on("track_subscribed")
    def _on_track(track: rtc.Track, *_: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            task = asyncio.create_task(relay(track))
            tasks.add(task)

    await echo.connect(url, token("echo", room_name))
    out_track = rtc.LocalAudioTrack.create_audio_track("echo", source)
    await echo.local_participant.publish_track(
        out_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    visitor = Visitor("bench")
    await visitor.join(url, token("visitor", room_name))
    trips = []
    try:
        for _ in range(n):
            ended = await visitor.speak(pcm, rate, trailing_silence=0.2)
            started = ended - duration
            heard = visitor.heard.get("echo")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                heard is None or not [t for t in heard.bursts if t >= started]
            ):
                await asyncio.sleep(0.01)
                heard = visitor.heard.get("echo")
            if heard is not None:
                later = [t for t in heard.bursts if t >= started]
                if later:
                    trips.append(later[0] - started)
            await asyncio.sleep(1.0)  # the echo's burst ends (400 ms of quiet) before the next
    finally:
        for task in tasks:
            task.cancel()
        await visitor.leave()
        await echo.disconnect()
    return trips
