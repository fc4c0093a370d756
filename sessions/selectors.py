"""Reads with a rule in them."""

from __future__ import annotations

import functools

from django.db import connection
from django.db.models import QuerySet

from agentconnect.errors import ApplicationError
from voiceagents.models import Company, VoiceAgent

from .models import LIVE_STATUSES, ConversationSession


def session_get_for_company(*, company: Company, session_id: str) -> ConversationSession | None:
    """A company's session by its public id; another company's session is invisible.

    The session row alone: joining its agent and company cost more CPU (ORM and
    PostgreSQL) than anything else agent-status does, and no caller reads the agent.
    The company is the one asked for, attached so `session.company` costs no query.
    """
    try:
        # get(), not first(): (company, session_id) is unique, so no ORDER BY to compile.
        session = ConversationSession.objects.get(company=company, session_id=session_id)
    except ConversationSession.DoesNotExist:
        return None
    session.company = company
    return session


@functools.cache
def _active_agent_sql() -> str:
    meta, quote = VoiceAgent._meta, connection.ops.quote_name
    return (
        f"SELECT * FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s "
        f"AND {quote(meta.get_field('company').column)} = %s AND {quote(meta.get_field('is_active').column)}"
    )


def agent_active_for_company(*, agent_id: int, company: Company) -> VoiceAgent | None:
    """The company's active agent with that id; another company's, or an inactive one, is None.

    Every start-voice-session reads it. QuerySet.get() builds and compiles the
    same three-condition query on each call, which in a request cost about as
    much CPU as the rest of the read (~1 ms of the start's ~9 here); the query
    is the ORM's plain lookup, written once, and `raw()` still builds the
    model from the row with every field and its converters.
    """
    found = list(VoiceAgent.objects.raw(_active_agent_sql(), [agent_id, company.pk]))
    if not found:
        return None
    agent = found[0]
    agent.company = company
    return agent


def sessions_live() -> QuerySet[ConversationSession]:
    """Every session whose agent is not in a terminal state."""
    return ConversationSession.objects.select_related("agent", "company").filter(
        agent_status__in=LIVE_STATUSES
    )


def session_by_room(room_name: str) -> ConversationSession | None:
    return ConversationSession.objects.filter(agent_room_name=room_name).first()


def session_for_staff(*, session_id: str, company_id: str | None) -> ConversationSession | None:
    """Staff look a session up by its public id; ids are unique per company, so name the company when two share one."""
    sessions = ConversationSession.objects.filter(session_id=session_id)
    if company_id:
        if not str(company_id).isdigit():
            raise ApplicationError("company_id must be a number.")
        sessions = sessions.filter(company_id=int(company_id))
    found = list(sessions[:2])
    if len(found) > 1:
        raise ApplicationError("Several companies have a session with that id; add ?company_id=.")
    return found[0] if found else None
