"""The voice widget in a real browser (Debian's Chromium, Playwright) against
the real stack on 127.0.0.1: live Django server, PostgreSQL, Redis,
livekit-server, and for the conversation a Celery worker and an agent worker.

The widget lives in a shadow root; Playwright's CSS locators pierce it.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import expect

from sessions import livekit_gateway as lk
from sessions.models import LIVE_STATUSES, AgentStatus, ConversationSession
from sessions.services import session_start
from tests import processes
from tests.factories import CompanyFactory, VoiceAgentFactory
from tests.helpers import wait_for
from voiceagents.catalog import AgentMode, LLMProvider, STTProvider, TTSProvider
from voiceagents.models import Company, VoiceAgent

from .conftest import ARTIFACTS, ROOT, VISITOR_SENTENCE, BrowserRun, HostSite, off_loop, open_host_page

pytestmark = pytest.mark.django_db(transaction=True)

GREETING = "Hello from the browser test agent. How can I help?"
OFFLINE = {
    "stt_provider": STTProvider.LOCAL,
    "llm_provider": LLMProvider.ECHO,
    "tts_provider": TTSProvider.LOCAL,
}
# Long enough for a loaded machine; the agent-timeout test sets its own short one.
EXPECT_MS = 30_000


@pytest.fixture(autouse=True)
def demo_enabled(settings: Any) -> None:
    settings.DEMO_PAGE_ENABLED = True
    # These tests start many sessions from 127.0.0.1; the per-IP limits have tests of their own.
    if hasattr(settings, "RATE_LIMITS"):
        settings.RATE_LIMITS = dict.fromkeys(settings.RATE_LIMITS, "off")


@pytest.fixture
def company(live_server: Any, host_site: HostSite) -> Company:
    port = os.environ.get("TEST_LIVESERVER_PORT", "18765")
    assert live_server.url == f"http://127.0.0.1:{port}", (
        f"livekit-server's webhooks point at 127.0.0.1:{port}"
    )
    return CompanyFactory(allowed_origins=[live_server.url, host_site.origin], max_concurrent_sessions=5)


@pytest.fixture
def agent(company: Company) -> VoiceAgent:
    return VoiceAgentFactory(company=company, name="Browser agent", greeting_message=GREETING, **OFFLINE)


def widget_attrs(company: Company, agent: VoiceAgent, **extra: str) -> dict[str, str]:
    return {
        "widget-key": company.widget_key,
        "company-id": str(company.pk),
        "agent-id": str(agent.pk),
        "button-label": "Talk to us",
        "color": "#0f766e",
        **extra,
    }


def sessions_of(company: Company) -> list[ConversationSession]:
    return list(ConversationSession.objects.filter(company=company).order_by("created_at"))


def status(page: Any) -> Any:
    return page.locator(".ac-status")


def alert(page: Any) -> Any:
    return page.locator(".ac-alert")


def expect_error(page: Any, kind: str, message: str | re.Pattern[str]) -> None:
    expect(alert(page)).to_be_visible(timeout=EXPECT_MS)
    expect(alert(page)).to_have_attribute("data-error", kind)
    expect(alert(page)).to_contain_text(message)
    expect(status(page)).to_have_attribute("data-state", "error")
    # the way out needs no reload
    expect(page.locator(".ac-restart")).to_be_visible()
    expect(page.locator(".ac-restart")).to_have_text("Try again")
    expect(page.locator(".ac-end")).to_be_hidden()


def test_a_script_tag_missing_its_agent_says_so_instead_of_a_broken_button(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    attrs = widget_attrs(company, agent)
    del attrs["agent-id"]
    page = browser_run.page()
    open_host_page(page, host_site, live_server_url=live_server.url, attrs=attrs)
    expect(page.get_by_role("button", name="Talk to us")).to_be_disabled()
    expect(page.get_by_role("alert")).to_have_text("Voice widget is not configured: missing data-agent-id.")
    assert page.evaluate("typeof window.AgentConnectVoice.mount") == "function"
    assert sessions_of(company) == []


# --- the server refuses ------------------------------------------------------------------


def test_wrong_widget_key_shows_the_api_message(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    page = browser_run.page()
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"widget-key": "wk_not-the-key"}),
    )
    page.locator(".ac-launcher").click()
    expect_error(page, "server", "Invalid widget key.")
    expect(alert(page)).to_have_attribute("data-code", "authentication_failed")
    assert sessions_of(company) == []


def test_origin_unknown_to_every_company_is_reported_as_blocked(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    # No active company lists the page's origin, so the browser gets no CORS
    # headers and cannot read the API's answer; the widget says what happened.
    company.allowed_origins = ["https://shop.example.com"]
    company.save()
    page = browser_run.page()
    open_host_page(page, host_site, live_server_url=live_server.url, attrs=widget_attrs(company, agent))
    page.locator(".ac-launcher").click()
    expect_error(
        page, "blocked", f"This website ({host_site.origin}) is not allowed to use this voice widget"
    )
    assert sessions_of(company) == []


def test_origin_allowed_only_for_another_company_gets_the_api_refusal(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    company.allowed_origins = ["https://shop.example.com"]
    company.save()
    CompanyFactory(allowed_origins=[host_site.origin])  # CORS lets the page read the refusal
    page = browser_run.page()
    open_host_page(page, host_site, live_server_url=live_server.url, attrs=widget_attrs(company, agent))
    page.locator(".ac-launcher").click()
    expect_error(page, "server", f"Origin {host_site.origin} is not allowed for this widget key.")
    expect(alert(page)).to_have_attribute("data-code", "permission_denied")
    assert sessions_of(company) == []


def test_session_cap_shows_the_too_many_sessions_message(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    company.max_concurrent_sessions = 1
    company.save()
    session_start(company=company, agent_id=agent.pk, session_id="already-live")
    page = browser_run.page()
    open_host_page(page, host_site, live_server_url=live_server.url, attrs=widget_attrs(company, agent))
    page.locator(".ac-launcher").click()
    expect_error(page, "server", "This company already has 1 live sessions")
    expect(alert(page)).to_have_attribute("data-code", "too_many_sessions")
    assert [s.session_id for s in sessions_of(company)] == ["already-live"]


def test_rate_limit_shows_the_api_message_and_retry_needs_no_reload(
    browser_run: BrowserRun,
    live_server: Any,
    host_site: HostSite,
    company: Company,
    agent: VoiceAgent,
    settings: Any,
) -> None:
    # Per widget key: this company's key is new, so its counter starts at zero.
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "start_per_key": "1/hour"}
    page = browser_run.page()
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"agent-timeout": "120"}),
    )
    page.locator(".ac-launcher").click()
    expect_waiting_for_agent(page)
    page.get_by_role("button", name="End conversation").click()
    page.get_by_role("button", name="Start a new conversation").click()
    expect_error(
        page, "server", re.compile(r"Too many requests from this .*: the limit is 1/hour\. Retry in \d+ s\.")
    )
    expect(alert(page)).to_have_attribute("data-code", "rate_limited")
    assert len(sessions_of(company)) == 1


# --- the visitor's side: microphone, keyboard, leaving ---------------------------------


def room_identities(room_name: str) -> set[str]:
    """Who is in the room now, by LiveKit's own account (no room: nobody)."""
    if room_name not in off_loop(lk.rooms_existing, [room_name]):
        return set()
    return {p.identity for p in off_loop(lk.room_participants, room_name)}


