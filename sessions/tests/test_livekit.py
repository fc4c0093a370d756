"""The control plane against the real livekit-server: dispatch, tokens, webhooks, stop, reconcile."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from livekit import api, rtc
from rest_framework.test import APIClient

from sessions import livekit_gateway as lk
from sessions.models import AgentStatus, ConversationSession
from sessions.services import (
    session_dispatch,
    session_dispatch_again,
    session_finish_stop,
    session_start,
    session_stop,
    sessions_reconcile,
    sessions_watchdog,
)
from sessions.tasks import dispatch_agent
from tests.helpers import run_async, wait_for
from tests.processes import celery_worker
from voiceagents.catalog import AgentMode

pytestmark = pytest.mark.django_db(transaction=True)


def start(company: Any, agent: Any, session_id: str = "lk-1") -> ConversationSession:
    return session_start(company=company, agent_id=agent.pk, session_id=session_id).session


def agent_token(room: str, identity: str = "agent-test") -> str:
    return (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
        .to_jwt()
    )


async def connect(token: str) -> rtc.Room:
    room = rtc.Room()
    await room.connect(settings.LIVEKIT_URL, token, rtc.RoomOptions(auto_subscribe=False))
    return room


def status_of(session: ConversationSession) -> str:
    session.refresh_from_db()
    return session.agent_status


# --- dispatch -----------------------------------------------------------------------------------


def test_dispatch_creates_room_and_agent_dispatch_with_config(company: Any, agent: Any) -> None:
    session = start(company, agent)
    session_dispatch(session_pk=session.pk)
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.STARTING
    assert session.dispatch_id

    assert session.agent_room_name in lk.rooms_existing([session.agent_room_name])
    dispatches = lk.dispatches_for(session.agent_room_name)
    assert [d.agent_name for d in dispatches] == ["agentconnect-voice"]
    assert dispatches[0].id == session.dispatch_id
    metadata = json.loads(dispatches[0].metadata)
    assert metadata == session.config
    assert metadata["greeting_message"] == "Hello from the test agent."
    lk.room_close(session.agent_room_name, session.dispatch_id)


def test_dispatch_of_conference_uses_conference_agent(company: Any) -> None:
    from tests.factories import VoiceAgentFactory

    conference = VoiceAgentFactory(company=company, mode=AgentMode.CONFERENCE)
    session = start(company, conference)
    session_dispatch(session_pk=session.pk)
    assert [d.agent_name for d in lk.dispatches_for(session.agent_room_name)] == ["agentconnect-conference"]
    lk.room_close(session.agent_room_name)


def test_dispatch_twice_keeps_one_room_and_one_dispatch(company: Any, agent: Any) -> None:
    session = start(company, agent)
    session_dispatch(session_pk=session.pk)
    session_dispatch(session_pk=session.pk)  # a redelivered task
    dispatch_agent.apply(args=[session.pk])  # and once more through the task
    dispatches = lk.dispatches_for(session.agent_room_name)
    assert len(dispatches) == 1
    assert status_of(session) == AgentStatus.STARTING
    lk.room_close(session.agent_room_name)


def test_dispatch_after_stop_does_nothing(company: Any, agent: Any) -> None:
    session = start(company, agent)
    session_stop(session=session)
    session_dispatch(session_pk=session.pk)
    assert session.agent_room_name not in lk.rooms_existing([session.agent_room_name])
    assert status_of(session) == AgentStatus.STOPPING


def test_dispatch_fails_readably_when_livekit_stays_down(company: Any, agent: Any, settings: Any) -> None:
    settings.LIVEKIT_URL = "ws://127.0.0.1:9"  # nothing listens on the discard port
    session = start(company, agent)
    # Run in-process, Celery re-applies each retry at once (no countdown wait),
    # so this walks through every attempt.
    dispatch_agent.apply(args=[session.pk])
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.FAILED
    assert "Could not dispatch an agent after 6 attempts" in session.failure_reason
    assert "unreachable" in session.failure_reason


def test_celery_worker_dispatches_and_stops_through_the_api(company: Any, agent: Any) -> None:
    widget = APIClient()
    widget.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    with celery_worker():
        body = widget.post(
            "/api/v1/livekit-agents/start-voice-session",
            {"session_id": "via-celery", "agent_id": agent.pk, "company_id": company.pk},
            format="json",
        ).json()
        session = ConversationSession.objects.get(session_id="via-celery")
        wait_for(
            lambda: status_of(session) == AgentStatus.STARTING, timeout=20, what="dispatch by the worker"
        )
        assert body["room_name"] in lk.rooms_existing([body["room_name"]])
        widget.post("/api/v1/livekit-agents/stop-voice-session", {"session_id": "via-celery"}, format="json")
        wait_for(lambda: status_of(session) == AgentStatus.STOPPED, timeout=20, what="stop by the worker")
    assert body["room_name"] not in lk.rooms_existing([body["room_name"]])
    assert session.agent_stopped_at is not None


# --- tokens ---------------------------------------------------------------------------------------


def test_user_token_grants_exactly_one_room_and_no_admin(company: Any, agent: Any) -> None:
    result = session_start(company=company, agent_id=agent.pk, session_id="tok")
    claims = api.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).verify(
        result.user_token
    )
    video = claims.video
    assert video is not None
    assert video.room == result.session.agent_room_name
    assert video.room_join is True
    assert video.can_subscribe is True and video.can_publish is True
    assert video.can_publish_sources == ["microphone"]
    for admin_grant in (
        "room_admin",
        "room_create",
        "room_list",
        "room_record",
        "ingress_admin",
        "recorder",
        "agent",
        "hidden",
    ):
        assert not getattr(video, admin_grant), admin_grant
    assert not video.can_update_own_metadata
    assert claims.kind in (None, "", "standard")


def test_user_token_joins_its_room_on_the_real_server(company: Any, agent: Any) -> None:
    result = session_start(company=company, agent_id=agent.pk, session_id="join")
    session_dispatch(session_pk=result.session.pk)

    async def scenario() -> tuple[str, str]:
        room = await connect(result.user_token)
        try:
            return room.name, room.local_participant.identity
        finally:
            await room.disconnect()

    name, identity = run_async(scenario())
    assert name == result.session.agent_room_name
    assert identity == result.session.visitor_identity
    lk.room_close(name)


def test_expired_and_forged_tokens_are_refused_by_the_server(company: Any, agent: Any) -> None:
    session = start(company, agent, "refused")
    session_dispatch(session_pk=session.pk)
    expired = lk.user_token(room_name=session.agent_room_name, identity="v", name="v", ttl_seconds=-60)
    forged = (
        api.AccessToken(settings.LIVEKIT_API_KEY, "not-the-secret-but-long-enough-0123456789")
        .with_identity("intruder")
        .with_grants(api.VideoGrants(room_join=True, room=session.agent_room_name))
        .to_jwt()
    )
    for token in (expired, forged):
        with pytest.raises(Exception) as info:
            run_async(connect(token), timeout=20)
        assert (
            "401" in str(info.value)
            or "unauthorized" in str(info.value).lower()
            or "failed" in str(info.value).lower()
        )
    lk.room_close(session.agent_room_name)


# --- webhooks from the real server ------------------------------------------------------------------


def test_real_webhook_moves_status_when_agent_joins_and_leaves(
    live_server: Any, company: Any, agent: Any
) -> None:
    """An agent that leaves without its worker's report of how the conversation ended
    was lost (a crash): the session is recovered, never recorded as stopped."""
    port = os.environ.get("TEST_LIVESERVER_PORT", "18765")
    assert live_server.url.endswith(f":{port}"), f"livekit-server's webhook points at port {port}"
    session = start(company, agent, "hooked")
    session_dispatch(session_pk=session.pk)

    async def join_and_leave() -> None:
        room = await connect(agent_token(session.agent_room_name, "agent-AJ_test"))
        await __import__("asyncio").to_thread(
            wait_for, lambda: status_of(session) == AgentStatus.ACTIVE, timeout=15, what="webhook → active"
        )
        await room.disconnect()

    run_async(join_and_leave(), timeout=40)
    session.refresh_from_db()
    assert session.agent_started_at is not None
    assert session.agent_identity == "agent-AJ_test"
    assert session.agent_worker_id
    wait_for(lambda: status_of(session) == AgentStatus.RECOVERING, timeout=15, what="webhook → recovering")
    session.refresh_from_db()
    assert session.recovery_count == 1
    lk.room_close(session.agent_room_name)
    wait_for(lambda: status_of(session) == AgentStatus.FAILED, timeout=15, what="room gone → failed")
    session.refresh_from_db()
    assert "being replaced" in session.failure_reason


def test_a_visitor_joining_does_not_activate_the_session(live_server: Any, company: Any, agent: Any) -> None:
    result = session_start(company=company, agent_id=agent.pk, session_id="visitor-only")
    session_dispatch(session_pk=result.session.pk)

    async def visit() -> None:
        room = await connect(result.user_token)
        await room.disconnect()

    run_async(visit())
    # The room_started/participant events for the visitor were delivered and ignored:
    # the session waits for its agent.
    assert status_of(result.session) == AgentStatus.STARTING
    lk.room_close(result.session.agent_room_name)


def test_webhook_without_or_with_forged_signature_is_401(client: Any) -> None:
    url = "/api/v1/livekit-agents/webhook"
    body = json.dumps({"event": "room_finished", "room": {"name": "x"}})
    response = client.post(url, body, content_type="application/webhook+json")
    assert response.status_code == 401 and response.json()["success"] is False
    forged = (
        api.AccessToken(settings.LIVEKIT_API_KEY, "wrong-secret-wrong-secret-wrong-secret")
        .with_sha256("whatever")
        .to_jwt()
    )
    response = client.post(url, body, content_type="application/webhook+json", HTTP_AUTHORIZATION=forged)
    assert response.status_code == 401
    assert client.get(url).status_code == 405


def signed(body: str) -> str:
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).with_sha256(digest).to_jwt()


def test_webhook_for_unknown_room_is_acknowledged(client: Any) -> None:
    body = json.dumps({"event": "room_finished", "room": {"name": "no-such-room"}, "id": "EV_1"})
    response = client.post(
        "/api/v1/livekit-agents/webhook",
        body,
        content_type="application/webhook+json",
        HTTP_AUTHORIZATION=signed(body),
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "noop"


def test_webhook_tampered_body_is_401(client: Any) -> None:
    body = json.dumps({"event": "room_finished", "room": {"name": "a"}})
    token = signed(body)
    tampered = body.replace('"a"', '"b"')
    response = client.post(
        "/api/v1/livekit-agents/webhook",
        tampered,
        content_type="application/webhook+json",
        HTTP_AUTHORIZATION=token,
    )
    assert response.status_code == 401


# --- stop and reconcile ---------------------------------------------------------------------------------


def test_stop_deletes_room_and_dispatch(company: Any, agent: Any) -> None:
    session = start(company, agent, "stopme")
    session_dispatch(session_pk=session.pk)
    session_stop(session=session)
    assert status_of(session) == AgentStatus.STOPPING
    session_finish_stop(session_pk=session.pk)
    session_finish_stop(session_pk=session.pk)  # twice is harmless
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.STOPPED
    assert session.agent_stopped_at is not None
    assert session.agent_room_name not in lk.rooms_existing([session.agent_room_name])


def test_reconcile_matches_the_database_to_the_server(company: Any, agent: Any, settings: Any) -> None:
    old = timezone.now() - timedelta(seconds=settings.AGENT_START_TIMEOUT_SECONDS + 5)

    # Active in the database, but its room never reached the server (a missed
    # room_finished webhook looks the same to reconcile).
    active_gone = start(company, agent, "active-gone")
    ConversationSession.objects.filter(pk=active_gone.pk).update(
        agent_status=AgentStatus.ACTIVE, agent_started_at=timezone.now()
    )

    no_worker = start(company, agent, "no-worker")
    session_dispatch(session_pk=no_worker.pk)

    lost_task = start(company, agent, "lost-task")

    healthy = start(company, agent, "healthy")
    session_dispatch(session_pk=healthy.pk)

    ConversationSession.objects.filter(pk__in=[active_gone.pk, no_worker.pk]).update(
        status_changed_at=timezone.now() - timedelta(seconds=10)
    )
    ConversationSession.objects.filter(pk=no_worker.pk).update(status_changed_at=old)
    ConversationSession.objects.filter(pk=lost_task.pk).update(
        status_changed_at=timezone.now() - timedelta(seconds=settings.AGENT_DISPATCH_TIMEOUT_SECONDS + 5)
    )

    report = sessions_reconcile()
    assert report.stopped == 1 and report.failed == 2

    assert status_of(active_gone) == AgentStatus.STOPPED
    no_worker.refresh_from_db()
    assert no_worker.agent_status == AgentStatus.FAILED
    assert "No agent worker joined" in no_worker.failure_reason
    assert no_worker.agent_room_name not in lk.rooms_existing([no_worker.agent_room_name])
    lost_task.refresh_from_db()
    assert lost_task.agent_status == AgentStatus.FAILED and "not dispatched" in lost_task.failure_reason
    assert status_of(healthy) == AgentStatus.STARTING
    lk.room_close(healthy.agent_room_name)


def test_a_job_no_worker_took_is_offered_again_with_the_clock_kept(company: Any, agent: Any) -> None:
    """LiveKit drops a job every worker refused at that moment. No worker serves this
    test server's voice agent name, so the job is never taken."""
    from sessions.transcripts import session_job_taken

    session = start(company, agent)
    session_dispatch(session_pk=session.pk)
    session.refresh_from_db()
    first, clock = session.dispatch_id, session.status_changed_at
    assert session.dispatched_at is not None and session.job_taken_at is None

    assert session_dispatch_again(session_pk=session.pk) is True
    session.refresh_from_db()
    # a second offer; the first dispatch stays (deleting it would terminate a late job)
    assert session.dispatch_id != first
    assert sorted(d.id for d in lk.dispatches_for(session.agent_room_name)) == sorted(
        [first, session.dispatch_id]
    )
    # still starting, and the start timeout still counts from the first offer
    assert session.agent_status == AgentStatus.STARTING and session.status_changed_at == clock

    assert session_job_taken(room_name=session.agent_room_name) == 1  # what a worker's handler reports
    assert session_dispatch_again(session_pk=session.pk) is False  # taken: its agent is on its way
    assert len(lk.dispatches_for(session.agent_room_name)) == 2

    session_stop(session=session)
    assert session_job_taken(room_name=session.agent_room_name) == 0
    assert session_dispatch_again(session_pk=session.pk) is False  # only a session waiting for its agent
    lk.room_close(session.agent_room_name)


