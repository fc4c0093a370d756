"""The worker's door to the database: session services wrapped for asyncio.

Django's ORM is synchronous; every call runs in a worker thread, with stale
connections closed around it so a database restart is survived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")


def _with_fresh_connection(func: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return call


async def db(func: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a service function off the event loop."""
    return await sync_to_async(_with_fresh_connection(func), thread_sensitive=True)(**kwargs)


@dataclass(frozen=True)
class JobSession:
    pk: int
    # a new agent for a session whose agent was lost: no greeting, the stored turns as context
    recovering: bool


def session_for_room(room_name: str) -> JobSession | None:
    """The session this room belongs to, if it still wants an agent.

    A job can reach a worker after the session was stopped (the visitor hung
    up while the job was queued); joining would bring the deleted room back.
    """
    from sessions.models import WANTS_AGENT_STATUSES, AgentStatus, ConversationSession

    row = (
        ConversationSession.objects.filter(agent_room_name=room_name, agent_status__in=WANTS_AGENT_STATUSES)
        .values_list("pk", "agent_status")
        .first()
    )
    if row is None:
        return None
    return JobSession(pk=row[0], recovering=row[1] == AgentStatus.RECOVERING)


def session_held_by(session_pk: int, identity: str) -> bool:
    """Whether this agent still holds the session: active and recorded as its agent.
    Recovering means it was declared lost; another identity, that a newer agent took over."""
    from sessions.models import AgentStatus, ConversationSession

    return ConversationSession.objects.filter(
        pk=session_pk, agent_status=AgentStatus.ACTIVE, agent_identity=identity
    ).exists()


def session_pk_for_room(room_name: str) -> int | None:
    found = session_for_room(room_name)
    return found.pk if found else None
