"""API throughput and latency: start-voice-session beside trivial endpoints, same server, same run.

    .venv/bin/python bench/bench_api.py [--requests 1000] [--concurrency 10 50]

Starts its own stack (bench/load_cycles.py: gunicorn as in production, 3 gthread workers x 4 threads,
private redis-server as broker and cache, PostgreSQL database `bench_rel`; no
Celery worker and no livekit-server: the dispatch tasks wait in the queue, so
what is measured is the API's own work). For each concurrency level it sends
--requests requests of each kind, closed loop, keep-alive, from this process:

- start-voice-session: validate, authenticate the widget key, insert, admission
  control (one upsert of the company's live-session counter, which also reads
  the other companies' counts), commit, enqueue the dispatch on Redis, mint
  the visitor's token;
- agent-status: the trivial DRF endpoint (same authentication, one row read);
- /healthz: the floor (answered by a middleware, no DRF, no database).

Two load generators, chosen with --client: `raw` (the default), keep-alive
HTTP/1.1 on asyncio streams, each request's bytes written out once and only
the status line and the body's framing read back (~0.35 ms of CPU per request);
and `aiohttp` (0.66-1.0 ms), the client of the runs before 2026-11-26 15:00 UTC.
Both share the machine's 2 cores with the server, so the lighter one takes
less of the server's CPU and queues less in its own event loop: the latency
it reports is more the server's.

Prints requests/s, median and p99 latency per endpoint and level (over all
requests); beside them the slowest of each connection's first request ("1st
max": a new connection, perhaps a worker thread's first request of that kind)
and the p99 of the other requests ("p99 rest"), so a tail made of first
requests shows as such; and where
the CPU went meanwhile: gunicorn's processes and this load generator, in ms of
CPU per request, and how busy the machine's cores were (PostgreSQL, Redis and
anything else running included). The load generator shares the 2 cores with
the server: figures are for comparison within a run, not capacity planning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_cycles import ROOT as ROOT_DIR
from load_cycles import START, STATUS, percentile, running_stack, seed, use_port_offset


class RawHTTP:
    """One kept-alive HTTP/1.1 connection: write a request's bytes, read the status and the body."""

    def __init__(self, base: str, key: str) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.head = f"Host: {url.netloc}\r\nX-Widget-Key: {key}\r\nAccept: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        payload = b"" if body is None else json.dumps(body).encode()
        content = (
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            if body is not None
            else ""
        )
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{content}\r\n".encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, closing = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value == b"chunked"
            elif name == b"connection":
                closing = value == b"close"
        if chunked:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")  # the empty trailer
        elif length:
            await self.reader.readexactly(length)
        if closing:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        self.reader = self.writer = None


async def hammer(
    base: str, key: str, concurrency: int, total: int, make: Any, client: str = "raw"
) -> dict[str, Any]:
    if client == "raw":
        return await _hammer_raw(base, key, concurrency, total, make)
    return await _hammer_aiohttp(base, key, concurrency, total, make)


async def _hammer_raw(base: str, key: str, concurrency: int, total: int, make: Any) -> dict[str, Any]:
    latencies: list[float] = []
    firsts: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def lane() -> None:
        http, first = RawHTTP(base, key), True
        try:
            for n in counter:
                method, path, body = make(n)
                t0 = time.perf_counter()
                code = await asyncio.wait_for(http.request(method, path, body), timeout=60)
                statuses[code] = statuses.get(code, 0) + 1
                (firsts if first else latencies).append((time.perf_counter() - t0) * 1000)
                first = False
        finally:
            await http.close()

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return _summary(total, time.perf_counter() - began, latencies, firsts, statuses)


async def _hammer_aiohttp(base: str, key: str, concurrency: int, total: int, make: Any) -> dict[str, Any]:
    latencies: list[float] = []
    firsts: list[float] = []  # each connection's first request (a new connection, maybe a cold thread)
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"X-Widget-Key": key}) as http:

        async def lane() -> None:
            first = True
            for n in counter:
                method, path, body = make(n)
                t0 = time.perf_counter()
                async with http.request(
                    method, base + path, json=body, timeout=aiohttp.ClientTimeout(total=60)
                ) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                (firsts if first else latencies).append((time.perf_counter() - t0) * 1000)
                first = False

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return _summary(total, elapsed, latencies, firsts, statuses)


