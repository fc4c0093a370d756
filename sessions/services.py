"""Every write to a conversation session goes through here."""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Count, F, Field, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from agentconnect.errors import AtCapacity, Conflict, NotFound, ServiceUnavailable, TooManySessions
from agentconnect.metrics import observe_status_change
from voiceagents.catalog import AgentMode
from voiceagents.models import Company, VoiceAgent
from voiceagents.services import agent_config_resolve, agent_dispatch_name

from . import livekit_gateway as lk
from .models import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    AgentStatus,
    CompanyLiveSessions,
    ConversationSession,
)
from .selectors import agent_active_for_company, session_get_for_company
from .state import sources_for
from .task_queue import enqueue

logger = logging.getLogger(__name__)

MAX_FAILURE_REASON = 1000


# --- the one door for status changes ----------------------------------------------------


def session_transition(
    *, session_pk: int, to: str, where: dict[str, Any] | None = None, **fields: Any
) -> bool:
    """Move a session to `to` if its current status allows it; True when it moved.

    A conditional UPDATE, so concurrent webhook, worker and task updates
    cannot clobber each other: of two racing transitions exactly one wins.
    `where` narrows the condition further (e.g. only while a given agent holds it).
    """
    now = timezone.now()
    if to == AgentStatus.FAILED:
        fields["failure_reason"] = (fields.get("failure_reason") or "unknown failure")[:MAX_FAILURE_REASON]
    if to in TERMINAL_STATUSES:
        fields.setdefault("agent_stopped_at", now)
    # Ending a session also gives its company's counted place back, in this same
    # statement: a database trigger (migration 0004) decrements CompanyLiveSessions.
    moved = (
        ConversationSession.objects.filter(pk=session_pk, agent_status__in=sources_for(to))
        .filter(**(where or {}))
        .update(agent_status=to, status_changed_at=now, updated_at=now, **fields)
        == 1
    )
    if moved:
        logger.info("session %s -> %s", session_pk, to, extra={"session_pk": session_pk})
        observe_status_change(session_pk=session_pk, to=to, fields=fields)  # dispatch latency, failures
    return moved


def session_fail(*, session_pk: int, reason: str) -> bool:
    return session_transition(session_pk=session_pk, to=AgentStatus.FAILED, failure_reason=reason)


# --- start / stop from the API ------------------------------------------------------------


@dataclass(frozen=True)
class StartResult:
    session: ConversationSession
    user_token: str
    created: bool


def _visitor_token(session: ConversationSession, *, identity: str, name: str) -> str:
    return lk.user_token(room_name=session.agent_room_name, identity=identity, name=name)


def _enqueue(task_name: str, session_pk: int, **kwargs: Any) -> bool:
    """Queue a task for a session; False (and the session failed) when the broker is down."""
    from . import tasks

    task = getattr(tasks, task_name)
    try:
        enqueue(task, session_pk, **kwargs)
    except Exception as exc:  # the broker is down: the session must not wait for a task that never comes
        logger.error("could not enqueue %s for session %s: %r", task_name, session_pk, exc)
        session_fail(
            session_pk=session_pk,
            reason=f"Could not queue the {task_name.replace('_', ' ')} task: the task broker is unreachable.",
        )
        return False
    return True


# Any constant will do; it names the lock of pg_advisory_xact_lock for admission.
ADMISSION_LOCK_ID = 0x6163_61646D  # "ac" "adm"

_COUNTER = CompanyLiveSessions._meta.db_table
# One round trip: count the new session in (creating the company's counter on
# its first start) and read the other companies' counts, as this statement sees them.
_RESERVE_SQL = (
    f"INSERT INTO {_COUNTER} (company_id, live) VALUES (%s, 1) "
    f"ON CONFLICT (company_id) DO UPDATE SET live = {_COUNTER}.live + 1 "
    f"RETURNING live, (SELECT COALESCE(SUM(live), 0) FROM {_COUNTER} WHERE company_id <> %s)"
)


def _live_everywhere() -> int:
    return int(CompanyLiveSessions.objects.aggregate(n=Coalesce(Sum("live"), 0))["n"])