def status_of(session: ConversationSession) -> str:
    session.refresh_from_db()
    return session.agent_status


def expect_waiting_for_agent(page: Any) -> None:
    """Connected to the room (microphone published), no agent yet."""
    expect(status(page)).to_have_attribute("data-state", "connecting", timeout=EXPECT_MS)
    expect(status(page)).to_contain_text("waiting for the assistant to join", timeout=EXPECT_MS)


def test_microphone_denied_then_allowed_without_reload(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    # No --use-fake-ui-for-media-stream and no microphone permission: getUserMedia is refused.
    page = browser_run.page(fake_ui=False, microphone=False)
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"agent-timeout": "120"}),
    )
    page.locator(".ac-launcher").click()
    expect_error(page, "mic-denied", "Microphone access was denied")
    assert sessions_of(company) == [], "a visitor who refuses the microphone must not create a session"

    # The visitor allows the microphone and tries again, on the same page.
    page.context.grant_permissions(["microphone"], origin=host_site.origin)
    page.locator(".ac-restart").click()
    expect(alert(page)).to_be_hidden()
    expect_waiting_for_agent(page)
    (session,) = sessions_of(company)
    assert session.visitor_identity in wait_for(
        lambda: room_identities(session.agent_room_name), timeout=20, what="the visitor in the LiveKit room"
    )

    page.get_by_role("button", name="End conversation").click()
    expect(status(page)).to_have_attribute("data-state", "ended")
    expect(status(page)).to_contain_text("Conversation ended")
    assert wait_for(
        lambda: status_of(session) in (AgentStatus.STOPPING, AgentStatus.STOPPED),
        timeout=20,
        what="the session to be stopping",
    )
    wait_for(
        lambda: session.visitor_identity not in room_identities(session.agent_room_name),
        timeout=20,
        what="the visitor to leave the room",
    )


