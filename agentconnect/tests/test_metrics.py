"""/metrics after real sessions: the API, the real livekit-server, its real webhooks, Celery tasks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from livekit import api, rtc
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from agentconnect.metrics import failure_category, observe_turn
from agentconnect.tests.outages import database_unreachable
from sessions import livekit_gateway as lk
from sessions.models import AgentStatus, ConversationSession
from sessions.services import session_agent_finished, session_stop
from sessions.tasks import dispatch_agent, stop_agent
from tests.factories import CompanyFactory, VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import ROOT, Process
from tests.processes import test_database_env as database_env

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client, **headers: Any) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def agent_token(room: str, identity: str) -> str:
    return (
        api.AccessToken(django_settings.LIVEKIT_API_KEY, django_settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
        .to_jwt()
    )


def status_of(session: ConversationSession) -> str:
    session.refresh_from_db()
    return session.agent_status


DISPATCH = "sessions.tasks.dispatch_agent"
STOP = "sessions.tasks.stop_agent"


def test_metrics_after_a_real_session(live_server: Any, client: Client) -> None:
    company: Any = CompanyFactory()
    agent: Any = VoiceAgentFactory(company=company)
    widget = APIClient()
    widget.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    before = scrape(client)

    response = widget.post(
        "/api/v1/livekit-agents/start-voice-session",
        {"session_id": "metrics-1", "agent_id": agent.pk, "company_id": company.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    session = ConversationSession.objects.get(session_id="metrics-1")
    pending = scrape(client)
    assert value(pending, "agentconnect_sessions", status="pending") == 1
    assert value(pending, "agentconnect_active_agents", mode="one_to_one") == 0

    # What the Celery worker does, run here: the dispatch against the real livekit-server.
    dispatch_agent.apply(args=[session.pk]).get(timeout=30)
    assert status_of(session) == AgentStatus.STARTING

    # A stand-in agent joins the room; livekit-server's participant_joined webhook makes it active.
    async def agent_joins_and_leaves() -> Samples:
        room = rtc.Room()
        await room.connect(
            django_settings.LIVEKIT_URL,
            agent_token(session.agent_room_name, "agent-metrics"),
            rtc.RoomOptions(auto_subscribe=False),
        )
        try:
            await asyncio.to_thread(
                wait_for,
                lambda: status_of(session) == AgentStatus.ACTIVE,
                timeout=15,
                what="webhook → active",
            )
            sample = await asyncio.to_thread(scrape, client)
            # as a worker does: report the end of the conversation, then leave
            await asyncio.to_thread(session_agent_finished, session_pk=session.pk, identity="agent-metrics")
            return sample
        finally:
            await room.disconnect()

    active = run_async(agent_joins_and_leaves(), timeout=40)
    session.refresh_from_db()
    assert session.agent_started_at is not None
    assert value(active, "agentconnect_sessions", status="active") == 1
    assert value(active, "agentconnect_sessions", status="pending") == 0
    assert value(active, "agentconnect_sessions", status="starting") == 0
    assert value(active, "agentconnect_active_agents", mode="one_to_one") == 1
    assert value(active, "agentconnect_active_agents", mode="conference") == 0
    assert value(active, "agentconnect_metrics_database_up") == 1

    latency = (session.agent_started_at - session.created_at).total_seconds()
    assert delta(before, active, "agentconnect_dispatch_latency_seconds_count", mode="one_to_one") == 1
    assert delta(
        before, active, "agentconnect_dispatch_latency_seconds_sum", mode="one_to_one"
    ) == pytest.approx(latency, abs=1e-3)
    # The observation sits in the first bucket at or above it, and in none below.
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in active.items()
        if name == "agentconnect_dispatch_latency_seconds_bucket" and dict(labels)["mode"] == "one_to_one"
    )
    for le, count in buckets:
        old = value(before, "agentconnect_dispatch_latency_seconds_bucket", mode="one_to_one", le=_le(le))
        assert count - old == (1 if latency <= le else 0), le
    assert delta(before, active, "agentconnect_celery_tasks_total", task=DISPATCH, outcome="success") == 1

    # The agent reported its end and left (participant_left is then a no-op) → stopped;
    # then a stop is a no-op task.
    wait_for(lambda: status_of(session) == AgentStatus.STOPPED, timeout=15, what="webhook → stopped")
    session_stop(session=session)
    stop_agent.apply(args=[session.pk]).get(timeout=30)
    after = scrape(client)
    assert value(after, "agentconnect_sessions", status="stopped") == 1
    assert value(after, "agentconnect_sessions", status="active") == 0
    assert value(after, "agentconnect_active_agents", mode="one_to_one") == 0
    assert delta(before, after, "agentconnect_celery_tasks_total", task=STOP, outcome="success") == 1
    assert delta(before, after, "agentconnect_dispatch_latency_seconds_count", mode="one_to_one") == 1
    assert (
        sum(
            delta(before, after, "agentconnect_session_failures_total", reason=category)
            for category in ("livekit_unreachable", "no_worker", "other", "agent_left_early")
        )
        == 0
    )
    lk.room_close(session.agent_room_name)


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


def test_failures_and_retries_are_counted_when_livekit_is_down(client: Client, settings: Any) -> None:
    company: Any = CompanyFactory()
    agent: Any = VoiceAgentFactory(company=company)
    before = scrape(client)
    settings.LIVEKIT_URL = "ws://127.0.0.1:9"
    widget = APIClient()
    widget.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    widget.post(
        "/api/v1/livekit-agents/start-voice-session",
        {"session_id": "metrics-down", "agent_id": agent.pk, "company_id": company.pk},
        format="json",
    )
    session = ConversationSession.objects.get(session_id="metrics-down")
    # In-process Celery runs every retry at once: 5 retries, then the task fails the session and returns.
    dispatch_agent.apply(args=[session.pk])
    assert status_of(session) == AgentStatus.FAILED
    after = scrape(client)
    assert delta(before, after, "agentconnect_session_failures_total", reason="livekit_unreachable") == 1
    assert delta(before, after, "agentconnect_celery_tasks_total", task=DISPATCH, outcome="retry") == 5
    assert delta(before, after, "agentconnect_celery_tasks_total", task=DISPATCH, outcome="success") == 1
    assert value(after, "agentconnect_sessions", status="failed") == 1
    assert delta(before, after, "agentconnect_dispatch_latency_seconds_count", mode="one_to_one") == 0


def test_a_task_that_raises_counts_as_failure(client: Client) -> None:
    before = scrape(client)
    # A session pk that does not exist is a no-op (success); a bad argument type raises.
    dispatch_agent.apply(args=[10**9]).get(timeout=10)
    result = dispatch_agent.apply(args=["not-a-pk"])
    assert result.failed()
    after = scrape(client)
    assert delta(before, after, "agentconnect_celery_tasks_total", task=DISPATCH, outcome="success") == 1
    assert delta(before, after, "agentconnect_celery_tasks_total", task=DISPATCH, outcome="failure") == 1


def test_turn_latencies_reported_by_workers(client: Client) -> None:
    before = scrape(client)
    # The keys the worker stores in TranscriptTurn.metrics, and livekit-agents' own names.
    observe_turn({"end_of_turn_delay": 0.4, "transcription_delay": 0.15})
    observe_turn({"llm_ttft": 0.25, "tts_ttfb": 0.12, "response_latency": 1.1})
    observe_turn({"llm_node_ttft": 0.35, "e2e_latency": 0.9, "bogus": 3.0, "tts_ttfb": None, "llm_ttft": "x"})
    observe_turn({"end_of_turn_delay": -1})  # a clock glitch is not a latency
    after = scrape(client)
    expected = {
        "end_of_turn_delay": (1, 0.4),
        "transcription_delay": (1, 0.15),
        "llm_ttft": (2, 0.6),
        "tts_ttfb": (1, 0.12),
        "response_latency": (2, 2.0),
    }
    for stage, (count, total) in expected.items():
        assert delta(before, after, "agentconnect_turn_latency_seconds_count", stage=stage) == count, stage
        assert delta(before, after, "agentconnect_turn_latency_seconds_sum", stage=stage) == pytest.approx(
            total
        ), stage
    assert delta(before, after, "agentconnect_turn_latency_seconds_bucket", stage="llm_ttft", le="0.3") == 1
    assert delta(before, after, "agentconnect_turn_latency_seconds_bucket", stage="llm_ttft", le="0.5") == 2
    assert not any(
        name.startswith("agentconnect_turn") and ("stage", "bogus") in labels for name, labels in after
    )


def test_failure_reasons_fall_into_fixed_categories() -> None:
    # The reasons written by sessions/services.py and sessions/tasks.py.
    assert (
        failure_category("Could not queue the dispatch agent task: the task broker is unreachable.")
        == "broker_unreachable"
    )
    assert failure_category("Dispatch refused: LiveKit refused the request: bad") == "dispatch_refused"
    assert failure_category("Could not dispatch an agent after 6 attempts: x") == "livekit_unreachable"
    assert (
        failure_category("The agent was not dispatched within 120 s (is a Celery worker running?)")
        == "dispatch_timeout"
    )
    assert failure_category("No agent worker joined within 60 s (is a 'x' worker running?).") == "no_worker"
    assert failure_category("The room closed before an agent joined it.") == "room_closed_before_join"
    assert failure_category("The room closed before the agent was dispatched.") == "room_closed_before_join"
    assert (
        failure_category("The agent's connection to the room was lost (worker crash).")
        == "agent_connection_lost"
    )
    assert failure_category("The agent left the room before it had started.") == "agent_left_early"
    assert failure_category("The STT provider failed: 500") == "other"


def test_metrics_token_is_required_when_set(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "metrics-secret"
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "not_authenticated"
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="metrics-secret").status_code == 401
    samples = scrape(client, HTTP_AUTHORIZATION="Bearer metrics-secret")
    assert ("agentconnect_metrics_database_up", ()) in samples
    # A scraper addressing the container by name is not refused by ALLOWED_HOSTS.
    assert (
        client.get("/metrics", HTTP_HOST="web:8000", HTTP_AUTHORIZATION="Bearer metrics-secret").status_code
        == 200
    )


def test_metrics_still_answer_when_the_database_is_down(client: Client) -> None:
    with database_unreachable():
        samples = scrape(client)
    assert value(samples, "agentconnect_metrics_database_up") == 0
    assert not any(name == "agentconnect_sessions" for name, _ in samples)
    assert any(name.startswith("process_") or name.startswith("agentconnect_") for name, _ in samples)
    assert value(scrape(client), "agentconnect_metrics_database_up") == 1


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, sys
    from agentconnect import metrics

    def work(n):
        metrics.observe_turn({"llm_ttft": 0.2})
        metrics.observe_task(task="t", outcome="success")

    if __name__ == "__main__":
        # Like gunicorn or Celery prefork: children forked after the metrics were imported.
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=work, args=(i,)) for i in range(3)]
        for p in procs: p.start()
        for p in procs: p.join(30)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        sys.stdout.write(metrics.render(include_database=False).decode())
    """
)


