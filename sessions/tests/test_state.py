"""The status state machine: every allowed and forbidden transition, and races."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from sessions.models import AgentStatus, ConversationSession
from sessions.services import ALLOWED, session_transition
from tests.factories import VoiceAgentFactory

ALL = [s.value for s in AgentStatus]
PAIRS = [(a, b) for a in ALL for b in ALL]


def make_session(status: str, **fields: Any) -> ConversationSession:
    agent = VoiceAgentFactory()
    from django.utils import timezone

    return ConversationSession.objects.create(
        session_id=f"s-{status}",
        company=agent.company,
        agent=agent,
        mode=agent.mode,
        agent_room_name=f"room-{agent.pk}-{status}",
        visitor_identity="visitor-x",
        agent_status=status,
        failure_reason="seeded" if status == AgentStatus.FAILED else "",
        status_changed_at=timezone.now(),
        **fields,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("source, target", PAIRS)
def test_transition_table(source: str, target: str) -> None:
    session = make_session(source)
    moved = session_transition(session_pk=session.pk, to=target, failure_reason="because")
    session.refresh_from_db()
    if target in ALLOWED[source]:
        assert moved and session.agent_status == target
    else:
        assert not moved and session.agent_status == source


def test_terminal_states_are_final() -> None:
    assert ALLOWED[AgentStatus.STOPPED] == frozenset()
    assert ALLOWED[AgentStatus.FAILED] == frozenset()
    for source in ALL:
        if source not in (AgentStatus.STOPPED, AgentStatus.FAILED):
            assert AgentStatus.FAILED in ALLOWED[source], f"{source} cannot fail"


@pytest.mark.django_db
def test_failed_records_reason_and_stop_time() -> None:
    session = make_session(AgentStatus.ACTIVE)
    assert session_transition(
        session_pk=session.pk, to=AgentStatus.FAILED, failure_reason="STT provider hung"
    )
    session.refresh_from_db()
    assert session.failure_reason == "STT provider hung"
    assert session.agent_stopped_at is not None


@pytest.mark.django_db
def test_database_refuses_failed_without_reason() -> None:
    from django.db import IntegrityError, transaction

    session = make_session(AgentStatus.ACTIVE)
    with pytest.raises(IntegrityError), transaction.atomic():
        ConversationSession.objects.filter(pk=session.pk).update(agent_status="failed", failure_reason="")


@pytest.mark.django_db
def test_database_refuses_unknown_status() -> None:
    from django.db import IntegrityError, transaction

    session = make_session(AgentStatus.ACTIVE)
    with pytest.raises(IntegrityError), transaction.atomic():
        ConversationSession.objects.filter(pk=session.pk).update(agent_status="dancing")


@pytest.mark.django_db(transaction=True)
def test_racing_transitions_one_wins() -> None:
    """A webhook (agent left → stopped) and a worker (→ failed) race on an active session."""
    for _attempt in range(10):
        session = make_session(AgentStatus.ACTIVE)
        barrier = threading.Barrier(2, timeout=10)
        results: dict[str, bool] = {}

        def move(target: str) -> None:
            try:
                barrier.wait()
                results[target] = session_transition(
                    session_pk=session.pk, to=target, failure_reason="worker error"
                )
            finally:
                connection.close()

        threads = [
            threading.Thread(target=move, args=(t,)) for t in (AgentStatus.STOPPED, AgentStatus.FAILED)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert sorted(results.values()) == [False, True], results
        session.refresh_from_db()
        winner = next(t for t, won in results.items() if won)
        assert session.agent_status == winner
        ConversationSession.objects.filter(pk=session.pk).delete()


def test_the_migrations_hold_the_status_sets_of_the_models() -> None:
    """Migrations 0003 (the counters' start), 0004 and 0005 (the release trigger's SQL) spell
    the status sets out, frozen as migrations must be; they must be the models' sets.
    0005 recreated the trigger on the ended set alone, so a live status added later
    (0005's own `recovering`) needs no new copy."""
    import importlib
    import re

    from sessions.models import LIVE_STATUSES, TERMINAL_STATUSES

    def listed(sql: str) -> set[str]:
        return set(re.findall(r"'([a-z]+)'", sql))

    current = importlib.import_module("sessions.migrations.0005_recovery")
    assert listed(current.ENDED) == set(TERMINAL_STATUSES)
    assert all(f"NOT IN {current.ENDED}" in sql for sql in current.POSTGRES + current.SQLITE)
    # the statuses that existed before 0005: every one of today's but `recovering`
    before = importlib.import_module("sessions.migrations.0004_live_session_release_trigger")
    assert listed(before.LIVE) == set(LIVE_STATUSES) - {AgentStatus.RECOVERING}
    assert listed(before.ENDED) == set(TERMINAL_STATUSES)
    counters = importlib.import_module("sessions.migrations.0003_live_session_counter")
    assert set(counters.LIVE) == set(LIVE_STATUSES) - {AgentStatus.RECOVERING}
