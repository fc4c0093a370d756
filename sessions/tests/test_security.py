"""Abuse control and the security review (issue 6), each point against the real services.

Rate limits (Redis), admission control under real concurrency (PostgreSQL,
one connection per thread), token grants (checked by livekit-server itself),
tenant isolation, webhook signatures, secrets kept out of logs, error bodies
and the admin, `check --deploy`, and prompts treated as data.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from livekit import api
from rest_framework.test import APIClient

from agentconnect.errors import AtCapacity, TooManySessions
from sessions import livekit_gateway as lk
from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_dispatch, session_finish_stop, session_start, session_transition
from sessions.throttling import IPThrottle, client_ip, parse_rate
from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.catalog import GREETING_MAX_LENGTH, SYSTEM_PROMPT_MAX_LENGTH
from voiceagents.models import Company, VoiceAgent

START = "/api/v1/livekit-agents/start-voice-session"
STOP = "/api/v1/livekit-agents/stop-voice-session"
STATUS = "/api/v1/livekit-agents/agent-status/{}"
TOKEN = "/api/v1/livekit-agents/widget-voice-token"
ACTIVE = "/api/v1/livekit-agents/active-agents"
TRANSCRIPT = "/api/v1/livekit-agents/sessions/{}/transcript"
WEBHOOK = "/api/v1/livekit-agents/webhook"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def widget_client(company: Company, ip: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    return client


@pytest.fixture
def no_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starts here test the API's own decisions; no dispatch task is queued."""
    monkeypatch.setattr("sessions.services._enqueue", lambda *a, **k: None)


@pytest.fixture
def limits(settings: Any) -> Callable[..., None]:
    def set_limits(**rates: str) -> None:
        settings.RATE_LIMITS = {
            "start_per_ip": "off",
            "start_per_key": "off",
            "token_per_ip": "off",
            "token_per_key": "off",
            **rates,
        }

    return set_limits


# --- rate limits --------------------------------------------------------------------------------


def test_start_is_limited_per_ip_with_429_and_retry_after(
    company: Company, agent: VoiceAgent, limits: Any, no_dispatch: None
) -> None:
    limits(start_per_ip="3/min")
    client = widget_client(company)
    body = {"agent_id": agent.pk, "company_id": company.pk}
    assert [client.post(START, body, format="json").status_code for _ in range(3)] == [201] * 3
    response = client.post(START, body, format="json")
    error = error_of(response, 429, "rate_limited")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["details"] == {"limit": "start_per_ip", "rate": "3/min", "retry_after": retry_after}
    assert "3/min" in error["message"] and "address" in error["message"]
    assert ConversationSession.objects.count() == 3
    # Another address is counted apart; other endpoints are not limited.
    assert widget_client(company, "198.51.100.7").post(START, body, format="json").status_code == 201
    assert client.get(STATUS.format("nope")).status_code == 404


def test_bad_widget_keys_count_against_the_ip_limit(company: Company, agent: VoiceAgent, limits: Any) -> None:
    limits(start_per_ip="2/min")
    guesser = APIClient(REMOTE_ADDR="203.0.113.9")
    for attempt in range(2):
        guesser.credentials(HTTP_X_WIDGET_KEY=f"wk_guess-{attempt}")
        error_of(guesser.post(START, {}, format="json"), 401, "authentication_failed")
    # The third guess is refused before the key is even looked up, right key or not.
    guesser.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    error_of(guesser.post(START, {"agent_id": agent.pk, "company_id": company.pk}, format="json"), 429, "rate_limited")