@contextmanager
def celery_with_agent_name(agent_name: str) -> Iterator[processes.Process]:
    """A real Celery worker whose dispatches name `agent_name`: unique per test, so
    no agent worker of another test run on this machine takes the job."""
    env = processes.test_database_env()
    env["LIVEKIT_VOICE_AGENT_NAME"] = agent_name
    env["LIVEKIT_CONFERENCE_AGENT_NAME"] = f"{agent_name}-conference"
    with processes.celery_worker(env) as worker:
        try:
            yield worker
        finally:
            save_output(worker)


def test_agent_never_joining_times_out_and_stops_the_session(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    # The dispatch is real (room and dispatch created by a Celery worker), but no
    # agent worker is registered under its name, so no agent ever joins.
    with celery_with_agent_name(f"nobody-{uuid.uuid4().hex[:8]}"):
        page = browser_run.page()
        open_host_page(
            page,
            host_site,
            live_server_url=live_server.url,
            attrs=widget_attrs(company, agent, **{"agent-timeout": "4"}),
        )
        page.locator(".ac-launcher").click()
        expect_waiting_for_agent(page)
        (session,) = sessions_of(company)
        wait_for(
            lambda: status_of(session) == AgentStatus.STARTING, timeout=30, what="the dispatch (starting)"
        )
        expect_error(page, "agent-timeout", "The assistant did not join within 4 seconds")
        # The widget hung up and stopped the session; the Celery worker closed the room.
        wait_for(
            lambda: status_of(session) == AgentStatus.STOPPED, timeout=30, what="the session to be stopped"
        )
        wait_for(
            lambda: not room_identities(session.agent_room_name),
            timeout=20,
            what="the room to be empty or gone",
        )
    assert session.agent_started_at is None


def test_page_unload_stops_the_session(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    page = browser_run.page()
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"agent-timeout": "120"}),
    )
    page.locator(".ac-launcher").click()
    expect_waiting_for_agent(page)
    (session,) = sessions_of(company)
    assert status_of(session) in LIVE_STATUSES
    page.goto("about:blank")  # the visitor leaves: a keepalive request outlives the page
    assert wait_for(
        lambda: status_of(session) in (AgentStatus.STOPPING, AgentStatus.STOPPED),
        timeout=20,
        what="the session to be stopped by the unload request",
    )
    wait_for(
        lambda: session.visitor_identity not in room_identities(session.agent_room_name),
        timeout=20,
        what="the visitor to leave the room",
    )


def test_keyboard_only_with_labelled_controls_and_visible_focus(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    page = browser_run.page()
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"agent-timeout": "120"}),
    )
    launcher = page.get_by_role("button", name="Talk to us")
    expect(launcher).to_be_visible()
    assert launcher.get_attribute("aria-expanded") == "false"
    page.keyboard.press("Tab")  # the page's own link
    page.keyboard.press("Tab")
    expect(launcher).to_be_focused()
    ring = launcher.evaluate(
        "b => { const s = getComputedStyle(b); return [s.outlineStyle, s.outlineWidth, b.matches(':focus-visible')] }"
    )
    assert ring == ["solid", "3px", True], ring

    page.keyboard.press("Enter")
    expect(launcher).to_be_hidden()
    expect(page.get_by_role("heading", name="Voice assistant")).to_be_focused()
    expect(page.get_by_role("status")).to_have_attribute("aria-live", "polite")
    log = page.get_by_role("log", name="Conversation transcript")
    expect(log).to_be_visible()
    expect(log).to_have_attribute("aria-live", "polite")
    expect_waiting_for_agent(page)

    mute = page.get_by_role("button", name="Mute microphone")
    page.keyboard.press("Tab")
    expect(mute).to_be_focused()
    page.keyboard.press("Space")
    unmute = page.get_by_role("button", name="Unmute microphone")
    expect(unmute).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Tab")
    end = page.get_by_role("button", name="End conversation")
    expect(end).to_be_focused()
    page.keyboard.press("Enter")
    expect(status(page)).to_have_attribute("data-state", "ended")
    restart = page.get_by_role("button", name="Start a new conversation")
    expect(restart).to_be_focused()
    page.keyboard.press("Escape")  # closes the panel once the conversation is over
    expect(launcher).to_be_visible()
    expect(launcher).to_be_focused()
    assert launcher.get_attribute("aria-expanded") == "false"
    (session,) = sessions_of(company)
    assert wait_for(
        lambda: status_of(session) in (AgentStatus.STOPPING, AgentStatus.STOPPED),
        timeout=20,
        what="the session to be stopping",
    )


