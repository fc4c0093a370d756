"""API fuzzing: schemathesis over every operation of the OpenAPI schema the code generates.

The schema is fetched from /api/schema/ (drf-spectacular) and each operation
is driven through the real WSGI application, on the real test database, with
generated valid and invalid requests. Every response must not be a 5xx and
must match the schema: its status is declared, its body fits the declared
shape (errors included: they are declared in the one error shape).

Bounded for `make test`: FUZZ_MAX_EXAMPLES examples per operation and mode
(default 30) and derandomized, so a run is repeatable; raise it for a deeper
local run. The number of requests sent is printed at the end of the run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from sessions.services import session_start
from tests.factories import CompanyFactory, VoiceAgentFactory
from tests.queueing import tasks_not_queued
from voiceagents.catalog import AgentMode

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))
SENT: dict[str, int] = {}


def counting(app: Callable[..., Any]) -> Callable[..., Any]:
    """Counts the requests the fuzzer sends, per status code."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: Any, *args: Any) -> Any:
            key = status.split(" ", 1)[0]
            SENT[key] = SENT.get(key, 0) + 1
            return start_response(status, headers, *args)

        return app(environ, start)

    return wsgi


schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", counting(get_wsgi_application()))
schema.config.generation.update(max_examples=MAX_EXAMPLES)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module", autouse=True)
def report_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    SENT.clear()
    yield
    total = sum(SENT.values())
    by_status = ", ".join(f"{code}: {n}" for code, n in sorted(SENT.items()))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nschemathesis: {total} generated requests ({by_status})")


@pytest.fixture
def world(settings: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A company with a live one-to-one and a conference session, a staff login, and no limits
    in the way: the fuzzer should reach the services, not the rate limiter (tested apart)."""
    settings.RATE_LIMITS = dict.fromkeys(settings.RATE_LIMITS, "off")
    settings.MAX_LIVE_SESSIONS = 0
    tasks_not_queued(monkeypatch)
    company = CompanyFactory(max_concurrent_sessions=10**6)
    agent = VoiceAgentFactory(company=company)
    conference = VoiceAgentFactory(company=company, mode=AgentMode.CONFERENCE)
    session_start(company=company, agent_id=agent.pk, session_id="visitor-42")
    session_start(company=company, agent_id=conference.pk, session_id="meeting-7")
    staff = get_user_model().objects.create_user("fuzz-staff", password="pw", is_staff=True)
    browser = Client()
    browser.force_login(staff)
    return {
        "company": company,
        "agent": agent,
        "session_cookie": browser.cookies["sessionid"].value,
        "turn": itertools.count(),
    }


@schema.parametrize()
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_matches_its_schema(case: Any, world: dict[str, Any]) -> None:
    company, agent = world["company"], world["agent"]
    turn = next(world["turn"])
    # Steer a share of the cases to real rows, so the success paths are fuzzed
    # too, not only "no such agent/session".
    if isinstance(case.body, dict) and turn % 2 == 0:
        if "company_id" in case.body:
            case.body["company_id"] = company.pk
        if "agent_id" in case.body:
            case.body["agent_id"] = agent.pk
        if "session_id" in case.body and turn % 4 == 0:
            case.body["session_id"] = "visitor-42" if turn % 8 == 0 else "meeting-7"
    if isinstance(case.body, dict) and (
        case.meta is None or not case.meta.is_negative_at(ParameterLocation.BODY)
    ):
        # a rule across fields, which the schema cannot state: the maximum delay is not below the minimum
        low, high = case.body.get("min_endpointing_delay"), case.body.get("max_endpointing_delay")
        if isinstance(low, int | float) and isinstance(high, int | float) and high < low:
            case.body["min_endpointing_delay"], case.body["max_endpointing_delay"] = high, low
    if case.path_parameters and "session_id" in case.path_parameters and turn % 3 == 0:
        case.path_parameters["session_id"] = "visitor-42"
    headers: dict[str, str] = {}
    negative_auth = case.meta is not None and any(
        case.meta.is_negative_at(location)
        for location in (ParameterLocation.HEADER, ParameterLocation.COOKIE)
    )
    if not negative_auth:
        # Real credentials, sent as explicit headers so schemathesis knows they are
        # valid (its ignored_auth check then probes without and with bad ones).
        headers = {"X-Widget-Key": company.widget_key, "Cookie": f"sessionid={world['session_cookie']}"}
    case.call_and_validate(headers=headers)