def _admit(company: Company) -> None:
    """Admission control, in the start transaction after the new session's insert:
    count it in, and raise (rolling both back) if that takes the company or the
    deployment past its limit.

    Two starts at a limit must not both pass. The company's counter row
    (CompanyLiveSessions) is incremented in place, which locks it until commit:
    a racing start of the same company waits, then increments the committed
    value. So only the commit runs under the lock, and nothing is counted.
    The deployment cap (MAX_LIVE_SESSIONS) adds a transaction-scoped advisory
    lock when near the cap, taken after the counter row: a start holds one
    company's row at most, so starts cannot deadlock. SQLite (make run)
    serializes its writes anyway.
    """
    with connection.cursor() as cursor:
        cursor.execute(_RESERVE_SQL, [company.pk, company.pk])
        live, others = cursor.fetchone()
    cap: int = settings.MAX_LIVE_SESSIONS
    if cap:
        live_all = live + others
        # The deployment lock serializes every start, so it is taken only near the
        # cap. Far from it, starts that race past the counts this statement saw can
        # overshoot by at most the starts in flight at once (bounded by the web
        # threads), which MAX_LIVE_SESSIONS_SLACK is set to cover.
        if live_all > cap - settings.MAX_LIVE_SESSIONS_SLACK and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADMISSION_LOCK_ID])
            live_all = _live_everywhere()  # a new snapshot: every start committed before the lock
        if live_all > cap:
            raise AtCapacity(
                f"The service is at its capacity of {cap} live voice sessions. Try again in a minute.",
                details={"limit": cap, "scope": "deployment"},
                headers={"Retry-After": "30"},
            )
    limit = company.max_concurrent_sessions
    if live > limit:
        raise TooManySessions(
            f"This company already has {live - 1} live sessions, its limit ({limit}). End one and try again.",
            details={"limit": limit, "scope": "company"},
        )


@functools.cache
def _admitted_insert_sql() -> tuple[str, tuple[Field[Any, Any], ...]]:
    table, counter = ConversationSession._meta.db_table, _COUNTER
    fields = tuple(f for f in ConversationSession._meta.concrete_fields if not f.primary_key)
    quote = connection.ops.quote_name
    sql = (
        # Count the session in unless that takes the company to its limit or the
        # deployment near its cap (the counts as this statement sees them)...
        f"WITH counted AS ("
        f"INSERT INTO {counter} (company_id, live) "
        f"SELECT %(company)s, 1 WHERE %(limit)s >= 1 AND (SELECT COALESCE(SUM(live), 0) FROM {counter}) < %(room)s "
        f"ON CONFLICT (company_id) DO UPDATE SET live = {counter}.live + 1 "
        f"WHERE {counter}.live < %(limit)s AND (SELECT COALESCE(SUM(live), 0) FROM {counter}) < %(room)s "
        f"RETURNING live) "
        # ...and insert the session only if it was counted.
        f"INSERT INTO {quote(table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"SELECT {', '.join(f'%(f{n})s' for n in range(len(fields)))} FROM counted "
        f"RETURNING {quote(ConversationSession._meta.pk.column)}"
    )
    return sql, fields


def _insert_admitted(session: ConversationSession, company: Company) -> bool:
    """A start's insert and admission in one statement, on PostgreSQL, when the start
    is plainly within every limit; False, with nothing written, when it is not.

    Most starts are far from their company's limit and the deployment's cap, and
    for them a single statement (atomic by itself) does what the transaction of
    insert then _admit does, without its three round trips (BEGIN, the count,
    COMMIT): the company's counter row is incremented only while below the limit
    (the row lock orders racing starts of one company, and each sees the count the
    one before it committed), and the session row is inserted only if it was
    counted. A session_id in use fails the whole statement with the unique
    constraint's IntegrityError, counting nothing, as the transaction did. Any
    start this statement does not admit goes the exact way (insert, _admit),
    which says which limit refused it, and takes the deployment lock near the cap.
    """
    db = connections[DEFAULT_DB_ALIAS]  # this thread's, once: each use of the `connection` proxy looks it up
    if db.vendor != "postgresql":
        return False
    sql, fields = _admitted_insert_sql()
    cap: int = settings.MAX_LIVE_SESSIONS
    params: dict[str, Any] = {
        "company": company.pk,
        "limit": company.max_concurrent_sessions,
        # The counts below which a start needs no deployment lock (see _admit).
        "room": cap - settings.MAX_LIVE_SESSIONS_SLACK if cap else 2**62,
    }
    for n, field in enumerate(fields):  # what Model.save() would write
        params[f"f{n}"] = field.get_db_prep_save(field.pre_save(session, True), db)
    # In a caller's transaction, a failure must not abort it: a savepoint, as atomic() takes.
    with transaction.atomic() if not db.get_autocommit() else contextlib.nullcontext():
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    if row is None:
        return False
    session.pk = row[0]
    session._state.adding = False
    session._state.db = db.alias
    return True


