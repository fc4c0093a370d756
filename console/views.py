"""The staff console's pages under the admin site: dashboard, live view, export.

Every view is wrapped by admin.site.admin_view (console/urls.py): staff only, others
are sent to the admin login.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from agentconnect.errors import ApplicationError
from sessions.models import ConversationSession
from sessions.services import session_redispatch, session_stop

from . import analytics
from .exports import FORMATS, export_response
from .forms import SessionFilterForm
from .live import live_rows
from .stats import exact_percentiles


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    form = SessionFilterForm(data=request.GET)
    if not form.is_valid():
        return render(
            request,
            "console/dashboard.html",
            _context(request, "Dashboard", form=form, data=None),
            status=400,
        )
    if not exact_percentiles():
        return render(
            request,
            "console/dashboard.html",
            _context(request, "Dashboard", form=form, data=None, needs_postgresql=True),
        )
    f = form.to_filter()
    # Show the dates in effect (the defaults too) in the filter's fields.
    form = SessionFilterForm(data={**request.GET.dict(), "start": f.start, "end": f.end})
    data = analytics.dashboard(f)
    query = urlencode(f.querystring())
    return render(
        request,
        "console/dashboard.html",
        _context(
            request, "Dashboard", form=form, data=data, filter=f, query=query, time_zone=settings.TIME_ZONE
        ),
    )


@require_GET
def live(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "console/live.html",
        _context(
            request,
            "Live agents",
            csrf=get_token(request),
            refresh_seconds=settings.CONSOLE_LIVE_REFRESH_SECONDS,
            stuck_after=settings.CONSOLE_STUCK_AFTER_SECONDS,
        ),
    )


@require_GET
def live_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"rows": live_rows()})


def _act(request: HttpRequest, pk: int, action: str) -> JsonResponse:
    session = get_object_or_404(ConversationSession, pk=pk)
    try:
        if action == "stop":
            session = session_stop(session=session)
            message = f"{session.session_id}: {session.agent_status}."
        else:
            result = session_redispatch(session=session)
            message = (
                f"{session.session_id}: dispatch replaced."
                if result.pk == session.pk
                else f"{session.session_id}: started successor session {result.session_id}."
            )
    except ApplicationError as exc:
        return JsonResponse({"success": False, "message": f"{session.session_id}: {exc.message}"}, status=409)
    return JsonResponse({"success": True, "message": message})


@require_POST
def live_stop(request: HttpRequest, pk: int) -> JsonResponse:
    return _act(request, pk, "stop")


@require_POST
def live_redispatch(request: HttpRequest, pk: int) -> JsonResponse:
    return _act(request, pk, "redispatch")


@require_GET
def export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    form = SessionFilterForm(data=request.GET)
    fmt = request.GET.get("as", "csv")
    if fmt not in FORMATS:
        form.add_error(None, f"Export as one of: {', '.join(FORMATS)}.")
    if not form.is_valid():
        return render(
            request,
            "console/dashboard.html",
            _context(request, "Dashboard", form=form, data=None),
            status=400,
        )
    return export_response(form.to_filter(), fmt)
