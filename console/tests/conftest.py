from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from sessions.models import AgentStatus, ConversationSession, TranscriptTurn
from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.models import Company, VoiceAgent

CONFIG = {"llm_provider": "openai", "stt_provider": "deepgram", "tts_provider": "openai"}


def make_session(
    *,
    agent: VoiceAgent,
    status: str = AgentStatus.STOPPED,
    created_at: datetime | None = None,
    dispatch_seconds: float | None = 1.0,
    duration_seconds: float | None = 60.0,
    failure_reason: str = "",
    config: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    worker: str = "",
) -> ConversationSession:
    """A session row as the lifecycle leaves it, at a chosen time."""
    created = created_at or timezone.now()
    started = created + timedelta(seconds=dispatch_seconds) if dispatch_seconds is not None else None
    stopped = (
        started + timedelta(seconds=duration_seconds)
        if started is not None and duration_seconds is not None and status in ("stopped", "failed")
        else None
    )
    if status == AgentStatus.FAILED and not failure_reason:
        failure_reason = "the agent did not join"
    session = ConversationSession.objects.create(
        session_id=uuid.uuid4().hex[:20],
        company=agent.company,
        agent=agent,
        mode=agent.mode,
        agent_room_name=f"room-{uuid.uuid4().hex}",
        agent_status=status,
        agent_worker_id=worker,
        agent_started_at=started,
        agent_stopped_at=stopped,
        status_changed_at=stopped or started or created,
        config={**CONFIG, **(config or {})},
        usage=usage or {},
        visitor_identity="visitor-x",
        failure_reason=failure_reason,
    )
    ConversationSession.objects.filter(pk=session.pk).update(created_at=created)
    session.created_at = created
    return session


def add_turn(session: ConversationSession, sequence: int, role: str, text: str, **metrics: float) -> None:
    start = (session.agent_started_at or session.created_at) + timedelta(seconds=sequence * 3)
    TranscriptTurn.objects.create(
        session=session,
        sequence=sequence,
        role=role,
        text=text,
        speaker_name="Maya" if role == "user" else "Agent",
        started_at=start,
        ended_at=start + timedelta(seconds=2),
        metrics=metrics,
    )


@pytest.fixture
def company(db: Any) -> Company:
    return CompanyFactory(name="Acme", max_concurrent_sessions=4)


@pytest.fixture
def agent(company: Company) -> VoiceAgent:
    return VoiceAgentFactory(company=company, name="Support")


@pytest.fixture
def staff(db: Any) -> User:
    return User.objects.create_superuser("staff", "staff@example.com", "pw-staff-123")


@pytest.fixture
def staff_client(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def plain_client(db: Any) -> Client:
    user = User.objects.create_user("visitor", "v@example.com", "pw-visitor-123")
    client = Client()
    client.force_login(user)
    return client
