"""Reads with a rule in them."""

from __future__ import annotations

import functools
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
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


class _ActiveRowLookup:
    """The ORM's plain lookup of a model's active row by the values of some fields,
    written once per process instead of built and compiled on every call.

    The two reads every widget request makes before its own work (the widget
    key's company, the start's agent) went through QuerySet.get(), which built
    and compiled the same query on each call, then through raw(), which maps the
    row's columns to fields again on each call: together about a quarter of a
    start's CPU in Django (docs/benchmarks.md). Here the columns are named in
    the model's field order (not `SELECT *`: the table's order can differ, and
    a column a later migration adds is not read), their converters (JSONField's,
    on PostgreSQL) are looked up once, and the row becomes a model through
    Model.from_db, as the ORM makes it.
    """

    def __init__(self, model: type[Model], *fields: str) -> None:
        self.model, self.fields = model, fields
        concrete = model._meta.concrete_fields
        self.attnames = [field.attname for field in concrete]

    @functools.cached_property
    def sql(self) -> str:
        meta, quote = self.model._meta, connection.ops.quote_name
        columns = {field.name: field.column for field in meta.concrete_fields}
        conditions = [f"{quote(columns[name])} = %s" for name in self.fields]
        conditions.append(quote(columns["is_active"]))
        selected = ", ".join(quote(field.column) for field in meta.concrete_fields)
        return f"SELECT {selected} FROM {quote(meta.db_table)} WHERE {' AND '.join(conditions)}"

    @functools.cached_property
    def converters(self) -> list[tuple[int, list[Any], Any]]:
        """(column index, the ORM's converters for it, its column expression), for the columns that have any."""
        meta = self.model._meta
        found = []
        for index, field in enumerate(meta.concrete_fields):
            column = field.get_col(meta.db_table)
            converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if converters:
                found.append((index, converters, column))
        return found

    def get(self, *values: Any) -> Any:
        """The one active row with those values, as a model instance; None if there is none."""
        db = connections[
            DEFAULT_DB_ALIAS
        ]  # this thread's, once: each use of the `connection` proxy looks it up
        with db.cursor() as cursor:
            cursor.execute(self.sql, values)
            row = cursor.fetchone()
        if row is None:
            return None
        if self.converters:
            row = list(row)
            for index, converters, column in self.converters:
                for convert in converters:
                    row[index] = convert(row[index], column, db)
        return self.model.from_db(db.alias, self.attnames, row)


_company_by_widget_key = _ActiveRowLookup(Company, "widget_key")
_agent_of_company = _ActiveRowLookup(VoiceAgent, "id", "company")


def company_by_widget_key(key: str) -> Company | None:
    """The active company whose widget key this is."""
    company: Company | None = _company_by_widget_key.get(key)
    return company


def agent_active_for_company(*, agent_id: int, company: Company) -> VoiceAgent | None:
    """The company's active agent with that id; another company's, or an inactive one, is None."""
    agent: VoiceAgent | None = _agent_of_company.get(agent_id, company.pk)
    if agent is not None:
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
