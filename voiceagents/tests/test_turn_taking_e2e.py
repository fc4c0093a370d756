"""Turn-taking in real rooms: a real worker, the real plugins, a simulated visitor speaking
espeak-ng speech through livekit-server.

In ``model`` mode the local end-of-turn model hears that "... so" is unfinished and the
agent waits through the pause; in ``vad`` mode with a short delay it answers inside it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessions.models import AgentStatus, TranscriptTurn
from stubs.server import StubServer
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker
from tests.utterances import speak, speak_with_pause
from tests.visitor import Visitor

from .test_barge_in_e2e import STUBBED
from .test_voice_e2e import start_session, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

PAUSE = 0.9
BEFORE, AFTER = "I need to change my address so", "the parcel arrives on time."


@pytest.fixture(autouse=True)
def instant_stt(openai_stub: StubServer) -> None:
    # the transcript is ready the moment the VAD ends an utterance, so only turn detection
    # decides when the agent answers
    openai_stub.state.apply_control(
        {"reset": True, "settings": {"fixed_transcript": BEFORE, "reply_template": "Okay."}}
    )


def first_reply_after_a_pause(session_id: str, **profile: Any) -> tuple[float, float, float]:
    """(first agent speech, pause start, the sentence's end), monotonic, for the paused sentence."""
    agent = VoiceAgentFactory(greeting_message="Hello.", **STUBBED, **profile)
    utterance = speak_with_pause(BEFORE, AFTER, PAUSE)
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> tuple[float, float, float]:
            visitor = Visitor()
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await visitor.wait_for_agent_speech(after=0, timeout=60)
            await visitor.wait_until_agent_quiet()
            (_, paused), (_, finished) = await visitor.speak_parts(
                utterance.parts, utterance.pauses, trailing_silence=0.5
            )
            replied = await visitor.wait_for_agent_speech(after=paused, timeout=30)
            await visitor.leave()
            return replied, paused, finished

        result: tuple[float, float, float] = run_async(scenario(), timeout=180)
        wait_for(lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped")
    return result


def test_model_mode_waits_through_a_mid_sentence_pause(openai_stub_worker: Process) -> None:
    replied, paused, finished = first_reply_after_a_pause(
        "turns-model-pause", turn_detection="model", min_endpointing_delay=0.25, max_endpointing_delay=3.0
    )
    assert replied >= finished, (
        f"answered {replied - paused:.2f} s after the pause began, before the sentence ended"
    )


def test_vad_mode_with_a_short_delay_answers_inside_the_pause(openai_stub_worker: Process) -> None:
    replied, paused, finished = first_reply_after_a_pause(
        "turns-vad-pause", turn_detection="vad", min_endpointing_delay=0.3
    )
    # it answered the first part: its voice began before the visitor had finished
    assert paused < replied < finished, (replied - paused, finished - paused)


def test_model_mode_answers_a_finished_sentence(openai_stub_worker: Process) -> None:
    agent = VoiceAgentFactory(
        greeting_message="Hello.", turn_detection="model", max_endpointing_delay=3.0, **STUBBED
    )
    with celery_worker():
        body = start_session(agent, "turns-model-done")

        async def scenario() -> None:
            visitor = Visitor()
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await visitor.wait_for_agent_speech(after=0, timeout=60)
            await visitor.wait_until_agent_quiet()
            [(_, ended)] = await visitor.speak_parts((speak("Thank you very much."),), ())
            await visitor.wait_for_agent_speech(after=ended, timeout=30)
            await visitor.wait_until_agent_quiet()
            await visitor.leave()

        run_async(scenario(), timeout=180)
        wait_for(lambda: status("turns-model-done") == AgentStatus.STOPPED, timeout=30, what="stopped")
    turns = list(TranscriptTurn.objects.filter(session__session_id="turns-model-done").order_by("sequence"))
    roles = [t.role for t in turns]
    assert roles[:3] == ["assistant", "user", "assistant"], [(t.role, t.text) for t in turns]
    assert turns[2].text == "Okay."
