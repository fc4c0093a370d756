"""Admission control: a start counts itself in, or is refused at a limit."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import Coalesce

from agentconnect.errors import AtCapacity, TooManySessions
from voiceagents.models import Company

from ..models import CompanyLiveSessions

# Any constant will do; it names the lock of pg_advisory_xact_lock for admission.
ADMISSION_LOCK_ID = 0x6163_61646D  # "ac" "adm"

_COUNTER = CompanyLiveSessions._meta.db_table
# One statement: count the new session in (creating the company's counter on its
# first start) and read the other companies' counts, as this statement sees them.
# The ORM has no upsert that increments and returns the new value.
_RESERVE_SQL = (
    f"INSERT INTO {_COUNTER} (company_id, live) VALUES (%s, 1) "
    f"ON CONFLICT (company_id) DO UPDATE SET live = {_COUNTER}.live + 1 "
    f"RETURNING live, (SELECT COALESCE(SUM(live), 0) FROM {_COUNTER} WHERE company_id <> %s)"
)


def _live_everywhere() -> int:
    return int(CompanyLiveSessions.objects.aggregate(n=Coalesce(Sum("live"), 0))["n"])


def session_admit(*, company: Company) -> None:
    """Count a new live session of `company` in; raise (and the caller's transaction
    rolls both back) if that takes the company or the deployment past its limit.

    Call it inside the transaction that inserts the session. Two starts at a
    limit must not both pass: the company's counter row is incremented in
    place, which locks it until commit, so a racing start of the same company
    waits and then increments the committed value. The deployment cap
    (MAX_LIVE_SESSIONS) adds a transaction-scoped advisory lock when near the
    cap, taken after the counter row: a start holds one company's row at most,
    so starts cannot deadlock. SQLite (make run) serializes its writes anyway.
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
