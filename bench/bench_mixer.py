"""Conference mixer CPU cost: ours (voiceagents.worker.mixer) against livekit.rtc.AudioMixer.

Run: .venv/bin/python bench/bench_mixer.py [--seconds 3] [--repeats 3] [--sizes 2,5,10,25]

Every participant is an async stream delivering a 10 ms frame of 16 kHz mono
audio every 10 ms of real time, as rtc.AudioStream does in a worker. For each
size the same sources run three times for the same wall time:

  baseline  the sources with a trivial reader (what the streams cost anyway)
  ours      ConferenceMixer, its mix consumed as the AgentSession consumes it
  rtc       rtc.AudioMixer(blocksize=10 ms, stream_timeout_ms=100), consumed alike

CPU per 10 ms of audio = (process CPU of the run - baseline CPU) / blocks of
audio in the run. "% core" is the same over wall time. Also printed: mixed
blocks delivered versus the real-time expectation (a mixer that falls behind
delivers fewer), and the same with one participant stalled (sends nothing,
never ends): how far the output falls behind real time, and how much audio
piles up in the live streams' queues meanwhile.

Each figure is the best of --repeats runs (other processes on the machine can
only add CPU time). Prints figures only; asserts nothing. Bounded: sizes x 3
kinds x repeats x --seconds, plus two stall runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livekit import rtc  # noqa: E402

from voiceagents.worker.mixer import ConferenceMixer  # noqa: E402

SAMPLE_RATE = 16000  # what the conference agent mixes at (voiceagents/worker/conference.py)
FRAME_MS = 10
BLOCK = SAMPLE_RATE * FRAME_MS // 1000


def make_frames(seed: int, count: int = 50) -> list[rtc.AudioFrame]:
    rng = np.random.default_rng(seed)
    return [
        rtc.AudioFrame((rng.standard_normal(BLOCK) * 2000).astype(np.int16).tobytes(), SAMPLE_RATE, 1, BLOCK)
        for _ in range(count)
    ]


class PacedStream:
    """Like rtc.AudioStream: a producer queues one frame per 10 ms of loop time (absolute
    schedule, no drift of its own) whether or not anyone reads; the reader takes from the
    queue. `max_depth` shows how much piled up behind a slow reader."""

    def __init__(self, frames: list[rtc.AudioFrame], start: float, stop: float, stall_after: float | None) -> None:
        self._queue: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()
        self.max_depth = 0
        self._task = asyncio.create_task(self._produce(frames, start, stop, stall_after))

    async def _produce(self, frames: list[rtc.AudioFrame], start: float, stop: float, stall_after: float | None) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        k = 0
        while True:
            due = start + (k + 1) * period
            if due > stop:
                break
            if stall_after is not None and due - start > stall_after:
                await asyncio.sleep(stop - loop.time() + 5)  # stalled: silent, never ends
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._queue.put_nowait(frames[k % len(frames)])
            self.max_depth = max(self.max_depth, self._queue.qsize())
            k += 1
        self._queue.put_nowait(None)

    def __aiter__(self) -> PacedStream:
        return self

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def run_once(kind: str, n: int, seconds: float, *, stall: bool = False) -> dict[str, float]:
    """n paced streams for `seconds` through a mixer (or none: "baseline"), consumed in real time."""
    loop = asyncio.get_running_loop()
    frames = [make_frames(i) for i in range(n)]
    start = loop.time() + 0.05
    stop = start + seconds
    cpu0 = time.process_time()
    sources = [PacedStream(frames[i], start, stop, 0.5 if (stall and i == 0) else None) for i in range(n)]
    delivered = 0
    first_out: float | None = None
    behind_ms = 0.0

    def delivered_one() -> None:
        # how far the output is behind real time, counted from its first block
        nonlocal delivered, first_out, behind_ms
        now = loop.time()
        delivered += 1
        if first_out is None:
            first_out = now
        behind_ms = ((now - first_out) * 1000 / FRAME_MS + 1 - delivered) * FRAME_MS

    if kind == "baseline":

        async def drain(src: PacedStream) -> None:
            async for _ in src:
                pass

        await asyncio.gather(*(drain(s) for s in sources))
        delivered = int(seconds * 1000 / FRAME_MS)
    elif kind == "ours":
        mixer = ConferenceMixer(sample_rate=SAMPLE_RATE, frame_ms=FRAME_MS)
        for i, src in enumerate(sources):
            mixer.add_source(f"p{i}", src)
        await asyncio.sleep(max(0.0, start - loop.time()))
        mixer.start()

        async def consume_ours() -> None:
            async for _ in mixer:
                delivered_one()

        consumer = asyncio.create_task(consume_ours())
        await asyncio.sleep(max(0.0, stop - loop.time()))
        await mixer.aclose()
        await consumer
    else:
        amixer = rtc.AudioMixer(SAMPLE_RATE, 1, blocksize=BLOCK, stream_timeout_ms=100)
        for src in sources:
            amixer.add_stream(src)

        async def consume_rtc() -> None:
            async for _ in amixer:
                delivered_one()

        consumer = asyncio.create_task(consume_rtc())
        await asyncio.sleep(max(0.0, stop - loop.time()))
        await amixer.aclose()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    cpu = time.process_time() - cpu0
    depth = max(src.max_depth for src in sources)
    for src in sources:
        await src.aclose()
    return {"cpu": cpu, "delivered": delivered, "behind_ms": behind_ms, "max_queued_ms": depth * FRAME_MS}


async def unpaced_source(frames: list[rtc.AudioFrame], count: int) -> AsyncIterator[rtc.AudioFrame]:
    for k in range(count):
        yield frames[k % len(frames)]


async def kernel_once(kind: str, n: int, blocks: int) -> float:
    """CPU seconds to take `blocks` blocks of audio from n streams through a mixer, as fast as it goes."""
    frames = [make_frames(i) for i in range(n)]
    sources = [unpaced_source(frames[i], blocks + 50) for i in range(n)]
    cpu0 = time.process_time()
    if kind == "baseline":  # just reading the streams
        for _ in range(blocks):
            for src in sources:
                await src.__anext__()
    elif kind == "ours":  # what the reader tasks and the clock do for each block
        mixer = ConferenceMixer(sample_rate=SAMPLE_RATE, frame_ms=FRAME_MS)
        keys = [f"p{i}" for i in range(n)]
        for key in keys:
            mixer.add_source(key)
        for _ in range(blocks):
            for key, src in zip(keys, sources):
                mixer.push(key, await src.__anext__())
            mixer.mix_block()
            await mixer.__anext__()
        await mixer.aclose()
    else:
        amixer = rtc.AudioMixer(SAMPLE_RATE, 1, blocksize=BLOCK, stream_timeout_ms=100)
        for src in sources:
            amixer.add_stream(src)
        for _ in range(blocks):
            await amixer.__anext__()
        await amixer.aclose()
    cpu = time.process_time() - cpu0
    for src in sources:
        await src.aclose()  # type: ignore[attr-defined]
    return cpu


async def best(fn: Any, repeats: int) -> Any:
    """The least CPU of `repeats` runs: other processes on the machine only ever add to it."""
    results = [await fn() for _ in range(repeats)]
    return min(results, key=lambda r: r["cpu"] if isinstance(r, dict) else r)


async def main(seconds: float, sizes: list[int], repeats: int, blocks: int) -> None:
    expected = int(seconds * 1000 / FRAME_MS)
    for kind in ("baseline", "ours", "rtc"):  # warm up: imports and first-call costs
        await kernel_once(kind, 2, 50)
        await run_once(kind, 2, 0.3)
    print(f"mixer CPU, {SAMPLE_RATE} Hz mono, {FRAME_MS} ms blocks, best of {repeats} runs, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print()
    print(f"1. CPU per 10 ms of audio (µs), {blocks} blocks as fast as each mixer goes, stream reading subtracted")
    header = f"{'participants':>12} | {'ours':>8} {'% core*':>8} | {'rtc.AudioMixer':>14} {'% core*':>8} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        base = await best(lambda: kernel_once("baseline", n, blocks), repeats)
        ours = await best(lambda: kernel_once("ours", n, blocks), repeats)
        ref = await best(lambda: kernel_once("rtc", n, blocks), repeats)
        ours_us = max(0.0, ours - base) / blocks * 1e6
        ref_us = max(0.0, ref - base) / blocks * 1e6
        print(
            f"{n:>12} | {ours_us:>8.1f} {ours_us / 100:>7.2f}% | {ref_us:>14.1f} {ref_us / 100:>7.2f}% | "
            f"{ref_us / ours_us if ours_us else float('nan'):>5.1f}x"
        )
    print("   * % of one core when mixing in real time (µs per 10 ms / 10 000)")
    print()
    print(f"2. in real time: streams paced at 10 ms, {seconds:.0f} s, process CPU over the paced streams alone")
    header = f"{'participants':>12} | {'ours %core':>10} {'blocks':>9} | {'rtc %core':>9} {'blocks':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        base_rt = await best(lambda: run_once("baseline", n, seconds), repeats)
        ours_rt = await best(lambda: run_once("ours", n, seconds), repeats)
        ref_rt = await best(lambda: run_once("rtc", n, seconds), repeats)

        def pct(r: dict[str, float]) -> float:
            return max(0.0, r["cpu"] - base_rt["cpu"]) / seconds * 100

        print(
            f"{n:>12} | {pct(ours_rt):>9.2f}% {int(ours_rt['delivered']):>4}/{expected:<4} | "
            f"{pct(ref_rt):>8.2f}% {int(ref_rt['delivered']):>4}/{expected:<4}"
        )
    print()
    print("3. one of 5 participants stalls 0.5 s in (sends nothing, never ends):")
    for kind in ("ours", "rtc"):
        r = await run_once(kind, 5, seconds, stall=True)
        print(
            f"  {kind:>4}: {int(r['delivered'])}/{expected} blocks delivered in {seconds:.0f} s; output "
            f"{r['behind_ms']:.0f} ms behind real time at the end; up to {r['max_queued_ms']:.0f} ms "
            "of audio queued in a live stream"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes", default="2,5,10,25")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=2000)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")][:8]
    asyncio.run(main(min(args.seconds, 30.0), sizes, max(1, min(args.repeats, 10)), min(args.blocks, 20000)))
