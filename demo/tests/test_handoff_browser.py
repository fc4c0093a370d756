"""Handoff to a person in headless Chromium: a visitor on the demo page in one browser, a
staff member in the admin in another, each with a fake microphone playing real speech.
The agent worker's LLM and STT are the OpenAI stub through the real plugins."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from playwright.sync_api import expect

from sessions.models import AgentStatus, ConversationSession, HandoffStatus, TranscriptTurn
from stubs.server import StubServer
from tests import processes
from tests.factories import VoiceAgentFactory
from tests.helpers import wait_for
from voiceagents.models import Company

from .conftest import BrowserRun, HostSite
from .test_widget_browser import celery_with_agent_name, save_output, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

TRIGGERS = {
    "person": {"name": "transfer_to_human", "arguments": {"reason": "The visitor asked for a person."}}
}
LONG_MS = 90_000


@pytest.fixture(autouse=True)
def demo_page(settings: Any) -> None:
    settings.DEMO_PAGE_ENABLED = True
    settings.RATE_LIMITS = dict.fromkeys(settings.RATE_LIMITS, "off")


@pytest.fixture
def company(live_server: Any, host_site: HostSite) -> Company:
    from tests.factories import CompanyFactory

    return CompanyFactory(allowed_origins=[live_server.url, host_site.origin], max_concurrent_sessions=5)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = StubServer()
    server.start()
    yield server
    server.stop()


@contextmanager
def stub_agent_worker(agent_name: str, stub: StubServer) -> Iterator[processes.Process]:
    env = processes.test_database_env()
    env.update(
        LIVEKIT_VOICE_AGENT_NAME=agent_name,
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=stub.openai_base_url,
        AGENT_PROVIDER_TIMEOUT_SECONDS="8",
    )
    worker = processes.Process(
        [sys.executable, "manage.py", "run_voice_agent", "dev"], env, "handoff agent worker"
    )
    try:
        worker.wait_for_output("registered worker", timeout=90)
        yield worker
    finally:
        worker.stop(timeout=30)
        save_output(worker)


def handoff_agent(company: Company, timeout: int) -> Any:
    return VoiceAgentFactory(
        company=company,
        name="Support agent",
        greeting_message="Hello, this is the support agent.",
        llm_provider="openai",
        stt_provider="openai",
        tts_provider="openai",
        allow_interruptions=False,
        tool_transfer_to_human=True,
        tool_take_message=True,
        handoff_timeout_seconds=timeout,
    )


def staff_page(browser_run: BrowserRun, live_server: Any) -> Any:
    """A staff member logged into the admin, in a browser of their own."""
    user = get_user_model().objects.create_user("sam", password="pw", is_staff=True, first_name="Sam")
    user.user_permissions.add(Permission.objects.get(codename="view_conversationsession"))
    login = Client()
    login.force_login(user)
    page = browser_run.page()
    page.context.add_cookies(
        [{"name": "sessionid", "value": login.cookies["sessionid"].value, "url": live_server.url}]
    )
    return page


def session_of(company: Company) -> ConversationSession:
    return wait_for(
        lambda: ConversationSession.objects.filter(company=company).first(), timeout=30, what="a session"
    )


def visitor_asks_for_a_person(page: Any, live_server: Any, agent: Any, stub: StubServer) -> None:
    stub.state.fixed_transcript = "I want to talk to a person please"
    page.goto(f"{live_server.url}/demo/?agent={agent.pk}&agent_timeout=90")
    page.get_by_role("button", name="Talk to Support agent").click()
    expect(status(page)).to_have_attribute("data-handoff", "waiting", timeout=LONG_MS)
    expect(page.locator(".ac-notice")).to_contain_text("Waiting for a person")


def test_staff_join_from_the_admin_and_the_visitor_hears_them(
    browser_run: BrowserRun, live_server: Any, company: Company, stub: StubServer
) -> None:
    stub.state.reset()
    stub.state.tool_triggers = TRIGGERS
    agent = handoff_agent(company, timeout=300)
    name = f"browser-handoff-{uuid.uuid4().hex[:8]}"
    with stub_agent_worker(name, stub), celery_with_agent_name(name):
        visitor = browser_run.page()
        visitor_asks_for_a_person(visitor, live_server, agent, stub)
        session = session_of(company)

        staff = staff_page(browser_run, live_server)
        # the console's live view: the request is there, highlighted, with the wait time
        staff.goto(f"{live_server.url}/admin/console/live/")
        row = staff.locator(f'tr.handoff-waiting[data-session="{session.session_id}"]')
        expect(row).to_be_visible()
        expect(row.locator(".col-handoff")).to_contain_text("waiting")
        # and in the sessions list and the waiting list
        staff.goto(f"{live_server.url}/admin/conversation_sessions/conversationsession/")
        expect(staff.locator(".handoff-waiting")).to_contain_text("waiting")
        staff.goto(f"{live_server.url}/staff/handoffs/")
        expect(staff.locator(f'tr.handoff[data-session="{session.session_id}"] .wait')).to_contain_text(" s")
        staff.goto(f"{live_server.url}/admin/console/live/")
        staff.locator(f'tr.handoff-waiting[data-session="{session.session_id}"] a.handoff-join').click()
        # the call page: the reason and the transcript so far, then Join
        expect(staff.locator("#reason")).to_have_text("The visitor asked for a person.")
        expect(staff.locator("#transcript li").first).to_contain_text("Hello, this is the support agent.")
        chat_before = stub.state.count("chat")
        staff.get_by_role("button", name="Join the call").click()
        expect(staff.locator("#call-state")).to_have_attribute("data-state", "connected", timeout=LONG_MS)

        # the visitor's widget: connected to a person, whose audio it plays
        expect(status(visitor)).to_have_attribute("data-handoff", "connected", timeout=LONG_MS)
        expect(visitor.locator(".ac-notice")).to_contain_text("connected to a person")
        wait_for(
            lambda: visitor.locator("audio[data-agentconnect-audio]").count() >= 2,
            timeout=60,
            what="the visitor playing the staff member's audio",
        )
        session.refresh_from_db()
        assert session.handoff_status == HandoffStatus.JOINED and session.handoff_joined_by is not None
        identity = staff.evaluate("window.agentconnectStaffCall.identity")

        # the agent said one line, then only transcribes: both speakers, attributed
        def spoken_by(who: str) -> bool:
            return TranscriptTurn.objects.filter(session=session, speaker_identity=who).exists()

        wait_for(lambda: spoken_by(identity), timeout=120, interval=0.5, what="the staff member transcribed")
        joined_at = session.handoff_joined_at
        wait_for(
            lambda: TranscriptTurn.objects.filter(
                session=session, speaker_identity=session.visitor_identity, created_at__gt=joined_at
            ).exists(),
            timeout=120,
            interval=0.5,
            what="the visitor transcribed after the join",
        )
        intro = TranscriptTurn.objects.filter(session=session, text__contains="from our team has joined")
        assert intro.count() == 1
        after = TranscriptTurn.objects.filter(
            session=session, role="assistant", sequence__gt=intro.get().sequence
        )
        assert not after.exists(), [t.text for t in after]
        assert stub.state.count("chat") == chat_before
        expect(staff.locator(f'#transcript li[data-speaker="{identity}"]').first).to_be_visible(
            timeout=30_000
        )

        # staff end the call: everything ends
        staff.get_by_role("button", name="End the call").click()
        wait_for(
            lambda: ConversationSession.objects.get(pk=session.pk).agent_status == AgentStatus.STOPPED,
            timeout=30,
            what="the session stopped",
        )
        expect(status(visitor)).to_have_attribute("data-state", "ended", timeout=30_000)


def test_nobody_joins_and_the_widget_says_the_assistant_is_back(
    browser_run: BrowserRun, live_server: Any, company: Company, stub: StubServer
) -> None:
    stub.state.reset()
    stub.state.tool_triggers = TRIGGERS
    agent = handoff_agent(company, timeout=5)
    name = f"browser-handoff-{uuid.uuid4().hex[:8]}"
    with stub_agent_worker(name, stub), celery_with_agent_name(name):
        visitor = browser_run.page()
        visitor_asks_for_a_person(visitor, live_server, agent, stub)
        stub.state.fixed_transcript = "ok then"  # the visitor stops asking
        expect(status(visitor)).to_have_attribute("data-handoff", "missed", timeout=LONG_MS)
        session = session_of(company)
        session.refresh_from_db()
        assert session.handoff_status == HandoffStatus.MISSED and session.handoff_missed_at
        expect(visitor.locator('.ac-line[data-speaker="agent"]').last).to_contain_text(
            "take a message", timeout=LONG_MS
        )
        visitor.get_by_role("button", name="End conversation").click()
        wait_for(
            lambda: ConversationSession.objects.get(pk=session.pk).agent_status == AgentStatus.STOPPED,
            timeout=30,
            what="the session stopped",
        )
