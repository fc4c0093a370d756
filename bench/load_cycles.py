"""Load: N start/stop cycles at concurrency C against a running stack, then an audit.

    .venv/bin/python bench/load_cycles.py [--cycles 500] [--concurrency 25]

Starts its own stack on 127.0.0.1 (nothing else is touched; everything is
stopped by pid at the end): livekit-server (27940, rtc 27941/27942; webhooks to
the API), a private redis-server (63819: broker and cache), gunicorn serving
the API (18795, deploy/gunicorn.conf.py: 3 gthread workers x 4 threads) and a
Celery worker (threads, 8). PostgreSQL is
the shared test server (scripts/test-services.sh), database `bench_rel`.

Each cycle is what a widget does: start-voice-session, poll agent-status until
the dispatch has happened, stop-voice-session, poll until the session has
ended. One cycle in five stops at once, before the dispatch task has run (the
race a visitor closing the page causes). Then the audit: every session of the
run is terminal; livekit-server has none of their rooms (and so none of their
dispatches); reconcile finds nothing left to fix; no 5xx was answered.

Bounded: --cycles requests of each kind, a 30 s timeout per request and per
wait, --deadline seconds overall. Prints figures; asserts nothing (exit 1
only when the audit finds a leak or a 5xx, so it can gate a release by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORK = Path("/tmp/ac-rel-bench")
LIVEKIT_PORT, RTC_TCP, RTC_UDP = 27940, 27941, 27942
API_PORT = 18795
REDIS_PORT = 63819
DB_NAME = "bench_rel"
KEY = "testkey"
START = "/api/v1/livekit-agents/start-voice-session"
STOP = "/api/v1/livekit-agents/stop-voice-session"
STATUS = "/api/v1/livekit-agents/agent-status/{}"
TERMINAL = {"stopped", "failed"}


def use_port_offset(offset: int) -> None:
    """Shift every port of the stack, and its scratch folder, by `offset` (--port-offset):
    a second checkout on the same machine runs its own stack beside this one."""
    global LIVEKIT_PORT, RTC_TCP, RTC_UDP, API_PORT, REDIS_PORT, WORK
    if not 0 <= offset <= 1000:
        raise SystemExit("--port-offset: 0-1000")
    LIVEKIT_PORT, RTC_TCP, RTC_UDP = 27940 + offset, 27941 + offset, 27942 + offset
    API_PORT, REDIS_PORT = 18795 + offset, 63819 + offset
    WORK = Path(f"/tmp/ac-rel-bench-{offset}") if offset else Path("/tmp/ac-rel-bench")


# --- the stack ---------------------------------------------------------------------------------------


def _test_env() -> dict[str, str]:
    values: dict[str, str] = {}
    path = ROOT / ".run" / "test" / "env"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                name, _, value = line[7:].partition("=")
                values[name] = value.strip().strip("'\"")
    return values


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} is not listening on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.1)


def stack_env(**extra: str) -> dict[str, str]:
    test = _test_env()
    secret = os.environ.get("LIVEKIT_API_SECRET") or test.get("LIVEKIT_API_SECRET")
    database = os.environ.get("DATABASE_URL") or test.get("DATABASE_URL")
    if not secret or not database:
        raise SystemExit("no LIVEKIT_API_SECRET / DATABASE_URL: run `make services-up` first")
    redis = f"redis://127.0.0.1:{REDIS_PORT}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="agentconnect.settings",
        DJANGO_SECRET_KEY="bench-only-secret-key",
        DJANGO_DEBUG="false",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        DATABASE_URL=urlunparse(urlparse(database)._replace(path=f"/{DB_NAME}")),
        REDIS_URL=f"{redis}/1",
        CELERY_BROKER_URL=f"{redis}/0",
        LIVEKIT_URL=f"ws://127.0.0.1:{LIVEKIT_PORT}",
        LIVEKIT_API_KEY=KEY,
        LIVEKIT_API_SECRET=secret,
        # Abuse control is not what is measured: every request comes from 127.0.0.1.
        RATE_LIMIT_START_PER_IP="off",
        RATE_LIMIT_START_PER_KEY="off",
        RATE_LIMIT_TOKEN_PER_IP="off",
        RATE_LIMIT_TOKEN_PER_KEY="off",
        # The deployment cap stays on (its lock is part of the cost), set out of reach.
        MAX_LIVE_SESSIONS="1000000",
    )
    env.update(extra)
    return env


@dataclass
class Stack:
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{API_PORT}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (WORK / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            args, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)


def _migrate(env: dict[str, str]) -> None:
    import psycopg

    admin = urlunparse(urlparse(env["DATABASE_URL"])._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


@contextlib.contextmanager
def running_stack(
    *, celery: bool = True, livekit: bool = True, gunicorn_workers: int = 3, gunicorn_threads: int = 4
) -> Iterator[Stack]:
    for port in (LIVEKIT_PORT, API_PORT, REDIS_PORT):
        if _port_open(port):
            raise SystemExit(f"127.0.0.1:{port} is in use: is another run of this benchmark going?")
    WORK.mkdir(parents=True, exist_ok=True)
    env = stack_env()
    _migrate(env)
    st = Stack(env)
    try:
        st.spawn(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(REDIS_PORT),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        _wait_port(REDIS_PORT, "redis-server")
        if livekit:
            config = WORK / "livekit.yaml"
            config.write_text(
                f"port: {LIVEKIT_PORT}\nbind_addresses: [127.0.0.1]\nlog_level: warn\n"
                f"rtc:\n  tcp_port: {RTC_TCP}\n  udp_port: {RTC_UDP}\n  use_external_ip: false\n  node_ip: 127.0.0.1\n"
                f"keys:\n  {KEY}: {env['LIVEKIT_API_SECRET']}\n"
                f"webhook:\n  api_key: {KEY}\n  urls: [http://127.0.0.1:{API_PORT}/api/v1/livekit-agents/webhook]\n"
            )
            st.spawn("livekit", [str(ROOT / ".bin" / "livekit-server"), "--config", str(config)])
            _wait_port(LIVEKIT_PORT, "livekit-server")
        st.spawn(
            "gunicorn",
            # The production configuration (deploy/gunicorn.conf.py: gthread, 3 workers x 4
            # threads), on loopback.
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "deploy" / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{API_PORT}",
                "--workers",
                str(gunicorn_workers),
                "--threads",
                str(gunicorn_threads),
            ],
        )
        _wait_port(API_PORT, "gunicorn")
        if celery:
            st.spawn(
                "celery",
                [
                    sys.executable,
                    "celery_worker.py",
                    "--pool=threads",
                    "--concurrency=8",
                    "--without-heartbeat",
                    "--without-mingle",
                    "--without-gossip",
                ],
            )
            time.sleep(3)  # the worker connects to the broker; tasks queued before then just wait
        yield st
    finally:
        st.stop_all()


def seed(env: dict[str, str]) -> dict[str, Any]:
    """A company for this run (no session limit in the way) and its agent."""
    code = (
        "import json, uuid, django; django.setup()\n"
        "from tests.factories import CompanyFactory, VoiceAgentFactory\n"
        "slug = 'bench-' + uuid.uuid4().hex[:12]\n"
        "a = VoiceAgentFactory(company=CompanyFactory(slug=slug, name=slug, max_concurrent_sessions=1000000))\n"
        "print(json.dumps({'company_id': a.company_id, 'agent_id': a.pk, 'widget_key': a.company.widget_key}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- the cycles ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    cycle_seconds: list[float] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)


async def _call(
    http: aiohttp.ClientSession, tally: Tally, method: str, url: str, **kw: Any
) -> dict[str, Any]:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=30), **kw) as response:
        tally.statuses[response.status] += 1
        body = await response.json(content_type=None)
        if response.status >= 500:
            tally.errors.append(f"{method} {url} -> {response.status} {body}")
        return dict(body)


async def _poll(
    http: aiohttp.ClientSession, tally: Tally, url: str, done: set[str], timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = str((await _call(http, tally, "GET", url)).get("status"))
        if status in done or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def one_cycle(
    http: aiohttp.ClientSession, base: str, ids: dict[str, Any], n: int, run: str, tally: Tally
) -> None:
    session_id = f"{run}-{n}"
    began = time.monotonic()
    body = {"session_id": session_id, "agent_id": ids["agent_id"], "company_id": ids["company_id"]}
    t0 = time.perf_counter()
    started = await _call(http, tally, "POST", base + START, json=body)
    tally.start_ms.append((time.perf_counter() - t0) * 1000)
    if not started.get("success"):
        tally.errors.append(f"start {session_id}: {started}")
        return
    tally.session_ids.append(session_id)
    if n % 5 != 4:  # most wait for the dispatch; one in five leaves at once
        await _poll(http, tally, base + STATUS.format(session_id), {"starting", "active", *TERMINAL})
    await _call(http, tally, "POST", base + STOP, json={"session_id": session_id})
    final = await _poll(http, tally, base + STATUS.format(session_id), TERMINAL)
    if final not in TERMINAL:
        tally.errors.append(f"{session_id} still {final} 30 s after stop")
    tally.cycle_seconds.append(time.monotonic() - began)


async def warm_up(base: str, key: str) -> None:
    """Every gunicorn worker's first requests import, connect and fill caches: not measured."""
    async with aiohttp.ClientSession(headers={"X-Widget-Key": key}) as http:
        for _ in range(4):
            await asyncio.gather(*(http.get(base + STATUS.format("warm-up")) for _ in range(8)))