def test_connection_drop_shows_reconnecting_and_recovers(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    page = browser_run.page()
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"agent-timeout": "300"}),
    )
    page.locator(".ac-launcher").click()
    expect_waiting_for_agent(page)
    notice = page.locator(".ac-notice")
    page.context.set_offline(True)  # the signal connection to livekit-server drops
    expect(status(page)).to_have_attribute("data-state", "reconnecting", timeout=EXPECT_MS)
    expect(status(page)).to_contain_text("Connection lost")
    expect(notice).to_contain_text("The connection dropped")
    page.context.set_offline(False)
    expect_waiting_for_agent(page)  # back in the same room, still waiting for the agent
    expect(notice).to_be_hidden()
    expect(alert(page)).to_be_hidden()
    (session,) = sessions_of(company)
    assert status_of(session) in LIVE_STATUSES
    assert session.visitor_identity in room_identities(session.agent_room_name)


@pytest.mark.e2e
def test_long_outage_rejoins_with_a_fresh_token(
    browser_run: BrowserRun, live_server: Any, host_site: HostSite, company: Company, agent: VoiceAgent
) -> None:
    """Once the SDK gives up resuming (about 45 s), the widget asks widget-voice-token
    for a new token and joins the same conversation again: same session, same visitor."""
    page = browser_run.page()
    open_host_page(
        page,
        host_site,
        live_server_url=live_server.url,
        attrs=widget_attrs(company, agent, **{"agent-timeout": "600"}),
    )
    page.locator(".ac-launcher").click()
    expect_waiting_for_agent(page)
    (session,) = sessions_of(company)
    page.context.set_offline(True)
    expect(status(page)).to_contain_text("rejoining the conversation", timeout=150_000)
    with page.expect_response(
        lambda r: r.url.endswith("/widget-voice-token") and r.request.method == "POST" and r.status == 200,
        timeout=EXPECT_MS,
    ):
        page.context.set_offline(False)
    expect_waiting_for_agent(page)
    expect(alert(page)).to_be_hidden()
    assert [s.session_id for s in sessions_of(company)] == [session.session_id]
    assert status_of(session) in LIVE_STATUSES
    wait_for(
        lambda: session.visitor_identity in room_identities(session.agent_room_name),
        timeout=20,
        what="the visitor back in the room",
    )


# --- the demo page ----------------------------------------------------------------------------


def test_demo_page_conference_join_as_another_person(
    browser_run: BrowserRun, live_server: Any, company: Company
) -> None:
    conference = VoiceAgentFactory(company=company, name="Team room", mode=AgentMode.CONFERENCE, **OFFLINE)
    page = browser_run.page()
    page.goto(f"{live_server.url}/demo/?agent={conference.pk}&agent_timeout=120")
    expect(page.get_by_role("link", name=re.compile("Team room"))).to_have_attribute("aria-current", "page")
    join_link = page.get_by_role("link", name="join as another person")
    expect(join_link).to_be_hidden()
    page.get_by_role("button", name="Talk to Team room").click()
    expect_waiting_for_agent(page)
    expect(join_link).to_be_visible()
    (session,) = sessions_of(company)
    assert f"join={session.session_id}" in (join_link.get_attribute("href") or "")

    with page.context.expect_page() as opened:
        join_link.click()
    second = opened.value
    browser_run.pages.append(second)
    second.set_default_timeout(20_000)
    expect(second.get_by_text(f"You are joining conversation {session.session_id}")).to_be_visible()
    second.get_by_role("button", name="Join the conversation").click()
    expect_waiting_for_agent(second)

    def two_people() -> set[str]:
        people = room_identities(session.agent_room_name)
        return people if len(people) == 2 else set()

    people = wait_for(two_people, timeout=20, what="two participants in the conference room")
    assert session.visitor_identity in people
    (guest,) = people - {session.visitor_identity}
    assert guest.startswith("guest-")

    # The second person leaving does not end the conversation for the first.
    second.get_by_role("button", name="End conversation").click()
    expect(status(second)).to_have_attribute("data-state", "ended")
    wait_for(
        lambda: room_identities(session.agent_room_name) == {session.visitor_identity},
        timeout=20,
        what="the guest to leave the room",
    )
    assert status_of(session) in LIVE_STATUSES
    expect(status(page)).to_have_attribute("data-state", "connecting")
    page.get_by_role("button", name="End conversation").click()
    expect(join_link).to_be_hidden()
    assert wait_for(
        lambda: status_of(session) in (AgentStatus.STOPPING, AgentStatus.STOPPED),
        timeout=20,
        what="the session to be stopping",
    )


