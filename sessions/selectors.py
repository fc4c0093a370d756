"""Reads with a rule in them."""

from __future__ import annotations

from django.db.models import QuerySet

from agentconnect.errors import ApplicationError
from voiceagents.models import Company, VoiceAgent

from .models import LIVE_STATUSES, ConversationSession


def session_get_for_company(*, company: Company, session_id: str) -> ConversationSession | None:
    """A company's session by its public id; another company's session is invisible."""
    try:
        session = ConversationSession.objects.get(company=company, session_id=session_id)
    except ConversationSession.DoesNotExist:
        return None
    session.company = company  # the caller's instance: reading it costs no query
    return session


def company_by_widget_key(key: str) -> Company | None:
    """The active company whose widget key this is."""
    return Company.objects.filter(widget_key=key, is_active=True).first()


def agent_active_for_company(*, agent_id: int, company: Company) -> VoiceAgent | None:
    """The company's active agent with that id; another company's, or an inactive one, is None."""
    agent = VoiceAgent.objects.filter(pk=agent_id, company=company, is_active=True).first()
    if agent is not None:
        agent.company = company  # the caller's instance: reading it costs no query
    return agent


def sessions_live() -> QuerySet[ConversationSession]:
    """Every session whose agent is not in a terminal state."""
    return ConversationSession.objects.select_related("agent", "company").filter(
        agent_status__in=LIVE_STATUSES
    )


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
