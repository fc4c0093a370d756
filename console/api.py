"""The staff API: the console's export, for scripts (a staff login; a widget key sees nothing)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from sessions.authentication import IsStaff
from sessions.schema import errors

from .exports import FORMATS, export_response
from .forms import SessionFilterForm


class ExportView(APIView):
    authentication_classes = [SessionAuthentication, BasicAuthentication]
    permission_classes = [IsStaff]

    @extend_schema(
        summary="Export transcripts and per-turn metrics (staff)",
        parameters=[
            OpenApiParameter("as", str, enum=list(FORMATS), description="csv (default) or json"),
            OpenApiParameter(
                "start", OpenApiTypes.DATE, description="first day (default: 6 days before end)"
            ),
            OpenApiParameter("end", OpenApiTypes.DATE, description="last day (default: today)"),
            OpenApiParameter("company", int),
            OpenApiParameter("agent", int),
            OpenApiParameter("provider", str),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
            **errors(400, 401, 403),
        },
    )
    def get(self, request: Request) -> object:
        form = SessionFilterForm(data=request.query_params)
        fmt = request.query_params.get("as", "csv")
        errors = {} if fmt in FORMATS else {"as": [f"Choose one of: {', '.join(FORMATS)}."]}
        if not form.is_valid():
            errors.update({field: [str(e) for e in errs] for field, errs in form.errors.items()})
        if errors:
            raise ValidationError(errors)
        return export_response(form.to_filter(), fmt)
