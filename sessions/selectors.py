"""Reads with a rule in them."""

from __future__ import annotations

from django.db.models import QuerySet

from voiceagents.models import Company

from .models import LIVE_STATUSES, ConversationSession


def session_get_for_company(*, company: Company, session_id: str) -> ConversationSession | None:
    """A company's session by its public id; another company's session is invisible."""
    return (
        ConversationSession.objects.select_related("agent", "company")
        .filter(company=company, session_id=session_id)
        .first()
    )


def sessions_live() -> QuerySet[ConversationSession]:
    """Every session whose agent is not in a terminal state."""
    return ConversationSession.objects.select_related("agent", "company").filter(
        agent_status__in=LIVE_STATUSES
    )


def session_by_room(room_name: str) -> ConversationSession | None:
    return ConversationSession.objects.filter(agent_room_name=room_name).first()