def session_start(
    *,
    company: Company,
    agent_id: int,
    session_id: str | None = None,
    participant_name: str = "",
    overrides: dict[str, Any] | None = None,
) -> StartResult:
    """Create a session (pending) and queue its dispatch, or return the live one with that id."""
    agent = agent_active_for_company(agent_id=agent_id, company=company)
    if agent is None:
        raise NotFound("No active agent with that agent_id for this company.")

    # A session_id already in use is found by the insert (the unique constraint),
    # not by a read before it: most starts are new, and the insert comes before
    # admission anyway, so a visitor retrying a live session gets it back even
    # when the company is at its limit.
    session_id = session_id or uuid.uuid4().hex

    config = agent_config_resolve(agent=agent, overrides=overrides or {})
    room_name = f"ac-{company.pk}-{uuid.uuid4().hex[:16]}"
    visitor_identity = f"visitor-{secrets.token_hex(6)}"
    config.update(session_id=session_id, room_name=room_name, visitor_identity=visitor_identity)

    session = ConversationSession(
        session_id=session_id,
        company=company,
        agent=agent,
        mode=agent.mode,
        agent_room_name=room_name,
        visitor_identity=visitor_identity,
        config=config,
        status_changed_at=timezone.now(),
    )
    queued: list[bool | None] = []
    try:
        if not _insert_admitted(session, company):
            # At a limit, near the deployment cap, or not on PostgreSQL: insert, then
            # admission, in one transaction; refusals say which limit.
            with transaction.atomic():
                session.save(force_insert=True)
                _admit(company)
        # Runs at once, or after the commit of an outer transaction (a caller's).
        transaction.on_commit(lambda: queued.append(_enqueue("dispatch_agent", session.pk)))
    except IntegrityError:
        # That session_id exists: started before, or concurrently by a request that won.
        existing = session_get_for_company(company=company, session_id=session_id)
        if existing is None:
            raise
        return _start_existing(existing, agent, participant_name)

    if queued and queued[0] is False:
        # Queueing the dispatch failed (broker down); the session is already
        # failed with the reason, so nothing is left pending.
        session.refresh_from_db()
        raise ServiceUnavailable(
            "Voice sessions cannot start right now: the task queue is unreachable. "
            "Try again in a moment, with a new session_id.",
            details={"session_id": session.session_id, "reason": session.failure_reason},
            headers={"Retry-After": "5"},
        )
    token = _visitor_token(session, identity=visitor_identity, name=participant_name or "Visitor")
    return StartResult(session=session, user_token=token, created=True)


def _start_existing(session: ConversationSession, agent: VoiceAgent, participant_name: str) -> StartResult:
    if session.agent_id != agent.pk:
        raise Conflict("This session_id belongs to a session with another agent.")
    if session.is_terminal:
        raise Conflict(
            f"Session {session.session_id} has ended ({session.agent_status}); "
            "start a new session with a new session_id."
        )
    token = _visitor_token(session, identity=session.visitor_identity, name=participant_name or "Visitor")
    return StartResult(session=session, user_token=token, created=False)


def session_stop(*, session: ConversationSession) -> ConversationSession:
    """Ask for the agent and room to end. Stopping an ended session is a no-op."""
    if not session.is_terminal:
        with transaction.atomic():
            if session_transition(session_pk=session.pk, to=AgentStatus.STOPPING):
                pk = session.pk
                transaction.on_commit(lambda: _enqueue("stop_agent", pk))
    session.refresh_from_db()
    return session


def session_stop_for_company(*, company: Company, session_id: str) -> ConversationSession:
    session = session_get_for_company(company=company, session_id=session_id)
    if session is None:
        raise NotFound("No session with that session_id.")
    return session_stop(session=session)


