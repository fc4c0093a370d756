from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from agentconnect import health
from agentconnect.errors import json_404
from console.api import ExportView

urlpatterns = [
    # The staff console's pages, under the admin site and its login.
    path("admin/console/", include("console.urls")),
    path("admin/", admin.site.urls),
    # Also answered by agentconnect.health.HealthCheckMiddleware before the host check.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/livekit-agents/", include("sessions.urls")),
    path("api/v1/console/export", ExportView.as_view(), name="console-export"),
    path("demo/", include("demo.urls")),
    path("staff/", include("sessions.staff_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="console/api/redoc.html"),
        name="api-redoc",
    ),
    # Unknown URLs under the API answer in the API's error shape, DEBUG or not.
    re_path(r"^api/", json_404),
]

handler404 = "agentconnect.errors.handler404"
handler500 = "agentconnect.errors.handler500"
