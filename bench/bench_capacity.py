"""Memory per concurrent conversation, and how many 1:1 conversations this machine holds.

Run (from the repository root, shared test services up):

    .venv/bin/python bench/bench_capacity.py [--levels 1,2,4,6,8,10,12] [--samples 24]

Starts its own stack (bench/_stack.py): the OpenAI-protocol stub (zero added
latency) as LLM, STT and TTS, and one `manage.py run_voice_agent start`
worker (2 prewarmed idle processes; AGENT_MAX_JOBS_PER_WORKER raised to 16
so load shedding does not cap the experiment). Conversations are added level
by level (1, 2, 4, 6, 8 ...): at each level the new sessions are started
through the API one by one (each visitor joins, hears the greeting), the
worker's idle pool is allowed to refill, then every conversation speaks
turns concurrently (tests.visitor.Visitor, real espeak speech in real time,
start times staggered and pauses jittered so turns do not march in step)
until the level has --samples turns in all, at least --min-turns per
conversation.

Per level: turn latency (visitor stops speaking -> first agent audio, and the
overhead above the endpointing delay, as in bench_turn_latency.py), memory of
the job processes that are in a room (psutil RSS, and PSS/USS, which do not
count pages shared with the forkserver several times), and CPU used by the
worker's process tree, livekit-server, the stub and this process (the
visitors) over the turn phase.

The knee: the first level whose overhead p95 is more than 20 % above the
single-conversation level's p95 in the same run. The run stops at the knee,
at the last level, or when the time budget is spent.

Where the CPU goes (--profile-at N, default 2): after level N's measured turns,
the same conversations speak --profile-seconds more while py-spy samples every
job process in a room (bench/_profile.py files each sample under a stage:
audio in, VAD, STT, LLM, TTS and publish, transcription sync, metrics, agent
state, the event loop ...). Those turns are not timed, so the sampler does not
colour the knee.

Variants (--variant NAME:KEY=VALUE,KEY=VALUE, repeatable): the whole run is
repeated with that worker environment on a fresh stack, and the tables are
printed side by side. On a machine shared with other work, compare the
variants' ratios within one run, not figures across runs.

Prints figures; asserts nothing. Bounded: levels, turns per level, a time
budget, and a timeout on every wait.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _profile as P
import _stack as S

UTTERANCE = "what are your opening hours today"
REPLY = "Sure, I can help with that."
KNEE = 1.20


@dataclass
class Level:
    conversations: int
    turns: list[S.Turn] = field(default_factory=list)
    missed: int = 0
    memory: S.MemorySample | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, per process group
    wall: float = 0.0
    worker_mb: dict[str, float] = field(default_factory=dict)  # the worker process itself
    visitors_mb: float = 0.0  # this process's RSS (the visitors)


@dataclass
class Conversation:
    session_id: str
    visitor: Any


def cpu_seconds(st: S.Stack) -> dict[str, float]:
    import psutil

    out = {
        "worker": S.tree_cpu_seconds(st.procs["worker"].proc.pid),
        "worker main": sum(psutil.Process(st.procs["worker"].proc.pid).cpu_times()[:2]),
        "livekit": S.tree_cpu_seconds(st.procs["livekit"].proc.pid),
        "stub": S.tree_cpu_seconds(st.procs["stub"].proc.pid),
        "visitors (this process)": sum(psutil.Process().cpu_times()[:2]),
    }
    times = psutil.cpu_times()
    out["machine"] = times.user + times.system + getattr(times, "nice", 0.0)
    return out


def pool_ready(st: S.Stack, in_rooms: int, threads: bool = False) -> bool:
    """The idle pool is full again and every process (or job thread) in it has initialized."""
    lines = st.logs("worker")
    if threads:
        started = sum(1 for line in lines if '"initializing job runner"' in line)
        done = sum(1 for line in lines if '"job runner initialized"' in line)
        return started >= in_rooms + 2 and started == done
    procs = S.job_processes(st.procs["worker"].proc.pid)
    started = sum(1 for line in lines if '"initializing process"' in line)
    done = sum(1 for line in lines if '"process initialized"' in line)
    return len(procs) >= in_rooms + 2 and started == done


async def wait_pool(st: S.Stack, in_rooms: int, timeout: float, threads: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pool_ready, st, in_rooms, threads):
            return True
        await asyncio.sleep(0.2)
    return False


async def add_conversation(st: S.Stack, agent: Any, session_id: str) -> Conversation:
    from tests.visitor import Visitor

    body = await asyncio.to_thread(S.start_session, st, agent, session_id)
    visitor = Visitor(session_id)
    await visitor.join(body["livekit_url"], body["user_token"])
    await asyncio.wait_for(visitor.joined_agent.wait(), 60)
    await visitor.wait_for_agent_speech(after=0, timeout=60)  # the greeting
    await visitor.wait_until_agent_quiet(quiet_for=0.6, timeout=30)
    return Conversation(session_id, visitor)


def worker_memory(st: S.Stack) -> dict[str, float]:
    """The worker's own process (with a thread executor, where the conversations live)."""
    import psutil

    info = psutil.Process(st.procs["worker"].proc.pid).memory_full_info()
    return {"rss": info.rss / 2**20, "pss": getattr(info, "pss", 0) / 2**20, "uss": info.uss / 2**20}


