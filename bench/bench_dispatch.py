"""Dispatch latency: POST start-voice-session -> the agent participant in the room, as the visitor sees it.

Run (from the repository root, shared test services up):

    .venv/bin/python bench/bench_dispatch.py [--sessions 20] [--modes celery,eager]

Starts its own stack (bench/_stack.py): livekit-server on 7950, Django
runserver on 18805, a Celery worker (broker redis db 8), the OpenAI-protocol
stub, and `manage.py run_voice_agent start` with AGENT_NUM_IDLE_PROCESSES=2
(prewarmed job processes). Then, sequentially, for each session: POST
start-voice-session over HTTP, join the room at once with the returned token
(tests.visitor.Visitor) and wait for the agent participant. The clock starts
just before the POST and stops in the visitor's participant_connected
callback (or when the visitor's connect returns, if the agent was already
there). Between sessions the visitor leaves, the session must reach a
terminal status and the worker's idle pool must be full again, so every
session meets a prewarmed worker.

Modes, in the same run and against the same worker:
  celery  the API enqueues the dispatch task; the Celery worker runs it
  eager   CELERY_TASK_ALWAYS_EAGER on the Django server: the dispatch runs inside
          the POST (no broker hop; the POST returns after the room exists)

Also timed: POST -> the first greeting audio the visitor hears.

Baselines, same run: a bare livekit rtc participant joining a room the
visitor is in (no API, no dispatch, no agent framework), publishing an audio
track right away (the transport floor of "a participant appeared"), and the
same without publishing: livekit-server announces non-publishers to the
others in 3 s batches. A change of attributes is announced at once, and the
agent sets its state attribute the moment it joins, so it is seen before its
session publishes audio.

Breakdown (from the JSON logs of our processes, livekit-server's log and the
session row; wall clocks of one machine): API (POST -> response), queue
(response -> task sets `dispatching`), LiveKit API (-> `starting`: room and
dispatch created), job offer (-> the worker logs "received job request"),
job start (-> the agent's signal connection on the server), agent connect
(-> participant active), agent session start (-> its audio track published),
-> visitor sees it; plus the job process's event-loop stalls (livekit-agents'
own "event loop blocked" reports) in that window, by cause.

Also printed: the CPU cost of building the providers as the job does (stub
configuration: three openai plugins, each making its own HTTP client and SSL
context) against plugins sharing one openai.AsyncClient.

Prints figures; asserts nothing. Bounded: --sessions per mode, every wait has
a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _stack as S

AGENT_KIND = 4  # rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


@dataclass
class Sample:
    mode: str
    session_id: str
    room: str = ""
    pk: int = 0
    posted_wall: float = 0.0
    latency: float = 0.0  # POST -> visitor sees the agent
    greeting: float = 0.0  # POST -> first greeting audio at the visitor
    api: float = 0.0  # POST -> response
    visitor_connected: float = 0.0  # POST -> visitor's connect() returned
    agent_before_visitor: bool = False
    error: str = ""
    marks: dict[str, float] = field(default_factory=dict)  # wall clock of each stage


async def one_session(st: S.Stack, agent: Any, mode: str, index: int, run_tag: str) -> Sample:
    from livekit import rtc

    from tests.visitor import Visitor

    sample = Sample(mode=mode, session_id=f"dispatch-{run_tag}-{mode}-{index}")
    seen: dict[str, float] = {}
    visitor = Visitor("bench")

    @visitor.room.on("participant_connected")
    def _on_participant(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == AGENT_KIND:
            seen.setdefault("agent", time.monotonic())

    sample.posted_wall = time.time()
    t0 = time.monotonic()
    body = await asyncio.to_thread(S.start_session, st, agent, sample.session_id)
    t_api = time.monotonic()
    sample.api = t_api - t0
    sample.room = body["room_name"]
    try:
        await visitor.join(body["livekit_url"], body["user_token"])
        t_conn = time.monotonic()
        sample.visitor_connected = t_conn - t0
        if "agent" not in seen and visitor.joined_agent.is_set():
            sample.agent_before_visitor = True  # already there: the connect bounds it
            seen["agent"] = t_conn
        await asyncio.wait_for(visitor.joined_agent.wait(), 20)
        sample.latency = seen["agent"] - t0
        sample.marks["seen"] = sample.posted_wall + sample.latency
        sample.marks["response"] = sample.posted_wall + sample.api
        heard = await visitor.wait_for_agent_speech(after=0, timeout=20)  # the greeting
        sample.greeting = heard - t0
        sample.marks["greeting"] = sample.posted_wall + sample.greeting
        # let the agent finish starting before the visitor leaves, so every
        # session ends the normal way (visitor gone -> agent closes -> stopped)
        await S.wait_status(sample.session_id, ("active",), 15)
    except Exception as exc:
        sample.error = repr(exc)
    finally:
        await visitor.leave()
    status = await S.wait_status(sample.session_id, ("stopped", "failed"), 30)
    if status != "stopped":
        sample.error = sample.error or f"ended {status or 'unknown'}"
        await asyncio.to_thread(S.stop_session, st, agent, sample.session_id)
        await S.wait_status(sample.session_id, ("stopped", "failed"), 30)
    row = await asyncio.to_thread(S.session_row, sample.session_id)
    sample.pk = row.pk
    sample.marks["created"] = row.created_at.timestamp()
    return sample


async def baseline_joins(st: S.Stack, n: int, *, publish: bool) -> list[float]:
    """A bare rtc participant joining a room the visitor is already in: the transport floor.

    livekit-server announces a participant that has not published anything in
    batches (every 3 s, pkg/rtc/room.go subscriberUpdateInterval) and a publisher
    at once; `publish` makes the probe publish an audio track right after
    connecting, as an agent does when its session starts."""
    from livekit import api, rtc

    from tests.visitor import Visitor

    def token(identity: str, room: str) -> str:
        grant = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        return (
            api.AccessToken(S.LIVEKIT_KEY, st.env["LIVEKIT_API_SECRET"])
            .with_identity(identity)
            .with_grants(grant)
            .to_jwt()
        )

    url = st.env["LIVEKIT_URL"]
    out = []
    for i in range(n):
        room_name = f"bench-baseline-{int(time.time())}-{int(publish)}-{i}"
        visitor = Visitor("bench")
        seen = asyncio.Event()
        at: dict[str, float] = {}

        @visitor.room.on("participant_connected")
        def _on(p: rtc.RemoteParticipant) -> None:
            at.setdefault("seen", time.monotonic())
            seen.set()

        await visitor.join(url, token("visitor", room_name))
        probe = rtc.Room()
        t0 = time.monotonic()
        try:
            await probe.connect(url, token("probe", room_name))
            if publish:
                source = rtc.AudioSource(48000, 1)
                track = rtc.LocalAudioTrack.create_audio_track("probe", source)
                await probe.local_participant.publish_track(
                    track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                )
            await asyncio.wait_for(seen.wait(), 10)
            out.append(at["seen"] - t0)
        finally:
            await probe.disconnect()
            await visitor.leave()
    return out


def provider_construction(n: int = 10) -> list[str]:
    """CPU and wall time of what the job does before it connects: build_providers for the
    stub configuration (openai LLM, STT, TTS) on the process's clients, which the worker's
    prewarm makes; beside it the three plugins each making their own client, as they do
    when given none, and sharing one client made per job. In this process; process_time is
    the CPU the job's event loop would spend."""
    from types import SimpleNamespace

    import openai
    from livekit.plugins import openai as lk_openai

    from voiceagents.providers.factory import build_providers

    url = "http://127.0.0.1:9/v1"  # never contacted: construction only
    settings = SimpleNamespace(
        OPENAI_API_KEY="stub",
        OPENAI_BASE_URL=url,
        GROQ_API_KEY="",
        GROQ_BASE_URL="",
        DEEPGRAM_API_KEY="",
        DEEPGRAM_BASE_URL="",
    )
    config = {**S.STUB_PROVIDERS, "vad_enabled": True}
    build_providers(config, settings=settings)  # imports, VAD model and clients: prewarm pays them

    def plugins(client: Any) -> None:
        lk_openai.LLM(client=client)
        lk_openai.STT(client=client, use_realtime=False)
        lk_openai.TTS(client=client, response_format="pcm")

    def cost(fn: Any) -> tuple[float, float]:
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n

    shared = openai.AsyncClient(api_key="stub", base_url=url, max_retries=0)
    rows = [
        (
            "build_providers, as a job calls it (clients made in prewarm)",
            cost(lambda: build_providers(config, settings=settings)),
        ),
        (
            "the three plugins, each making its own HTTP client",
            cost(
                lambda: (
                    lk_openai.LLM(api_key="stub", base_url=url),
                    lk_openai.STT(api_key="stub", base_url=url, use_realtime=False),
                    lk_openai.TTS(api_key="stub", base_url=url, response_format="pcm"),
                )
            ),
        ),
        (
            "one openai.AsyncClient per job, shared by the three",
            cost(lambda: plugins(openai.AsyncClient(api_key="stub", base_url=url, max_retries=0))),
        ),
        ("the three on a client made once per process", cost(lambda: plugins(shared))),
    ]
    return [
        f"     {label:<66} {cpu * 1000:5.0f} ms CPU {wall * 1000:6.0f} ms wall" for label, (cpu, wall) in rows
    ]