def _summary(
    total: int, elapsed: float, latencies: list[float], firsts: list[float], statuses: dict[int, int]
) -> dict[str, Any]:
    rest = list(latencies)
    latencies = latencies + firsts
    return {
        "rps": total / elapsed,
        "median": statistics.median(latencies),
        "p99": percentile(latencies, 99),
        "p99_rest": percentile(rest, 99),
        "first_max": max(firsts, default=float("nan")),
        "ok": sum(n for s, n in statuses.items() if s < 400) / total,
        "statuses": statuses,
    }


class CpuMeter:
    """CPU spent by the server's process tree and by this process, and the cores' busy share."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.me = psutil.Process()

    def _server_cpu(self) -> float:
        total = 0.0
        for proc in [self.server, *self.server.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:  # a worker recycled meanwhile (max_requests)
                continue
            total += times.user + times.system
        return total

    def __enter__(self) -> CpuMeter:
        self.server0, self.me0 = self._server_cpu(), sum(self.me.cpu_times()[:2])
        self.machine0 = psutil.cpu_times()
        return self

    def __exit__(self, *_: object) -> None:
        self.server_s = self._server_cpu() - self.server0
        self.client_s = sum(self.me.cpu_times()[:2]) - self.me0
        end = psutil.cpu_times()
        idle = (end.idle + end.iowait) - (self.machine0.idle + self.machine0.iowait)
        total = sum(end) - sum(self.machine0)
        self.busy = 1 - idle / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per endpoint and level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--workers", type=int, default=3, help="gunicorn processes (production: 3)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn process (production: 4)")
    parser.add_argument(
        "--port-offset", type=int, default=0, help="shift the stack's ports (another checkout's run)"
    )
    parser.add_argument(
        "--client", choices=["raw", "aiohttp"], default="raw", help="load generator (see above)"
    )
    args = parser.parse_args()
    use_port_offset(args.port_offset)
    if not 1 <= args.requests <= 20000 or any(not 1 <= c <= 200 for c in args.concurrency):
        raise SystemExit("keep it bounded: 1-20000 requests, concurrency 1-200")

    print(f"gunicorn: {args.workers} workers x {args.threads} threads; load generator: {args.client}")
    with running_stack(
        celery=False, livekit=False, gunicorn_workers=args.workers, gunicorn_threads=args.threads
    ) as st:
        ids = seed(st.env)
        key = ids["widget_key"]
        body = {"agent_id": ids["agent_id"], "company_id": ids["company_id"]}
        run = f"b{int(time.time())}"

        async def warm() -> None:
            await hammer(
                st.api,
                key,
                4,
                40,
                lambda n: ("POST", START, {**body, "session_id": f"{run}-warm-{n}"}),
                args.client,
            )

        asyncio.run(warm())
        print(
            f"{'endpoint':<24} {'conc':>4} {'req/s':>8} {'median ms':>10} {'p99 ms':>8} "
            f"{'server cpu ms':>13} {'client cpu ms':>13} {'cores busy':>10} {'1st max':>8} {'p99 rest':>8}  ok"
        )
        for concurrency in args.concurrency:
            kinds = {
                "start-voice-session": lambda n, c=concurrency: (
                    "POST",
                    START,
                    {**body, "session_id": f"{run}-{c}-{n}"},
                ),
                "agent-status (DRF)": lambda n: ("GET", STATUS.format(f"{run}-warm-{n % 40}"), None),
                "/healthz (floor)": lambda n: ("GET", "/healthz", None),
            }
            for name, make in kinds.items():
                with CpuMeter(st.procs["gunicorn"].pid) as cpu:
                    result = asyncio.run(hammer(st.api, key, concurrency, args.requests, make, args.client))
                print(
                    f"{name:<24} {concurrency:>4} {result['rps']:>8.1f} {result['median']:>10.1f} "
                    f"{result['p99']:>8.1f} {cpu.server_s * 1000 / args.requests:>13.2f} "
                    f"{cpu.client_s * 1000 / args.requests:>13.2f} {cpu.busy:>10.0%} "
                    f"{result['first_max']:>8.1f} {result['p99_rest']:>8.1f}  "
                    f"{result['ok']:.0%} {result['statuses']}"
                )
        forget(st.env, run)


def forget(env: dict[str, str], run: str) -> None:
    """The run's sessions were never dispatched (no Celery worker here): remove them from
    the bench database, so a later run's reconcile does not count them (deleting a live
    session gives its company's counted place back)."""
    code = (
        "import sys, django; django.setup()\n"
        "from sessions.models import ConversationSession\n"
        "ConversationSession.objects.filter(session_id__startswith=sys.argv[1] + '-').delete()\n"
    )
    subprocess.run([sys.executable, "-c", code, run], cwd=ROOT_DIR, env=env, check=True, timeout=120)


if __name__ == "__main__":
    main()