def session_widget_token(
    *, company: Company, session_id: str, participant_name: str
) -> tuple[ConversationSession, str, str]:
    """A fresh token for a live session's room: (session, token, identity).

    One-to-one: the visitor reconnecting, same identity (the agent is linked
    to it). Conference: a further participant with an identity of their own.
    """
    session = session_get_for_company(company=company, session_id=session_id)
    if session is None:
        raise NotFound("No session with that session_id.")
    if session.is_terminal:
        raise Conflict(f"Session {session_id} has ended ({session.agent_status}).")
    if session.mode == AgentMode.CONFERENCE:
        identity = f"guest-{secrets.token_hex(6)}"
    else:
        identity = session.visitor_identity
    token = _visitor_token(session, identity=identity, name=participant_name or "Visitor")
    return session, token, identity


def session_redispatch(*, session: ConversationSession) -> ConversationSession:
    """Staff action: offer the conversation to an agent again.

    Pending, dispatching or starting: the dispatch is replaced in the same
    room (the visitor stays). Active: refused, stop the agent first. Ended:
    the session keeps its truthful terminal state, and a successor session
    with the same configuration and a new room is started.
    """
    if session.agent_status == AgentStatus.ACTIVE:
        raise Conflict("The agent is active; stop it before dispatching another.")
    if session.agent_status == AgentStatus.STOPPING:
        raise Conflict("The agent is stopping; wait until it has stopped.")
    if not session.is_terminal:
        pk = session.pk
        transaction.on_commit(lambda: _enqueue("dispatch_agent", pk, replace=True))
        return session
    count = ConversationSession.objects.filter(redispatch_of=session).count() + 1
    room_name = f"ac-{session.company_id}-{uuid.uuid4().hex[:16]}"
    new_id = f"{session.session_id[:56]}-r{count}"
    config = {**session.config, "session_id": new_id, "room_name": room_name}
    with transaction.atomic():
        successor = ConversationSession.objects.create(
            session_id=new_id,
            company_id=session.company_id,
            agent_id=session.agent_id,
            mode=session.mode,
            agent_room_name=room_name,
            visitor_identity=session.visitor_identity,
            config=config,
            redispatch_of=session,
            status_changed_at=timezone.now(),
        )
        # a successor is a new live session: the company's and the deployment's limits apply
        _admit(session.company)
        transaction.on_commit(lambda: _enqueue("dispatch_agent", successor.pk))
    return successor


# --- what the Celery tasks do ---------------------------------------------------------------


def session_dispatch(*, session_pk: int, replace: bool = False) -> None:
    """Create the room and the agent dispatch. Safe to run twice (redelivery).

    With `replace`, an existing dispatch is deleted and a new one created, so
    a fresh job is offered to the workers (staff re-dispatch).
    """
    session = ConversationSession.objects.filter(pk=session_pk).first()
    if session is None:
        return
    if session.agent_status == AgentStatus.PENDING:
        session_transition(session_pk=session_pk, to=AgentStatus.DISPATCHING)
        session.refresh_from_db()
    if session.agent_status not in (AgentStatus.DISPATCHING, AgentStatus.STARTING, AgentStatus.RECOVERING):
        return
    recovering = session.agent_status == AgentStatus.RECOVERING
    if recovering and session.agent_identity:
        # The server may still list the lost agent (until its connection times out);
        # removing it frees its place in the room and makes sure it cannot come back.
        lk.participant_remove(session.agent_room_name, session.agent_identity)

    max_participants = (
        settings.LIVEKIT_CONFERENCE_MAX_PARTICIPANTS if session.mode == AgentMode.CONFERENCE else 2
    )
    dispatch_id = lk.room_ensure_with_dispatch(
        lk.RoomSpec(
            name=session.agent_room_name,
            agent_name=agent_dispatch_name(session.mode),
            metadata=session.config,
            max_participants=max_participants,
            empty_timeout=settings.LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS,
            departure_timeout=settings.LIVEKIT_ROOM_DEPARTURE_TIMEOUT_SECONDS,
        ),
        # a recovering session needs a new job: its old dispatch's job died with its agent
        replace=replace or recovering,
    )
    ConversationSession.objects.filter(pk=session_pk).update(dispatch_id=dispatch_id)
    if recovering:
        return  # recovering until the new agent joins (session_agent_joined)
    if session.agent_status == AgentStatus.STARTING:
        # A repeat for a session already starting: restart its clock for reconcile.
        ConversationSession.objects.filter(pk=session_pk, agent_status=AgentStatus.STARTING).update(
            status_changed_at=timezone.now()
        )
        return
    if session_transition(session_pk=session_pk, to=AgentStatus.STARTING):
        return
    session.refresh_from_db()
    if session.agent_status in (AgentStatus.STOPPING, *TERMINAL_STATUSES):
        # Stopped while we were creating the room: do not leave it behind.
        lk.room_close(session.agent_room_name, dispatch_id)