def _livekit_records(lines: list[str]) -> list[dict[str, Any]]:
    """livekit-server's console lines: time, level, logger, caller, message, JSON fields."""
    out = []
    for line in lines:
        parts = line.split("\t")
        if len(parts) < 5:
            continue
        try:
            t = datetime.fromisoformat(parts[0].replace("Z", "+00:00")).timestamp()
            fields = json.loads(parts[5]) if len(parts) > 5 else {}
        except ValueError:
            continue
        out.append({"t": t, "message": parts[4], **fields})
    return out


STALL_KINDS = (
    ("in create_default_context", "SSL contexts (each provider plugin's HTTP client)"),
    ("in get_ffi_lib", "loading the livekit FFI library (first rtc call in the process)"),
    ("apm.py", "creating the audio processing module (room input)"),
    ("importing ", "lazy imports"),
)


def stall_kind(message: str, stack: str) -> str:
    for needle, label in STALL_KINDS:
        if needle in message or needle in stack:
            return label
    return "other"


def breakdown(st: S.Stack, samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Fill each sample's stage marks from the processes' logs; return event-loop stalls per job."""
    # every Django server of the run (restart_django keeps the old one's lines)
    names = [n for n in st.procs if n.startswith("django")] + ["celery", "worker"]
    records = {name: S.log_records(st.logs(name)) for name in names}
    by_pk: dict[int, dict[str, float]] = {}
    for name in names:
        for r in records[name]:
            msg = str(r.get("message", ""))
            if msg.startswith("session ") and " -> " in msg:
                pk_s, _, to = msg[len("session ") :].partition(" -> ")
                if pk_s.isdigit():
                    marks = by_pk.setdefault(int(pk_s), {})
                    key = f"status_{to.strip()}"
                    marks[key] = min(marks.get(key, r["t"]), r["t"])
    job_by_room: dict[str, float] = {}
    stalls: dict[str, dict[str, float]] = {}
    for r in records["worker"]:
        if r.get("message") == "received job request" and r.get("room"):
            job_by_room.setdefault(str(r["room"]), r["t"])
    server: dict[str, dict[str, float]] = {}
    for r in _livekit_records(st.logs("livekit")):
        room, who = str(r.get("room", "")), str(r.get("participant", ""))
        if not who.startswith("agent-"):
            continue
        marks = server.setdefault(room, {})
        if r["message"] == "starting RTC session":
            marks.setdefault("agent_signal", r["t"])
        elif r["message"] == "participant active":
            marks.setdefault("agent_active", r["t"])
        elif r["message"] == "mediaTrack published":
            marks.setdefault("agent_track", r["t"])
    for s in samples:
        marks = by_pk.get(s.pk, {})
        for key in ("status_dispatching", "status_starting", "status_active"):
            if key in marks:
                s.marks[key] = marks[key]
        if s.room in job_by_room:
            s.marks["job_received"] = job_by_room[s.room]
        s.marks.update(server.get(s.room, {}))
    # synchronous work the job did on its event loop before the agent was seen
    window = {s.room: (s.marks.get("job_received", 0.0), s.marks.get("seen", 0.0)) for s in samples}
    for r in records["worker"]:
        msg = str(r.get("message", ""))
        room = str(r.get("room", ""))
        if not msg.startswith("event loop blocked") or room not in window:
            continue
        start, end = window[room]
        # the log line is written when the stall ends; it began `duration` earlier
        if start and end and start <= r["t"] - float(r.get("duration", 0)) <= end:
            kind = stall_kind(msg, str(r.get("stack", "")))
            per = stalls.setdefault(room, {})
            per[kind] = per.get(kind, 0.0) + float(r.get("duration", 0))
            per["cpu"] = per.get("cpu", 0.0) + float(r.get("cpu_time", 0))
    return stalls


STAGES = [
    ("API: POST -> response", "posted", "response"),
    ("queue: response -> task running (dispatching)", "response", "status_dispatching"),
    (
        "LiveKit API: dispatching -> starting (room + dispatch created)",
        "status_dispatching",
        "status_starting",
    ),
    ("job offer: starting -> worker logs 'received job request'", "status_starting", "job_received"),
    ("job start: job request -> agent signals (server)", "job_received", "agent_signal"),
    ("agent connect: signal -> participant active (server)", "agent_signal", "agent_active"),
    ("agent session start: active -> audio track published (server)", "agent_active", "agent_track"),
    ("publish -> visitor sees agent (negative: seen before publishing)", "agent_track", "seen"),
    ("agent active (server) -> visitor sees agent", "agent_active", "seen"),
    ("visitor sees agent -> first greeting audio", "seen", "greeting"),
    ("POST -> agent reported active (DB, worker or webhook)", "posted", "status_active"),
]


def print_mode(
    mode: str, samples: list[Sample], baseline: dict[str, float], stalls: dict[str, dict[str, float]]
) -> dict[str, float]:
    ok = [s for s in samples if not s.error and s.latency > 0]
    failed = [s for s in samples if s.error]
    stats = S.summary([s.latency for s in ok])
    print(f"\n== mode {mode}: {len(ok)} sessions measured, {len(failed)} with errors")
    for s in failed:
        print(f"   error {s.session_id}: {s.error}")
    print(f"   POST -> agent seen by visitor: {S.fmt_ms(stats)}")
    if stats.get("n") and baseline.get("n"):
        print(
            f"   ratio to the bare-participant baseline (median): {stats['median'] / baseline['median']:.1f}x"
        )
    print(f"   POST -> first greeting audio:  {S.fmt_ms(S.summary([s.greeting for s in ok if s.greeting]))}")
    print(f"   POST -> visitor connected:     {S.fmt_ms(S.summary([s.visitor_connected for s in ok]))}")
    before = sum(1 for s in ok if s.agent_before_visitor)
    if before:
        print(f"   agent already in the room when the visitor's connect returned: {before} of {len(ok)}")
    print("   breakdown (median / p95 per stage, wall clocks from logs):")
    for label, a, b in STAGES:
        values = []
        for s in ok:
            start = s.posted_wall if a == "posted" else s.marks.get(a)
            end = s.marks.get(b)
            if start is not None and end is not None:
                values.append(end - start)
        if values:
            st = S.summary(values)
            print(f"     {label:<66} {st['median'] * 1000:7.0f} {st['p95'] * 1000:7.0f} ms  (n={st['n']})")
    kinds = sorted({k for s in ok for k in stalls.get(s.room, {})} - {"cpu"})
    if kinds:
        print(
            "   job event-loop stalls between job request and agent seen (livekit-agents' own"
            " 'event loop blocked' reports, >100 ms each), mean per session:"
        )
        for kind in kinds + ["cpu"]:
            total = sum(stalls.get(s.room, {}).get(kind, 0.0) for s in ok)
            label = "of which CPU time in the stalled loop" if kind == "cpu" else kind
            print(f"     {label:<66} {total / len(ok) * 1000:7.0f} ms")
    print("   per session (ms): " + " ".join(f"{s.latency * 1000:.0f}" for s in ok))
    return stats


async def run_mode(st: S.Stack, agent: Any, mode: str, n: int, run_tag: str, timeout: float) -> list[Sample]:
    samples = []
    deadline = time.monotonic() + timeout
    for i in range(n):
        if time.monotonic() > deadline:
            print(f"   time budget spent after {i} sessions")
            break
        sample = await asyncio.wait_for(one_session(st, agent, mode, i, run_tag), 120)
        samples.append(sample)
        print(f"   {mode} {i + 1}/{n}: {sample.latency * 1000:.0f} ms {sample.error}", flush=True)
        # every session starts against a full pool of prewarmed processes
        if not await asyncio.to_thread(S.wait_idle_pool, st.procs["worker"].proc.pid, 2, 60):
            print("   (the idle pool did not refill within 60 s)")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions per mode (default 20)")
    parser.add_argument("--modes", default="celery,eager", help="celery, eager or both (default)")
    parser.add_argument(
        "--baseline",
        type=int,
        default=10,
        help="bare-participant joins (default 10; 5 more without publishing)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="time budget per mode, seconds")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    S.prepare()
    agent = S.make_agent(greeting_message="Hello.", **S.STUB_PROVIDERS)
    run_tag = str(int(time.time()))
    results: dict[str, list[Sample]] = {}
    with S.stack(
        stub_args=["--fixed-transcript", "hello", "--reply-template", "Okay."], log_prefix="dispatch"
    ) as st:
        base = asyncio.run(baseline_joins(st, args.baseline, publish=True))
        base_silent = asyncio.run(baseline_joins(st, min(args.baseline, 5), publish=False))
        for mode in modes:
            if mode == "eager":
                S.restart_django(st, {"CELERY_TASK_ALWAYS_EAGER": "true"})
            elif mode == "celery" and "eager" in results:
                S.restart_django(st, {})
            print(f"\nmode {mode}: {args.sessions} sequential sessions", flush=True)
            results[mode] = asyncio.run(run_mode(st, agent, mode, args.sessions, run_tag, args.timeout))
        stalls = breakdown(st, [s for samples in results.values() for s in samples])

    construction = provider_construction()
    base_stats = S.summary(base)
    print("\n== dispatch latency: POST start-voice-session -> agent participant seen by the visitor")
    print(
        f"   baseline, a bare participant joining and publishing audio (visitor sees it): {S.fmt_ms(base_stats)}"
    )
    print(
        f"   the same without publishing (livekit batches such joins every 3 s): {S.fmt_ms(S.summary(base_silent))}"
    )
    for mode, samples in results.items():
        print_mode(mode, samples, base_stats, stalls)
    print("\n== provider construction, as the job does it before connecting (mean of 10, this process):")
    print("\n".join(construction))
    print("\n   target: median <= 500 ms, p95 <= 1000 ms (prewarmed worker, 127.0.0.1)")
    print("   machine:", S.machine_note("end"))
    print(f"   logs: {S.WORK}/dispatch-*.log")


if __name__ == "__main__":
    main()
