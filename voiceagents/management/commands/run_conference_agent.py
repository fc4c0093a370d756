"""`manage.py run_conference_agent dev|start`: the conference agent worker."""

from __future__ import annotations

from django.conf import settings

from voiceagents.worker.command import AgentWorkerCommand
from voiceagents.worker.server import WorkerSpec


class Command(AgentWorkerCommand):
    help = (
        "Run the conference agent worker (registers with LiveKit as agentconnect-conference): "
        "hears every person in the room and knows who said what."
    )

    def worker_spec(self) -> WorkerSpec:
        from voiceagents.worker.conference import conference_entrypoint, prewarm

        return WorkerSpec(
            agent_name=settings.LIVEKIT_CONFERENCE_AGENT_NAME,
            entrypoint=conference_entrypoint,
            prewarm=prewarm,
            http_port=settings.CONFERENCE_AGENT_HTTP_PORT,
            metrics_port=settings.CONFERENCE_AGENT_METRICS_PORT,
        )
