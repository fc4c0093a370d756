"""Create (or update) the demo company and agent profiles. Idempotent."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from voiceagents.catalog import AgentMode, LLMProvider, STTProvider, TTSProvider
from voiceagents.models import Company, VoiceAgent

DEMO_ORIGINS = ["http://127.0.0.1:8000", "http://localhost:8000"]


def _offline_unless_keys() -> dict[str, str]:
    """Cloud providers when their keys are set, offline ones otherwise (no account needed)."""
    return {
        "llm_provider": LLMProvider.OPENAI if settings.OPENAI_API_KEY else LLMProvider.ECHO,
        "stt_provider": STTProvider.DEEPGRAM if settings.DEEPGRAM_API_KEY else STTProvider.LOCAL,
        "tts_provider": TTSProvider.OPENAI if settings.OPENAI_API_KEY else TTSProvider.LOCAL,
    }


@transaction.atomic
def seed_demo() -> dict[str, Any]:
    company, _ = Company.objects.get_or_create(
        slug="demo",
        defaults={"name": "Demo Company", "allowed_origins": DEMO_ORIGINS, "max_concurrent_sessions": 20},
    )
    providers = _offline_unless_keys()
    agent, _ = VoiceAgent.objects.update_or_create(
        company=company,
        name="Demo assistant",
        defaults={
            "mode": AgentMode.ONE_TO_ONE,
            "greeting_message": "Hello! I am the demo assistant. How can I help?",
            **providers,
        },
    )
    conference, _ = VoiceAgent.objects.update_or_create(
        company=company,
        name="Demo conference assistant",
        defaults={
            "mode": AgentMode.CONFERENCE,
            "greeting_message": "Hello everyone! I am listening.",
            **providers,
        },
    )
    return {
        "company_id": company.pk,
        "agent_id": agent.pk,
        "conference_agent_id": conference.pk,
        "widget_key": company.widget_key,
    }


class Command(BaseCommand):
    help = "Create the demo company and agent profiles (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print only the ids and key as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = seed_demo()
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(self.style.SUCCESS("Demo company and agents are ready:"))
        for key, value in result.items():
            self.stdout.write(f"  {key}: {value}")
