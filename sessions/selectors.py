"""Reads with a rule in them."""

from __future__ import annotations

import functools

from django.db import connection
from django.db.models import Model, QuerySet

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
def _active_row_sql(model: type[Model], *fields: str) -> str:
    """The ORM's plain lookup of a model's active row by the values of some fields,
    written once per process instead of built and compiled on every call."""
    meta, quote = model._meta, connection.ops.quote_name
    columns = {field.name: field.column for field in meta.concrete_fields}
    conditions = [f"{quote(columns[name])} = %s" for name in fields]
    conditions.append(quote(columns["is_active"]))
    return f"SELECT * FROM {quote(meta.db_table)} WHERE {' AND '.join(conditions)}"


# The two reads every widget request makes before its own work: through
# QuerySet.get() the ORM built and compiled each query per call, about as much CPU
# as the rest of the read (~1 ms each of a start's ~9 ms, measured in a request).
# raw() still builds the model from the row, with every field and its converters.


def company_by_widget_key(key: str) -> Company | None:
    """The active company whose widget key this is."""
    found = list(Company.objects.raw(_active_row_sql(Company, "widget_key"), [key]))
    return found[0] if found else None


def agent_active_for_company(*, agent_id: int, company: Company) -> VoiceAgent | None:
    """The company's active agent with that id; another company's, or an inactive one, is None."""
    found = list(VoiceAgent.objects.raw(_active_row_sql(VoiceAgent, "id", "company"), [agent_id, company.pk]))
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
