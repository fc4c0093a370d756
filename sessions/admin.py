"""A read-mostly console for conversation sessions; actions call the services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from agentconnect.errors import ApplicationError
from console.sessions import as_rows, session_timeline, sessions_with_turn_stats

from .models import ConversationSession, HandoffStatus, VisitorMessage
from .services import session_redispatch, session_stop


class VisitorMessageInline(admin.TabularInline):
    model = VisitorMessage
    extra = 0
    can_delete = False
    verbose_name_plural = "messages taken for staff"
    fields = ("created_at", "name", "contact", "message")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ConversationSession)
class ConversationSessionAdmin(admin.ModelAdmin):
    list_display = (
        "session_id",
        "agent_status",
        "recovery_count",
        "company",
        "agent",
        "mode",
        "created_at",
        "started",
        "duration",
        "turns",
        "median_turn_latency",
        "handoff",
        "short_failure_reason",
    )
    list_filter = ("agent_status", "handoff_status", "mode", "company", "agent", "created_at")
    search_fields = ("session_id", "agent_room_name")
    date_hierarchy = "created_at"
    list_select_related = ("company", "agent", "handoff_joined_by")
    ordering = ("-created_at",)
    actions = ("stop_agent", "redispatch_agent")
    # Read-only: a session's record is written by the API, the worker and LiveKit, never by hand.
    change_form_template = "console/session/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("session_id", "agent_status", "status_changed_at"),
                    ("company", "agent", "mode"),
                    ("created_at", "agent_started_at", "agent_stopped_at", "duration"),
                    ("agent_room_name", "agent_worker_id", "agent_identity"),
                    ("visitor_identity", "dispatch_id", "redispatch_of"),
                    ("failure_reason", "end_reason"),
                )
            },
        ),
        (
            "Handoff to a person",
            {
                "fields": (
                    ("handoff", "handoff_reason"),
                    ("handoff_requested_at", "handoff_joined_at", "handoff_missed_at", "handoff_joined_by"),
                )
            },
        ),
        ("Configuration", {"fields": ("config_table",)}),
        ("Usage", {"fields": ("usage_table",)}),
        ("Timeline", {"fields": ("timeline",)}),
    )
    readonly_fields = [f.name for f in ConversationSession._meta.fields] + [
        "duration",
        "handoff",
        "config_table",
        "usage_table",
        "timeline",
    ]
    # tool calls are in the timeline, between the turns around them
    inlines = [VisitorMessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConversationSession]:
        return sessions_with_turn_stats(super().get_queryset(request))

    def has_change_permission(self, request: HttpRequest, obj: ConversationSession | None = None) -> bool:
        return False

    @admin.display(description="configuration")
    def config_table(self, obj: ConversationSession) -> SafeString:
        return SafeString(render_to_string("console/session/table.html", {"rows": as_rows(obj.config or {})}))

    @admin.display(description="usage")
    def usage_table(self, obj: ConversationSession) -> SafeString:
        return SafeString(render_to_string("console/session/table.html", {"rows": as_rows(obj.usage or {})}))

    @admin.display(description="turns")
    def timeline(self, obj: ConversationSession) -> SafeString:
        return SafeString(render_to_string("console/session/timeline.html", {"turns": session_timeline(obj)}))

    @admin.display(description="turns", ordering="turn_count")
    def turns(self, obj: ConversationSession) -> int:
        return getattr(obj, "turn_count", 0)

    @admin.display(description="median v2v (s)", ordering="median_turn_latency")
    def median_turn_latency(self, obj: ConversationSession) -> str:
        value = getattr(obj, "median_turn_latency", None)
        return "—" if value is None else f"{value:.3f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Sessions start through the API, which resolves and snapshots the configuration.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ConversationSession | None = None) -> bool:
        return False

    @admin.display(description="started", ordering="agent_started_at")
    def started(self, obj: ConversationSession) -> object:
        return obj.agent_started_at

    @admin.display(description="duration")
    def duration(self, obj: ConversationSession) -> str:
        seconds = obj.duration_seconds
        if seconds is None:
            return "—"
        minutes, sec = divmod(int(seconds), 60)
        return f"{minutes}:{sec:02d}"

    @admin.display(description="handoff")
    def handoff(self, obj: ConversationSession) -> str:
        wait = obj.handoff_wait_seconds
        if obj.handoff_status == HandoffStatus.REQUESTED and not obj.is_terminal:
            # highlighted: a visitor is waiting for a person now
            return format_html(
                '<span class="handoff-waiting" style="background:#fff3cd;padding:2px 6px;font-weight:bold">'
                'waiting {} s</span> <a class="button" href="{}">Join</a>',
                int(wait or 0),
                reverse("staff-call", args=[obj.pk]),
            )
        if not obj.handoff_status:
            return "—"
        who = obj.handoff_joined_by.get_username() if obj.handoff_joined_by else ""
        label = obj.get_handoff_status_display() + (f" ({who})" if who else "")
        return f"{label}, waited {int(wait or 0)} s"

    @admin.display(description="failure reason")
    def short_failure_reason(self, obj: ConversationSession) -> str:
        reason = obj.failure_reason
        return reason if len(reason) <= 80 else reason[:77] + "…"

    @admin.action(description="Stop agent")
    def stop_agent(self, request: HttpRequest, queryset: QuerySet[ConversationSession]) -> None:
        stopped = 0
        for session in queryset:
            if not session.is_terminal:
                session_stop(session=session)
                stopped += 1
        self.message_user(request, f"Stopping {stopped} agent(s).", messages.SUCCESS)

    @admin.action(description="Re-dispatch agent")
    def redispatch_agent(self, request: HttpRequest, queryset: QuerySet[ConversationSession]) -> None:
        for session in queryset:
            try:
                result = session_redispatch(session=session)
            except ApplicationError as exc:
                self.message_user(request, f"{session.session_id}: {exc.message}", messages.WARNING)
                continue
            if result.pk == session.pk:
                self.message_user(request, f"{session.session_id}: dispatch replaced.", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"{session.session_id}: started successor session {result.session_id}.",
                    messages.SUCCESS,
                )