async def run_cycles(
    base: str, ids: dict[str, Any], cycles: int, concurrency: int, deadline: float, run: str
) -> tuple[Tally, float]:
    tally = Tally()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(cycles):
        queue.put_nowait(n)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        base_url=None, connector=connector, headers={"X-Widget-Key": ids["widget_key"]}
    ) as http:

        async def lane() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                try:
                    await one_cycle(http, base, ids, n, run, tally)
                except Exception as exc:  # a timeout or a dropped connection is a finding, not a crash
                    tally.errors.append(f"cycle {n}: {exc!r}")

        began = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(lane() for _ in range(concurrency))), timeout=deadline)
        return tally, time.monotonic() - began


def audit(env: dict[str, str], run: str, company_id: int) -> dict[str, Any]:
    """Database vs livekit-server, in a child process set up for the bench database.

    Every session of the run counts, also one the server created for a request
    the client had given up on."""
    code = (
        "import json, sys, django; django.setup()\n"
        "from sessions.models import CompanyLiveSessions, ConversationSession, LIVE_STATUSES, TERMINAL_STATUSES\n"
        "from sessions import livekit_gateway as lk\n"
        "from sessions.services import sessions_reconcile\n"
        "run, company_id = json.load(sys.stdin)\n"
        "rows = list(ConversationSession.objects.filter(session_id__startswith=run + '-').values('agent_room_name', 'agent_status'))\n"
        "rooms = {r['agent_room_name'] for r in rows}\n"
        "on_server = lk.rooms_existing()\n"
        "leaked = sorted(rooms & on_server)\n"
        "dispatches = sum(len(lk.dispatches_for(name)) for name in leaked)\n"
        "statuses = {}\n"
        "for r in rows: statuses[r['agent_status']] = statuses.get(r['agent_status'], 0) + 1\n"
        # the admission counter, before reconcile could repair it, against the sessions table
        "counter = CompanyLiveSessions.objects.filter(company_id=company_id).values_list('live', flat=True).first() or 0\n"
        "live = ConversationSession.objects.filter(company_id=company_id, agent_status__in=LIVE_STATUSES).count()\n"
        "report = vars(sessions_reconcile())\n"
        "print(json.dumps({'sessions': len(rows), 'statuses': statuses, 'rooms_on_server': len(on_server),"
        " 'leaked_rooms': leaked, 'leaked_dispatches': dispatches, 'reconcile': report,"
        " 'live_counter': counter, 'live_sessions': live}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        input=json.dumps([run, company_id]),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--deadline", type=float, default=900, help="seconds for all the cycles")
    parser.add_argument(
        "--port-offset", type=int, default=0, help="shift the stack's ports (another checkout's run)"
    )
    args = parser.parse_args()
    use_port_offset(args.port_offset)
    if not 1 <= args.cycles <= 5000 or not 1 <= args.concurrency <= 200:
        raise SystemExit("keep it bounded: 1-5000 cycles, concurrency 1-200")

    with running_stack() as st:
        ids = seed(st.env)
        run = f"load{int(time.time())}"
        asyncio.run(warm_up(st.api, ids["widget_key"]))
        tally, elapsed = asyncio.run(
            run_cycles(st.api, ids, args.cycles, args.concurrency, args.deadline, run)
        )
        time.sleep(2)  # the last webhooks land
        found = audit(st.env, run, ids["company_id"])

    fives = sum(n for code, n in tally.statuses.items() if code >= 500)
    terminal = sum(n for status, n in found["statuses"].items() if status in TERMINAL)
    print(
        f"cycles: {len(tally.cycle_seconds)}/{args.cycles} completed at concurrency {args.concurrency} in {elapsed:.1f} s"
    )
    print(f"  sustained: {len(tally.cycle_seconds) / elapsed:.1f} sessions/s (start+dispatch+stop+close)")
    print(
        f"  cycle time: median {statistics.median(tally.cycle_seconds):.2f} s, p99 {percentile(tally.cycle_seconds, 99):.2f} s"
    )
    print(
        f"  start-voice-session under this load: median {statistics.median(tally.start_ms):.1f} ms, p99 {percentile(tally.start_ms, 99):.1f} ms"
    )
    print(f"  HTTP statuses: {dict(sorted(tally.statuses.items()))}; 5xx: {fives}")
    print(f"audit: {found['sessions']} sessions, {terminal} terminal {found['statuses']}")
    print(
        f"  leaked rooms: {len(found['leaked_rooms'])}, orphan dispatches: {found['leaked_dispatches']}, "
        f"reconcile afterwards: {found['reconcile']}"
    )
    print(
        f"  the company's live-session counter: {found['live_counter']} (live sessions in the table: {found['live_sessions']})"
    )
    for error in tally.errors[:10]:
        print("  error:", error)
    ok = (
        fives == 0
        and not found["leaked_rooms"]
        and terminal == found["sessions"]
        and not tally.errors
        and found["live_counter"] == found["live_sessions"]
    )
    print("RESULT:", "clean" if ok else "FINDINGS (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