# --- a whole conversation with the agent worker ----------------------------------------------


@contextmanager
def voice_agent_worker(agent_name: str) -> Iterator[processes.Process]:
    """`manage.py run_voice_agent dev`, registered with livekit-server under `agent_name`."""
    command = ROOT / "voiceagents" / "management" / "commands" / "run_voice_agent.py"
    if not command.exists():
        pytest.fail(
            "run_voice_agent not available: voiceagents/management/commands/run_voice_agent.py is missing"
        )
    env = processes.test_database_env()
    env["LIVEKIT_VOICE_AGENT_NAME"] = agent_name
    worker = processes.Process(
        [sys.executable, "manage.py", "run_voice_agent", "dev"], env, "voice agent worker"
    )
    try:
        worker.wait_for_output("registered worker", timeout=90)
        yield worker
    finally:
        code = worker.stop(timeout=30)
        save_output(worker)
        assert code == 0, f"the agent worker exited with {code} on SIGTERM:\n{worker.tail()}"


def save_output(proc: processes.Process) -> None:
    """Keep a child process's output next to the screenshots, for the failures that need it."""
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", proc.name)
    (ARTIFACTS / f"{name}.log").write_text("\n".join(proc.lines) + "\n")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.mark.e2e
def test_demo_page_conversation_with_the_agent(
    browser_run: BrowserRun, live_server: Any, company: Company, agent: VoiceAgent
) -> None:
    # The fake microphone loops its sentence whatever the agent does; an agent that
    # cannot be interrupted finishes each line, so the transcript is the same every run.
    agent.allow_interruptions = False
    agent.save()
    name = f"browser-voice-{uuid.uuid4().hex[:8]}"
    with voice_agent_worker(name) as worker, celery_with_agent_name(name):
        page = browser_run.page()
        # Every status the widget shows, in order (it announces them as DOM events).
        page.add_init_script(
            "window.__states = []; document.addEventListener('agentconnect:state',"
            " (e) => window.__states.push(e.detail.state));"
        )
        # dev mode starts a job process per conversation: give the agent time to join
        page.goto(f"{live_server.url}/demo/?agent={agent.pk}&agent_timeout=90")
        page.get_by_role("button", name="Talk to Browser agent").click()

        # The agent joins and greets: its words arrive on lk.transcription as it speaks.
        greeting = page.locator('.ac-line[data-speaker="agent"]').first
        expect(greeting).to_contain_text(GREETING, timeout=90_000)
        expect(greeting.locator(".ac-who")).to_have_text("Browser agent:")
        # lk.agent.state: after speaking the greeting the agent listens.
        expect(status(page)).to_have_attribute("data-agent-state", "listening", timeout=60_000)
        expect(status(page)).to_have_attribute("data-state", "listening")
        expect(status(page)).to_contain_text("Listening")
        (session,) = sessions_of(company)
        assert wait_for(
            lambda: status_of(session) == AgentStatus.ACTIVE, timeout=30, what="the session to be active"
        )

        # The fake microphone says the visitor's sentence; the agent's STT transcribes it.
        said = page.locator('.ac-line[data-speaker="user"][data-final="true"]').first
        expect(said).to_be_visible(timeout=90_000)
        expect(said.locator(".ac-who")).to_have_text("You:")
        # The echo LLM answers with what it heard: a second agent line, spoken and transcribed.
        reply = page.locator('.ac-line[data-speaker="agent"]').nth(1)
        expect(reply).to_contain_text("You said", timeout=90_000)
        expect(reply).to_have_attribute("data-final", "true", timeout=60_000)

        # A visitor's turn is every final line of theirs before an agent reply: the VAD
        # hands an utterance to the STT after AGENT_VAD_MIN_SILENCE_SECONDS, shorter than
        # the endpointing delay, so the pause after "Hello," may make it two lines. On a
        # busy machine that pause can outlast the endpointing delay too, and the turn
        # ends at "Hello"; the fake microphone loops its sentence, so the next turns are
        # whole. The first turn that the STT heard, with the agent's echo of it, counts.
        def turn_heard() -> tuple[str, str] | None:
            turns = page.locator(".ac-line").evaluate_all(
                """lines => { const turns = []; let said = []; let agent = 0;
                    for (const line of lines) {
                      const text = line.querySelector('.ac-text').textContent.trim();
                      if (line.dataset.speaker === 'agent') {
                        if (++agent > 1 && line.dataset.final === 'true') turns.push([said.join(' '), text]);
                        said = [];
                      } else if (line.dataset.final === 'true') said.push(text);
                    }
                    return turns; }"""
            )
            for said, echo in turns:
                common = words(said) & words(VISITOR_SENTENCE)
                if len(common) >= 3 and words(echo) & common:
                    return said, echo
            return None

        heard = wait_for(
            turn_heard, timeout=120, interval=0.5, what=f"a turn that heard {VISITOR_SENTENCE!r}"
        )
        assert heard[1].startswith("You said"), heard
        shot = browser_run.screenshot(page, "mid-conversation")
        assert shot.stat().st_size > 10_000
        states = page.evaluate("window.__states")
        firsts = [s for i, s in enumerate(states) if s not in states[:i]]
        assert firsts[:1] == ["connecting"], states
        # ("thinking" shows too, but the agent may skip publishing it when its reply is instant)
        assert {"listening", "speaking"} <= set(firsts), states
        expect(status(page)).to_have_attribute("data-state", "listening", timeout=60_000)  # after the reply

        page.get_by_role("button", name="End conversation").click()
        expect(status(page)).to_have_attribute("data-state", "ended")
        expect(page.get_by_role("button", name="Start a new conversation")).to_be_visible()
        assert wait_for(
            lambda: status_of(session) == AgentStatus.STOPPED, timeout=30, what="the session to be stopped"
        )
        wait_for(
            lambda: not room_identities(session.agent_room_name),
            timeout=30,
            what="everyone to have left the room",
        )
        assert worker.proc.poll() is None, "the agent worker must outlive the conversation"