def session_finish_stop(*, session_pk: int) -> None:
    """Close the dispatch and room of a stopping session, then mark it stopped."""
    session = ConversationSession.objects.filter(pk=session_pk).first()
    if session is None or session.agent_status != AgentStatus.STOPPING:
        return
    lk.room_close(session.agent_room_name, session.dispatch_id)
    session_transition(session_pk=session_pk, to=AgentStatus.STOPPED)


# --- events from LiveKit and from agent workers ---------------------------------------------


def session_agent_joined(*, room_name: str, identity: str, worker_id: str = "") -> bool:
    """The agent is in the room: reported both by the webhook and by the worker itself.

    Whichever comes first moves the session to active; the worker's report
    also records its worker id, even when the webhook was first. A replacement
    agent (recovering) takes the session over: from then on the session is its,
    and reports of the agent it replaced no longer apply.
    """
    session = ConversationSession.objects.filter(agent_room_name=room_name).first()
    if session is None:
        return False
    now = timezone.now()
    fields: dict[str, Any] = {"agent_identity": identity, "agent_heartbeat_at": now}
    if worker_id:
        fields["agent_worker_id"] = worker_id
    if session.agent_status == AgentStatus.RECOVERING:
        # the conversation started long ago: agent_started_at keeps that time
        return session_transition(
            session_pk=session.pk,
            to=AgentStatus.ACTIVE,
            where={"agent_status": AgentStatus.RECOVERING},
            **{"agent_worker_id": worker_id or identity, **fields},
        )
    moved = session_transition(
        session_pk=session.pk,
        to=AgentStatus.ACTIVE,
        agent_started_at=now,
        **{"agent_worker_id": worker_id or identity, **fields},
    )
    if not moved and worker_id:
        ConversationSession.objects.filter(
            pk=session.pk, agent_status=AgentStatus.ACTIVE, agent_identity=identity
        ).update(**fields)
    return moved


# The agent's own end-of-conversation report applies only while it holds the
# session: not once it was declared lost (recovering), nor after a newer agent took over.
_FINISH_FROM = [
    AgentStatus.PENDING,
    AgentStatus.DISPATCHING,
    AgentStatus.STARTING,
    AgentStatus.ACTIVE,
    AgentStatus.STOPPING,
]


def session_agent_finished(*, session_pk: int, error: str = "", identity: str = "") -> bool:
    """The worker's own report at the end of its conversation: stopped, or failed with a reason.

    False when it did not apply: the session ended already, was declared lost,
    or belongs to a newer agent (then the reporting agent leaves the room to it).
    """
    where: dict[str, Any] = {"agent_status__in": _FINISH_FROM}
    if identity:
        where["agent_identity__in"] = [identity, ""]
    if error:
        return session_transition(
            session_pk=session_pk, to=AgentStatus.FAILED, where=where, failure_reason=error
        )
    return session_transition(session_pk=session_pk, to=AgentStatus.STOPPED, where=where)


def session_agent_left(*, room_name: str, identity: str = "", aborted: bool = False) -> bool:
    """The agent left the room. Its own report of how the conversation ended comes
    before it leaves; an agent that leaves a live conversation without one (no stop
    was asked for) was lost, and is replaced."""
    how = "its connection was lost" if aborted else "it left without ending the conversation"
    return session_agent_lost(
        room_name=room_name,
        identity=identity,
        reason=f"The agent left the room: {how} (worker crash or network failure).",
    )


