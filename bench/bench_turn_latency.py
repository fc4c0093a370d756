"""Turn latency overhead: the visitor stops speaking -> the first agent audio the visitor receives.

Run (from the repository root, shared test services up):

    .venv/bin/python bench/bench_turn_latency.py [--turns 24]

Starts its own stack (bench/_stack.py) with the OpenAI-protocol stub as LLM,
STT and TTS, all with zero added latency: the transcription endpoint returns a
fixed transcript without running a recognizer, the chat endpoint streams a
short fixed reply, the speech endpoint synthesizes it with espeak-ng (a few
ms). The agent is `manage.py run_voice_agent start`, driven through the real
openai plugins (VAD turn detection, as the factory configures it).

One conversation: the visitor (tests.visitor.Visitor) hears the greeting,
then --turns times speaks a sentence of real espeak-ng speech in real time
(trimmed to its loud part, followed by a second of digital silence as a
microphone would send), waits for the agent's first audio, waits until the
agent is quiet, pauses, and speaks again.

  latency   = first loud 10 ms frame of agent audio at the visitor - the
              moment the visitor's last speech sample was played out
  overhead  = latency - the configured endpointing delay

The endpointing delay subtracted is max(VAD min_silence_duration, endpointing
min_delay), as the worker is configured (AGENT_VAD_MIN_SILENCE_SECONDS,
AGENT_ENDPOINTING_DELAY_SECONDS; set them in the environment to compare). With turn_detection="vad",
silero reports END_OF_SPEECH after min_silence_duration of silence, and the
framework back-dates the user's last speaking time to the start of that
silence; the endpointing min_delay is counted from that same instant, so it
runs concurrently with the VAD's silence window instead of after it
(livekit/agents/voice/audio_recognition.py, _bounce_eou_task: extra_sleep =
min_delay - (now - last_speaking_time)). Subtracting both would count the
same silence twice.

Baseline, same run: the audio round trip through livekit-server with no agent
(a participant that republishes every frame it receives): what transport
alone costs of the overhead.

Also printed: the agent's own per-turn metrics as the runtime stored them
(TranscriptTurn.metrics: end_of_turn_delay, transcription_delay, llm_ttft,
tts_ttfb, response_latency).

Prints figures; asserts nothing. Bounded: --turns, a time budget, and a
timeout on every wait.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _stack as S

UTTERANCE = "what are your opening hours today"
REPLY = "Sure, I can help with that."


async def one_conversation(
    st: S.Stack, agent: Any, session_id: str, turns: int, pause: float, budget: float
) -> tuple[list[S.Turn], int]:
    from tests.visitor import Visitor

    pcm, rate, _ = S.speech(UTTERANCE)
    body = await asyncio.to_thread(S.start_session, st, agent, session_id)
    visitor = Visitor("bench")
    try:
        await visitor.join(body["livekit_url"], body["user_token"])
        await asyncio.wait_for(visitor.joined_agent.wait(), 30)
        await visitor.wait_for_agent_speech(after=0, timeout=30)  # the greeting
        await visitor.wait_until_agent_quiet(quiet_for=0.6, timeout=30)

        def show(i: int, turn: S.Turn) -> None:
            print(f"   turn {i + 1}/{turns}: {turn.latency * 1000:.0f} ms", flush=True)

        return await S.conversation_turns(
            visitor, pcm, rate, turns=turns, pause=pause, deadline=time.monotonic() + budget, on_turn=show
        )
    finally:
        await visitor.leave()
        await S.wait_status(session_id, ("stopped", "failed"), 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=24, help="turns in the conversation (default 24)")
    parser.add_argument(
        "--pause", type=float, default=0.8, help="seconds between the agent's answer and the next question"
    )
    parser.add_argument(
        "--echo", type=int, default=10, help="transport round trips for the baseline (default 10)"
    )
    parser.add_argument("--budget", type=float, default=600, help="time budget for the conversation, seconds")
    args = parser.parse_args()

    S.prepare()
    from django.conf import settings

    config = S.endpointing_config()
    subtract = max(config["vad_min_silence_duration"], config["endpointing_min_delay"])
    agent = S.make_agent(greeting_message="Hello.", **S.STUB_PROVIDERS)
    session_id = f"turns-{int(time.time())}"
    with S.stack(
        stub_args=["--fixed-transcript", UTTERANCE, "--reply-template", REPLY], log_prefix="turns"
    ) as st:
        pcm, rate, duration = S.speech(UTTERANCE)
        trips = asyncio.run(S.echo_round_trips(st.env, pcm, rate, duration, args.echo))
        print(f"transport baseline done ({len(trips)} round trips)", flush=True)
        turns, missed = asyncio.run(
            one_conversation(st, agent, session_id, args.turns, args.pause, args.budget)
        )
        metrics = S.turn_metrics(session_id)

    latency = S.summary([t.latency for t in turns])
    overhead = S.summary([t.latency - subtract for t in turns])
    echo = S.summary(trips)
    print("\n== turn latency: visitor stops speaking -> first agent audio at the visitor")
    print(
        f"   utterance {duration:.2f} s of espeak speech; reply {REPLY!r}; stub providers, zero added latency"
    )
    print(
        "   agent configuration: endpointing min_delay {endpointing_min_delay:.2f} s (max_delay"
        " {endpointing_max_delay:.2f} s), VAD min_silence_duration {vad_min_silence_duration:.2f} s,"
        " VAD deactivation threshold {vad_deactivation_threshold:.2f}, preemptive TTS {preemptive},"
        " captions synced to the voice {synced}".format(
            preemptive=bool(config["preemptive_tts"]),
            synced=bool(settings.AGENT_SYNC_TRANSCRIPTION),
            **config,
        )
    )
    print(
        f"   subtracted: {subtract:.2f} s = max(VAD min_silence_duration, endpointing min_delay); they overlap"
    )
    print(f"   raw latency:        {S.fmt_ms(latency)}")
    print(f"   overhead:           {S.fmt_ms(overhead)}")
    if missed:
        print(f"   turns with no answer within 20 s: {missed}")
    print(f"   transport baseline (audio round trip via livekit-server, no agent): {S.fmt_ms(echo)}")
    if latency.get("n") and echo.get("n"):
        print(f"   overhead / transport round trip (medians): {overhead['median'] / echo['median']:.1f}x")
        print(f"   overhead minus transport (medians): {(overhead['median'] - echo['median']) * 1000:.0f} ms")
    print("   agent-side metrics stored per turn (median / p95):")
    for key in sorted(metrics):
        st_ = S.summary(metrics[key])
        print(f"     {key:<40} {st_['median'] * 1000:7.0f} {st_['p95'] * 1000:7.0f} ms  (n={st_['n']})")
    print("   per turn (ms): " + " ".join(f"{t.latency * 1000:.0f}" for t in turns))
    print("\n   target: overhead median <= 150 ms over >= 20 turns")
    print("   machine:", S.machine_note("end"))
    print(f"   logs: {S.WORK}/turns-*.log")


if __name__ == "__main__":
    main()
