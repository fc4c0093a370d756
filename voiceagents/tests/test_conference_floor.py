"""The Floor's turn-taking on its own: who is in the context, when the group gets its one answer.

The AgentSession is replaced by a recorder of what the Floor asks of it (a reply,
an interruption); the agent, its chat context and the transcript recorder are the
real ones. End to end, in a real room, see test_conference.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit.agents import Agent

from tests.helpers import run_async
from voiceagents.worker.conference_policy import ALWAYS, WHEN_ADDRESSED, ReplyPolicy
from voiceagents.worker.conference_turns import Floor
from voiceagents.worker.conversation import Speaker, TranscriptRecorder

MAYA = Speaker("id-maya", "Maya")
TOM = Speaker("id-tom", "Tom")


class SessionCalls:
    """What the Floor asked the session for."""

    def __init__(self) -> None:
        self.replies = 0
        self.replied = asyncio.Event()
        self.interrupts = 0
        self.current_speech: Any = None

    def on(self, *_: Any) -> None: ...

    def off(self, *_: Any) -> None: ...

    def generate_reply(self) -> None:
        self.replies += 1
        self.replied.set()

    def interrupt(self) -> None:
        self.interrupts += 1


def floor(
    policy: str = ALWAYS, *, min_delay: float = 0.05, max_delay: float = 0.4
) -> tuple[Floor, SessionCalls, Agent, TranscriptRecorder]:
    session = SessionCalls()
    agent = Agent(instructions="test")
    recorder = TranscriptRecorder(0, Speaker("agent", "Computer"), Speaker("", "Someone"))
    return (
        Floor(
            session=session,
            agent=agent,
            recorder=recorder,
            policy=ReplyPolicy(policy, "Computer"),
            names_in_room=lambda: {"id-maya": "Maya", "id-tom": "Tom"},
            allow_interruptions=True,
            min_delay=min_delay,
            max_delay=max_delay,
        ),
        session,
        agent,
        recorder,
    )


def user_texts(agent: Agent) -> list[str]:
    return [m.text_content or "" for m in agent.chat_ctx.messages() if m.role == "user"]


async def _overlap() -> None:
    f, session, agent, recorder = floor()
    f.speech_started(MAYA)
    f.speech_started(TOM)
    now = time.time()
    await f.utterance(MAYA, "good morning", started_at=now - 1, ended_at=now)
    assert session.replies == 0  # Tom is still talking: no answer over him
    f.speech_ended(TOM, time.time())
    await f.utterance(TOM, "I like apples", started_at=now - 1, ended_at=time.time())
    await asyncio.wait_for(session.replied.wait(), 2)
    assert session.replies == 1  # one answer for the group
    assert user_texts(agent) == ["Maya: good morning", "Tom: I like apples"]
    stored = [recorder._queue.get_nowait() for _ in range(recorder._queue.qsize())]
    assert [(t["speaker_name"], t["text"]) for t in stored] == [
        ("Maya", "good morning"),
        ("Tom", "I like apples"),
    ]
    f.close()


def test_overlapping_speakers_each_get_their_turn_and_the_group_one_answer() -> None:
    run_async(_overlap())


async def _someone_keeps_talking() -> None:
    f, session, _, _ = floor(max_delay=0.3)
    f.speech_started(TOM)  # and never stops (a noisy microphone)
    await f.utterance(MAYA, "what time is it", started_at=None, ended_at=time.time())
    await asyncio.wait_for(session.replied.wait(), 2)  # answered at max_delay at the latest
    f.close()


def test_an_endless_speaker_delays_the_answer_only_up_to_max_delay() -> None:
    run_async(_someone_keeps_talking())


async def _when_addressed() -> None:
    f, session, agent, _ = floor(WHEN_ADDRESSED)
    f.speech_started(MAYA)
    assert session.interrupts == 0  # talk among people does not cut the agent off
    await f.utterance(MAYA, "my train was late again", started_at=None, ended_at=time.time())
    assert f._reply_due_since is None and f._timer is None  # nothing scheduled: no answer coming
    assert user_texts(agent) == ["Maya: my train was late again"]  # but the agent knows it was said
    await f.utterance(TOM, "hello computer", started_at=None, ended_at=time.time())
    await asyncio.wait_for(session.replied.wait(), 2)
    assert session.replies == 1
    f.close()


def test_when_addressed_answers_its_name_and_remembers_the_rest() -> None:
    run_async(_when_addressed())


async def _renamed() -> None:
    f, _, agent, _ = floor()
    await f.utterance(Speaker("id-maya", "Visitor"), "hi", started_at=None, ended_at=time.time())
    assert user_texts(agent) == ["Maya: hi"]  # the name they have in the room now
    f.close()


def test_the_current_display_name_is_used() -> None:
    run_async(_renamed())
