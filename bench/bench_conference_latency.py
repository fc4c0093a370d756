"""Added latency of the conference agent over the one-to-one agent (visitor stops speaking -> first agent audio).

Run (from the repository root, shared test services up):

    .venv/bin/python bench/bench_conference_latency.py [--turns 12]

Starts the benchmarks' private stack (bench/_stack.py, on its own ports here:
livekit-server 7940, Django 18835, Redis db 9, database bench_conference;
Django, Celery, `run_voice_agent start`) with the OpenAI-protocol stub as LLM,
STT and TTS at zero added latency (fixed transcript, short fixed reply), and
beside it a `run_conference_agent start` worker with the same providers, one
per STT strategy in turn. Same visitor, same sentence, same measurement as
bench_turn_latency.py (tests.visitor.Visitor; latency = first loud 10 ms of
agent audio at the visitor - the moment the visitor's last speech sample was
played out).

The machine is shared and its load swings within minutes, so the two agents
are measured in alternation: a 1:1 session and a conference session stay
open side by side and take turns (1:1 first on even pairs, the conference
first on odd ones). Added latency = conference - 1:1 of the same pair; the
median and p95 of those differences are reported, per variant:

  conf/per_participant            the visitor alone in the conference
  conf/per_participant +2 silent  two more people in the room whose
                                  microphones send digital silence in real time
  conf/mixed                      the mixed strategy, the visitor alone
  conf/mixed +2 silent            the mixed strategy, same three people

All participants live in this one process, and the speaker's ears are the
stopwatch, so the speaker decodes only the agent's audio and the silent
listeners decode nothing (their audio would slow the stopwatch, not the
agent). Then each turn is split, from the transcript the agent stored, into
in (speech end -> the agent's VAD has it end), agent (-> its reply starts)
and out (-> the visitor hears it): `turn_phases`.

Prints figures; asserts nothing. Bounded: --turns pairs per variant, a time
budget per variant, and a timeout on every wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _stack as S
from livekit import rtc

from tests.visitor import SAMPLE_RATE, Heard, Visitor

# Its own ports, broker db, database and folder, so it can run beside the other benchmarks
# (bench/_stack.py reads these module constants when it starts the stack).
S.LIVEKIT_PORT, S.RTC_TCP_PORT, S.RTC_UDP_PORT = 7940, 7941, 7942
S.DJANGO_PORT = 18835
S.REDIS_DB = 9
S.DB_NAME = "bench_conference"
S.WORK = Path("/tmp/ac-bench-conference")

UTTERANCE = "what are your opening hours today"
REPLY = "Sure, I can help with that."


@contextlib.contextmanager
def conference_worker(st: S.Stack, strategy: str) -> Iterator[Any]:
    """`run_conference_agent start` with the stack's environment (stub providers), 2 idle processes."""
    from tests.processes import Process

    env = {
        **st.env,
        "AGENT_NUM_IDLE_PROCESSES": "2",
        "CONFERENCE_AGENT_HTTP_PORT": str(S.free_port()),
        "CONFERENCE_STT_STRATEGY": strategy,
    }
    proc = Process([S.PYTHON, "manage.py", "run_conference_agent", "start"], env, f"conference-{strategy}")
    try:
        proc.wait_for_output("registered worker", timeout=120)
        S.wait_idle_pool(proc.proc.pid, 2, timeout=120)
        yield proc
    finally:
        proc.stop()
        (S.WORK / f"conference-{strategy}-worker.log").write_text("\n".join(proc.lines) + "\n")


def widget_token(st: S.Stack, agent: Any, session_id: str, name: str) -> dict[str, Any]:
    return S._post(
        f"{st.api}/api/v1/livekit-agents/widget-voice-token",
        agent.company.widget_key,
        {"session_id": session_id, "participant_name": name},
    )


async def open_microphone(room: rtc.Room, source: rtc.AudioSource) -> None:
    """Publish a microphone and wait until the agent has subscribed to it."""
    subscribed = asyncio.Event()
    room.on("local_track_subscribed", lambda *_: subscribed.set())
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, options)
    await asyncio.wait_for(subscribed.wait(), 30)


