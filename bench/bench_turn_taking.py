"""Turn-taking, per turn_detection mode: how fast a finished turn is answered, how often a
pause is cut off, what the end-of-turn model costs, barge-in and backchannels.

Run (from the repository root, shared test services up; a heavy benchmark):

    flock /tmp/agentconnect-heavy.lock .venv/bin/python bench/bench_turn_taking.py [--modes model,vad,stt]

Starts its own stack (bench/_stack.py): the OpenAI-protocol stub as LLM, STT and TTS
with zero added latency (a fixed transcript, a short fixed reply voiced by espeak-ng),
and `manage.py run_voice_agent start`. Each mode gets its own agent profile and one
conversation over the same evaluation set, in one run:

  the set    SEED-fixed, espeak-ng, three voices (en-us, en-gb-x-rp, en-us+f3), 60
             utterances: complete sentences, questions, very short answers ("yes",
             "no"), and sentences with a 0.4-0.9 s pause after "and", "so" or "um"
             (synthesized whole with an SSML break and cut there: tests/utterances.py)
  v2v        complete, question and short utterances: the visitor's last sample
             played out -> the first agent audio at the visitor
  cut-off    paused utterances: agent audio began after the first part and before the
             visitor finished the second (it answered inside the pause)
  CPU        the worker's process tree CPU seconds over each mode's conversation; the
             detector's share is model minus vad (same utterances)
  barge-in   the agent speaks a long reply; 0.8 s in, the visitor says "wait, stop
             please": its first sample played out -> the agent's last audio frame at
             the visitor (the stop, transport included)
  backchannel  as barge-in, but "mhm", "yeah" or a cough (a burst of noise): survived
             when the reply goes on and is stored whole (not interrupted)

Baseline, same run: the audio round trip through livekit-server with no agent.
Prints figures; asserts nothing. Bounded: every wait has a timeout, the set is fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _stack as S

SEED = 18
VOICES = ("en-us", "en-gb-x-rp", "en-us+f3")
TRANSCRIPT = "tell me more"
REPLY = "Okay."
LONG_REPLY = (
    "Let me explain how our opening hours work this week, because they change on the "
    "holiday: on Monday and Tuesday we open at nine, on Wednesday at ten, and from "
    "Thursday on we are back to our usual hours, nine to six."
)

COMPLETE = [
    "I would like to book a table for two tonight.",
    "Thank you very much, that is all.",
    "My order number is four five six.",
    "I want to cancel my subscription.",
    "The parcel arrived this morning.",
    "I need a new password for my account.",
    "Please send me the invoice by email.",
    "I moved to a new flat last week.",
    "That sounds good to me.",
]
QUESTIONS = [
    "What time do you open tomorrow?",
    "Can I change my delivery address?",
    "How much does the premium plan cost?",
    "Do you ship to Canada?",
    "Where is my order?",
    "Could you repeat that please?",
    "Is the shop open on Sunday?",
]
SHORT = ["Yes.", "No.", "Yes please.", "No thanks.", "Sure."]
PAUSED = [
    ("I need to change my address and", "my phone number too."),
    ("I would like to book a table so", "we can celebrate on Friday."),
    ("I was wondering, um", "if you have any rooms left."),
    ("My card was charged twice and", "I would like a refund."),
    ("The delivery was late so", "the food was cold."),
    ("Can you tell me, um", "when the next train leaves?"),
    ("I ordered a blue jacket and", "a red one arrived."),
    ("We are four people so", "we need a bigger table."),
    ("I think, um", "the second option is better."),
]
BARGE_INS = ("wait, stop please", "hold on, I have a question")
BACKCHANNELS = ("mhm", "yeah", "cough")


@dataclass
class Item:
    kind: str
    text: str
    voice: str
    parts: tuple[np.ndarray, ...]
    pauses: tuple[float, ...] = ()


def evaluation_set(n_complete: int, n_question: int, n_short: int, n_paused: int) -> list[Item]:
    from tests.utterances import speak, speak_with_pause

    rng = random.Random(SEED)
    items: list[Item] = []
    for kind, pool, n in (("complete", COMPLETE, n_complete), ("question", QUESTIONS, n_question)):
        for i in range(n):
            text, voice = pool[i % len(pool)], VOICES[i % len(VOICES)]
            items.append(Item(kind, text, voice, (speak(text, voice=voice),)))
    for i in range(n_short):
        text, voice = SHORT[i % len(SHORT)], VOICES[(i + 1) % len(VOICES)]
        items.append(Item("short", text, voice, (speak(text, voice=voice),)))
    for i in range(n_paused):
        (before, after), voice = PAUSED[i % len(PAUSED)], VOICES[(i + 2) % len(VOICES)]
        pause = round(rng.uniform(0.4, 0.9), 2)
        u = speak_with_pause(before, after, pause, voice=voice)
        items.append(Item("paused", u.text, voice, u.parts, u.pauses))
    rng.shuffle(items)
    return items


def cough() -> np.ndarray:
    """A cough-like burst: 250 ms of decaying band-limited noise, loud enough for the VAD to hear."""
    rng = np.random.default_rng(SEED)
    n = int(S_RATE * 0.25)
    noise = rng.normal(0, 1, n)
    noise = np.convolve(noise, np.ones(8) / 8, mode="same")
    envelope = np.exp(-np.linspace(0, 5, n))
    return (noise * envelope * 12000).clip(-32767, 32767).astype(np.int16)


S_RATE = 48000


def control(st: S.Stack, **settings: Any) -> None:
    request = urllib.request.Request(
        st.stub_url + "/_control",
        data=json.dumps({"settings": settings}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclass
class ModeResult:
    mode: str
    v2v: dict[str, list[float]] = field(default_factory=dict)  # by kind
    paused: int = 0
    cut_off: int = 0
    missed: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    barge_in: list[float] = field(default_factory=list)
    barge_missed: int = 0
    backchannel_trials: list[tuple[str, bool]] = field(default_factory=list)


async def run_mode(
    st: S.Stack, mode: str, items: list[Item], barge_ins: int, backchannels: int, pid: int, verbose: bool
) -> ModeResult:
    from tests.utterances import speak
    from tests.visitor import Visitor

    result = ModeResult(mode)
    agent = await asyncio.to_thread(
        S.make_agent, greeting_message="Hello.", turn_detection=mode, **S.STUB_PROVIDERS
    )
    session_id = f"taking-{mode}-{int(time.time())}"
    await asyncio.to_thread(control, st, fixed_transcript=TRANSCRIPT, reply_template=REPLY)
    cpu_before, wall_before = S.tree_cpu_seconds(pid), time.monotonic()
    body = await asyncio.to_thread(S.start_session, st, agent, session_id)
    visitor = Visitor(f"bench-{mode}")
    try:
        await visitor.join(body["livekit_url"], body["user_token"])
        await asyncio.wait_for(visitor.joined_agent.wait(), 30)
        await visitor.wait_for_agent_speech(after=0, timeout=30)
        await visitor.wait_until_agent_quiet(quiet_for=0.5, timeout=30)
        heard = visitor.agent_heard()
        for n, item in enumerate(items):
            times = await visitor.speak_parts(item.parts, item.pauses, trailing_silence=0.3)
            first_end, last_end = times[0][1], times[-1][1]
            if item.kind == "paused":
                result.paused += 1
                if any(first_end <= t < last_end for t in heard.bursts):
                    result.cut_off += 1
            try:
                replied = await visitor.wait_for_agent_speech(after=last_end, timeout=10)
            except AssertionError:
                result.missed += 1
                continue
            if item.kind != "paused":
                result.v2v.setdefault(item.kind, []).append(replied - last_end)
            if verbose:
                cut = item.kind == "paused" and any(first_end <= t < last_end for t in heard.bursts)
                print(
                    f"     {item.kind:<8} {item.voice:<10} {replied - last_end:6.3f} s{' CUT' if cut else ''}",
                    flush=True,
                )
            await visitor.wait_until_agent_quiet(quiet_for=0.45, timeout=30)
            if (n + 1) % 10 == 0:
                print(f"   {mode}: {n + 1}/{len(items)} utterances", flush=True)
        result.cpu_seconds = S.tree_cpu_seconds(pid) - cpu_before
        result.wall_seconds = time.monotonic() - wall_before

        # barge-in and backchannels over a long reply
        question = speak("What are your opening hours this week?")
        for i in range(barge_ins + backchannels):
            barge = i < barge_ins
            what = (
                BARGE_INS[i % len(BARGE_INS)] if barge else BACKCHANNELS[(i - barge_ins) % len(BACKCHANNELS)]
            )
            await asyncio.to_thread(
                control,
                st,
                fixed_transcript="What are your opening hours this week?",
                reply_template=LONG_REPLY,
            )
            [(_, asked)] = await visitor.speak_parts((question,), (), trailing_silence=0.3)
            try:
                started = await visitor.wait_for_agent_speech(after=asked, timeout=10)
            except AssertionError:
                result.barge_missed += 1
                continue
            # the reply to the interruption (or to a derailing backchannel) is the short one
            transcript = {"cough": ""}.get(what, what)
            await asyncio.to_thread(control, st, fixed_transcript=transcript, reply_template=REPLY)
            await asyncio.sleep(max(0.0, started + 0.8 - time.monotonic()))
            audio = cough() if what == "cough" else speak(what, voice=VOICES[i % len(VOICES)])
            assistant_turns = await asyncio.to_thread(_assistant_turns, session_id)
            [(spoke, spoke_end)] = await visitor.speak_parts((audio,), (), trailing_silence=0.3)
            if barge:
                await visitor.wait_until_agent_quiet(quiet_for=0.4, timeout=30)
                stopped = heard.last_sound
                result.barge_in.append(max(stopped - spoke, 0.0))
                if verbose:
                    print(f"     barge-in {what!r}: stopped {stopped - spoke:6.3f} s after", flush=True)
                # the answer to the interruption, then quiet
                with_answer = await _maybe_speech(visitor, after=spoke_end, timeout=6)
                if with_answer:
                    await visitor.wait_until_agent_quiet(quiet_for=0.45, timeout=30)
            else:
                await visitor.wait_until_agent_quiet(quiet_for=0.6, timeout=40)
                survived = await asyncio.to_thread(_reply_survived, session_id, assistant_turns)
                result.backchannel_trials.append((what, survived))
                if verbose:
                    print(f"     backchannel {what!r}: {'kept' if survived else 'lost'}", flush=True)
            await asyncio.sleep(0.3)
    finally:
        await visitor.leave()
        await S.wait_status(session_id, ("stopped", "failed"), 30)
    return result


async def _maybe_speech(visitor: Any, *, after: float, timeout: float) -> bool:
    try:
        await visitor.wait_for_agent_speech(after=after, timeout=timeout)
    except AssertionError:
        return False
    return True


def _assistant_turns(session_id: str) -> int:
    from sessions.models import TranscriptTurn

    return TranscriptTurn.objects.filter(session__session_id=session_id, role="assistant").count()


def _reply_survived(session_id: str, before: int) -> bool:
    """The long reply playing when the backchannel came is stored whole, and no reply followed it."""
    from sessions.models import TranscriptTurn

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = list(
            TranscriptTurn.objects.filter(session__session_id=session_id, role="assistant")
            .order_by("sequence")
            .values_list("text", "interrupted")[before:]
        )
        if rows:
            break
        time.sleep(0.1)
    else:
        return False
    # rows[0] is the long reply (added when it ended); a derailed one is interrupted
    # or followed by a reply to the backchannel
    text, interrupted = rows[0]
    return not interrupted and len(rows) == 1 and text == LONG_REPLY


def report(results: list[ModeResult], echo: dict[str, float], counts: dict[str, int]) -> None:
    by_mode = {r.mode: r for r in results}
    print("\n== turn-taking by turn_detection mode (stub providers, zero added latency, loopback)")
    print(
        "   set: seed {seed}, voices {voices}, {total} utterances ({detail})".format(
            seed=SEED,
            voices=", ".join(VOICES),
            total=sum(counts.values()),
            detail=", ".join(f"{n} {k}" for k, n in counts.items()),
        )
    )
    header = f"   {'mode':<6} {'v2v median':>10} {'p95':>6} {'n':>3} {'cut-off':>9} {'missed':>6} {'CPU s':>6} {'wall s':>6} {'barge-in med':>12} {'p95':>5} {'backch.':>8}"
    print(header)
    for r in results:
        complete = [v for k in ("complete", "question", "short") for v in r.v2v.get(k, [])]
        st = S.summary(complete)
        bi = S.summary(r.barge_in)
        survived = sum(1 for _, ok in r.backchannel_trials if ok)
        print(
            f"   {r.mode:<6} {st.get('median', float('nan')) * 1000:>8.0f}ms {st.get('p95', float('nan')) * 1000:>4.0f}ms"
            f" {st.get('n', 0):>3} {r.cut_off:>3}/{r.paused:<3}{(r.cut_off / max(r.paused, 1)) * 100:>3.0f}%"
            f" {r.missed:>6} {r.cpu_seconds:>6.1f} {r.wall_seconds:>6.0f}"
            f" {bi.get('median', float('nan')) * 1000:>10.0f}ms {bi.get('p95', float('nan')) * 1000:>3.0f}ms"
            f" {survived:>3}/{len(r.backchannel_trials):<3}"
        )
    for r in results:
        parts = []
        for kind in ("complete", "question", "short"):
            st = S.summary(r.v2v.get(kind, []))
            if st.get("n"):
                parts.append(f"{kind} {st['median'] * 1000:.0f}/{st['p95'] * 1000:.0f} ms (n={st['n']})")
        print(f"   {r.mode}: v2v median/p95 by kind: " + "; ".join(parts))
        if r.backchannel_trials:
            print(
                f"   {r.mode}: backchannels "
                + " ".join(f"{w}:{'kept' if ok else 'lost'}" for w, ok in r.backchannel_trials)
            )
        if r.barge_missed:
            print(f"   {r.mode}: barge-in/backchannel trials without a reply to interrupt: {r.barge_missed}")
    if "model" in by_mode and "vad" in by_mode:
        m, v = by_mode["model"], by_mode["vad"]
        # CPU per second of conversation, so a mode that waits longer is not charged for idling
        per_s = (m.cpu_seconds / max(m.wall_seconds, 1e-9) - v.cpu_seconds / max(v.wall_seconds, 1e-9)) * 100
        print(
            f"   end-of-turn model's CPU: model {m.cpu_seconds:.1f} s over {m.wall_seconds:.0f} s vs vad"
            f" {v.cpu_seconds:.1f} s over {v.wall_seconds:.0f} s: {per_s:+.1f} % of one core while conversing,"
            f" {m.cpu_seconds - v.cpu_seconds:+.1f} CPU s per {sum(counts.values())}-utterance conversation"
        )
        vm = S.summary([x for k in ("complete", "question", "short") for x in v.v2v.get(k, [])])
        mm = S.summary([x for k in ("complete", "question", "short") for x in m.v2v.get(k, [])])
        if vm.get("n") and mm.get("n"):
            print(f"   v2v median model / vad: {mm['median'] / vm['median']:.2f}x")
    print(f"   transport baseline (audio round trip via livekit-server, no agent): {S.fmt_ms(echo)}")
    print("   targets: model v2v median <= 400 ms; cut-off <= 5 %; barge-in median <= 150 ms")
    print("   machine:", S.machine_note("end"))
    print(f"   logs: {S.WORK}/taking-*.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="model,vad,stt", help="comma-separated turn_detection modes")
    parser.add_argument("--complete", type=int, default=18)
    parser.add_argument("--questions", type=int, default=14)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--paused", type=int, default=18)
    parser.add_argument("--barge-ins", type=int, default=8)
    parser.add_argument("--backchannels", type=int, default=9)
    parser.add_argument("--echo", type=int, default=8, help="transport round trips for the baseline")
    parser.add_argument("--verbose", action="store_true", help="print every utterance and trial")
    args = parser.parse_args()

    S.prepare()
    counts = {
        "complete": args.complete,
        "question": args.questions,
        "short": args.short,
        "paused": args.paused,
    }
    items = evaluation_set(args.complete, args.questions, args.short, args.paused)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: list[ModeResult] = []
    with S.stack(
        stub_args=["--fixed-transcript", TRANSCRIPT, "--reply-template", REPLY], log_prefix="taking"
    ) as st:
        pcm, rate, duration = S.speech("what are your opening hours today")
        trips = asyncio.run(S.echo_round_trips(st.env, pcm, rate, duration, args.echo))
        pid = st.procs["worker"].proc.pid
        for mode in modes:
            print(
                f"-- {mode}: {len(items)} utterances, {args.barge_ins} barge-ins, {args.backchannels} backchannels",
                flush=True,
            )
            results.append(
                asyncio.run(
                    asyncio.wait_for(
                        run_mode(st, mode, items, args.barge_ins, args.backchannels, pid, args.verbose), 1500
                    )
                )
            )
    report(results, S.summary(trips), counts)


if __name__ == "__main__":
    main()
