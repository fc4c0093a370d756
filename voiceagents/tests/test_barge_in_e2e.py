"""Barge-in and backchannels in real rooms, through the real openai plugins and a stub
that speaks their protocol (its transcript and reply set per case).

The visitor interrupts a long reply: the agent stops, and the transcript keeps the
reply only as far as the visitor heard it. A "mhm" or a cough over the reply does not
derail it: the reply goes on and is stored whole.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sessions.models import AgentStatus, TranscriptTurn
from stubs.server import StubServer
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker
from tests.utterances import SAMPLE_RATE, speak
from tests.visitor import Visitor

from .test_voice_e2e import start_session, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

QUESTION = "What are your opening hours this week?"
LONG_REPLY = (
    "Let me explain how our opening hours work this week, because they change on the "
    "holiday: on Monday and Tuesday we open at nine, on Wednesday at ten, and from "
    "Thursday on we are back to our usual hours, nine to six."
)
SHORT_REPLY = "Okay, go ahead."
STUBBED = {"llm_provider": "openai", "stt_provider": "openai", "tts_provider": "openai"}


def cough() -> np.ndarray:
    rng = np.random.default_rng(7)
    n = SAMPLE_RATE // 4
    noise = np.convolve(rng.normal(0, 1, n), np.ones(8) / 8, mode="same") * np.exp(-np.linspace(0, 5, n))
    return (noise * 12000).clip(-32767, 32767).astype(np.int16)


def over_a_long_reply(
    stub: StubServer, session_id: str, sound: np.ndarray, transcript: str, *, answered: bool = False
) -> list[Any]:
    """The visitor asks, the agent answers at length, 0.8 s in the visitor makes ``sound``
    (heard by the STT as ``transcript``); the conversation's turns once it is over."""
    agent = VoiceAgentFactory(greeting_message="Hello.", **STUBBED)
    stub.state.apply_control(
        {"reset": True, "settings": {"fixed_transcript": QUESTION, "reply_template": LONG_REPLY}}
    )
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> None:
            visitor = Visitor()
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await visitor.wait_for_agent_speech(after=0, timeout=60)
            await visitor.wait_until_agent_quiet()
            [(_, asked)] = await visitor.speak_parts((speak(QUESTION),), (), trailing_silence=0.3)
            started = await visitor.wait_for_agent_speech(after=asked, timeout=30)
            stub.state.apply_control(
                {"settings": {"fixed_transcript": transcript, "reply_template": SHORT_REPLY}}
            )
            await asyncio.sleep(max(0.0, started + 0.8 - asyncio.get_running_loop().time()))
            [(_, made)] = await visitor.speak_parts((sound,), (), trailing_silence=0.5)
            if answered:  # the agent's answer to the interruption
                await visitor.wait_for_agent_speech(after=made, timeout=30)
            await visitor.wait_until_agent_quiet(quiet_for=1.5, timeout=60)
            await visitor.leave()

        run_async(scenario(), timeout=180)
        wait_for(lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped")
    return list(TranscriptTurn.objects.filter(session__session_id=session_id).order_by("sequence"))


def test_barge_in_stops_the_agent_and_keeps_what_was_heard(
    openai_stub: StubServer, openai_stub_worker: Process
) -> None:
    turns = over_a_long_reply(
        openai_stub, "barge-in", speak("wait, stop please"), "wait stop please", answered=True
    )
    seen = [(t.role, t.text, t.interrupted) for t in turns]
    reply = next(t for t in turns if t.role == "assistant" and t.sequence > 1)
    assert reply.interrupted, seen
    # what the visitor heard: the reply's beginning, not all of it
    assert reply.text and LONG_REPLY.startswith(reply.text.rstrip(".,: ")[:20]), seen
    assert len(reply.text) < len(LONG_REPLY), seen
    later = [t for t in turns if t.sequence > reply.sequence]
    assert ("user", "wait stop please") in [(t.role, t.text) for t in later], seen
    assert later[-1].role == "assistant" and later[-1].text == SHORT_REPLY, seen


@pytest.mark.parametrize(
    ("sound", "transcript"),
    [(lambda: speak("mhm"), "mhm"), (lambda: speak("yeah"), "yeah"), (cough, "")],
    ids=["mhm", "yeah", "cough"],
)
def test_a_backchannel_does_not_derail_the_reply(
    openai_stub: StubServer, openai_stub_worker: Process, sound: Any, transcript: str
) -> None:
    turns = over_a_long_reply(openai_stub, f"backchannel-{transcript or 'cough'}", sound(), transcript)
    seen = [(t.role, t.text, t.interrupted) for t in turns]
    replies = [t for t in turns if t.role == "assistant" and t.sequence > 1]
    assert [(r.text, r.interrupted) for r in replies] == [(LONG_REPLY, False)], seen
