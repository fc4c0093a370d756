"""Reconciliation (Celery beat): the database brought in line with what LiveKit reports."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from voiceagents.services import agent_dispatch_name

from .. import livekit_gateway as lk
from ..models import LIVE_STATUSES, TERMINAL_STATUSES, AgentStatus, CompanyLiveSessions, ConversationSession
from ..tasks import dispatch_again as dispatch_again_task
from ..tasks import dispatch_agent as dispatch_agent_task
from .dispatch import session_task_queue
from .events import session_recover
from .lifecycle import session_fail, session_transition

logger = logging.getLogger(__name__)


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


def _close_rooms_of_ended_sessions(on_server: set[str], now: datetime) -> int:
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
                if session_task_queue(dispatch_agent_task, session.pk):
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


@dataclass
class WatchdogReport:
    recovered: int = 0  # sessions whose worker stopped its heartbeats, given a new agent
    failed: int = 0  # sessions out of recovery attempts, or that no worker took over in time
    reoffered: int = 0  # sessions whose job no worker took, offered again


def _offer_again_jobs_nobody_took(now: datetime) -> int:
    """Queue a new offer for each session still waiting for its agent whose latest offer
    is AGENT_REDISPATCH_AFTER_SECONDS old and no worker took (no job_taken_at after it).
    Claiming a session stamps dispatched_at (the new offer's time), so the next tick or a
    second beat does not queue it twice, and a worker taking the new offer stamps after."""
    after = settings.AGENT_REDISPATCH_AFTER_SECONDS
    if not after:
        return 0
    untaken = Q(job_taken_at__isnull=True) | Q(job_taken_at__lt=F("dispatched_at"))
    waiting = (
        ConversationSession.objects.filter(
            agent_status__in=(AgentStatus.STARTING, AgentStatus.RECOVERING),
            dispatched_at__lt=now - timedelta(seconds=after),
        )
        .filter(untaken)
        .values_list("pk", "dispatched_at")
    )
    queued = 0
    for pk, dispatched_at in waiting:
        claimed = (
            ConversationSession.objects.filter(pk=pk, dispatched_at=dispatched_at)
            .filter(untaken)
            .update(dispatched_at=now)
        )
        if claimed:
            transaction.on_commit(functools.partial(session_task_queue, dispatch_again_task, pk))
            queued += 1
    return queued


def sessions_watchdog() -> WatchdogReport:
    """Run by Celery beat every CELERY_WATCHDOG_INTERVAL_SECONDS: three indexed reads, no LiveKit call.

    - active, whose heartbeat is older than AGENT_HEARTBEAT_TIMEOUT_SECONDS: the
      worker serving it is gone (killed, machine lost, partitioned); recover it;
    - recovering longer than AGENT_RECOVERY_TIMEOUT_SECONDS: no worker took the
      new job; fail it with a reason;
    - starting or recovering, its job offered AGENT_REDISPATCH_AFTER_SECONDS ago
      and taken by no worker: offer it again (a task: a LiveKit call).
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
    report.reoffered = _offer_again_jobs_nobody_took(now)
    return report


def _close_quietly(room_name: str, dispatch_id: str) -> None:
    try:
        lk.room_close(room_name, dispatch_id)
    except lk.LiveKitError as exc:
        # reconcile closes rooms of ended sessions on its next round
        logger.warning("could not close room %s: %s", room_name, exc)