def session_agent_lost(*, room_name: str, identity: str = "", reason: str) -> bool:
    """The agent of a live conversation is gone, and no stop was asked for: recover
    the session with a new agent in the same room, or fail it once the attempts are
    used up. True when the session moved (to recovering or failed).

    Reported by the worker's main process (a job process died, a drain timed out),
    by the watchdog (the whole worker stopped its heartbeats) and by LiveKit's
    webhook (the agent left). Only about the agent that holds the session: a
    report about an agent already replaced changes nothing.
    """
    session = (
        ConversationSession.objects.filter(agent_room_name=room_name)
        .only("pk", "agent_status", "agent_identity", "recovery_count")
        .first()
    )
    if session is None or session.agent_status not in (AgentStatus.STARTING, AgentStatus.ACTIVE):
        return False
    if identity and session.agent_identity not in ("", identity):
        return False
    return session_recover(session_pk=session.pk, identity=session.agent_identity, reason=reason)


def session_recover(*, session_pk: int, identity: str, reason: str) -> bool:
    """Move the session to recovering and dispatch a new agent to its room; past
    AGENT_MAX_RECOVERIES, fail it. `identity` is the lost agent's: if another agent
    took the session over meanwhile, nothing changes."""
    limit: int = settings.AGENT_MAX_RECOVERIES
    holder = {"agent_identity": identity}
    if session_transition(
        session_pk=session_pk,
        to=AgentStatus.RECOVERING,
        where={**holder, "recovery_count__lt": limit},
        recovery_count=F("recovery_count") + 1,
        agent_heartbeat_at=None,
    ):
        logger.warning("session %s: agent lost (%s); recovering", session_pk, reason)
        transaction.on_commit(lambda: _enqueue("dispatch_agent", session_pk, replace=True))
        return True
    return session_transition(
        session_pk=session_pk,
        to=AgentStatus.FAILED,
        where={
            **holder,
            "agent_status__in": [AgentStatus.STARTING, AgentStatus.ACTIVE],
            "recovery_count__gte": limit,
        },
        failure_reason=f"{reason} The agent was already replaced {limit} time(s) in this session "
        f"(AGENT_MAX_RECOVERIES={limit}): giving up.",
    )


def session_room_finished(*, room_name: str) -> bool:
    session = ConversationSession.objects.filter(agent_room_name=room_name).first()
    if session is None or session.is_terminal:
        return False
    if session.agent_status in (AgentStatus.ACTIVE, AgentStatus.STOPPING):
        return session_transition(session_pk=session.pk, to=AgentStatus.STOPPED)
    if session.agent_status == AgentStatus.RECOVERING:
        # the visitor left too while a new agent was on its way: a crash, not a clean stop
        return session_fail(
            session_pk=session.pk, reason="The room closed while a lost agent was being replaced."
        )
    if session.agent_status == AgentStatus.STARTING and session.agent_started_at is None:
        return session_fail(session_pk=session.pk, reason="The room closed before an agent joined it.")
    return session_transition(session_pk=session.pk, to=AgentStatus.STOPPED) or session_fail(
        session_pk=session.pk, reason="The room closed before the agent was dispatched."
    )


AGENT_KIND = 4  # livekit.protocol.models.ParticipantInfo.Kind.AGENT


def session_handle_webhook(event: Any) -> str:
    """Apply a verified LiveKit webhook event; returns what was done, for logs and tests."""
    room_name = event.room.name if event.HasField("room") else ""
    if not room_name:
        return "ignored"
    if event.event == "room_finished":
        return "stopped" if session_room_finished(room_name=room_name) else "noop"
    if not event.HasField("participant") or event.participant.kind != AGENT_KIND:
        return "ignored"
    participant = event.participant
    if event.event == "participant_joined":
        joined = session_agent_joined(room_name=room_name, identity=participant.identity)
        return "active" if joined else "noop"
    if event.event in ("participant_left", "participant_connection_aborted"):
        lost = session_agent_left(
            room_name=room_name,
            identity=participant.identity,
            aborted=event.event == "participant_connection_aborted",
        )
        return "recovering" if lost else "noop"
    return "ignored"


# --- reconciliation ------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    checked: int = 0
    stopped: int = 0
    failed: int = 0
    requeued: int = 0
    closed: int = 0  # rooms of ended sessions still on the server, closed
    recounted: int = 0  # companies whose live-session counter had drifted, repaired


