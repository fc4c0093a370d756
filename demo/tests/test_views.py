"""The /demo/ page: what it lists, what it embeds, and that it is off unless enabled."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.catalog import AgentMode

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def enabled(settings: Any) -> Any:
    settings.DEMO_PAGE_ENABLED = True
    return settings


def script_tag(html: str) -> dict[str, str]:
    match = re.search(r'<script src="[^"]*agentconnect/widget\.js"(.*?)></script>', html, re.S)
    assert match, "no widget script tag on the page"
    return dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', match.group(1)))


def test_demo_page_is_404_when_disabled(settings: Any) -> None:
    settings.DEMO_PAGE_ENABLED = False
    VoiceAgentFactory()
    response = Client().get("/demo/")
    assert response.status_code == 404
    assert b"wk_" not in response.content


@pytest.mark.parametrize(
    "debug, flag, expected",
    [("true", None, "True"), ("false", None, "False"), ("true", "false", "False"), ("false", "true", "True")],
)
def test_demo_page_setting_follows_debug_unless_set(debug: str, flag: str | None, expected: str) -> None:
    env = {**os.environ, "DJANGO_DEBUG": debug, "DJANGO_SETTINGS_MODULE": "agentconnect.settings"}
    env.pop("DEMO_PAGE_ENABLED", None)
    if flag is not None:
        env["DEMO_PAGE_ENABLED"] = flag
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DEMO_PAGE_ENABLED)",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == expected


def test_demo_lists_only_active_agents_of_active_companies(enabled: Any) -> None:
    shown = VoiceAgentFactory(name="Shown agent")
    VoiceAgentFactory(name="Inactive agent", is_active=False)
    VoiceAgentFactory(name="Agent of closed company", company=CompanyFactory(is_active=False))
    response = Client().get("/demo/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Shown agent" in html
    assert "Inactive agent" not in html
    assert "Agent of closed company" not in html
    tag = script_tag(html)
    assert tag["data-widget-key"] == shown.company.widget_key
    assert tag["data-company-id"] == str(shown.company.pk)
    assert tag["data-agent-id"] == str(shown.pk)
    assert tag["data-mount"] == "#voice-widget"
    assert 'id="voice-widget"' in html


def test_demo_selects_the_agent_asked_for(enabled: Any) -> None:
    VoiceAgentFactory(name="First")
    second = VoiceAgentFactory(name="Second")
    html = Client().get(f"/demo/?agent={second.pk}").content.decode()
    assert script_tag(html)["data-agent-id"] == str(second.pk)
    assert script_tag(html)["data-widget-key"] == second.company.widget_key
    assert re.search(rf'data-agent-id="{second.pk}"\s+aria-current="page"', html)


def test_demo_ignores_an_unknown_or_inactive_agent_id(enabled: Any) -> None:
    first = VoiceAgentFactory(name="First")
    hidden = VoiceAgentFactory(is_active=False)
    for query in (f"?agent={hidden.pk}", "?agent=999999", "?agent=abc"):
        html = Client().get(f"/demo/{query}").content.decode()
        assert script_tag(html)["data-agent-id"] == str(first.pk)


def test_demo_with_no_agents_says_so(enabled: Any) -> None:
    response = Client().get("/demo/")
    assert response.status_code == 200
    assert b"No active agents yet" in response.content
    assert b'agentconnect/widget.js"' not in response.content


def test_conference_agent_offers_join_link_and_one_to_one_does_not(enabled: Any) -> None:
    one = VoiceAgentFactory(mode=AgentMode.ONE_TO_ONE)
    conference = VoiceAgentFactory(mode=AgentMode.CONFERENCE, company=one.company)
    assert b'id="join-link"' not in Client().get(f"/demo/?agent={one.pk}").content
    assert b'id="join-link"' in Client().get(f"/demo/?agent={conference.pk}").content


def test_join_mode_embeds_the_session_for_conference_agents_only(enabled: Any) -> None:
    one = VoiceAgentFactory(mode=AgentMode.ONE_TO_ONE)
    conference = VoiceAgentFactory(mode=AgentMode.CONFERENCE, company=one.company)
    tag = script_tag(Client().get(f"/demo/?agent={conference.pk}&join=room-42_a").content.decode())
    assert tag["data-join"] == "true"
    assert tag["data-session-id"] == "room-42_a"
    # a 1:1 session cannot be joined (the same identity would take the visitor's place)
    assert "data-join" not in script_tag(
        Client().get(f"/demo/?agent={one.pk}&join=room-42_a").content.decode()
    )
    # nor can an id that is not a session id
    bad = Client().get(f"/demo/?agent={conference.pk}&join=%22%3E%3Cscript%3E").content.decode()
    assert "data-join" not in script_tag(bad)
    assert '<script>"' not in bad


def test_demo_warns_when_the_page_origin_is_not_allowed(enabled: Any) -> None:
    company = CompanyFactory(allowed_origins=["http://testserver"])
    VoiceAgentFactory(company=company)
    assert b"not in" not in Client().get("/demo/").content
    company.allowed_origins = ["https://elsewhere.example"]
    company.save()
    assert b"is not in" in Client().get("/demo/").content
