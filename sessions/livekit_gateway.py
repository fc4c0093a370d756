"""The backend's only door to the LiveKit server API (rooms, dispatches, tokens).

Calls are synchronous for Django and Celery: each one opens a client, runs the
coroutine with `asyncio.run` and closes the client, so no event loop or
connection outlives the call. Errors are sorted into those that may pass on a
retry (`LiveKitUnavailable`) and those that will not (`LiveKitRejected`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
from django.conf import settings
from livekit import api

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LiveKitError(Exception):
    pass


class LiveKitUnavailable(LiveKitError):
    """The server could not be reached or answered with a transient error."""


class LiveKitRejected(LiveKitError):
    """The server refused the request; repeating it will not help."""


_TRANSIENT_CODES = {
    "unavailable",
    "internal",
    "deadline_exceeded",
    "resource_exhausted",
    "aborted",
    "unknown",
}


def _http_url() -> str:
    url: str = settings.LIVEKIT_URL
    return "http" + url[2:] if url.startswith("ws") else url


def _run(call: Callable[[api.LiveKitAPI], Awaitable[T]]) -> T:
    async def go() -> T:
        timeout = aiohttp.ClientTimeout(total=settings.LIVEKIT_API_TIMEOUT_SECONDS)
        client = api.LiveKitAPI(
            _http_url(), settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET, timeout=timeout
        )
        try:
            return await call(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except api.ServerError as exc:
        # The HTTP status decides first: a 401 (wrong key or secret) arrives
        # with code "unknown", and retrying it only delays the failure.
        transient = (
            exc.status >= 500 or exc.status == 429 or (exc.status < 400 and exc.code in _TRANSIENT_CODES)
        )
        if transient:
            raise LiveKitUnavailable(f"LiveKit server error: {exc.message or exc.code}") from exc
        raise LiveKitRejected(
            f"LiveKit refused the request ({exc.status}): {exc.message or exc.code}"
        ) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise LiveKitUnavailable(f"LiveKit server unreachable at {settings.LIVEKIT_URL}: {exc!r}") from exc


@dataclass(frozen=True)
class RoomSpec:
    name: str
    agent_name: str
    metadata: dict[str, Any]
    max_participants: int
    empty_timeout: int
    departure_timeout: int


def room_ensure_with_dispatch(spec: RoomSpec, *, replace: bool = False) -> str:
    """Create the room and the agent dispatch unless they exist; return the dispatch id.

    Safe to repeat: LiveKit's CreateRoom returns an existing room, and an
    existing dispatch for the same agent name is reused rather than doubled
    (with `replace`, deleted and created anew, so a fresh job is offered).
    """

    async def call(client: api.LiveKitAPI) -> str:
        await client.room.create_room(
            api.CreateRoomRequest(
                name=spec.name,
                empty_timeout=spec.empty_timeout,
                departure_timeout=spec.departure_timeout,
                max_participants=spec.max_participants,
                # Naming the dispatch at creation keeps LiveKit from adding its
                # default (unnamed) dispatch: the room gets exactly our agent.
                agents=[
                    api.RoomAgentDispatch(agent_name=spec.agent_name, metadata=json.dumps(spec.metadata))
                ],
            )
        )
        for existing in await client.agent_dispatch.list_dispatch(room_name=spec.name):
            if existing.agent_name != spec.agent_name:
                continue
            if not replace:
                return existing.id
            await client.agent_dispatch.delete_dispatch(existing.id, spec.name)
        dispatch = await client.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=spec.agent_name,
                room=spec.name,
                metadata=json.dumps(spec.metadata),
            )
        )
        return dispatch.id

    return _run(call)


def dispatch_add(spec: RoomSpec) -> str:
    """One more dispatch of the room's agent (a new offer of its job); its id.

    Existing dispatches are not deleted: LiveKit terminates a deleted dispatch's job,
    and an offer still in flight may yet bring an agent, which must not be cut off
    once it holds the session. Two agents that do arrive settle it themselves: the
    one the database does not name leaves (conversation.py, newest wins).
    """

    async def call(client: api.LiveKitAPI) -> str:
        dispatch = await client.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=spec.agent_name, room=spec.name, metadata=json.dumps(spec.metadata)
            )
        )
        return dispatch.id

    return _run(call)


def room_close(room_name: str, dispatch_id: str = "") -> None:
    """Delete the dispatch and the room (which disconnects the agent and visitors). Idempotent."""

    async def call(client: api.LiveKitAPI) -> None:
        if dispatch_id:
            try:
                await client.agent_dispatch.delete_dispatch(dispatch_id, room_name)
            except api.ServerError as exc:
                if exc.code != "not_found" and exc.status != 404:
                    raise
        try:
            await client.room.delete_room(api.DeleteRoomRequest(room=room_name))
        except api.ServerError as exc:
            if exc.code != "not_found" and exc.status != 404:
                raise

    _run(call)


def participant_remove(room_name: str, identity: str) -> None:
    """Disconnect one participant (a lost agent the server still lists). Idempotent."""

    async def call(client: api.LiveKitAPI) -> None:
        try:
            await client.room.remove_participant(
                api.RoomParticipantIdentity(room=room_name, identity=identity)
            )
        except api.ServerError as exc:
            if exc.code != "not_found" and exc.status != 404:
                raise

    _run(call)


def rooms_existing(names: list[str] | None = None) -> set[str]:
    """Names of the rooms the server has now (restricted to `names` when given)."""

    async def call(client: api.LiveKitAPI) -> set[str]:
        response = await client.room.list_rooms(api.ListRoomsRequest(names=names or []))
        return {room.name for room in response.rooms}

    if names is not None and not names:
        return set()
    return _run(call)


def room_participants(room_name: str) -> list[api.ParticipantInfo]:
    async def call(client: api.LiveKitAPI) -> list[api.ParticipantInfo]:
        response = await client.room.list_participants(api.ListParticipantsRequest(room=room_name))
        return list(response.participants)

    return _run(call)


def dispatches_for(room_name: str) -> list[api.AgentDispatch]:
    async def call(client: api.LiveKitAPI) -> list[api.AgentDispatch]:
        return list(await client.agent_dispatch.list_dispatch(room_name=room_name))

    return _run(call)


def _visitor_grants(room_name: str) -> api.VideoGrants:
    """Join this one room, publish a microphone, subscribe. Nothing else.

    No room admin, recording, metadata updates or agent rights. Data is allowed
    so the agents framework's RPCs and text streams work.
    """
    return api.VideoGrants(
        room_join=True,
        room=room_name,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_publish_sources=["microphone"],
        can_update_own_metadata=False,
    )


def user_token(*, room_name: str, identity: str, name: str, ttl_seconds: int | None = None) -> str:
    """A visitor's token: the grants of _visitor_grants, for a short TTL (it only has
    to last until the visitor connects; LiveKit refreshes a connected participant's
    token itself)."""
    if not room_name or not identity:
        raise ValueError("identity and room must be set when joining a room")
    ttl = ttl_seconds if ttl_seconds is not None else settings.LIVEKIT_USER_TOKEN_TTL_SECONDS
    token = (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_grants(_visitor_grants(room_name))
        .with_ttl(timedelta(seconds=ttl))
    )
    if name:
        token = token.with_name(name)
    return token.to_jwt()


def webhook_receive(body: str, auth_header: str) -> api.WebhookEvent:
    """Verify a webhook's signature and parse it; raises on a bad or missing signature."""
    receiver = api.WebhookReceiver(api.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET))
    return receiver.receive(body, auth_header)
