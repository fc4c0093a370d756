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

import pytest
from django.conf import settings
from django.db import connection
from livekit import api, rtc
from rest_framework.test import APIClient

from sessions.models import AgentStatus, ConversationSession, TranscriptTurn
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker, test_database_env
from tests.visitor import Visitor
from voiceagents.catalog import AgentMode, ReplyPolicy
from voiceagents.providers.offline_tts import synthesize_pcm

from .conftest import start_agent_worker

# Generous waits: on a busy machine a dev worker may take tens of seconds to start a job process.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.timeout(600)]
AGENT_JOIN_TIMEOUT = 120

OFFLINE = {"llm_provider": "echo", "stt_provider": "local", "tts_provider": "local"}
# What pocketsphinx makes of espeak-ng speech after Opus, on a busy machine, varies, so
# the tests check who said something more than what ("good morning everyone" comes
# through best and is used where words matter).
MAYA = "good morning everyone"
TOM = "I like green apples"
LENA = "my train was late again"
SAM = "please open the window"
BOT = "hello world good morning everyone"


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
        mode=AgentMode.CONFERENCE,
        name="Computer",
        greeting_message="Hello everyone.",
        **{**OFFLINE, **fields},
    )


def widget(agent: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=agent.company.widget_key)
    return client


def start_session(agent: Any, session_id: str, name: str) -> dict[str, Any]:
    body = {
        "session_id": session_id,
        "agent_id": agent.pk,
        "company_id": agent.company_id,
        "participant_name": name,
    }
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

    async def republish_microphone(self) -> None:
        """Unpublish the microphone and publish a new one (a device switch in a browser)."""
        for publication in list(self.room.local_participant.track_publications.values()):
            await self.room.local_participant.unpublish_track(publication.sid)
        self._source = None
        await self.open_microphone()

    async def say(self, sentence: str, *, trailing_silence: float = 1.0) -> float:
        pcm, rate = await asyncio.to_thread(synthesize_pcm, sentence)
        return await self.speak(pcm, rate, trailing_silence=trailing_silence)


async def enter(name: str, body: dict[str, Any]) -> Person:
    person = Person(name, body["participant_identity"])
    await person.join(body["livekit_url"], body["user_token"])
    await asyncio.wait_for(person.joined_agent.wait(), AGENT_JOIN_TIMEOUT)
    await person.open_microphone()
    return person


async def all_hear_the_agent(people: list[Person], after: float) -> None:
    await asyncio.gather(*(p.wait_for_agent_speech(after=after, timeout=120) for p in people))
    await asyncio.gather(*(p.wait_until_agent_quiet() for p in people))


def user_turns(session_id: str) -> list[TranscriptTurn]:
    return list(
        TranscriptTurn.objects.filter(session__session_id=session_id, role="user").order_by("sequence")
    )


async def stored_turn_of(session_id: str, name: str, *, after: int = 0) -> TranscriptTurn:
    """The first user turn of `name` after sequence `after`, once the worker has stored it."""

    def find() -> TranscriptTurn | None:
        for turn in user_turns(session_id):
            if turn.speaker_name == name and turn.sequence > after:
                return turn
        return None

    def wait() -> TranscriptTurn:
        try:
            turn = wait_for(find, timeout=60, what=f"a turn of {name} in the transcript")
        finally:
            connection.close()  # this thread's own connection, or the test database stays in use
        assert turn is not None
        return turn

    return await asyncio.to_thread(wait)


def speakers_in_order(turns: list[TranscriptTurn]) -> list[str]:
    """Speaker names with consecutive turns of one person merged (a VAD may split a sentence)."""
    names: list[str] = []
    for turn in turns:
        if not names or names[-1] != turn.speaker_name:
            names.append(turn.speaker_name)
    return names


def status(session_id: str) -> str:
    return ConversationSession.objects.get(session_id=session_id).agent_status