@pytest.mark.e2e
def test_agent_crash_shows_reconnecting_the_assistant_then_listening_again(
    browser_run: BrowserRun, live_server: Any, company: Company, agent: VoiceAgent
) -> None:
    name = f"browser-crash-{uuid.uuid4().hex[:8]}"
    with voice_agent_worker(name) as worker, celery_with_agent_name(name):
        page = browser_run.page()
        page.goto(f"{live_server.url}/demo/?agent={agent.pk}&agent_timeout=90")
        page.get_by_role("button", name="Talk to Browser agent").click()
        expect(status(page)).to_have_attribute("data-agent-state", "listening", timeout=90_000)
        (session,) = sessions_of(company)
        pid = int(
            re.search(
                r"in process (\d+)", worker.wait_for_output(f"job for room {session.agent_room_name}", 30)
            ).group(1)
        )
        os.kill(pid, 9)  # the job process dies, as under the out-of-memory killer
        expect(status(page)).to_contain_text("Reconnecting the assistant", timeout=EXPECT_MS)
        expect(status(page)).to_have_attribute("data-state", "reconnecting")
        # a new agent in the same room: back to listening, same conversation, no error
        expect(status(page)).to_have_attribute("data-agent-state", "listening", timeout=90_000)
        expect(alert(page)).to_be_hidden()
        session.refresh_from_db()
        assert session.agent_status == AgentStatus.ACTIVE and session.recovery_count == 1
        page.get_by_role("button", name="End conversation").click()
        expect(status(page)).to_have_attribute("data-state", "ended")
