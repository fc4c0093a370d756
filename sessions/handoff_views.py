"""Staff side of a handoff: the waiting list, the call page, the staff token, ending the call.

JSON endpoints are staff-only (the admin's session login); a widget key is never
accepted here. The pages are the admin's own login too.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response

from agentconnect.errors import NotFound

from .authentication import IsStaff
from .handoff import session_staff_token, sessions_awaiting_person
from .models import ConversationSession
from .schema import errors
from .services import session_stop


class HandoffOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    session_id = serializers.CharField()
    company = serializers.CharField(source="company.name")
    agent = serializers.CharField(source="agent.name")
    status = serializers.CharField(source="agent_status")
    handoff_status = serializers.CharField()
    reason = serializers.CharField(source="handoff_reason")
    requested_at = serializers.DateTimeField(source="handoff_requested_at")
    joined_at = serializers.DateTimeField(source="handoff_joined_at")
    missed_at = serializers.DateTimeField(source="handoff_missed_at")
    joined_by = serializers.SerializerMethodField()
    wait_seconds = serializers.SerializerMethodField()
    call_url = serializers.SerializerMethodField()

    def get_joined_by(self, obj: ConversationSession) -> str | None:
        user = obj.handoff_joined_by
        return (user.get_full_name() or user.get_username()) if user else None

    def get_wait_seconds(self, obj: ConversationSession) -> float | None:
        wait = obj.handoff_wait_seconds
        return round(wait, 1) if wait is not None else None

    def get_call_url(self, obj: ConversationSession) -> str:
        return reverse("staff-call", args=[obj.pk])


class TurnOutput(serializers.Serializer[Any]):
    sequence = serializers.IntegerField()
    role = serializers.CharField()
    speaker_identity = serializers.CharField()
    speaker_name = serializers.CharField()
    text = serializers.CharField()


class HandoffDetailOutput(HandoffOutput):
    turns = TurnOutput(many=True, source="turns.all")


class StaffTokenOutput(serializers.Serializer[Any]):
    success = serializers.BooleanField(default=True)
    livekit_url = serializers.CharField()
    room_name = serializers.CharField()
    identity = serializers.CharField()
    token = serializers.CharField()


def _session(pk: int | str) -> ConversationSession:
    if not str(pk).isdigit():
        raise NotFound("No such session.")
    session = (
        ConversationSession.objects.select_related("company", "agent", "handoff_joined_by")
        .filter(pk=pk)
        .first()
    )
    if session is None:
        raise NotFound("No such session.")
    return session


class HandoffViewSet(viewsets.ViewSet):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsStaff]

    @extend_schema(responses={200: HandoffOutput(many=True), **errors(403)})
    def waiting(self, request: Request) -> Response:
        rows = HandoffOutput(sessions_awaiting_person(), many=True).data
        return Response({"success": True, "count": len(rows), "handoffs": rows})

    @extend_schema(responses={200: HandoffDetailOutput, **errors(403, 404)})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(HandoffDetailOutput(_session(pk)).data)

    @extend_schema(request=None, responses={200: StaffTokenOutput, **errors(403, 404, 409)})
    def join(self, request: Request, pk: str) -> Response:
        grant = session_staff_token(session=_session(pk), user=request.user)
        return Response(StaffTokenOutput(grant).data)

    @extend_schema(request=None, responses={200: HandoffOutput, **errors(403, 404)})
    def end(self, request: Request, pk: str) -> Response:
        session = session_stop(session=_session(pk))
        return Response(HandoffOutput(session).data)


@staff_member_required
def handoff_list_page(request: HttpRequest) -> HttpResponse:
    return render(request, "sessions/handoff_list.html", {"sessions": list(sessions_awaiting_person())})


@staff_member_required
def staff_call_page(request: HttpRequest, pk: int) -> HttpResponse:
    session = get_object_or_404(ConversationSession.objects.select_related("company", "agent"), pk=pk)
    return render(
        request, "sessions/staff_call.html", {"session": session, "turns": list(session.turns.all())}
    )
