"""Handoff to a person in a real room: the agent asks for one, staff see it and join with
their own token, the agent introduces them and turns silent scribe; or nobody comes and
the agent offers to take a message. Staff and visitor are livekit rtc participants
speaking espeak-ng audio; the LLM and STT are the OpenAI stub through the real plugins."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from sessions.models import AgentStatus, ConversationSession, HandoffStatus, ToolCall, TranscriptTurn
from stubs.server import StubServer
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import Process, celery_worker
from tests.visitor import Visitor
from voiceagents.providers.offline_tts import synthesize_pcm

from .conftest import start_agent_worker
from .test_voice_e2e import SENTENCE, start_session, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

TRIGGERS = {
    "a person": {"name": "transfer_to_human", "arguments": {"reason": "The visitor asked for a person."}}
}


@pytest.fixture(scope="module")
def handoff_worker(
    openai_stub: StubServer, django_db_setup: Any, django_db_blocker: Any, live_server: Any
) -> Iterator[Process]:
    with django_db_blocker.unblock():
        proc = start_agent_worker(
            OPENAI_API_KEY="test-key",
            OPENAI_BASE_URL=openai_stub.openai_base_url,
            AGENT_PROVIDER_TIMEOUT_SECONDS="8",
        )
    yield proc
    proc.stop()
    print(f"--- worker output ---\n{proc.tail(200)}")


def handoff_agent(timeout: int) -> Any:
    return VoiceAgentFactory(
        greeting_message="Hello from the agent.",
        llm_provider="openai",
        stt_provider="openai",
        tts_provider="openai",
        tool_transfer_to_human=True,
        tool_take_message=True,
        handoff_timeout_seconds=timeout,
    )


def staff_client(username: str = "sam") -> tuple[APIClient, Any]:
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password="pw", is_staff=True, first_name="Sam")
    user.user_permissions.add(Permission.objects.get(codename="view_conversationsession"))
    client = APIClient()
    client.force_login(user)
    return client, user


def session_row(session_id: str) -> ConversationSession:
    return ConversationSession.objects.select_related("handoff_joined_by").get(session_id=session_id)


def turns(session_id: str) -> list[TranscriptTurn]:
    return list(TranscriptTurn.objects.filter(session__session_id=session_id).order_by("sequence"))


def wait_for_or_false(predicate: Any, timeout: float) -> bool:
    try:
        wait_for(predicate, timeout=timeout, what="")
    except AssertionError:
        return False
    return True


def turns_by(session_id: str, identity: str) -> int:
    return sum(1 for t in turns(session_id) if t.speaker_identity == identity)


async def ask_for_a_person(
    openai_stub: StubServer, visitor: Visitor, body: dict[str, Any], session_id: str
) -> None:
    await visitor.join(body["livekit_url"], body["user_token"])
    await asyncio.wait_for(visitor.joined_agent.wait(), 30)
    await visitor.wait_for_agent_speech(after=0, timeout=60)  # the greeting
    await visitor.wait_until_agent_quiet()
    openai_stub.state.fixed_transcript = "I want to talk to a person"
    pcm, rate = synthesize_pcm(SENTENCE)
    ended = await visitor.speak(pcm, rate)
    await asyncio.to_thread(
        wait_for,
        lambda: session_row(session_id).handoff_status == HandoffStatus.REQUESTED,
        timeout=60,
        what="the handoff requested",
    )
    await visitor.wait_for_agent_speech(after=ended, timeout=60)  # "someone is being fetched"
    await visitor.wait_until_agent_quiet()


def test_staff_join_the_call_and_the_agent_turns_silent_scribe(
    openai_stub: StubServer, handoff_worker: Process
) -> None:
    openai_stub.state.reset()
    openai_stub.state.tool_triggers = TRIGGERS
    agent = handoff_agent(timeout=120)
    session_id = "handoff-joined"
    staff, user = staff_client()
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> None:
            visitor = Visitor("maya")  # made on the loop it runs on
            await ask_for_a_person(openai_stub, visitor, body, session_id)
            # staff see the request, with its reason and the wait so far
            waiting = (await asyncio.to_thread(staff.get, "/api/v1/livekit-agents/handoffs")).json()
            [row] = [h for h in waiting["handoffs"] if h["session_id"] == session_id]
            assert row["reason"] == "The visitor asked for a person." and row["wait_seconds"] >= 0
            page = (
                await asyncio.to_thread(staff.get, "/admin/conversation_sessions/conversationsession/")
            ).content
            assert b"handoff-waiting" in page and row["call_url"].encode() in page
            grant = (
                await asyncio.to_thread(staff.post, f"/api/v1/livekit-agents/handoffs/{row['id']}/join")
            ).json()
            assert grant["identity"].startswith(f"staff-{user.pk}-")

            person = Visitor("sam")
            before_chat = openai_stub.state.count("chat")
            await person.join(grant["livekit_url"], grant["token"])
            # the agent introduces them, in one line
            await asyncio.to_thread(
                wait_for,
                lambda: any("from our team has joined" in t.text for t in turns(session_id)),
                timeout=60,
                what="the agent's introduction",
            )
            await visitor.wait_until_agent_quiet()
            # the visitor hears the person
            pcm, rate = synthesize_pcm("hello there, this is Sam from support")
            openai_stub.state.fixed_transcript = "this is Sam from support"
            await person.speak(pcm, rate)
            await asyncio.wait_for(_heard(visitor, grant["identity"]), 30)

            def person_transcribed() -> bool:
                return any(t.speaker_identity == grant["identity"] for t in turns(session_id))

            # a loaded machine's VAD can miss one utterance: the person says it again, at most twice more
            for _ in range(2):
                if await asyncio.to_thread(wait_for_or_false, person_transcribed, 20):
                    break
                await person.speak(pcm, rate)
            await asyncio.to_thread(
                wait_for, person_transcribed, timeout=60, what="the person's words in the transcript"
            )
            # the visitor's words are still transcribed, and the agent no longer answers
            openai_stub.state.fixed_transcript = "thanks for joining"
            me = visitor.room.local_participant.identity
            visitor_turns = await asyncio.to_thread(turns_by, session_id, me)
            pcm, rate = synthesize_pcm(SENTENCE)
            await visitor.speak(pcm, rate)
            await asyncio.to_thread(
                wait_for,
                lambda: turns_by(session_id, me) > visitor_turns,
                timeout=60,
                what="the visitor's words in the transcript",
            )
            assert openai_stub.state.count("chat") == before_chat, (
                "the agent asked its LLM for a reply after the handoff"
            )
            # staff end the call: everything ends
            assert (
                await asyncio.to_thread(staff.post, f"/api/v1/livekit-agents/handoffs/{row['id']}/end")
            ).status_code == 200
            await asyncio.to_thread(
                wait_for, lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped"
            )
            await person.leave()
            await visitor.leave()

        run_async(scenario(), timeout=400)

    session = session_row(session_id)
    assert session.handoff_status == HandoffStatus.JOINED
    assert session.handoff_joined_by == user
    assert session.handoff_requested_at and session.handoff_joined_at
    assert session.handoff_wait_seconds is not None and session.handoff_wait_seconds >= 0
    assert ToolCall.objects.filter(session=session, name="transfer_to_human").exists()
    staff_turns = [t for t in turns(session_id) if t.speaker_identity.startswith("staff-")]
    assert staff_turns and staff_turns[0].speaker_name == "Sam"
    assert not [
        t for t in turns(session_id) if t.role == "assistant" and t.sequence > staff_turns[0].sequence
    ]


LONG_LINE = " ".join(
    ["Someone from our team is being fetched and will join shortly, please stay on the line."] * 4
)


def test_a_person_joining_mid_sentence_cuts_the_agent_short(
    openai_stub: StubServer, handoff_worker: Process
) -> None:
    """The agent is still saying its (long) "being fetched" line when the person arrives:
    that line gives way, and the introduction is the agent's last word."""
    openai_stub.state.reset()
    openai_stub.state.tool_triggers = TRIGGERS
    openai_stub.state.tool_reply_template = LONG_LINE
    agent = handoff_agent(timeout=120)
    session_id = "handoff-mid-sentence"
    staff, _ = staff_client("kim")
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> None:
            visitor = Visitor("maya")
            await visitor.join(body["livekit_url"], body["user_token"])
            await asyncio.wait_for(visitor.joined_agent.wait(), 30)
            await visitor.wait_for_agent_speech(after=0, timeout=60)  # the greeting
            await visitor.wait_until_agent_quiet()
            openai_stub.state.fixed_transcript = "I want to talk to a person"
            pcm, rate = synthesize_pcm(SENTENCE)
            ended = await visitor.speak(pcm, rate)
            await visitor.wait_for_agent_speech(after=ended, timeout=60)  # the long line begins
            waiting = (await asyncio.to_thread(staff.get, "/api/v1/livekit-agents/handoffs")).json()
            [row] = [h for h in waiting["handoffs"] if h["session_id"] == session_id]
            grant = (
                await asyncio.to_thread(staff.post, f"/api/v1/livekit-agents/handoffs/{row['id']}/join")
            ).json()
            person = Visitor("kim")
            await person.join(grant["livekit_url"], grant["token"])
            await asyncio.to_thread(
                wait_for,
                lambda: any("from our team has joined" in t.text for t in turns(session_id)),
                timeout=60,
                what="the agent's introduction",
            )
            await visitor.wait_until_agent_quiet()
            await person.leave()
            await visitor.leave()

        run_async(scenario(), timeout=300)
        wait_for(lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped")
    said = [t.text for t in turns(session_id) if t.role == "assistant"]
    assert "from our team has joined" in said[-1], said
    assert sum("from our team has joined" in text for text in said) == 1, said
    # the long line was cut: what was stored of it is shorter than the whole
    assert all(len(text) < len(LONG_LINE) for text in said if "being fetched" in text), said


async def _heard(listener: Visitor, identity: str) -> None:
    while not (listener.heard.get(identity) and listener.heard[identity].bursts):
        heard = listener.heard.get(identity)
        if heard is None:
            await asyncio.sleep(0.1)  # the track is not subscribed yet: nothing to await on
            continue
        heard.changed.clear()
        await heard.changed.wait()


def test_nobody_joins_and_the_agent_offers_to_take_a_message(
    openai_stub: StubServer, handoff_worker: Process
) -> None:
    openai_stub.state.reset()
    openai_stub.state.tool_triggers = TRIGGERS
    agent = handoff_agent(timeout=5)
    session_id = "handoff-missed"
    with celery_worker():
        body = start_session(agent, session_id)

        async def scenario() -> None:
            visitor = Visitor("maya")  # made on the loop it runs on
            await ask_for_a_person(openai_stub, visitor, body, session_id)
            await asyncio.to_thread(
                wait_for,
                lambda: session_row(session_id).handoff_status == HandoffStatus.MISSED,
                timeout=30,
                what="the handoff missed",
            )
            await asyncio.to_thread(
                wait_for,
                lambda: any("take a message" in t.text for t in turns(session_id) if t.role == "assistant"),
                timeout=60,
                what="the agent offering to take a message",
            )
            # the agent answers again
            openai_stub.state.fixed_transcript = "ok thanks"
            pcm, rate = synthesize_pcm(SENTENCE)
            await visitor.speak(pcm, rate)
            await asyncio.to_thread(
                wait_for,
                lambda: any("Stub reply to: ok thanks" in t.text for t in turns(session_id)),
                timeout=60,
                what="a reply after the missed handoff",
            )
            await visitor.leave()

        run_async(scenario(), timeout=300)
        wait_for(lambda: status(session_id) == AgentStatus.STOPPED, timeout=30, what="stopped")
    session = session_row(session_id)
    assert session.handoff_status == HandoffStatus.MISSED
    assert (
        session.handoff_missed_at and session.handoff_joined_at is None and session.handoff_joined_by is None
    )
    assert 4.5 <= (session.handoff_wait_seconds or 0) < 60
