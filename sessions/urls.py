from django.urls import path, re_path

from . import handoff_views, views, webhooks

app_name = "livekit_agents"

urlpatterns = [
    path(
        "start-voice-session",
        views.WidgetSessionViewSet.as_view({"post": "start"}),
        name="start-voice-session",
    ),
    path(
        "stop-voice-session",
        views.WidgetSessionViewSet.as_view({"post": "stop"}),
        name="stop-voice-session",
    ),
    re_path(
        r"^agent-status/(?P<session_id>[^/]{1,200})$",
        views.WidgetSessionViewSet.as_view({"get": "agent_status"}),
        name="agent-status",
    ),
    path(
        "widget-voice-token",
        views.WidgetSessionViewSet.as_view({"post": "widget_token"}),
        name="widget-voice-token",
    ),
    path(
        "active-agents",
        views.StaffSessionViewSet.as_view({"get": "active_agents"}),
        name="active-agents",
    ),
    re_path(
        r"^sessions/(?P<session_id>[^/]{1,200})/transcript$",
        views.TranscriptView.as_view({"get": "retrieve"}),
        name="transcript",
    ),
    path("handoffs", handoff_views.HandoffViewSet.as_view({"get": "waiting"}), name="handoffs"),
    # any id reaches the view, which answers 404 in the API's shape for one that is not a number
    re_path(
        r"^handoffs/(?P<pk>[^/]+)$",
        handoff_views.HandoffViewSet.as_view({"get": "retrieve"}),
        name="handoff",
    ),
    re_path(
        r"^handoffs/(?P<pk>[^/]+)/join$",
        handoff_views.HandoffViewSet.as_view({"post": "join"}),
        name="handoff-join",
    ),
    re_path(
        r"^handoffs/(?P<pk>[^/]+)/end$",
        handoff_views.HandoffViewSet.as_view({"post": "end"}),
        name="handoff-end",
    ),
    path("webhook", webhooks.livekit_webhook, name="webhook"),
]
