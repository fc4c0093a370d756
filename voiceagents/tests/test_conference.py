"""The conference agent end to end, in a real room, with a real `run_conference_agent` worker.

People join through the API (start-voice-session for the first, widget-voice-token
for the others, each with a display name), speak real espeak-ng speech as rtc
audio tracks, and hear the agent. Offline providers (pocketsphinx STT, echo LLM,
espeak-ng TTS): the echo LLM says back the last user message it was given, so an
assistant turn shows exactly what the LLM saw, speaker's name included.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from livekit import api, rtc
from rest_framework.test import APIClient

from sessions.models import AgentStatus, ConversationSession, TranscriptTurn
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker, test_database_env
from tests.visitor import SAMPLE_RATE, Visitor
from voiceagents.catalog import AgentMode, ReplyPolicy
from voiceagents.providers.offline_tts import synthesize_pcm

from .conftest import start_agent_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

OFFLINE = {"llm_provider": "echo", "stt_provider": "local", "tts_provider": "local"}
# pocketsphinx hears these espeak-ng sentences reliably; the keyword is what we check
MAYA = ("good morning everyone", "morning")
TOM = ("I like green apples", "apples")
LENA = ("my train was late again", "train")
SAM = ("please open the window", "window")
BOT = ("the coffee is very hot", "coffee")


@pytest.fixture
def conference_worker(live_server: Any, transactional_db: Any) -> Iterator[Process]:
    proc = start_agent_worker("run_conference_agent")
    yield proc
    proc.stop()
    print(f"--- {proc.name} output ---\n{proc.tail(150)}")  # shown when the test failed


@pytest.fixture
def mixed_worker(live_server: Any, transactional_db: Any) -> Iterator[Process]:
    proc = start_agent_worker("run_conference_agent", CONFERENCE_STT_STRATEGY="mixed")
    yield proc
    proc.stop()
    print(f"--- {proc.name} output ---\n{proc.tail(150)}")


def conference_agent(**fields: Any) -> Any:
    return VoiceAgentFactory(
        mode=AgentMode.CONFERENCE, name="Computer", greeting_message="Hello everyone.", **{**OFFLINE, **fields}
    )


def widget(agent: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=agent.company.widget_key)
    return client


def start_session(agent: Any, session_id: str, name: str) -> dict[str, Any]:
    body = {"session_id": session_id, "agent_id": agent.pk, "company_id": agent.company_id, "participant_name": name}
    response = widget(agent).post("/api/v1/livekit-agents/start-voice-session", body, format="json")
    assert response.status_code == 201, response.content
    data: dict[str, Any] = response.json()
    data["participant_identity"] = ConversationSession.objects.get(session_id=session_id).visitor_identity
    return data


def join_token(agent: Any, session_id: str, name: str) -> dict[str, Any]:
    body = {"session_id": session_id, "participant_name": name}
    response = widget(agent).post("/api/v1/livekit-agents/widget-voice-token", body, format="json")
    assert response.status_code == 200, response.content
    data: dict[str, Any] = response.json()
    return data


class Person(Visitor):
    """A visitor that knows which agent is ours (another agent may join to test exclusion)."""

    def __init__(self, name: str, identity: str) -> None:
        super().__init__(name)
        self.identity = identity

    def _note_agent(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity.startswith("agent-"):
            super()._note_agent(participant)

    async def open_microphone(self) -> None:
        """Publish the microphone and wait until the agent has subscribed to it."""
        subscribed = asyncio.Event()
        self.room.on("local_track_subscribed", lambda *_: subscribed.set())
        await self.speak(np.zeros(SAMPLE_RATE // 10, dtype=np.int16).tobytes(), SAMPLE_RATE, trailing_silence=0)
        await asyncio.wait_for(subscribed.wait(), 20)

    async def say(self, sentence: str, *, trailing_silence: float = 1.0) -> float:
        pcm, rate = await asyncio.to_thread(synthesize_pcm, sentence)
        return await self.speak(pcm, rate, trailing_silence=trailing_silence)


async def enter(name: str, body: dict[str, Any]) -> Person:
    person = Person(name, body["participant_identity"])
    await person.join(body["livekit_url"], body["user_token"])
    await asyncio.wait_for(person.joined_agent.wait(), 30)
    await person.open_microphone()
    return person


async def all_hear_the_agent(people: list[Person], after: float) -> None:
    await asyncio.gather(*(p.wait_for_agent_speech(after=after, timeout=60) for p in people))
    await asyncio.gather(*(p.wait_until_agent_quiet() for p in people))


def user_turns(session_id: str) -> list[TranscriptTurn]:
    return list(TranscriptTurn.objects.filter(session__session_id=session_id, role="user").order_by("sequence"))


async def stored_turn_of(session_id: str, name: str, keyword: str) -> TranscriptTurn:
    def find() -> TranscriptTurn | None:
        for turn in user_turns(session_id):
            if turn.speaker_name == name and keyword in turn.text.lower():
                return turn
        return None

    def wait() -> TranscriptTurn:
        turn = wait_for(find, timeout=45, what=f"{name}'s turn with {keyword!r} in the transcript")
        assert turn is not None
        return turn

    return await asyncio.to_thread(wait)


def status(session_id: str) -> str:
    return ConversationSession.objects.get(session_id=session_id).agent_status


def reply_to(session_id: str, turn: TranscriptTurn) -> TranscriptTurn | None:
    return (
        TranscriptTurn.objects.filter(session__session_id=session_id, role="assistant", sequence__gt=turn.sequence)
        .order_by("sequence")
        .first()
    )


def test_three_people_each_attributed_and_all_hear_the_reply(conference_worker: Process) -> None:
    agent = conference_agent()
    with celery_worker():
        maya_body = start_session(agent, "conf-three", "Maya")
        tom_body = join_token(agent, "conf-three", "Tom")
        lena_body = join_token(agent, "conf-three", "Lena")

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            lena = await enter("Lena", lena_body)
            people = [maya, tom, lena]
            await maya.wait_for_agent_speech(after=0, timeout=60)  # the greeting
            await asyncio.gather(*(p.wait_until_agent_quiet() for p in people))
            for person, (sentence, keyword) in ((maya, MAYA), (tom, TOM), (lena, LENA)):
                ended = await person.say(sentence)
                await stored_turn_of("conf-three", person.name, keyword)
                await all_hear_the_agent(people, ended)
            for person in people:
                await person.leave()

        run_async(scenario(), timeout=240)
        wait_for(lambda: status("conf-three") == AgentStatus.STOPPED, timeout=30, what="stopped after everyone left")

    turns = user_turns("conf-three")
    assert [(t.speaker_name, t.speaker_identity) for t in turns] == [
        ("Maya", maya_body["participant_identity"]),
        ("Tom", tom_body["participant_identity"]),
        ("Lena", lena_body["participant_identity"]),
    ], [(t.speaker_name, t.text) for t in turns]
    for turn, (_, keyword) in zip(turns, (MAYA, TOM, LENA), strict=True):
        assert keyword in turn.text.lower()
        assert not turn.text.lower().startswith(turn.speaker_name.lower())  # the bare words are stored
        # the echo LLM says back what it was given: the speaker's name reached the LLM
        reply = reply_to("conf-three", turn)
        assert reply is not None and reply.speaker_name == "Computer"
        assert reply.text.lower().startswith(f"you said: {turn.speaker_name.lower()}:"), reply.text


def test_joining_leaving_and_never_hearing_itself_or_other_agents(conference_worker: Process) -> None:
    agent = conference_agent()
    with celery_worker():
        maya_body = start_session(agent, "conf-churn", "Maya")
        tom_body = join_token(agent, "conf-churn", "Tom")
        sam_body = join_token(agent, "conf-churn", "Sam")
        room_name = maya_body["room_name"]

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=60)
            await maya.wait_until_agent_quiet()

            # another agent in the room (an avatar, a second bot) is not a person to answer
            bot = rtc.Room()
            bot_token = (
                api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
                .with_identity("bot-other")
                .with_kind("agent")
                .with_grants(api.VideoGrants(room_join=True, room=room_name, agent=True))
                .to_jwt()
            )
            await bot.connect(settings.LIVEKIT_URL, bot_token, rtc.RoomOptions(auto_subscribe=False))
            bot_source = rtc.AudioSource(SAMPLE_RATE, 1)
            await bot.local_participant.publish_track(
                rtc.LocalAudioTrack.create_audio_track("microphone", bot_source),
                rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
            )
            pcm, rate = await asyncio.to_thread(synthesize_pcm, BOT[0])
            samples = np.frombuffer(pcm, dtype=np.int16)
            samples = np.interp(np.arange(0, samples.size, rate / SAMPLE_RATE), np.arange(samples.size), samples)
            for start in range(0, samples.size, 480):
                chunk = samples[start : start + 480].astype(np.int16)
                chunk = np.pad(chunk, (0, 480 - chunk.size))
                await bot_source.capture_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, 480))
            await bot_source.wait_for_playout()

            # Tom says something and leaves before his sentence has properly ended:
            # his last words still count, and nothing stalls
            await tom.say(TOM[0], trailing_silence=0.2)
            await tom.leave()
            await stored_turn_of("conf-churn", "Tom", TOM[1])
            await maya.wait_until_agent_quiet()

            ended = await maya.say(MAYA[0])
            await stored_turn_of("conf-churn", "Maya", MAYA[1])
            await maya.wait_for_agent_speech(after=ended, timeout=60)
            await maya.wait_until_agent_quiet()

            # Sam joins mid-conversation and is heard, and both hear the answer
            sam = await enter("Sam", sam_body)
            ended = await sam.say(SAM[0])
            await stored_turn_of("conf-churn", "Sam", SAM[1])
            await all_hear_the_agent([maya, sam], ended)

            await bot.disconnect()
            await maya.leave()
            await sam.leave()

        run_async(scenario(), timeout=270)
        wait_for(lambda: status("conf-churn") == AgentStatus.STOPPED, timeout=30, what="stopped after everyone left")

    turns = user_turns("conf-churn")
    assert [t.speaker_name for t in turns] == ["Tom", "Maya", "Sam"], [(t.speaker_name, t.text) for t in turns]
    assert all(t.speaker_identity != "bot-other" for t in turns)
    assert not any(BOT[1] in t.text.lower() for t in turns)
    # the agent's own replies ("You said: ...") never came back in as something a person said
    assert not any("said" in t.text.lower() for t in turns)
    for turn in turns[1:]:  # after Tom left, the agent still answered each person
        reply = reply_to("conf-churn", turn)
        assert reply is not None and reply.text.lower().startswith(f"you said: {turn.speaker_name.lower()}:")


def test_when_addressed_answers_only_its_name(conference_worker: Process) -> None:
    agent = conference_agent(reply_policy=ReplyPolicy.WHEN_ADDRESSED)
    with celery_worker():
        maya_body = start_session(agent, "conf-addressed", "Maya")
        tom_body = join_token(agent, "conf-addressed", "Tom")

        async def scenario() -> tuple[float, float]:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=60)
            await asyncio.gather(maya.wait_until_agent_quiet(), tom.wait_until_agent_quiet())

            ended_aside = await maya.say(LENA[0])  # "my train was late again": to Tom, not to the agent
            await stored_turn_of("conf-addressed", "Maya", LENA[1])
            started_named = asyncio.get_running_loop().time()
            ended_named = await tom.say("hello computer")
            await stored_turn_of("conf-addressed", "Tom", "computer")
            await all_hear_the_agent([maya, tom], ended_named)
            # no agent audio between Maya's aside and Tom's sentence
            assert not [t for t in maya.agent_heard().bursts if ended_aside < t < started_named]
            for person in (maya, tom):
                await person.leave()
            return ended_aside, ended_named

        run_async(scenario(), timeout=240)

    turns = list(TranscriptTurn.objects.filter(session__session_id="conf-addressed").order_by("sequence"))
    shape = [(t.role, t.speaker_name) for t in turns]
    assert shape[:4] == [("assistant", "Computer"), ("user", "Maya"), ("user", "Tom"), ("assistant", "Computer")], [
        (t.role, t.speaker_name, t.text) for t in turns
    ]
    assert turns[3].text.lower().startswith("you said: tom:")


def test_mixed_strategy_attributes_by_who_was_loudest(mixed_worker: Process) -> None:
    agent = conference_agent()
    with celery_worker():
        maya_body = start_session(agent, "conf-mixed", "Maya")
        tom_body = join_token(agent, "conf-mixed", "Tom")

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=60)
            await asyncio.gather(maya.wait_until_agent_quiet(), tom.wait_until_agent_quiet())
            for person, (sentence, keyword) in ((tom, TOM), (maya, MAYA)):
                ended = await person.say(sentence)
                await stored_turn_of("conf-mixed", person.name, keyword)
                await all_hear_the_agent([maya, tom], ended)
            for person in (maya, tom):
                await person.leave()

        run_async(scenario(), timeout=240)
        wait_for(lambda: status("conf-mixed") == AgentStatus.STOPPED, timeout=30, what="stopped after everyone left")

    turns = user_turns("conf-mixed")
    assert [t.speaker_name for t in turns] == ["Tom", "Maya"], [(t.speaker_name, t.text) for t in turns]
    reply = reply_to("conf-mixed", turns[0])
    assert reply is not None and reply.text.lower().startswith("you said: tom:")


def test_conference_worker_exits_non_zero_when_livekit_is_unreachable(transactional_db: Any) -> None:
    env = test_database_env()
    env.update(LIVEKIT_URL="ws://127.0.0.1:9", AGENT_WORKER_MAX_RETRY="1")
    proc = Process([sys.executable, "manage.py", "run_conference_agent", "dev"], env, "conference agent")
    code = proc.proc.wait(timeout=90)
    proc.stop()
    assert code != 0
    assert "failed to connect to livekit" in proc.tail().lower()
