"""What a worker learns from the database before it joins a room."""

from __future__ import annotations

import pytest

from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_start, session_transition
from tests.factories import VoiceAgentFactory
from voiceagents.worker.reporting import session_for_room


@pytest.mark.django_db
def test_a_job_for_an_ended_session_finds_nothing_to_join() -> None:
    agent = VoiceAgentFactory()
    session = session_start(company=agent.company, agent_id=agent.pk, session_id="late-job").session
    found = session_for_room(session.agent_room_name)
    assert found is not None and found.pk == session.pk and not found.recovering
    session_transition(session_pk=session.pk, to=AgentStatus.STOPPING)
    # Stopping: the visitor hung up while the job was queued; joining would recreate the room.
    assert session_for_room(session.agent_room_name) is None
    session_transition(session_pk=session.pk, to=AgentStatus.STOPPED)
    assert session_for_room(session.agent_room_name) is None
    assert session_for_room("no-such-room") is None
    assert ConversationSession.objects.get(pk=session.pk).agent_status == AgentStatus.STOPPED


@pytest.mark.django_db
def test_a_job_for_a_recovering_session_is_told_so() -> None:
    agent = VoiceAgentFactory()
    session = session_start(company=agent.company, agent_id=agent.pk, session_id="lost").session
    for status in (AgentStatus.DISPATCHING, AgentStatus.ACTIVE, AgentStatus.RECOVERING):
        assert session_transition(session_pk=session.pk, to=status)
    found = session_for_room(session.agent_room_name)
    assert found is not None and found.recovering
