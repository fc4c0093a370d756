"""`manage.py run_voice_agent dev|start`: the one-to-one voice agent worker."""

from __future__ import annotations

from django.conf import settings

from voiceagents.worker.command import AgentWorkerCommand
from voiceagents.worker.server import WorkerSpec


class Command(AgentWorkerCommand):
    help = "Run the one-to-one voice agent worker (registers with LiveKit as agentconnect-voice)."

    def worker_spec(self) -> WorkerSpec:
        from voiceagents.worker.voice import prewarm, voice_entrypoint

        return WorkerSpec(
            agent_name=settings.LIVEKIT_VOICE_AGENT_NAME,
            entrypoint=voice_entrypoint,
            prewarm=prewarm,
            http_port=settings.VOICE_AGENT_HTTP_PORT,
            metrics_port=settings.VOICE_AGENT_METRICS_PORT,
        )