def own_rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


async def run(
    st: S.Stack, agent: Any, args: argparse.Namespace, subtract: float
) -> tuple[list[Level], float, P.Breakdown | None, int]:
    pcm, rate, _ = S.speech(UTTERANCE)
    levels = [int(x) for x in args.levels.split(",")]
    rng = random.Random(7)
    tag = str(int(time.time()))
    conversations: list[Conversation] = []
    results: list[Level] = []
    deadline = time.monotonic() + args.budget
    idle_memory = await asyncio.to_thread(S.memory_sample, st.procs["worker"].proc.pid)
    visitors_base = own_rss_mb()
    worker_base = await asyncio.to_thread(worker_memory, st)
    profile: P.Breakdown | None = None
    try:
        for n in levels:
            if time.monotonic() > deadline:
                print(f"time budget spent before level {n}")
                break
            print(f"\nlevel {n}: adding {n - len(conversations)} conversations", flush=True)
            while len(conversations) < n:
                conversations.append(
                    await add_conversation(st, agent, f"capacity-{tag}-{len(conversations)}")
                )
            if not await wait_pool(st, n, 180, args.worker_env.get("AGENT_JOB_EXECUTOR") == "thread"):
                print("   (the idle pool did not refill within 180 s; measuring anyway)")
            level = Level(conversations=n)
            level.memory = await asyncio.to_thread(S.memory_sample, st.procs["worker"].proc.pid)
            level.worker_mb = await asyncio.to_thread(worker_memory, st)
            level.worker_mb["uss_growth"] = level.worker_mb["uss"] - worker_base["uss"]
            level.worker_mb["pss_growth"] = level.worker_mb["pss"] - worker_base["pss"]
            level.visitors_mb = own_rss_mb() - visitors_base
            per_conv = max(args.min_turns, math.ceil(args.samples / n))
            cycle = 4.0  # about one turn's length: spread the starts over it

            async def talk(
                i: int, conv: Conversation, turns: int = per_conv, until: float = deadline
            ) -> tuple[list[S.Turn], int]:
                await asyncio.sleep(cycle * i / n)
                return await S.conversation_turns(
                    conv.visitor,
                    pcm,
                    rate,
                    turns=turns,
                    pause=args.pause + rng.uniform(0, args.pause),
                    deadline=until,
                )

            before, t0 = cpu_seconds(st), time.monotonic()
            outcomes = await asyncio.gather(*(talk(i, c) for i, c in enumerate(conversations)))
            after, level.wall = cpu_seconds(st), time.monotonic() - t0
            level.cpu = {k: (after[k] - before[k]) / level.wall for k in before}
            for turns, missed in outcomes:
                level.turns.extend(turns)
                level.missed += missed
            results.append(level)
            if n == args.profile_at and P.available():
                profile = await profile_level(st, conversations, talk, args.profile_seconds)
            over = S.summary([t.latency - subtract for t in level.turns])
            print(
                f"   {n} conversations: overhead {S.fmt_ms(over, ('median', 'p95'))}, no answer {level.missed}",
                flush=True,
            )
            first = S.summary([t.latency - subtract for t in results[0].turns])
            if n > levels[0] and over.get("n") and first.get("n") and over["p95"] > KNEE * first["p95"]:
                print(f"   knee: p95 {over['p95'] * 1000:.0f} ms > {KNEE:.2f} x {first['p95'] * 1000:.0f} ms")
                break
    finally:
        for conv in conversations:
            await conv.visitor.leave()
        for conv in conversations:
            await S.wait_status(conv.session_id, ("stopped", "failed"), 30)
    idle_rss = sum(idle_memory.rss_mb) / max(idle_memory.processes, 1)
    return results, idle_rss, profile, args.profile_at