def test_multiprocess_mode_sums_every_process(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"  # created by agentconnect.metrics on import
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    samples = parse(result.stdout)
    assert value(samples, "agentconnect_turn_latency_seconds_count", stage="llm_ttft") == 3
    assert value(samples, "agentconnect_celery_tasks_total", task="t", outcome="success") == 3
    # The parent observed nothing itself: these came from the children's files.
    assert len(list(multiproc.glob("*.db"))) >= 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_celery_worker_serves_task_metrics_of_its_pool(tmp_path: Path) -> None:
    company: Any = CompanyFactory()
    agent: Any = VoiceAgentFactory(company=company)
    port = free_port()
    env = {
        **database_env(),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "CELERY_METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    worker = Process(
        [
            sys.executable,
            "celery_worker.py",
            "--pool=prefork",
            "--concurrency=2",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        env,
        "celery worker",
    )
    try:
        worker.wait_for_output("celery worker metrics on", timeout=60)
        widget = APIClient()
        widget.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
        widget.post(
            "/api/v1/livekit-agents/start-voice-session",
            {"session_id": "worker-metrics", "agent_id": agent.pk, "company_id": company.pk},
            format="json",
        )
        session = ConversationSession.objects.get(session_id="worker-metrics")
        wait_for(
            lambda: status_of(session) == AgentStatus.STARTING, timeout=30, what="dispatch by the worker"
        )

        def task_successes() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                samples = parse(response.read().decode())
            return value(samples, "agentconnect_celery_tasks_total", task=DISPATCH, outcome="success")

        def logged_successes() -> int:
            return sum(f"{DISPATCH}[" in line and "succeeded" in line for line in list(worker.lines))

        # Tasks queued by earlier tests may be run too: the counter, summed over the
        # pool's processes, must match the successes the worker itself logged.
        wait_for(
            lambda: task_successes() >= 1 and task_successes() == logged_successes(),
            timeout=15,
            what="the worker's task counter to match its log",
        )
        # Its logs are the project's JSON lines, not Celery's own format.
        ready_line = worker.wait_for_output("ready.", timeout=5)
        assert json.loads(ready_line)["level"] == "INFO"
    finally:
        worker.stop()
    lk.room_close(session.agent_room_name)
