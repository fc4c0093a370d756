"""Health endpoints for load balancers, orchestrators and humans.

- `/healthz`: the process is alive and serving (no dependency is touched), so
  a restart policy keyed on it never restarts the web tier for a database
  outage that a restart cannot fix.
- `/readyz`: the database, the Celery broker and the LiveKit server API are
  each reachable, with each one's result and latency; 200 when all are, else
  503, so a load balancer sends requests only where they can succeed.

Probes and Prometheus come by IP or by a container name, which
`ALLOWED_HOSTS` rightly refuses for everything else; `HealthCheckMiddleware`,
first in MIDDLEWARE, answers /healthz, /readyz and /metrics before Django's
host check (and before CORS, whose per-company origin check reads the
database). The same views are also in the URL conf.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

# How long the broker may take to accept a connection before it counts as down.
BROKER_TIMEOUT_SECONDS = 3.0
# A room name no session uses: listing it proves the LiveKit API answers and
# accepts our keys without transferring every room on a busy server.
PROBE_ROOM = "agentconnect-readyz-probe"


def check_database() -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    from agentconnect.celery import app

    # The Django setting is the source of truth for the broker URL (Celery reads it at start).
    with app.connection_for_write(
        url=settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS
    ) as conn:
        conn.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_SECONDS)


def check_livekit() -> None:
    from sessions import livekit_gateway

    livekit_gateway.rooms_existing([PROBE_ROOM])


def _timed(check: Callable[[], None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # any failure of a dependency is a "not ready", never a 500
        result: dict[str, Any] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    else:
        result = {"ok": True}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def readiness() -> dict[str, dict[str, Any]]:
    """Each dependency's result; the network checks run in parallel, so the probe takes the slowest one."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz") as pool:
        broker = pool.submit(_timed, check_broker)
        livekit = pool.submit(_timed, check_livekit)
        # Django's connections are per thread: the database is checked on the request's own.
        database = _timed(check_database)
        return {"database": database, "broker": broker.result(), "livekit": livekit.result()}


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return _no_store(JsonResponse({"status": "ok"}))


@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    checks = readiness()
    down = sorted(name for name, check in checks.items() if not check["ok"])
    body = {"status": "unavailable" if down else "ok", "checks": checks}
    response = _no_store(JsonResponse(body, status=503 if down else 200))
    if down:
        logger.warning(
            "not ready: %s down", ", ".join(down), extra={"checks": {name: checks[name] for name in down}}
        )
        # One line that says what is down, instead of Django's generic "Service Unavailable" error.
        response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    from agentconnect.metrics import metrics_view

    return metrics_view(request)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,
}


class HealthCheckMiddleware:
    """Answers GET/HEAD /healthz, /readyz and /metrics before host validation and the rest of the stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