def test_forwarded_for_is_ignored_unless_a_trusted_proxy_header_is_configured(
    company: Company, agent: VoiceAgent, limits: Any, settings: Any, no_dispatch: None
) -> None:
    limits(start_per_ip="1/min")
    client = widget_client(company, "192.0.2.1")
    body = {"agent_id": agent.pk, "company_id": company.pk}
    assert client.post(START, body, format="json", HTTP_X_FORWARDED_FOR="10.1.1.1").status_code == 201
    # A client cannot escape its limit by making up a header.
    error_of(client.post(START, body, format="json", HTTP_X_FORWARDED_FOR="10.2.2.2"), 429, "rate_limited")

    settings.RATE_LIMIT_CLIENT_IP_HEADER = "X-Forwarded-For"
    settings.RATE_LIMIT_TRUSTED_PROXIES = 1
    # Behind our proxy: the address our proxy appended (rightmost) is the client;
    # what the client put in front of it is ignored.
    assert client.post(START, body, format="json", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.3.3.3").status_code == 201
    error_of(client.post(START, body, format="json", HTTP_X_FORWARDED_FOR="7.7.7.7, 10.3.3.3"), 429, "rate_limited")


def test_client_ip_groups_ipv6_by_64_and_unwraps_mapped_ipv4(rf: Any) -> None:
    a = rf.get("/", REMOTE_ADDR="2001:db8:1:2:aaaa::1")
    b = rf.get("/", REMOTE_ADDR="2001:db8:1:2:bbbb::2")
    assert client_ip(a) == client_ip(b) == "2001:db8:1:2::/64"
    assert client_ip(rf.get("/", REMOTE_ADDR="::ffff:192.0.2.5")) == "192.0.2.5"


def test_start_is_limited_per_widget_key_across_addresses(
    company: Company, agent: VoiceAgent, limits: Any, no_dispatch: None
) -> None:
    limits(start_per_key="2/min")
    body = {"agent_id": agent.pk, "company_id": company.pk}
    for n in range(2):
        assert widget_client(company, f"192.0.2.{n + 1}").post(START, body, format="json").status_code == 201
    error = error_of(widget_client(company, "192.0.2.99").post(START, body, format="json"), 429, "rate_limited")
    assert error["details"]["limit"] == "start_per_key" and "widget key" in error["message"]
    other = VoiceAgentFactory()
    response = widget_client(other.company, "192.0.2.99").post(
        START, {"agent_id": other.pk, "company_id": other.company_id}, format="json"
    )
    assert response.status_code == 201


def test_widget_token_is_limited_per_ip_and_per_key(
    company: Company, agent: VoiceAgent, limits: Any, no_dispatch: None
) -> None:
    session_start(company=company, agent_id=agent.pk, session_id="tok-limit")
    limits(token_per_ip="2/min", token_per_key="3/min")
    client = widget_client(company, "192.0.2.10")
    for _ in range(2):
        assert client.post(TOKEN, {"session_id": "tok-limit"}, format="json").status_code == 200
    assert error_of(client.post(TOKEN, {"session_id": "tok-limit"}, format="json"), 429, "rate_limited")[
        "details"
    ]["limit"] == "token_per_ip"
    assert widget_client(company, "192.0.2.11").post(TOKEN, {"session_id": "tok-limit"}, format="json").status_code == 200
    error = error_of(
        widget_client(company, "192.0.2.12").post(TOKEN, {"session_id": "tok-limit"}, format="json"), 429, "rate_limited"
    )
    assert error["details"]["limit"] == "token_per_key"


def test_the_limit_holds_under_concurrency_on_redis(rf: Any, limits: Any) -> None:
    """Forty simultaneous requests at a limit of 7: exactly 7 pass (atomic counter in Redis)."""
    assert "redis" in django_settings.CACHES["default"]["BACKEND"].lower()
    limits(start_per_ip="7/min")
    request = rf.post(START, REMOTE_ADDR="192.0.2.77")
    barrier = threading.Barrier(40)

    def one(_: int) -> bool:
        barrier.wait(timeout=10)
        return IPThrottle("start_per_ip").allow_request(request, None)

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    assert results.count(True) == 7


def test_limits_fail_open_when_the_cache_is_down(
    company: Company, agent: VoiceAgent, limits: Any, settings: Any, caplog: Any, no_dispatch: None
) -> None:
    limits(start_per_ip="1/min")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # the discard port: nothing listens
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    monkey = pytest.MonkeyPatch()
    monkey.setattr("sessions.throttling._last_cache_warning", 0.0)
    try:
        client = widget_client(company)
        body = {"agent_id": agent.pk, "company_id": company.pk}
        assert [client.post(START, body, format="json").status_code for _ in range(2)] == [201, 201]
    finally:
        monkey.undo()
    assert any("rate limits not applied" in r.getMessage() for r in caplog.records)


def test_rate_strings() -> None:
    assert parse_rate("20/min") == (20, 60)
    assert parse_rate("5/s") == (5, 1)
    assert parse_rate("100/hour") == (100, 3600)
    assert parse_rate("off") is None and parse_rate("") is None
    with pytest.raises(ValueError):
        parse_rate("many/min")


# --- admission control --------------------------------------------------------------------------


def _race_starts(jobs: list[tuple[Company, VoiceAgent]]) -> list[str]:
    """Start one session per job, all at once, each thread on its own database connection."""
    barrier = threading.Barrier(len(jobs))

    def one(job: tuple[Company, VoiceAgent]) -> str:
        company, agent = job
        try:
            barrier.wait(timeout=20)
            session_start(company=company, agent_id=agent.pk)
            return "ok"
        except TooManySessions:
            return "company_limit"
        except AtCapacity:
            return "at_capacity"
        finally:
            connection.close()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


def test_company_limit_is_atomic_under_concurrent_starts(company: Company, agent: VoiceAgent, no_dispatch: None) -> None:
    assert connection.vendor == "postgresql"
    Company.objects.filter(pk=company.pk).update(max_concurrent_sessions=3)
    company.refresh_from_db()
    outcomes = _race_starts([(company, agent)] * 12)
    assert outcomes.count("ok") == 3 and outcomes.count("company_limit") == 9
    assert ConversationSession.objects.filter(company=company).count() == 3


def test_deployment_cap_is_atomic_across_companies(settings: Any, no_dispatch: None) -> None:
    settings.MAX_LIVE_SESSIONS = 4
    agents = [VoiceAgentFactory(company=CompanyFactory(max_concurrent_sessions=10)) for _ in range(3)]
    outcomes = _race_starts([(a.company, a) for a in agents] * 4)
    assert outcomes.count("ok") == 4 and outcomes.count("at_capacity") == 8
    assert ConversationSession.objects.count() == 4


def test_refusals_say_why_and_ended_sessions_free_the_room(
    company: Company, agent: VoiceAgent, settings: Any, no_dispatch: None
) -> None:
    settings.MAX_LIVE_SESSIONS = 2
    Company.objects.filter(pk=company.pk).update(max_concurrent_sessions=1)
    client = widget_client(company)
    body = {"agent_id": agent.pk, "company_id": company.pk}
    assert client.post(START, {**body, "session_id": "a"}, format="json").status_code == 201
    error = error_of(client.post(START, {**body, "session_id": "b"}, format="json"), 429, "too_many_sessions")
    assert error["details"] == {"limit": 1, "scope": "company"}
    assert "limit (1)" in error["message"]

    other = VoiceAgentFactory()
    session_start(company=other.company, agent_id=other.pk)
    third = VoiceAgentFactory()
    response = widget_client(third.company).post(
        START, {"agent_id": third.pk, "company_id": third.company_id}, format="json"
    )
    error = error_of(response, 503, "at_capacity")
    assert error["details"] == {"limit": 2, "scope": "deployment"}
    assert "capacity of 2 live voice sessions" in error["message"]
    assert response["Retry-After"] == "30"

    # A session that ends gives its place back at once.
    ended = ConversationSession.objects.get(session_id="a")
    assert session_transition(session_pk=ended.pk, to=AgentStatus.FAILED, failure_reason="test")
    assert client.post(START, {**body, "session_id": "b"}, format="json").status_code == 201
