"""Container health checks, one per process role: `python deploy/healthcheck.py ROLE [URL]`.

Exit 0 when healthy, 1 otherwise (what Docker's HEALTHCHECK and compose expect).

  web               GET /healthz on the local gunicorn (or URL)
  voice-agent       GET / on the agent worker's own health server (livekit-agents
  conference-agent  AgentServer: 200 "OK", 503 when it lost LiveKit), on
                    VOICE_AGENT_HTTP_PORT / CONFERENCE_AGENT_HTTP_PORT (or URL)
  worker            this host's Celery worker answers a ping over the broker
  beat              the broker beat sends to is reachable
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

TIMEOUT = 5.0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return bool(response.status == 200)
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return False


def django_setup() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentconnect.settings")
    import django

    django.setup()


def worker_ok() -> bool:
    django_setup()
    from agentconnect.celery import app

    node = f"celery@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=TIMEOUT)
    if not any(node in reply for reply in replies):
        print(f"unhealthy: no ping reply from {node}", file=sys.stderr)
        return False
    return True


def beat_ok() -> bool:
    django_setup()
    from agentconnect.health import check_broker

    try:
        check_broker()
    except Exception as exc:
        print(f"unhealthy: broker: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    role, url = argv[0], (argv[1] if len(argv) > 1 else "")
    if role == "web":
        return 0 if http_ok(url or "http://127.0.0.1:8000/healthz") else 1
    if role in ("voice-agent", "conference-agent"):
        var, default = (
            ("VOICE_AGENT_HTTP_PORT", "8081")
            if role == "voice-agent"
            else ("CONFERENCE_AGENT_HTTP_PORT", "8082")
        )
        return 0 if http_ok(url or f"http://127.0.0.1:{os.environ.get(var) or default}/") else 1
    if role == "worker":
        return 0 if worker_ok() else 1
    if role == "beat":
        return 0 if beat_ok() else 1
    print(f"unknown role {role!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