async def profile_level(
    st: S.Stack, conversations: list[Conversation], talk: Any, seconds: float
) -> P.Breakdown:
    """Untimed turns while py-spy samples the job processes in a room (the worker's own
    process when a thread executor runs the jobs there)."""
    procs = [p for p in S.job_processes(st.procs["worker"].proc.pid) if S.in_room(p)]
    pids = [p.pid for p in procs] or [st.procs["worker"].proc.pid]
    print(f"   profiling {len(pids)} processes for {seconds:.0f} s", flush=True)
    rate = 100
    cpu_before = sum(S.tree_cpu_seconds(pid) for pid in pids) if procs else 0.0
    t0 = time.monotonic()
    running = await asyncio.to_thread(P.start, pids, seconds=seconds, rate=rate)
    until = time.monotonic() + seconds
    await asyncio.gather(*(talk(i, c, 100, until) for i, c in enumerate(conversations)))
    texts = await asyncio.to_thread(P.finish, running, seconds + 30)
    measured = (
        (sum(S.tree_cpu_seconds(pid) for pid in pids) - cpu_before) / (time.monotonic() - t0)
        if procs
        else None
    )
    S.WORK.mkdir(parents=True, exist_ok=True)
    (S.WORK / f"capacity-pyspy-{int(time.time())}.txt").write_text("\n".join(texts))
    result = P.breakdown(texts, seconds=seconds, rate=rate)
    result.measured_cores = measured
    return result


def report(results: list[Level], idle_rss: float, subtract: float, label: str = "") -> dict[str, Any]:
    """Prints the level table; returns the figures the variants' comparison needs."""
    print(f"\n== capacity{label}: concurrent 1:1 conversations, stub providers (zero added latency)")
    print(
        f"   overhead = latency - {subtract:.2f} s (max of VAD min_silence_duration and endpointing min_delay)"
    )
    print(f"   an idle prewarmed job process: RSS {idle_rss:.0f} MB")
    head = (
        f"   {'conv':>4} {'turns':>5} {'lat med':>8} {'lat p95':>8} {'ovh med':>8} {'ovh p95':>8} {'p95/1':>6}"
        f" {'miss':>4} {'RSS/conv':>9} {'PSS/conv':>9} {'USS/conv':>9} {'wrk USS':>8} {'vis MB/c':>8}"
        f" {'worker':>7} {'wrk/conv':>8} {'main':>5} {'livekit':>7} {'stub':>6} {'visitors':>8} {'vis/conv':>8} {'machine':>7}"
    )
    print(head)
    print(
        "   " + " " * 51 + "(MB: job processes in a room; the worker process; visitors' growth)"
        "  (CPU cores over the turn phase)"
    )
    first_p95 = None
    out: dict[str, Any] = {"levels": {}}
    for level in results:
        lat = S.summary([t.latency for t in level.turns])
        ovh = S.summary([t.latency - subtract for t in level.turns])
        if not ovh.get("n"):
            print(f"   {level.conversations:>4} no turns")
            continue
        first_p95 = first_p95 or ovh["p95"]
        mem = level.memory
        assert mem is not None
        rooms = [i for i, flag in enumerate(mem.in_room) if flag]
        n = level.conversations

        def per(values: list[float], rooms: list[int] = rooms) -> float:
            return sum(values[i] for i in rooms) / max(len(rooms), 1)

        worker, visitors = level.cpu.get("worker", 0), level.cpu.get("visitors (this process)", 0)
        print(
            f"   {n:>4} {ovh['n']:>5} {lat['median'] * 1000:>8.0f} {lat['p95'] * 1000:>8.0f}"
            f" {ovh['median'] * 1000:>8.0f} {ovh['p95'] * 1000:>8.0f} {ovh['p95'] / first_p95:>6.2f}"
            f" {level.missed:>4} {per(mem.rss_mb):>9.0f} {per(mem.pss_mb):>9.0f} {per(mem.uss_mb):>9.0f}"
            f" {level.worker_mb.get('uss', 0):>8.0f} {level.visitors_mb / n:>8.1f}"
            f" {worker:>7.2f} {worker / n:>8.3f} {level.cpu.get('worker main', 0):>5.2f} {level.cpu.get('livekit', 0):>7.2f} {level.cpu.get('stub', 0):>6.2f}"
            f" {visitors:>8.2f} {visitors / n:>8.3f} {level.cpu.get('machine', 0):>7.2f}"
        )
        if rooms and len(rooms) != n:
            print(f"        ({len(rooms)} job processes found in a room for {n} conversations)")
        out["levels"][n] = {
            "ovh_p95": ovh["p95"],
            "ovh_median": ovh["median"],
            "worker_per_conv": worker / n,
            "visitors_per_conv": visitors / n,
            # with a thread executor the conversations live in the worker: its growth per conversation
            "uss_per_conv": per(mem.uss_mb) if rooms else level.worker_mb.get("uss_growth", 0) / n,
            "pss_per_conv": per(mem.pss_mb) if rooms else level.worker_mb.get("pss_growth", 0) / n,
        }
    knee = next(
        (
            lv.conversations
            for lv in results[1:]
            if first_p95
            and lv.turns
            and S.summary([t.latency - subtract for t in lv.turns])["p95"] > KNEE * first_p95
        ),
        None,
    )
    held = [lv.conversations for lv in results if lv.conversations != knee]
    out["knee"] = knee
    out["held"] = max((c for c in held if knee is None or c < knee), default=0)
    if knee:
        print(
            f"\n   knee at {knee} conversations: p95 overhead > {KNEE:.2f} x the single-conversation p95;"
            f" held below it: {out['held']}"
        )
    else:
        print(f"\n   no knee up to {results[-1].conversations if results else 0} conversations")
    return out


