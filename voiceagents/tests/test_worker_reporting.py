"""What a worker learns from the database before it joins a room."""

from __future__ import annotations

import pytest

from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_start, session_transition
from tests.factories import VoiceAgentFactory
from voiceagents.worker.reporting import session_pk_for_room


@pytest.mark.django_db
def test_a_job_for_an_ended_session_finds_nothing_to_join() -> None:
    agent = VoiceAgentFactory()
    session = session_start(company=agent.company, agent_id=agent.pk, session_id="late-job").session
    assert session_pk_for_room(session.agent_room_name) == session.pk
    session_transition(session_pk=session.pk, to=AgentStatus.STOPPING)
    # Stopping: the visitor hung up while the job was queued; joining would recreate the room.
    assert session_pk_for_room(session.agent_room_name) is None
    session_transition(session_pk=session.pk, to=AgentStatus.STOPPED)
    assert session_pk_for_room(session.agent_room_name) is None
    assert session_pk_for_room("no-such-room") is None
    assert ConversationSession.objects.get(pk=session.pk).agent_status == AgentStatus.STOPPED
