"""Reads for the demo page."""

from __future__ import annotations

from django.db.models import QuerySet

from voiceagents.models import VoiceAgent


def demo_agents() -> QuerySet[VoiceAgent]:
    """Every agent profile anyone may try: active agents of active companies."""
    return (
        VoiceAgent.objects.select_related("company")
        .filter(is_active=True, company__is_active=True)
        .order_by("company__name", "name", "pk")
    )
