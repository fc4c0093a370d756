"""The voice-session API under /api/v1/livekit-agents/. Thin: validate, call a service, serialize."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response

from agentconnect.errors import NotFound
from voiceagents.models import Company

from .authentication import HasWidgetKey, IsStaff, WidgetKeyAuthentication, widget_company
from .schema import errors
from .selectors import session_for_staff, session_get_for_company, sessions_live
from .serializers import (
    ActiveAgentOutput,
    ActiveAgentsOutput,
    AgentStatusOutput,
    StartVoiceSessionInput,
    StartVoiceSessionOutput,
    StopVoiceSessionInput,
    StopVoiceSessionOutput,
    TranscriptOutput,
    TranscriptQuery,
    WidgetVoiceTokenInput,
    WidgetVoiceTokenOutput,
)
from .services import session_start, session_stop_for_company, session_widget_token
from .throttling import RateLimitedViewMixin
from .transcripts import latency_summary

SESSION_ID_PATH = OpenApiParameter(
    "session_id", str, OpenApiParameter.PATH, description="The session's public id (1–64 of A-Z a-z 0-9 - _)."
)


def _company_matches(request: Request, company_id: int | None) -> Company:
    company = widget_company(request)
    # Another company's id with this key answers like an unknown id: no leak.
    if company_id is not None and company_id != company.pk:
        raise NotFound("No such company for this widget key.")
    return company


class WidgetSessionViewSet(RateLimitedViewMixin, viewsets.ViewSet):
    authentication_classes = [WidgetKeyAuthentication]
    permission_classes = [HasWidgetKey]
    # settings.RATE_LIMITS scopes (sessions/throttling.py)
    ip_rate_scopes = {"start": "start_per_ip", "widget_token": "token_per_ip"}
    key_rate_scopes = {"start": "start_per_key", "widget_token": "token_per_key"}

    @extend_schema(
        request=StartVoiceSessionInput,
        responses={
            201: StartVoiceSessionOutput,
            200: OpenApiResponse(
                StartVoiceSessionOutput, description="That session_id is live: it, with a fresh token."
            ),
            **errors(400, 401, 403, 404, 409, 415, 429, 503),
        },
    )
    def start(self, request: Request) -> Response:
        data = StartVoiceSessionInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        company = _company_matches(request, fields.pop("company_id"))
        if "voice_id" in fields:
            fields["tts_voice"] = fields.pop("voice_id")
        result = session_start(
            company=company,
            agent_id=fields.pop("agent_id"),
            session_id=fields.pop("session_id", None),
            participant_name=fields.pop("participant_name", ""),
            overrides=fields,
        )
        session = result.session
        body = StartVoiceSessionOutput(
            {
                "session_id": session.session_id,
                "room_name": session.agent_room_name,
                "livekit_url": settings.LIVEKIT_PUBLIC_URL,
                "user_token": result.user_token,
                "status": session.agent_status,
                "message": "Voice session started; the agent is on its way."
                if result.created
                else "This session is already live; here is a fresh token for it.",
            }
        ).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    @extend_schema(
        request=StopVoiceSessionInput,
        responses={200: StopVoiceSessionOutput, **errors(400, 401, 403, 404, 415)},
    )
    def stop(self, request: Request) -> Response:
        data = StopVoiceSessionInput(data=request.data)
        data.is_valid(raise_exception=True)
        company = _company_matches(request, data.validated_data.get("company_id"))
        session = session_stop_for_company(company=company, session_id=data.validated_data["session_id"])
        return Response(
            StopVoiceSessionOutput(
                {
                    "session_id": session.session_id,
                    "status": session.agent_status,
                    "message": "The session has ended."
                    if session.is_terminal
                    else "The agent is being stopped.",
                }
            ).data
        )

    @extend_schema(
        parameters=[SESSION_ID_PATH],
        responses={200: AgentStatusOutput, **errors(401, 403, 404)},
    )
    def agent_status(self, request: Request, session_id: str) -> Response:
        session = session_get_for_company(company=widget_company(request), session_id=session_id)
        if session is None:
            raise NotFound("No session with that session_id.")
        return Response(AgentStatusOutput(session).data)

    @extend_schema(
        request=WidgetVoiceTokenInput,
        responses={200: WidgetVoiceTokenOutput, **errors(400, 401, 403, 404, 409, 415, 429)},
    )
    def widget_token(self, request: Request) -> Response:
        data = WidgetVoiceTokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        company = _company_matches(request, data.validated_data.get("company_id"))
        session, token, identity = session_widget_token(
            company=company,
            session_id=data.validated_data["session_id"],
            participant_name=data.validated_data.get("participant_name", ""),
        )
        return Response(
            WidgetVoiceTokenOutput(
                {
                    "session_id": session.session_id,
                    "room_name": session.agent_room_name,
                    "livekit_url": settings.LIVEKIT_PUBLIC_URL,
                    "user_token": token,
                    "participant_identity": identity,
                    "status": session.agent_status,
                }
            ).data
        )


class StaffSessionViewSet(viewsets.ViewSet):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsStaff]

    @extend_schema(responses={200: ActiveAgentsOutput, **errors(403)})
    def active_agents(self, request: Request) -> Response:
        sessions = sessions_live().order_by("created_at")
        rows = ActiveAgentOutput(sessions, many=True).data
        return Response({"success": True, "count": len(rows), "agents": rows})


class TranscriptView(viewsets.ViewSet):
    """The stored transcript with per-turn latency: for the owning company's widget key, or staff."""

    authentication_classes = [WidgetKeyAuthentication, SessionAuthentication]
    permission_classes = [HasWidgetKey | IsStaff]

    @extend_schema(
        parameters=[
            SESSION_ID_PATH,
            TranscriptQuery,  # company_id, for staff when two companies share a session_id
        ],
        responses={200: TranscriptOutput, **errors(400, 401, 403, 404)},
    )
    def retrieve(self, request: Request, session_id: str) -> Response:
        query = TranscriptQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        if isinstance(request.auth, Company):
            session = session_get_for_company(company=request.auth, session_id=session_id)
        else:
            company_id = query.validated_data.get("company_id")
            session = session_for_staff(
                session_id=session_id, company_id=str(company_id) if company_id else None
            )
        if session is None:
            raise NotFound("No session with that session_id.")
        turns = list(session.turns.all())
        return Response(
            TranscriptOutput(
                {
                    "session_id": session.session_id,
                    "status": session.agent_status,
                    "turns": turns,
                    "usage": session.usage,
                    "latency": latency_summary(turns),
                }
            ).data
        )