def compare(summaries: dict[str, dict[str, Any]]) -> None:
    """The variants side by side: each figure as measured, and as a ratio to the first variant."""
    names = list(summaries)
    base = summaries[names[0]]
    print(f"\n== variants side by side (ratios to {names[0]!r}, same run)")
    print(
        f"   {'variant':<22} {'held':>5} {'knee':>5} {'conv':>4} {'ovh p95':>8} {'wrk/conv':>8} {'ratio':>6}"
        f" {'USS/conv':>8} {'ratio':>6} {'PSS/conv':>8} {'vis/conv':>8}"
    )
    for name in names:
        s = summaries[name]
        for n, lv in s["levels"].items():
            b = base["levels"].get(n)
            r_cpu = (
                lv["worker_per_conv"] / b["worker_per_conv"] if b and b["worker_per_conv"] else float("nan")
            )
            r_mem = lv["uss_per_conv"] / b["uss_per_conv"] if b and b["uss_per_conv"] else float("nan")
            print(
                f"   {name:<22} {s['held']:>5} {str(s['knee'] or '-'):>5} {n:>4} {lv['ovh_p95'] * 1000:>8.0f}"
                f" {lv['worker_per_conv']:>8.3f} {r_cpu:>6.2f} {lv['uss_per_conv']:>8.1f} {r_mem:>6.2f}"
                f" {lv['pss_per_conv']:>8.1f} {lv['visitors_per_conv']:>8.3f}"
            )


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    return name, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--levels", default="1,2,4,6,8,10,12", help="conversation counts, ascending (max 12 sensible)"
    )
    parser.add_argument("--samples", type=int, default=24, help="turns per level, in all (default 24)")
    parser.add_argument(
        "--min-turns", type=int, default=3, help="turns per conversation at least (default 3)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.8, help="seconds between an answer and the next question (+ jitter)"
    )
    parser.add_argument("--budget", type=float, default=1800, help="time budget per variant, seconds")
    parser.add_argument("--profile-at", type=int, default=2, help="level to profile with py-spy (0: none)")
    parser.add_argument("--profile-seconds", type=float, default=20, help="py-spy sampling time")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:KEY=VALUE,... worker environment of a variant (repeatable; default: one, as configured)",
    )
    args = parser.parse_args()

    S.prepare()
    config = S.endpointing_config()
    subtract = max(config["vad_min_silence_duration"], config["endpointing_min_delay"])
    agent = S.make_agent(greeting_message="Hello.", **S.STUB_PROVIDERS)
    variants = [parse_variant(v) for v in args.variant] or [("as configured", {})]
    if not P.available():
        print("py-spy is not installed (requirements-dev.txt): no CPU breakdown")
    summaries: dict[str, dict[str, Any]] = {}
    for name, env in variants:
        print(f"\n#### variant {name!r}: {env or 'the defaults'}", flush=True)
        args.worker_env = env
        with S.stack(
            stub_args=["--fixed-transcript", UTTERANCE, "--reply-template", REPLY],
            worker_env={"AGENT_MAX_JOBS_PER_WORKER": "16", **env},
            log_prefix=f"capacity-{name.replace(' ', '_')}",
        ) as st:
            results, idle_rss, profile, profiled = asyncio.run(run(st, agent, args, subtract))
        summaries[name] = report(results, idle_rss, subtract, label=f" [{name}]")
        if profile is not None:
            P.print_breakdown(profile, profiled, label=f" [{name}]")
    if len(summaries) > 1:
        compare(summaries)
    print("   machine:", S.machine_note("end"))
    print(f"   logs: {S.WORK}/capacity-*.log")


if __name__ == "__main__":
    main()
