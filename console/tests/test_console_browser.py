"""The console in a real browser (Debian's Chromium, Playwright) against the live Django
server on 127.0.0.1 and PostgreSQL: the dashboard draws every chart, the live view follows
a state change, and the API docs render with every request off the machine refused."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from demo.tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from sessions.models import AgentStatus
from sessions.services import session_transition
from tests.factories import VoiceAgentFactory
from voiceagents.models import VoiceAgent

from .conftest import add_turn, make_session

pytestmark = pytest.mark.django_db(transaction=True)

CONSOLE_JS = ARTIFACTS.parent / "static" / "agentconnect" / "console.js"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Module-scoped, as in demo/tests: Playwright's sync API keeps an event loop on this
    thread while it runs, so it must stop with this module."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/install-deps.sh installs it"
    assert CONSOLE_JS.exists() and CONSOLE_JS.stat().st_size > 0, (
        "static/agentconnect/console.js is not built: run scripts/build-widget.sh (make test does)"
    )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Page:
    """A page that records its errors and refuses every request that leaves 127.0.0.1."""

    def __init__(self, browser: Any, live_server: Any, name: str, cookie: str | None) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        if cookie:
            self.context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        self.errors: list[str] = []  # uncaught exceptions in the page
        self.console_errors: list[str] = []
        self.refused: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on(
            "console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None
        )
        self.name = name

    def _route(self, route: Any) -> None:
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")

    def screenshot(self, suffix: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{suffix}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(chromium: Any, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    pages: list[Page] = []
    name = re.sub(r"[^\w.-]+", "_", request.node.name)

    def make(*, staff: bool = True) -> Page:
        cookie = None
        if staff:
            user = User.objects.create_superuser(f"staff{len(pages)}", "s@example.com", "pw-staff-123")
            client = Client()
            client.force_login(user)
            cookie = client.cookies["sessionid"].value
        page = Page(chromium, live_server, name, cookie)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def seed_week(agent: VoiceAgent) -> None:
    now = timezone.now()
    other = VoiceAgentFactory(company=agent.company, name="Sales")
    for day in range(7):
        for i in range(3):
            created = now - timedelta(days=day, hours=i)
            who = agent if i % 2 else other
            status = "failed" if i == 2 and day % 2 else "stopped"
            session = make_session(
                agent=who,
                status=status,
                created_at=created,
                dispatch_seconds=1.0 + i * 0.5 + day * 0.1,
                failure_reason="the agent did not join in time" if status == "failed" else "",
                usage={
                    "llm_prompt_tokens": 4000,
                    "llm_completion_tokens": 800,
                    "stt_audio_seconds": 90,
                    "tts_characters": 1200,
                },
                config={"stt_provider": "deepgram" if i else "groq"},
            )
            add_turn(session, 1, "user", "Hello", end_of_turn_delay=0.4 + i * 0.1, transcription_delay=0.1)
            add_turn(
                session, 2, "assistant", "Hi", response_latency=1.0 + i * 0.2, llm_ttft=0.5, tts_ttfb=0.2
            )


def test_dashboard_draws_every_chart_offline(open_page: Any, live_server: Any, agent: VoiceAgent) -> None:
    from playwright.sync_api import expect

    seed_week(agent)
    page = open_page()
    page.page.goto(f"{live_server.url}/admin/console/dashboard/")
    expect(page.page.locator("body")).to_have_attribute("data-charts-drawn", "6")
    for canvas in page.page.locator("canvas").all():
        expect(canvas).to_have_attribute("data-drawn", "true")
        box = canvas.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100
    expect(page.page.locator("#failure-reasons a")).to_have_text("the agent did not join in time")
    page.screenshot("dashboard")
    # a failed session's page, from the failure link: the banner, the tables, the timeline
    page.page.locator("#failure-reasons a").click()
    page.page.locator("#result_list tbody tr a").first.click()
    expect(page.page.locator(".console-failure")).to_contain_text("the agent did not join in time")
    expect(page.page.locator(".console-timeline tbody tr")).to_have_count(2)
    expect(page.page.locator(".latency-slowest")).to_have_count(2)
    expect(page.page.locator('input[name="_save"]')).to_have_count(0)
    page.screenshot("session")
    assert page.errors == [] and page.console_errors == []
    assert page.refused == []


def test_live_view_follows_a_state_change_and_stops_an_agent(
    open_page: Any, live_server: Any, agent: VoiceAgent, settings: Any
) -> None:
    from playwright.sync_api import expect

    settings.CONSOLE_LIVE_REFRESH_SECONDS = 0.5
    session = make_session(agent=agent, status="starting", dispatch_seconds=None)
    page = open_page()
    page.page.on("dialog", lambda dialog: dialog.accept())
    page.page.goto(f"{live_server.url}/admin/console/live/")
    row = page.page.locator(f'tr[data-session="{session.session_id}"]')
    expect(row).to_have_attribute("data-status", "starting")
    page.screenshot("starting")
    assert session_transition(session_pk=session.pk, to=AgentStatus.ACTIVE, agent_worker_id="AW_browser")
    expect(row).to_have_attribute("data-status", "active")
    expect(row.locator(".col-worker")).to_have_text("AW_browser")
    expect(row.locator('button[data-action="redispatch"]')).to_have_count(0)
    page.screenshot("active")
    row.locator('button[data-action="stop"]').click()
    expect(row).to_have_attribute("data-status", "stopping")
    page.screenshot("stopping")
    session.refresh_from_db()
    assert session.agent_status == AgentStatus.STOPPING
    assert page.errors == [] and page.console_errors == []


# ReDoc's "API docs by Redocly" credit always asks its vendor's CDN for a logo, and hides
# the image itself when that fails: the one request off the machine it may make.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.mark.parametrize(
    ("url", "ready", "may_refuse"),
    [("/api/docs/", ".opblock", set()), ("/api/redoc/", "[data-section-id]", {REDOC_LOGO})],
)
def test_api_docs_render_with_no_network(
    open_page: Any, live_server: Any, url: str, ready: str, may_refuse: set[str]
) -> None:
    from playwright.sync_api import expect

    page = open_page(staff=False)
    page.page.goto(f"{live_server.url}{url}")
    expect(page.page.locator(ready).first).to_be_visible()
    assert page.page.locator(ready).count() >= 4
    page.screenshot("docs")
    assert set(page.refused) <= may_refuse
    assert page.errors == []
    assert len(page.console_errors) == len(page.refused)  # only "failed to load" for what was refused
