"""Does a worker leak? One long conversation, then many short ones through one worker.

Run (from the repository root, shared test services up):

    .venv/bin/python bench/bench_soak.py [--minutes 60] [--turns 150] [--conversations 200]

Starts its own stack (bench/_stack.py: the OpenAI-protocol stub as LLM, STT and TTS,
one `manage.py run_voice_agent start` worker with 2 prewarmed idle processes).

1. One conversation of at least --turns turns spread over --minutes (a visitor
   speaking real espeak speech in real time, tests.visitor.Visitor). After each
   turn: the job process's RSS, PSS and USS. Printed: memory over time, and the
   growth after the first 10 turns (target: at most 10 MB of RSS).
2. --conversations sequential conversations (join, greeting, one turn, leave)
   through the same worker. Job processes serve one conversation each, so what
   could leak is the worker's own process, its forkserver and the idle pool it
   keeps refilling. After every conversation, once the pool is full and quiet
   again: their RSS and USS. Printed: the series, and growth from the 10th
   conversation to the last (target: flat).

Prints figures; asserts nothing. Bounded: turns, conversations, a time budget and
a timeout on every wait. Pass --conversations 0 or --turns 0 to skip a part.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _stack as S

UTTERANCE = "what are your opening hours today"
REPLY = "Sure, I can help with that."
TURN_SECONDS = 4.5  # speech, trailing silence, the answer, a short pause: about one turn


@dataclass
class Mem:
    rss: float
    pss: float
    uss: float


def mem_of(proc: Any) -> Mem | None:
    import psutil

    try:
        info = proc.memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return Mem(info.rss / 2**20, getattr(info, "pss", 0) / 2**20, info.uss / 2**20)


def room_process(worker_pid: int) -> Any:
    return next((p for p in S.job_processes(worker_pid) if S.in_room(p)), None)


def worker_side(worker_pid: int) -> dict[str, Mem]:
    """The worker's own process, its forkserver, and its idle job processes (summed)."""
    import psutil

    out: dict[str, Mem] = {}
    main = psutil.Process(worker_pid)
    m = mem_of(main)
    if m:
        out["worker"] = m
    for child in main.children():
        try:
            if "forkserver" in " ".join(child.cmdline()):
                m = mem_of(child)
                if m:
                    out["forkserver"] = m
        except psutil.NoSuchProcess:
            continue
    pool = [m for p in S.job_processes(worker_pid) if (m := mem_of(p)) is not None]
    if pool:
        out["pool"] = Mem(sum(m.rss for m in pool), sum(m.pss for m in pool), sum(m.uss for m in pool))
    return out


async def join(st: S.Stack, agent: Any, session_id: str) -> Any:
    from tests.visitor import Visitor

    body = await asyncio.to_thread(S.start_session, st, agent, session_id)
    visitor = Visitor(session_id)
    await visitor.join(body["livekit_url"], body["user_token"])
    await asyncio.wait_for(visitor.joined_agent.wait(), 60)
    await visitor.wait_for_agent_speech(after=0, timeout=60)
    await visitor.wait_until_agent_quiet(quiet_for=0.6, timeout=30)
    return visitor


