"""/healthz and /readyz against the real PostgreSQL, Redis and livekit-server, one outage at a time."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from agentconnect.tests.outages import database_unreachable

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED = "127.0.0.1:9"  # the discard port: nothing listens there
DEPENDENCIES = {"database", "broker", "livekit"}


def ready(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    return response.status_code, response.json()


def assert_only_down(body: dict[str, Any], down: str) -> None:
    checks = body["checks"]
    assert set(checks) == DEPENDENCIES
    for name, check in checks.items():
        assert isinstance(check["latency_ms"], float | int) and check["latency_ms"] >= 0
        if name == down:
            assert check["ok"] is False, name
            assert check["error"], name
        else:
            assert check == {"ok": True, "latency_ms": check["latency_ms"]}, name
    assert body["status"] == "unavailable"


def test_readyz_is_200_when_every_dependency_answers(client: Client) -> None:
    status, body = ready(client)
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == DEPENDENCIES
    assert all(check["ok"] for check in body["checks"].values())


def test_readyz_reports_the_broker_down(client: Client, settings: Any, caplog: Any) -> None:
    settings.CELERY_BROKER_URL = f"redis://{CLOSED}/0"
    status, body = ready(client)
    assert status == 503
    assert_only_down(body, "broker")
    assert "Connection refused" in body["checks"]["broker"]["error"]
    # One warning naming what is down, not Django's generic error line as well.
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert records == [("agentconnect.health", "WARNING", "not ready: broker down")]


def test_readyz_reports_livekit_down(client: Client, settings: Any) -> None:
    settings.LIVEKIT_URL = f"ws://{CLOSED}"
    status, body = ready(client)
    assert status == 503
    assert_only_down(body, "livekit")
    assert "LiveKitUnavailable" in body["checks"]["livekit"]["error"]


def test_readyz_reports_livekit_refusing_our_keys(client: Client, settings: Any) -> None:
    settings.LIVEKIT_API_SECRET = "not-the-server-secret-not-the-server-secret"
    status, body = ready(client)
    assert status == 503
    assert_only_down(body, "livekit")


def test_readyz_reports_the_database_down_and_recovers(client: Client) -> None:
    with database_unreachable():
        status, body = ready(client)
    assert status == 503
    assert_only_down(body, "database")
    assert "OperationalError" in body["checks"]["database"]["error"]
    # The same process reconnects once the database is back: no restart needed.
    status, body = ready(client)
    assert status == 200, body


def test_healthz_touches_no_dependency(client: Client, settings: Any) -> None:
    settings.CELERY_BROKER_URL = f"redis://{CLOSED}/0"
    settings.LIVEKIT_URL = f"ws://{CLOSED}"
    with database_unreachable():
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_probes_answer_a_host_outside_allowed_hosts(client: Client) -> None:
    # Orchestrators probe by IP or container name; the rest of the site keeps its host check.
    assert client.get("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="web:8000").status_code == 200
    assert client.get("/admin/login/", HTTP_HOST="web:8000").status_code == 400


def test_probes_are_get_only(client: Client) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
