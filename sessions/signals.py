"""CORS: a browser origin is allowed exactly when some active company lists it."""

from __future__ import annotations

from typing import Any

from corsheaders.signals import check_request_enabled
from django.dispatch import receiver
from django.http import HttpRequest

from voiceagents.models import Company


@receiver(check_request_enabled)
def cors_allow_company_origins(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    origin = request.headers.get("Origin", "").rstrip("/")
    if not origin:
        return False
    # JSON containment works on PostgreSQL; SQLite (make run) scans the few rows.
    for origins in Company.objects.filter(is_active=True).values_list("allowed_origins", flat=True):
        if origin in {o.rstrip("/") for o in origins or []}:
            return True
    return False