def test_the_watchdog_offers_again_only_the_jobs_no_worker_took(
    company: Any, agent: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentconnect.celery import app

    monkeypatch.setattr(app.conf, "task_always_eager", True)  # the queued offer runs here
    settings.AGENT_REDISPATCH_AFTER_SECONDS = 3
    waiting = start(company, agent, "waiting")
    session_dispatch(session_pk=waiting.pk)
    waiting.refresh_from_db()
    first = waiting.dispatch_id
    taken = start(company, agent, "taken")
    fresh = start(company, agent, "fresh")
    active = start(company, agent, "active")
    now = timezone.now()
    old = now - timedelta(seconds=4)
    ConversationSession.objects.filter(pk=waiting.pk).update(dispatched_at=old)
    ConversationSession.objects.filter(pk=taken.pk).update(
        agent_status=AgentStatus.STARTING, dispatch_id="AD_taken", dispatched_at=old, job_taken_at=now
    )
    ConversationSession.objects.filter(pk=fresh.pk).update(
        agent_status=AgentStatus.RECOVERING, dispatch_id="AD_fresh", dispatched_at=now - timedelta(seconds=1)
    )
    ConversationSession.objects.filter(pk=active.pk).update(
        agent_status=AgentStatus.ACTIVE, agent_heartbeat_at=now, dispatched_at=now - timedelta(seconds=60)
    )

    assert sessions_watchdog().reoffered == 1
    waiting.refresh_from_db()
    assert waiting.dispatch_id != first  # no worker took it: offered again
    assert waiting.dispatch_id in [d.id for d in lk.dispatches_for(waiting.agent_room_name)]
    assert ConversationSession.objects.get(pk=taken.pk).dispatch_id == "AD_taken"
    assert ConversationSession.objects.get(pk=fresh.pk).dispatch_id == "AD_fresh"
    assert sessions_watchdog().reoffered == 0  # the next tick: the new offer is not due yet

    settings.AGENT_REDISPATCH_AFTER_SECONDS = 0
    ConversationSession.objects.filter(pk=waiting.pk).update(dispatched_at=now - timedelta(seconds=60))
    assert sessions_watchdog().reoffered == 0
    lk.room_close(waiting.agent_room_name)


def test_dispatch_with_a_wrong_secret_fails_at_once(company: Any, agent: Any, settings: Any) -> None:
    settings.LIVEKIT_API_SECRET = "not-the-secret-but-long-enough-0123456789"
    session = start(company, agent, "bad-secret")
    dispatch_agent.apply(args=[session.pk])
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.FAILED
    assert session.failure_reason.startswith("Dispatch refused: LiveKit refused the request (401)")