def live_counters_repair() -> int:
    """Set every company's live-session counter that disagrees with the sessions
    table back to the truth; the number of companies repaired.

    Admission and the release trigger keep the two in step; only a change made
    around them (a counter edited by hand, sessions inserted or revived by
    hand) makes them drift. A difference seen without
    locks may just be a start or an end in flight, so each suspect is
    recounted under its counter row's lock: a start or end that has already
    moved the counter holds that lock until its commit, and one that has not
    yet is invisible to the count and moves the counter after the repair.
    """
    truth = dict(
        ConversationSession.objects.filter(agent_status__in=LIVE_STATUSES)
        .values("company_id")
        .annotate(n=Count("pk"))
        .values_list("company_id", "n")
    )
    stored = dict(CompanyLiveSessions.objects.values_list("company_id", "live"))
    repaired = 0
    for company_id in sorted(truth.keys() | stored.keys()):
        if truth.get(company_id, 0) == stored.get(company_id, 0):
            continue
        CompanyLiveSessions.objects.get_or_create(company_id=company_id)
        with transaction.atomic():
            counter = CompanyLiveSessions.objects.select_for_update().get(company_id=company_id)
            live = ConversationSession.objects.filter(
                company_id=company_id, agent_status__in=LIVE_STATUSES
            ).count()
            if counter.live != live:
                logger.warning(
                    "company %s: live-session counter said %s, the sessions say %s; repaired",
                    company_id,
                    counter.live,
                    live,
                )
                CompanyLiveSessions.objects.filter(company_id=company_id).update(live=live)
                repaired += 1
    return repaired


def _close_rooms_of_ended_sessions(on_server: set[str], now: Any) -> int:
    if not on_server:
        return 0
    # A short grace: session_dispatch closes a room it created for a session that
    # ended meanwhile itself; reconcile only mops up what nobody else will.
    ended = ConversationSession.objects.filter(
        agent_room_name__in=sorted(on_server),
        agent_status__in=TERMINAL_STATUSES,
        status_changed_at__lt=now - timedelta(seconds=5),
    ).only("pk", "agent_room_name", "dispatch_id", "agent_status")
    closed = 0
    for session in ended:
        logger.warning(
            "closing room %s: its session %s is %s", session.agent_room_name, session.pk, session.agent_status
        )
        lk.room_close(session.agent_room_name, session.dispatch_id)
        closed += 1
    return closed