async def long_conversation(st: S.Stack, agent: Any, args: argparse.Namespace, deadline: float) -> None:
    pcm, rate, _ = S.speech(UTTERANCE)
    worker_pid = st.procs["worker"].proc.pid
    session_id = f"soak-long-{int(time.time())}"
    visitor = await join(st, agent, session_id)
    proc = await asyncio.to_thread(room_process, worker_pid)
    if proc is None:
        print("   no job process in a room found; skipping the long conversation")
        await visitor.leave()
        return
    pause = max(args.pause, args.minutes * 60 / args.turns - TURN_SECONDS)
    print(
        f"\n== one conversation: {args.turns} turns over ~{args.minutes:.0f} min"
        f" (pause {pause:.1f} s between turns), job process {proc.pid}",
        flush=True,
    )
    series: list[tuple[int, float, Mem]] = []
    missed = 0
    t0 = time.monotonic()

    def record(i: int, turn: Any) -> None:
        m = mem_of(proc)
        if m is not None:
            series.append((i + 1, time.monotonic() - t0, m))
        step = max(1, args.turns // 10)
        if m is not None and ((i + 1) % step == 0 or i == 9):
            print(
                f"   turn {i + 1:>4} at {(time.monotonic() - t0) / 60:5.1f} min: RSS {m.rss:6.1f}"
                f" PSS {m.pss:6.1f} USS {m.uss:6.1f} MB",
                flush=True,
            )

    turns, missed = await S.conversation_turns(
        visitor, pcm, rate, turns=args.turns, pause=pause, deadline=deadline, on_turn=record
    )
    await visitor.leave()
    await S.wait_status(session_id, ("stopped", "failed"), 30)
    if len(series) < 11:
        print(f"   only {len(series)} turns measured: too few for growth after turn 10")
        return
    tenth, last = series[9][2], series[-1][2]
    minutes = (series[-1][1] - series[9][1]) / 60
    lat = S.summary([t.latency for t in turns])
    print(
        f"   {len(series)} turns in {series[-1][1] / 60:.1f} min, {missed} unanswered;"
        f" latency {S.fmt_ms(lat, ('median', 'p95'))}"
    )
    print(
        f"   growth after turn 10 (turns 10..{series[-1][0]}, {minutes:.1f} min):"
        f" RSS {last.rss - tenth.rss:+.1f} MB, PSS {last.pss - tenth.pss:+.1f} MB, USS {last.uss - tenth.uss:+.1f} MB"
        f" (target: RSS at most +10 MB)"
    )
    if minutes > 0:
        print(f"   RSS slope: {(last.rss - tenth.rss) / minutes:+.2f} MB/min")


async def sequential(st: S.Stack, agent: Any, args: argparse.Namespace, deadline: float) -> None:
    pcm, rate, _ = S.speech(UTTERANCE)
    worker_pid = st.procs["worker"].proc.pid
    print(f"\n== {args.conversations} sequential conversations through one worker", flush=True)
    series: list[tuple[int, dict[str, Mem]]] = []
    tag = int(time.time())
    for i in range(args.conversations):
        if time.monotonic() > deadline:
            print(f"   time budget spent after {i} conversations")
            break
        session_id = f"soak-seq-{tag}-{i}"
        visitor = await join(st, agent, session_id)
        await S.conversation_turns(visitor, pcm, rate, turns=1, pause=0.2, deadline=deadline)
        await visitor.leave()
        await S.wait_status(session_id, ("stopped", "failed"), 30)
        await asyncio.to_thread(S.wait_idle_pool, worker_pid, 2, 60)
        side = await asyncio.to_thread(worker_side, worker_pid)
        series.append((i + 1, side))
        step = max(1, args.conversations // 10)
        if (i + 1) % step == 0 or i == 9:
            print(
                f"   after {i + 1:>4}: "
                + "  ".join(f"{k} RSS {m.rss:6.1f} USS {m.uss:6.1f}" for k, m in sorted(side.items())),
                flush=True,
            )
    if len(series) < 11:
        print(f"   only {len(series)} conversations: too few for growth after the 10th")
        return
    tenth, last = series[9][1], series[-1][1]
    print(f"   growth from conversation 10 to {series[-1][0]} (target: flat):")
    for key in sorted(last):
        if key in tenth:
            print(
                f"     {key:<10} RSS {last[key].rss - tenth[key].rss:+7.1f} MB"
                f"  PSS {last[key].pss - tenth[key].pss:+7.1f} MB  USS {last[key].uss - tenth[key].uss:+7.1f} MB"
            )


async def run(st: S.Stack, agent: Any, args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.budget
    if args.turns:
        await long_conversation(st, agent, args, deadline)
    if args.conversations:
        await sequential(st, agent, args, deadline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60, help="length of the long conversation")
    parser.add_argument("--turns", type=int, default=150, help="turns of the long conversation (0: skip)")
    parser.add_argument("--pause", type=float, default=0.8, help="shortest pause between turns, seconds")
    parser.add_argument("--conversations", type=int, default=200, help="sequential conversations (0: skip)")
    parser.add_argument("--budget", type=float, default=6000, help="time budget, seconds")
    parser.add_argument(
        "--worker-env", action="append", default=[], help="KEY=VALUE for the worker (repeatable)"
    )
    args = parser.parse_args()

    S.prepare()
    agent = S.make_agent(greeting_message="Hello.", **S.STUB_PROVIDERS)
    env = dict(pair.split("=", 1) for pair in args.worker_env)
    with S.stack(
        stub_args=["--fixed-transcript", UTTERANCE, "--reply-template", REPLY],
        worker_env={"AGENT_MAX_JOBS_PER_WORKER": "4", **env},
        log_prefix="soak",
    ) as st:
        asyncio.run(run(st, agent, args))
    print("   machine:", S.machine_note("end"))
    print(f"   logs: {S.WORK}/soak-*.log")


if __name__ == "__main__":
    main()
