"""The demo page: pick an agent, talk to it through the embeddable widget.

It shows every active company's widget key, which is public by design (it
sits in a website's script tag) but still nothing to advertise: the page
exists only when settings.DEMO_PAGE_ENABLED is on (by default: when DEBUG is).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from sessions.authentication import origin_allowed
from sessions.models import SESSION_ID_PATTERN
from voiceagents.catalog import AgentMode

from .selectors import demo_agents


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def demo_page(request: HttpRequest) -> HttpResponse:
    if not settings.DEMO_PAGE_ENABLED:
        raise Http404("The demo page is disabled (DEMO_PAGE_ENABLED).")
    agents = list(demo_agents())
    wanted = _int(request.GET.get("agent"))
    agent = next((a for a in agents if a.pk == wanted), agents[0] if agents else None)

    # "Join as another person": a second participant in a conference session.
    join = request.GET.get("join", "")
    if not (agent and agent.mode == AgentMode.CONFERENCE and re.fullmatch(SESSION_ID_PATTERN, join)):
        join = ""

    origin = f"{request.scheme}://{request.get_host()}"
    return render(
        request,
        "demo/index.html",
        {
            "agents": agents,
            "agent": agent,
            "is_conference": bool(agent and agent.mode == AgentMode.CONFERENCE),
            "join_session_id": join,
            "origin": origin,
            "origin_allowed": bool(agent and origin_allowed(agent.company, origin)),
        },
    )
