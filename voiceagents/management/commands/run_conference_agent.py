"""`manage.py run_conference_agent dev|start`: the conference agent worker."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from voiceagents.worker.server import WorkerSpec, run_worker


def conference_spec() -> WorkerSpec:
    from voiceagents.worker.conference import conference_entrypoint, prewarm

    return WorkerSpec(
        agent_name=settings.LIVEKIT_CONFERENCE_AGENT_NAME,
        entrypoint=conference_entrypoint,
        prewarm=prewarm,
        http_port=settings.CONFERENCE_AGENT_HTTP_PORT,
        metrics_port=settings.CONFERENCE_AGENT_METRICS_PORT,
    )


class Command(BaseCommand):
    help = (
        "Run the conference agent worker (registers with LiveKit as agentconnect-conference): "
        "hears every person in the room and knows who said what."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "mode",
            choices=["dev", "start"],
            help="dev: debug logs, no idle process pool; start: production (prewarmed processes, health endpoint)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sys.exit(run_worker(conference_spec(), mode=options["mode"]))