def reply_to(session_id: str, turn: TranscriptTurn) -> TranscriptTurn | None:
    return (
        TranscriptTurn.objects.filter(
            session__session_id=session_id, role="assistant", sequence__gt=turn.sequence
        )
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
            await maya.wait_for_agent_speech(after=0, timeout=90)  # the greeting
            await asyncio.gather(*(p.wait_until_agent_quiet() for p in people))
            last = 0
            for person, sentence in ((maya, MAYA), (tom, TOM), (lena, LENA)):
                ended = await person.say(sentence)
                last = (await stored_turn_of("conf-three", person.name, after=last)).sequence
                await all_hear_the_agent(people, ended)
            for person in people:
                await person.leave()

        run_async(scenario(), timeout=480)
        wait_for(
            lambda: status("conf-three") == AgentStatus.STOPPED,
            timeout=30,
            what="stopped after everyone left",
        )

    turns = user_turns("conf-three")
    described = [(t.speaker_name, t.text) for t in turns]
    assert speakers_in_order(turns) == ["Maya", "Tom", "Lena"], described
    identities = {
        "Maya": maya_body["participant_identity"],
        "Tom": tom_body["participant_identity"],
        "Lena": lena_body["participant_identity"],
    }
    assert len(set(identities.values())) == 3
    for turn in turns:
        assert turn.speaker_identity == identities[turn.speaker_name], described
        assert turn.text and not turn.text.lower().startswith(turn.speaker_name.lower())  # the bare words
    assert "morning" in turns[0].text.lower(), described
    for name in ("Maya", "Tom", "Lena"):
        first = next(t for t in turns if t.speaker_name == name)
        # the echo LLM says back the message it was given: the speaker's name reached the LLM
        reply = reply_to("conf-three", first)
        assert reply is not None and reply.speaker_name == "Computer"
        assert reply.text.lower().startswith(f"you said: {name.lower()}:"), reply.text


def test_joining_leaving_republishing_and_never_hearing_itself_or_other_agents(
    conference_worker: Process,
) -> None:
    agent = conference_agent()
    with celery_worker():
        maya_body = start_session(agent, "conf-churn", "Maya")
        tom_body = join_token(agent, "conf-churn", "Tom")
        sam_body = join_token(agent, "conf-churn", "Sam")
        room_name = maya_body["room_name"]

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=90)
            await asyncio.gather(maya.wait_until_agent_quiet(), tom.wait_until_agent_quiet())

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
            bot_voice = Person("bot", "bot-other")
            bot_voice.room = bot  # speak through the bot's connection
            await bot_voice.say(BOT)

            # Tom says something and leaves before his sentence has properly ended:
            # his last words still count, and nothing stalls
            await tom.say(TOM, trailing_silence=0.2)
            await tom.leave()
            tom_turn = await stored_turn_of("conf-churn", "Tom")
            await maya.wait_until_agent_quiet()

            # Maya switches microphones: the agent follows her new track
            await maya.republish_microphone()
            ended = await maya.say(MAYA)
            maya_turn = await stored_turn_of("conf-churn", "Maya", after=tom_turn.sequence)
            await maya.wait_for_agent_speech(after=ended, timeout=120)
            await maya.wait_until_agent_quiet()

            # Sam joins mid-conversation and is heard, and both hear the answer
            sam = await enter("Sam", sam_body)
            ended = await sam.say(SAM)
            await stored_turn_of("conf-churn", "Sam", after=maya_turn.sequence)
            await all_hear_the_agent([maya, sam], ended)

            await bot.disconnect()
            await maya.leave()
            await sam.leave()

        run_async(scenario(), timeout=480)
        wait_for(
            lambda: status("conf-churn") == AgentStatus.STOPPED,
            timeout=30,
            what="stopped after everyone left",
        )

    turns = user_turns("conf-churn")
    described = [(t.speaker_name, t.speaker_identity, t.text) for t in turns]
    # the bot spoke first, and nothing of it was heard
    assert speakers_in_order(turns) == ["Tom", "Maya", "Sam"], described
    assert all(t.speaker_identity != "bot-other" for t in turns), described
    # the agent's own replies ("You said: ...") never came back as something a person said
    assert not any("said" in t.text.lower() for t in turns), described
    for name in ("Maya", "Sam"):  # after Tom left, the agent still answered each person
        reply = reply_to("conf-churn", next(t for t in turns if t.speaker_name == name))
        assert reply is not None and reply.text.lower().startswith(f"you said: {name.lower()}:")


def test_overlapping_speech_keeps_each_voice_apart(conference_worker: Process) -> None:
    agent = conference_agent()
    with celery_worker():
        maya_body = start_session(agent, "conf-overlap", "Maya")
        tom_body = join_token(agent, "conf-overlap", "Tom")

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=90)
            await asyncio.gather(maya.wait_until_agent_quiet(), tom.wait_until_agent_quiet())
            # both at once
            ended = max(await asyncio.gather(maya.say(MAYA), tom.say(TOM)))
            maya_turn, tom_turn = await asyncio.gather(
                stored_turn_of("conf-overlap", "Maya"), stored_turn_of("conf-overlap", "Tom")
            )
            await all_hear_the_agent([maya, tom], ended)
            # and the conversation goes on, attributed as before
            ended = await tom.say(LENA)
            await stored_turn_of("conf-overlap", "Tom", after=max(maya_turn.sequence, tom_turn.sequence))
            await all_hear_the_agent([maya, tom], ended)
            for person in (maya, tom):
                await person.leave()

        run_async(scenario(), timeout=480)
        wait_for(
            lambda: status("conf-overlap") == AgentStatus.STOPPED,
            timeout=30,
            what="stopped after everyone left",
        )

    turns = list(TranscriptTurn.objects.filter(session__session_id="conf-overlap").order_by("sequence"))
    described = [(t.role, t.speaker_name, t.text) for t in turns]
    users = [t for t in turns if t.role == "user"]
    identities = {"Maya": maya_body["participant_identity"], "Tom": tom_body["participant_identity"]}
    assert all(t.speaker_identity == identities[t.speaker_name] for t in users), described
    # each voice its own turn(s); the overlap reached the transcript as Maya's and Tom's, then Tom alone
    assert {t.speaker_name for t in users[:2]} == {"Maya", "Tom"}, described
    assert users[-1].speaker_name == "Tom", described
    # the group got an answer once both had finished (one, unless one voice ended well before
    # the other); nothing was lost or crashed: the last turn got its answer too
    overlap_answers = [
        t for t in turns if t.role == "assistant" and users[1].sequence < t.sequence < users[-1].sequence
    ]
    assert 1 <= len(overlap_answers) <= 2, described
    assert turns[-1].role == "assistant" and turns[-1].text.lower().startswith("you said: tom:"), described