def sessions_reconcile() -> ReconcileReport:
    """Bring the database in line with what LiveKit reports. Run by Celery beat.

    - starting longer than AGENT_START_TIMEOUT_SECONDS: no worker took the job; fail and clean up;
    - pending longer than AGENT_REQUEUE_AFTER_SECONDS: its task may be lost; queue it again;
    - pending/dispatching longer than AGENT_DISPATCH_TIMEOUT_SECONDS: the task was lost; fail;
    - starting/active/stopping whose room LiveKit no longer has: stopped (or failed before join);
    - stopping whose room still exists: close it again;
    - a room still on the server whose session has ended (a stop task lost to a
      broker outage, a dispatch that half-succeeded before its session failed):
      close it, so no agent stays in a room the database calls closed. Rooms
      that belong to no session of ours are left alone: another deployment or
      test run may share the server.
    """
    report = ReconcileReport()
    report.recounted = live_counters_repair()
    now = timezone.now()
    live = list(ConversationSession.objects.filter(agent_status__in=LIVE_STATUSES))
    report.checked = len(live)
    on_server = lk.rooms_existing()
    report.closed = _close_rooms_of_ended_sessions(on_server, now)
    if not live:
        return report
    start_limit = timedelta(seconds=settings.AGENT_START_TIMEOUT_SECONDS)
    dispatch_limit = timedelta(seconds=settings.AGENT_DISPATCH_TIMEOUT_SECONDS)
    # A room we just created may not be listed yet; give every change a short grace.
    grace = timedelta(seconds=5)

    requeue_after = settings.AGENT_REQUEUE_AFTER_SECONDS

    for session in live:
        age = now - session.status_changed_at
        status = session.agent_status
        if status in (AgentStatus.PENDING, AgentStatus.DISPATCHING):
            if age > dispatch_limit:
                if session_fail(
                    session_pk=session.pk,
                    reason=f"The agent was not dispatched within {settings.AGENT_DISPATCH_TIMEOUT_SECONDS} s "
                    "(is a Celery worker running, and LiveKit reachable?).",
                ):
                    report.failed += 1
                    if session.agent_room_name in on_server:
                        lk.room_close(session.agent_room_name, session.dispatch_id)
            elif status == AgentStatus.PENDING and requeue_after and age.total_seconds() > requeue_after:
                # No task has taken it yet: the queue is slow, or the task was lost
                # (a broker restarted without persistence). Queue it again; a
                # second delivery of a dispatch is harmless (session_dispatch).
                # A dispatching session has a task retrying it: left alone.
                logger.warning(
                    "session %s pending for %.0f s: dispatch queued again", session.pk, age.total_seconds()
                )
                if _enqueue("dispatch_agent", session.pk):
                    report.requeued += 1
            continue
        if age < grace:
            continue
        room_exists = session.agent_room_name in on_server
        if status == AgentStatus.STARTING:
            if not room_exists:
                if session_fail(session_pk=session.pk, reason="The room closed before an agent joined it."):
                    report.failed += 1
            elif age > start_limit:
                if session_fail(
                    session_pk=session.pk,
                    reason=f"No agent worker joined within {settings.AGENT_START_TIMEOUT_SECONDS} s "
                    f"(is a '{agent_dispatch_name(session.mode)}' worker running?).",
                ):
                    report.failed += 1
                    lk.room_close(session.agent_room_name, session.dispatch_id)
        elif status == AgentStatus.ACTIVE:
            if not room_exists and session_transition(session_pk=session.pk, to=AgentStatus.STOPPED):
                report.stopped += 1
        elif status == AgentStatus.STOPPING:
            if room_exists:
                lk.room_close(session.agent_room_name, session.dispatch_id)
            if session_transition(session_pk=session.pk, to=AgentStatus.STOPPED):
                report.stopped += 1
    return report


# --- the watchdog: lost workers, recoveries nobody took --------------------------------------


@dataclass
class WatchdogReport:
    recovered: int = 0  # sessions whose worker stopped its heartbeats, given a new agent
    failed: int = 0  # sessions out of recovery attempts, or that no worker took over in time


def sessions_watchdog() -> WatchdogReport:
    """Run by Celery beat every CELERY_WATCHDOG_INTERVAL_SECONDS: two indexed reads, no LiveKit call.

    - active, whose heartbeat is older than AGENT_HEARTBEAT_TIMEOUT_SECONDS: the
      worker serving it is gone (killed, machine lost, partitioned); recover it;
    - recovering longer than AGENT_RECOVERY_TIMEOUT_SECONDS: no worker took the
      new job; fail it with a reason.
    """
    report = WatchdogReport()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.AGENT_HEARTBEAT_TIMEOUT_SECONDS)
    lost = ConversationSession.objects.filter(
        agent_status=AgentStatus.ACTIVE, agent_heartbeat_at__lt=stale
    ).values_list("pk", "agent_identity", "agent_worker_id")
    for pk, identity, worker_id in lost:
        moved = session_recover(
            session_pk=pk,
            identity=identity,
            reason=f"The agent's worker ({worker_id or 'unknown'}) stopped sending heartbeats (worker lost).",
        )
        if moved:
            report.recovered += 1
    timeout = settings.AGENT_RECOVERY_TIMEOUT_SECONDS
    abandoned = ConversationSession.objects.filter(
        agent_status=AgentStatus.RECOVERING, status_changed_at__lt=now - timedelta(seconds=timeout)
    ).values_list("pk", "agent_room_name", "dispatch_id")
    for pk, room_name, dispatch_id in abandoned:
        if session_fail(
            session_pk=pk,
            reason=f"The agent was lost and no agent worker took the conversation over within {timeout} s "
            "(is another worker running, with a free slot?).",
        ):
            report.failed += 1
            transaction.on_commit(functools.partial(_close_quietly, room_name, dispatch_id))
    return report


def _close_quietly(room_name: str, dispatch_id: str) -> None:
    try:
        lk.room_close(room_name, dispatch_id)
    except lk.LiveKitError as exc:
        # reconcile closes rooms of ended sessions on its next round
        logger.warning("could not close room %s: %s", room_name, exc)