class Listener:
    """Someone in the room who says nothing: an open microphone sending digital silence in real time.

    It subscribes to nothing. Every participant here lives in the benchmark's one
    process, beside the speaker whose ears are the stopwatch; decoding audio that
    nobody measures there would slow the stopwatch, not the agent.
    """

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.source = rtc.AudioSource(SAMPLE_RATE, 1)
        self.pump: asyncio.Task[None] | None = None

    async def join(self, url: str, token: str) -> None:
        await self.room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
        await open_microphone(self.room, self.source)
        self.pump = asyncio.create_task(self._silence())

    async def _silence(self) -> None:
        frame = rtc.AudioFrame(bytes(SAMPLE_RATE // 100 * 2), SAMPLE_RATE, 1, SAMPLE_RATE // 100)
        while True:
            await self.source.capture_frame(frame)

    async def leave(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            await asyncio.gather(self.pump, return_exceptions=True)
        await self.room.disconnect()


class Speaker(Visitor):
    """The visitor who takes the turns: it hears the agent only (see Listener for why)."""

    async def _listen(self, track: rtc.Track, heard: Heard) -> None:
        participant = self.room.remote_participants.get(heard.identity)
        if participant is not None and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            await super()._listen(track, heard)


class Room:
    """One session with its speaker (and silent listeners), ready to take timed turns."""

    def __init__(self, st: S.Stack, agent: Any, session_id: str, listeners: int) -> None:
        self.st, self.agent, self.session_id, self.listeners = st, agent, session_id, listeners
        self.speaker: Speaker | None = None
        self.others: list[Listener] = []
        self.turns: list[S.Turn] = []
        self.missed = 0

    async def open(self) -> None:
        body = await asyncio.to_thread(S.start_session, self.st, self.agent, self.session_id)
        self.speaker = speaker = Speaker("bench")
        await speaker.join(body["livekit_url"], body["user_token"])
        await asyncio.wait_for(speaker.joined_agent.wait(), 60)
        for i in range(self.listeners):
            token = await asyncio.to_thread(
                widget_token, self.st, self.agent, self.session_id, f"Listener {i + 1}"
            )
            other = Listener()
            self.others.append(other)
            await other.join(token["livekit_url"], token["user_token"])
        await speaker.wait_for_agent_speech(after=0, timeout=60)  # the greeting
        await speaker.wait_until_agent_quiet(quiet_for=0.6, timeout=30)
        # the microphone is published before the first turn, so no turn pays for publishing it
        speaker._source = rtc.AudioSource(SAMPLE_RATE, 1)
        await open_microphone(speaker.room, speaker._source)

    async def turn(self, pcm: bytes, rate: int) -> S.Turn | None:
        assert self.speaker is not None
        measured, missed = await S.conversation_turns(
            self.speaker, pcm, rate, turns=1, pause=0.0, deadline=time.monotonic() + 60
        )
        self.missed += missed
        self.turns.extend(measured)
        return measured[0] if measured else None

    async def close(self) -> None:
        for person in [self.speaker, *self.others]:
            if person is not None:
                with contextlib.suppress(Exception):
                    await person.leave()
        await S.wait_status(self.session_id, ("stopped", "failed"), 30)


def turn_phases(session_id: str, turns: list[S.Turn]) -> dict[str, list[float]]:
    """Where each timed turn's time went, from the transcript the agent stored.

    The agent and the visitor run on one machine, so their wall clocks agree:
      in     the agent's own "user stopped speaking" (the user turn's ended_at, from
             its VAD) - the visitor's last sample: transport in, resampling, mixer, VAD
      agent  that moment -> the reply's start (started_at): endpointing, STT, LLM, TTS
      out    the reply's start -> its first loud 10 ms at the visitor: transport out
    """
    from sessions.models import TranscriptTurn

    rows = list(TranscriptTurn.objects.filter(session__session_id=session_id).order_by("sequence"))
    stops = [r.ended_at.timestamp() for r in rows if r.role == "user" and r.ended_at is not None]
    starts = [r.started_at.timestamp() for r in rows if r.role == "assistant" and r.started_at is not None]
    phases: dict[str, list[float]] = {"in": [], "agent": [], "out": []}
    for turn in turns:
        heard = turn.ended_wall + turn.latency
        near = [t for t in stops if abs(t - turn.ended_wall) < 1.5]
        if not near:
            continue
        stopped = min(near, key=lambda t: abs(t - turn.ended_wall))
        started = next((t for t in starts if stopped < t <= heard + 0.2), None)
        if started is None:
            continue
        phases["in"].append(stopped - turn.ended_wall)
        phases["agent"].append(started - stopped)
        phases["out"].append(heard - started)
    return phases


async def paired(
    st: S.Stack,
    one: Any,
    conf: Any,
    stamp: str,
    *,
    listeners: int,
    turns: int,
    pause: float,
    budget: float,
    pids: tuple[int, int],
) -> tuple[Room, Room, list[float], tuple[float, float]]:
    """1:1 and conference turns alternately, so each pair shares the machine's state."""
    pcm, rate, _ = S.speech(UTTERANCE)
    rooms = (Room(st, one, f"{stamp}-one", 0), Room(st, conf, f"{stamp}-conf", listeners))
    differences: list[float] = []
    deadline = time.monotonic() + budget
    try:
        for room in rooms:
            await room.open()
        # CPU of both workers' process trees over the pairs, sampled while the job processes
        # are alive (a job's CPU leaves the tree when its process exits)
        cpu0 = [S.tree_cpu_seconds(pid) for pid in pids]
        started = time.monotonic()
        for i in range(turns):
            if time.monotonic() > deadline:
                break
            first, second = rooms if i % 2 == 0 else rooms[::-1]  # alternate who goes first
            a = await first.turn(pcm, rate)
            await asyncio.sleep(pause)
            b = await second.turn(pcm, rate)
            await asyncio.sleep(pause)
            if a is not None and b is not None:
                one_turn, conf_turn = (a, b) if first is rooms[0] else (b, a)
                differences.append(conf_turn.latency - one_turn.latency)
                print(
                    f"   pair {i + 1}/{turns}: 1:1 {one_turn.latency * 1000:.0f} ms, "
                    f"conference {conf_turn.latency * 1000:.0f} ms",
                    flush=True,
                )
        wall = time.monotonic() - started
        cpu = (
            (S.tree_cpu_seconds(pids[0]) - cpu0[0]) / wall * 100,
            (S.tree_cpu_seconds(pids[1]) - cpu0[1]) / wall * 100,
        )
    finally:
        for room in rooms:
            await room.close()
    return rooms[0], rooms[1], differences, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=12, help="pairs of turns per variant (default 12)")
    parser.add_argument(
        "--pause", type=float, default=0.8, help="seconds between an answer and the next question"
    )
    parser.add_argument("--budget", type=float, default=400, help="time budget per variant, seconds")
    parser.add_argument(
        "--variants",
        default="pp,pp3,mixed,mixed3",
        help="pp (per_participant alone), pp3 (+2 silent), mixed (alone), mixed3 (+2 silent)",
    )
    args = parser.parse_args()
    turns = max(1, min(args.turns, 50))

    S.prepare()
    from voiceagents.catalog import AgentMode

    one_to_one = S.make_agent(greeting_message="Hello.", **S.STUB_PROVIDERS)
    conference = S.make_agent(
        name="Computer", mode=AgentMode.CONFERENCE, greeting_message="Hello everyone.", **S.STUB_PROVIDERS
    )
    known = {
        "pp": ("per_participant", 0, "conf/per_participant"),
        "pp3": ("per_participant", 2, "conf/per_participant +2 silent"),
        "mixed": ("mixed", 0, "conf/mixed"),
        "mixed3": ("mixed", 2, "conf/mixed +2 silent"),
    }
    variants = [known[key] for key in args.variants.split(",") if key in known][:6]
    results: list[tuple[str, Room, Room, list[float]]] = []
    cpu: dict[str, tuple[float, float]] = {}
    stamp = int(time.time())
    with S.stack(
        stub_args=["--fixed-transcript", UTTERANCE, "--reply-template", REPLY], log_prefix="conflat"
    ) as st:
        worker: contextlib.ExitStack | None = None
        conf_proc: Any = None
        current: str | None = None
        try:
            for strategy, listeners, label in variants:
                if strategy != current:
                    if worker is not None:
                        worker.close()
                    worker = contextlib.ExitStack()
                    conf_proc = worker.enter_context(conference_worker(st, strategy))
                    current = strategy
                print(f"== {label} against 1:1, turns alternating", flush=True)
                one, conf, diffs, cpu[label] = asyncio.run(
                    paired(
                        st,
                        one_to_one,
                        conference,
                        f"conflat-{stamp}-{len(results)}",
                        listeners=listeners,
                        turns=turns,
                        pause=args.pause,
                        budget=args.budget,
                        pids=(st.procs["worker"].proc.pid, conf_proc.proc.pid),
                    )
                )
                results.append((label, one, conf, diffs))
        finally:
            if worker is not None:
                worker.close()

    print("\n== visitor stops speaking -> first agent audio; stub providers at zero latency, same sentence")
    print("   each conference variant is measured in alternation with the 1:1 agent (paired turns)")
    print(
        f"   {'variant':<32} {'pairs':>5} {'1:1 median':>11} {'conf median':>12} {'added: median':>14} {'p95':>7}"
    )
    for label, one, conf, diffs in results:
        a = S.summary([t.latency for t in one.turns])
        b = S.summary([t.latency for t in conf.turns])
        d = S.summary(diffs)
        if not d.get("n"):
            print(
                f"   {label:<32}     0  (no complete pairs; missed 1:1 {one.missed}, conference {conf.missed})"
            )
            continue
        print(
            f"   {label:<32} {d['n']:>5} {a['median'] * 1000:>9.0f}ms {b['median'] * 1000:>10.0f}ms "
            f"{d['median'] * 1000:>+12.0f}ms {d['p95'] * 1000:>+5.0f}ms"
            + (f"  (missed: 1:1 {one.missed}, conference {conf.missed})" if one.missed or conf.missed else "")
        )
    print("   added = conference latency - 1:1 latency of the same pair; target: < 100 ms")
    print(
        "\n   where the time goes (medians; stored transcript against the visitor's clock, see turn_phases):"
    )
    print(f"   {'variant':<32} {'in':>7} {'agent':>7} {'out':>7}   (1:1 of the same pairs: in / agent / out)")
    for label, one, conf, _ in results:
        of_one = turn_phases(one.session_id, one.turns)
        of_conf = turn_phases(conf.session_id, conf.turns)
        if not of_conf["in"] or not of_one["in"]:
            print(f"   {label:<32} (no turns matched in the transcript)")
            continue
        med = {k: float(np.median(v)) * 1000 for k, v in of_conf.items()}
        ref = {k: float(np.median(v)) * 1000 for k, v in of_one.items()}
        print(
            f"   {label:<32} {med['in']:>5.0f}ms {med['agent']:>5.0f}ms {med['out']:>5.0f}ms"
            f"   ({ref['in']:.0f} / {ref['agent']:.0f} / {ref['out']:.0f} ms, "
            f"n={len(of_conf['in'])}/{len(of_one['in'])})"
        )
    print("\n   CPU of each worker's process tree (job processes included) over the pairs, % of one core:")
    for label, (voice_pct, conf_pct) in cpu.items():
        print(f"   {label:<32} 1:1 worker {voice_pct:5.1f}%   conference worker {conf_pct:5.1f}%")
    print("   machine:", S.machine_note("end"))
    print(f"   logs: {S.WORK}/conflat-*.log, {S.WORK}/conference-*-worker.log")


if __name__ == "__main__":
    main()