def test_when_addressed_answers_only_its_name(conference_worker: Process) -> None:
    agent = conference_agent(reply_policy=ReplyPolicy.WHEN_ADDRESSED)
    with celery_worker():
        maya_body = start_session(agent, "conf-addressed", "Maya")
        tom_body = join_token(agent, "conf-addressed", "Tom")

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=90)
            await asyncio.gather(maya.wait_until_agent_quiet(), tom.wait_until_agent_quiet())

            ended_aside = await maya.say(MAYA)  # to the others, not to the agent (no name, no question)
            aside = await stored_turn_of("conf-addressed", "Maya")
            started_named = asyncio.get_running_loop().time()
            ended_named = await tom.say("hello computer")
            await stored_turn_of("conf-addressed", "Tom", after=aside.sequence)
            await all_hear_the_agent([maya, tom], ended_named)
            # no agent audio between Maya's aside and Tom's sentence
            assert not [t for t in maya.agent_heard().bursts if ended_aside < t < started_named]
            for person in (maya, tom):
                await person.leave()

        run_async(scenario(), timeout=480)

    turns = list(TranscriptTurn.objects.filter(session__session_id="conf-addressed").order_by("sequence"))
    described = [(t.role, t.speaker_name, t.text) for t in turns]
    assert [(t.role, t.speaker_name) for t in turns[:2]] == [("assistant", "Computer"), ("user", "Maya")], (
        described
    )
    replies = [t for t in turns[1:] if t.role == "assistant"]
    tom_turns = [t for t in turns if t.speaker_name == "Tom"]
    assert tom_turns and "computer" in " ".join(t.text.lower() for t in tom_turns), described
    # one answer, to Tom, after his turn: Maya's aside got none
    assert len(replies) == 1 and replies[0].sequence > tom_turns[0].sequence, described
    assert replies[0].text.lower().startswith("you said: tom:"), described


def test_mixed_strategy_attributes_by_who_was_loudest(mixed_worker: Process) -> None:
    agent = conference_agent()
    with celery_worker():
        maya_body = start_session(agent, "conf-mixed", "Maya")
        tom_body = join_token(agent, "conf-mixed", "Tom")

        async def scenario() -> None:
            maya = await enter("Maya", maya_body)
            tom = await enter("Tom", tom_body)
            await maya.wait_for_agent_speech(after=0, timeout=90)
            await asyncio.gather(maya.wait_until_agent_quiet(), tom.wait_until_agent_quiet())
            last = 0
            for person, sentence in ((tom, TOM), (maya, MAYA)):
                ended = await person.say(sentence)
                last = (await stored_turn_of("conf-mixed", person.name, after=last)).sequence
                await all_hear_the_agent([maya, tom], ended)
            for person in (maya, tom):
                await person.leave()

        run_async(scenario(), timeout=480)
        wait_for(
            lambda: status("conf-mixed") == AgentStatus.STOPPED,
            timeout=30,
            what="stopped after everyone left",
        )

    turns = user_turns("conf-mixed")
    described = [(t.speaker_name, t.text) for t in turns]
    assert speakers_in_order(turns) == ["Tom", "Maya"], described
    assert turns[0].speaker_identity == tom_body["participant_identity"]
    reply = reply_to("conf-mixed", turns[0])
    assert reply is not None and reply.text.lower().startswith("you said: tom:"), reply


def test_conference_worker_exits_non_zero_when_livekit_is_unreachable(transactional_db: Any) -> None:
    env = test_database_env()
    env.update(LIVEKIT_URL="ws://127.0.0.1:9", AGENT_WORKER_MAX_RETRY="1")
    proc = Process([sys.executable, "manage.py", "run_conference_agent", "dev"], env, "conference agent")
    code = proc.proc.wait(timeout=90)
    proc.stop()
    assert code != 0
    assert "failed to connect to livekit" in proc.tail().lower()
