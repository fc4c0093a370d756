"""Handoff to a person: the agent asks for one, a staff member joins the room, or nobody does.

Each step is a conditional UPDATE on the handoff status (like agent status changes),
so the worker's reports and a staff member's join cannot overwrite each other, and a
request on an ended session changes nothing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from livekit import api

from agentconnect.errors import Conflict

from .models import LIVE_STATUSES, WANTS_AGENT_STATUSES, ConversationSession, HandoffStatus

STAFF_IDENTITY_PREFIX = "staff-"
_STAFF_IDENTITY = re.compile(r"^staff-(\d+)-[0-9a-f]+$")
MAX_REASON = 500


def is_staff_identity(identity: str) -> bool:
    """Visitors' identities are minted by the API (visitor-…, guest-…), so this prefix is
    only ever a token from session_staff_token."""
    return bool(_STAFF_IDENTITY.match(identity or ""))


def session_handoff_request(*, session_pk: int, reason: str) -> bool:
    """The agent asks for a person; True when the session is now waiting for one."""
    return (
        ConversationSession.objects.filter(
            pk=session_pk,
            agent_status__in=LIVE_STATUSES,
            handoff_status__in=[HandoffStatus.NONE, HandoffStatus.MISSED],
        ).update(
            handoff_status=HandoffStatus.REQUESTED,
            handoff_reason=(reason or "The visitor asked for a person.")[:MAX_REASON],
            handoff_requested_at=timezone.now(),
            handoff_joined_at=None,
            handoff_missed_at=None,
            handoff_joined_by=None,
        )
        == 1
    )


def session_handoff_joined(*, session_pk: int, identity: str) -> bool:
    """A staff member is in the room (reported by the agent, which sees them arrive)."""
    match = _STAFF_IDENTITY.match(identity or "")
    user_pk = int(match.group(1)) if match else None
    user = get_user_model().objects.filter(pk=user_pk, is_staff=True).first() if user_pk else None
    return (
        ConversationSession.objects.filter(pk=session_pk, handoff_status=HandoffStatus.REQUESTED).update(
            handoff_status=HandoffStatus.JOINED, handoff_joined_at=timezone.now(), handoff_joined_by=user
        )
        == 1
    )


def session_handoff_missed(*, session_pk: int) -> bool:
    """Nobody joined within the profile's timeout."""
    return (
        ConversationSession.objects.filter(pk=session_pk, handoff_status=HandoffStatus.REQUESTED).update(
            handoff_status=HandoffStatus.MISSED, handoff_missed_at=timezone.now()
        )
        == 1
    )


def sessions_awaiting_person() -> QuerySet[ConversationSession]:
    """Live sessions waiting for a person, longest wait first."""
    return (
        ConversationSession.objects.filter(
            agent_status__in=LIVE_STATUSES, handoff_status=HandoffStatus.REQUESTED
        )
        .select_related("company", "agent")
        .order_by("handoff_requested_at")
    )


@dataclass(frozen=True)
class StaffToken:
    token: str
    identity: str
    room_name: str
    livekit_url: str


def session_staff_token(*, session: ConversationSession, user: Any) -> StaffToken:
    """A staff member's token for the session's room: join, publish, subscribe; short-lived;
    an identity naming the user. Only while the session is live and waiting for (or
    already has) a person."""
    if session.agent_status not in WANTS_AGENT_STATUSES:
        raise Conflict("The session has ended.", details={"session_id": session.session_id})
    if session.handoff_status not in (HandoffStatus.REQUESTED, HandoffStatus.JOINED):
        raise Conflict("The session is not waiting for a person.", details={"session_id": session.session_id})
    identity = f"{STAFF_IDENTITY_PREFIX}{user.pk}-{secrets.token_hex(3)}"
    name = (user.get_full_name() or user.get_username())[:64]
    token = (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_name(name)
        .with_attributes({"agentconnect.role": "staff"})
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=session.agent_room_name,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=False,
                can_update_own_metadata=False,
            )
        )
        .with_ttl(timedelta(seconds=settings.LIVEKIT_STAFF_TOKEN_TTL_SECONDS))
        .to_jwt()
    )
    return StaffToken(
        token=token,
        identity=identity,
        room_name=session.agent_room_name,
        livekit_url=settings.LIVEKIT_PUBLIC_URL,
    )
