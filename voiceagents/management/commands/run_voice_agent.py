"""`manage.py run_voice_agent dev|start`: the one-to-one voice agent worker."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from voiceagents.worker.server import WorkerSpec, run_worker


def voice_spec() -> WorkerSpec:
    from voiceagents.worker.voice import prewarm, voice_entrypoint

    return WorkerSpec(
        agent_name=settings.LIVEKIT_VOICE_AGENT_NAME,
        entrypoint=voice_entrypoint,
        prewarm=prewarm,
        http_port=settings.VOICE_AGENT_HTTP_PORT,
        metrics_port=settings.VOICE_AGENT_METRICS_PORT,
    )


class Command(BaseCommand):
    help = "Run the one-to-one voice agent worker (registers with LiveKit as agentconnect-voice)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "mode",
            choices=["dev", "start"],
            help="dev: debug logs, no idle process pool; start: production (prewarmed processes, health endpoint)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sys.exit(run_worker(voice_spec(), mode=options["mode"]))
