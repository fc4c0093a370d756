"""Fault tests against the real services (issue 6).

Each outage is made real: a private redis-server, livekit-server or PostgreSQL
cluster, started by the test on free loopback ports, is stopped and started
again; the API runs in a gunicorn process and the tasks in a Celery worker
process, as in production. The shared test services are never touched.

Decisions these tests pin down (docs/security.md, "Faults"):
- LiveKit down when a session starts: the API answers 201 at once (it does not
  call LiveKit to start a session); the dispatch task retries with backoff and
  the session fails with a readable reason when retries run out. If LiveKit
  comes back meanwhile the session goes on. Reconcile closes any room left
  behind by a session that has ended.
- Redis (the broker) down: start-voice-session answers 503 at once with a clear
  message; the session it had created is `failed`, never left `pending`.
- PostgreSQL restarts: the API and the Celery worker reconnect by themselves
  (CONN_HEALTH_CHECKS), no restart of theirs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import Client
from django.utils import timezone
from livekit import api

from agentconnect.celery import app as celery_app
from agentconnect.livekit_config import NodeConfig, render
from sessions import livekit_gateway as lk
from sessions import tasks
from sessions.models import AgentStatus, CompanyLiveSessions, ConversationSession
from sessions.services import session_dispatch, session_start, session_transition, sessions_reconcile
from sessions.tasks import dispatch_agent
from tests.factories import VoiceAgentFactory
from tests.helpers import wait_for
from tests.processes import ROOT, Process, test_database_env
from tests.queueing import tasks_not_queued
from voiceagents.models import VoiceAgent

pytestmark = pytest.mark.django_db(transaction=True)

START = "/api/v1/livekit-agents/start-voice-session"
STOP = "/api/v1/livekit-agents/stop-voice-session"
STATUS = "/api/v1/livekit-agents/agent-status/{}"
WEBHOOK = "/api/v1/livekit-agents/webhook"
LIVEKIT_BIN = ROOT / ".bin" / "livekit-server"


# --- private services ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, *, up: bool = True, timeout: float = 30.0, what: str = "service") -> None:
    wait_for(
        lambda: port_open(port) == up,
        timeout=timeout,
        interval=0.1,
        what=f"{what} {'up' if up else 'down'} on {port}",
    )


class Service:
    """A server process of ours that a test may stop and start again on the same ports."""

    name = "service"

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix=f"ac-fault-{self.name}-", suffix=".log")[1])

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        wait_port(self.port, what=self.name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        wait_port(self.port, up=False, what=self.name)

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)


class PrivateRedis(Service):
    name = "redis"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class PrivateLiveKit(Service):
    """livekit-server with the test keys, its webhooks sent to `webhook_port` (our gunicorn)."""

    name = "livekit"

    def __init__(self, webhook_port: int) -> None:
        super().__init__()
        self.rtc_tcp, self.rtc_udp = free_port(), free_port()
        self.config = Path(tempfile.mkstemp(prefix="ac-fault-livekit-", suffix=".yaml")[1])
        self.config.write_text(
            render(
                NodeConfig(
                    port=self.port,
                    rtc_tcp_port=self.rtc_tcp,
                    rtc_udp_port=self.rtc_udp,
                    key=settings.LIVEKIT_API_KEY,
                    secret=settings.LIVEKIT_API_SECRET,
                    webhook_urls=(f"http://127.0.0.1:{webhook_port}{WEBHOOK}",),
                    log_level="warn",
                    empty_timeout=10,
                    departure_timeout=5,
                )
            )
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(LIVEKIT_BIN), "--config", str(self.config)]

    def close(self) -> None:
        super().close()
        self.config.unlink(missing_ok=True)


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert found, "PostgreSQL binaries not found (scripts/install-deps.sh)"
    return found[-1].parent


def _as_postgres(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd="/", **kwargs)


class PrivatePostgres:
    """A throwaway cluster in a temporary directory, trust auth on loopback only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = _pg_bin()
        self.base = Path(tempfile.mkdtemp(prefix="ac-fault-pg-"))
        self.data = self.base / "data"
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        _as_postgres(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.base}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def ctl(self, *args: str) -> None:
        _as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "pg.log"),
                "-w",
                "-t",
                "60",
                *args,
            ]
        )

    def start(self) -> None:
        self.ctl("start")

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast")

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        try:
            self.ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


def stack_env(**overrides: str) -> dict[str, str]:
    env = test_database_env()
    env.update(
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_FORMAT="text",
        # A dispatch task gives up after 3 attempts, 1 s apart: the outages here are short.
        CELERY_TASK_MAX_RETRIES="2",
        CELERY_RETRY_BACKOFF_MAX_SECONDS="1",
    )
    env.update(overrides)
    return env


def start_gunicorn(env: dict[str, str], port: int) -> Process:
    proc = Process(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "agentconnect.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "--timeout",
            "60",
        ],
        env,
        "gunicorn",
    )
    try:
        wait_for(lambda: _healthy(port), timeout=60, what="gunicorn /healthz")
    except AssertionError:
        proc.stop()
        raise AssertionError("gunicorn did not start:\n" + proc.tail()) from None
    return proc


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def start_celery(env: dict[str, str]) -> Process:
    proc = Process(
        [
            sys.executable,
            "celery_worker.py",
            "--pool=threads",
            "--concurrency=4",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        env,
        "celery worker",
    )
    proc.wait_for_output("ready.", timeout=60)
    return proc


class Widget:
    """The widget's side of the API, over real HTTP."""

    def __init__(self, port: int, agent: VoiceAgent) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.agent = agent
        self.http = requests.Session()
        self.http.headers["X-Widget-Key"] = agent.company.widget_key

    def start(self, session_id: str) -> requests.Response:
        body = {"session_id": session_id, "agent_id": self.agent.pk, "company_id": self.agent.company_id}
        return self.http.post(self.base + START, json=body, timeout=30)

    def stop(self, session_id: str) -> requests.Response:
        return self.http.post(self.base + STOP, json={"session_id": session_id}, timeout=30)

    def status(self, session_id: str) -> str:
        return str(self.http.get(self.base + STATUS.format(session_id), timeout=30).json()["status"])


def status_of(session_id: str) -> str:
    return ConversationSession.objects.get(session_id=session_id).agent_status


def show(*procs: Process) -> None:
    for proc in procs:
        print(f"--- {proc.name} ---\n{proc.tail(80)}")  # shown when a test fails


# --- Redis (the broker) down ----------------------------------------------------------------------


def test_redis_down_start_answers_503_at_once_and_leaves_nothing_pending(redis_server: PrivateRedis) -> None:
    agent = VoiceAgentFactory()
    env = stack_env(CELERY_BROKER_URL=redis_server.url(0), REDIS_URL=redis_server.url(1))
    port = free_port()
    web = start_gunicorn(env, port)
    widget = Widget(port, agent)
    try:
        assert widget.start("before").status_code == 201

        redis_server.stop()
        began = time.monotonic()
        response = widget.start("during")
        elapsed = time.monotonic() - began
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "service_unavailable"
        assert "task queue is unreachable" in error["message"] and "new session_id" in error["message"]
        assert response.headers["Retry-After"] == "5"
        # "At once": a hang (Celery's publish retries) is the failure mode under test.
        assert elapsed < 10, f"503 took {elapsed:.1f}s"
        during = ConversationSession.objects.get(session_id="during")
        assert during.agent_status == AgentStatus.FAILED
        assert "broker is unreachable" in during.failure_reason
        # "before" holds the company's one counted place; "during" gave its back
        assert CompanyLiveSessions.objects.get(company=agent.company).live == 1
        # The rate limits fail open meanwhile (their counters live in that Redis too);
        # status reads go on working.
        assert widget.status("before") == AgentStatus.PENDING

        redis_server.start()
        assert widget.start("after").status_code == 201
        assert not ConversationSession.objects.filter(
            session_id="during", agent_status=AgentStatus.PENDING
        ).exists()
    finally:
        web.stop()
        show(web)


# --- LiveKit down when a session starts -------------------------------------------------------------


@pytest.fixture
def livekit_stack(redis_server: PrivateRedis) -> Iterator[dict[str, Any]]:
    """gunicorn + Celery worker + a private livekit-server (whose webhooks reach that gunicorn)."""
    web_port = free_port()
    livekit = PrivateLiveKit(webhook_port=web_port)
    livekit.start()
    env = stack_env(
        CELERY_BROKER_URL=redis_server.url(0), REDIS_URL=redis_server.url(1), LIVEKIT_URL=livekit.url
    )
    web = start_gunicorn(env, web_port)
    worker = start_celery(env)
    try:
        yield {"livekit": livekit, "web_port": web_port, "web": web, "worker": worker, "env": env}
    finally:
        worker.stop()
        web.stop()
        livekit.close()
        show(web, worker)


def rooms_on(livekit: PrivateLiveKit, names: list[str]) -> set[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "LIVEKIT_URL", livekit.url)
        return lk.rooms_existing(names)


def dispatches_on(livekit: PrivateLiveKit, room: str) -> list[Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "LIVEKIT_URL", livekit.url)
        return lk.dispatches_for(room)


def test_livekit_down_at_start_201_then_failed_and_nothing_left_once_back(
    livekit_stack: dict[str, Any],
) -> None:
    livekit: PrivateLiveKit = livekit_stack["livekit"]
    agent = VoiceAgentFactory()
    widget = Widget(livekit_stack["web_port"], agent)
    livekit.stop()

    response = widget.start("lk-down")
    assert response.status_code == 201, response.text  # the API does not need LiveKit to accept a start
    room = response.json()["room_name"]
    wait_for(lambda: status_of("lk-down") == AgentStatus.FAILED, timeout=30, what="failed after retries")
    reason = ConversationSession.objects.get(session_id="lk-down").failure_reason
    assert "Could not dispatch an agent after 3 attempts" in reason and "unreachable" in reason, reason

    livekit.start()
    assert rooms_on(livekit, [room]) == set()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "LIVEKIT_URL", livekit.url)
        sessions_reconcile()
    assert rooms_on(livekit, [room]) == set()
    assert widget.status("lk-down") == AgentStatus.FAILED


def test_livekit_back_during_retries_the_session_goes_on(livekit_stack: dict[str, Any]) -> None:
    livekit: PrivateLiveKit = livekit_stack["livekit"]
    worker: Process = livekit_stack["worker"]
    agent = VoiceAgentFactory()
    widget = Widget(livekit_stack["web_port"], agent)
    livekit.stop()
    response = widget.start("lk-blip")
    assert response.status_code == 201
    room = response.json()["room_name"]
    worker.wait_for_output("Retry in", timeout=20)  # the first attempt failed
    livekit.start()
    wait_for(
        lambda: status_of("lk-blip") in (AgentStatus.STARTING, AgentStatus.FAILED),
        timeout=30,
        what="dispatched",
    )
    # Three attempts, one second apart: LiveKit was back before the last one.
    assert status_of("lk-blip") == AgentStatus.STARTING, ConversationSession.objects.get(
        session_id="lk-blip"
    ).failure_reason
    assert rooms_on(livekit, [room]) == {room}
    assert len(dispatches_on(livekit, room)) == 1

    assert widget.stop("lk-blip").status_code == 200
    wait_for(lambda: status_of("lk-blip") == AgentStatus.STOPPED, timeout=30, what="stopped")
    assert rooms_on(livekit, [room]) == set()


def test_reconcile_closes_rooms_of_ended_sessions(livekit_stack: dict[str, Any]) -> None:
    """A stop whose task was lost, or a dispatch that half-succeeded before its session
    failed, leaves a room (and its dispatch) on the server: reconcile closes it."""
    livekit: PrivateLiveKit = livekit_stack["livekit"]
    agent = VoiceAgentFactory()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "LIVEKIT_URL", livekit.url)
        tasks_not_queued(patch)
        ended = session_start(company=agent.company, agent_id=agent.pk, session_id="ended").session
        session_dispatch(session_pk=ended.pk)
        live = session_start(company=agent.company, agent_id=agent.pk, session_id="live").session
        session_dispatch(session_pk=live.pk)
        assert session_transition(
            session_pk=ended.pk, to=AgentStatus.FAILED, failure_reason="test: lost stop"
        )
        ConversationSession.objects.filter(pk=ended.pk).update(
            status_changed_at=timezone.now() - timedelta(minutes=1)
        )
        report = sessions_reconcile()
    assert report.closed == 1
    assert rooms_on(livekit, [ended.agent_room_name, live.agent_room_name]) == {live.agent_room_name}
    # (A dispatch lives in its room: with the room gone LiveKit has no dispatch to run,
    # and listing a missing room's dispatches is itself an error.)
    assert len(dispatches_on(livekit, live.agent_room_name)) == 1
    assert status_of("live") == AgentStatus.STARTING


def test_dispatch_task_lost_in_a_broker_restart_is_queued_again_by_reconcile(
    livekit_stack: dict[str, Any], redis_server: PrivateRedis
) -> None:
    """Redis restarts without persistence while a dispatch task waits in it: the
    session would sit pending until the dispatch timeout failed it. Reconcile,
    run by the Celery worker as beat would, queues the task again and the agent
    is dispatched."""
    livekit: PrivateLiveKit = livekit_stack["livekit"]
    livekit_stack["worker"].stop()  # nobody takes the task before it is lost
    agent = VoiceAgentFactory()
    widget = Widget(livekit_stack["web_port"], agent)
    response = widget.start("lost-task")
    assert response.status_code == 201, response.text
    room = response.json()["room_name"]
    redis_server.stop()
    redis_server.start()  # an empty broker: the task is gone
    worker = start_celery(livekit_stack["env"])
    try:
        ConversationSession.objects.filter(session_id="lost-task").update(
            status_changed_at=timezone.now() - timedelta(seconds=settings.AGENT_REQUEUE_AFTER_SECONDS + 5)
        )
        assert status_of("lost-task") == AgentStatus.PENDING

        # what beat does every CELERY_RECONCILE_INTERVAL_SECONDS, on the stack's broker
        with celery_app.connection_for_write(redis_server.url(0)) as broker:
            tasks.reconcile_sessions.apply_async(connection=broker)
        wait_for(
            lambda: status_of("lost-task") == AgentStatus.STARTING,
            timeout=30,
            what="dispatched after the requeue",
        )
        worker.wait_for_output("dispatch queued again", timeout=10)
        assert rooms_on(livekit, [room]) == {room}
        assert len(dispatches_on(livekit, room)) == 1
    finally:
        worker.stop()
        show(worker)


# --- a Celery task delivered twice ---------------------------------------------------------------


def test_dispatch_task_delivered_twice_at_once_makes_one_room_and_one_dispatch(
    livekit_stack: dict[str, Any],
) -> None:
    livekit: PrivateLiveKit = livekit_stack["livekit"]
    worker: Process = livekit_stack["worker"]
    agent = VoiceAgentFactory()
    with pytest.MonkeyPatch.context() as patch:
        tasks_not_queued(patch)
        sessions = [
            session_start(company=agent.company, agent_id=agent.pk, session_id=f"twice-{n}").session
            for n in range(3)
        ]
    from agentconnect.celery import app

    with app.connection_for_write(url=livekit_stack["env"]["CELERY_BROKER_URL"]) as conn:
        for session in sessions:
            for _ in range(3):  # a redelivery, and one more: the worker runs them side by side (4 threads)
                dispatch_agent.apply_async(args=[session.pk], connection=conn)
    wait_for(
        lambda: sum("dispatch_agent" in line and "succeeded" in line for line in worker.lines) == 9,
        timeout=60,
        what="all nine deliveries run",
    )
    for session in sessions:
        assert rooms_on(livekit, [session.agent_room_name]) == {session.agent_room_name}
        dispatches = dispatches_on(livekit, session.agent_room_name)
        assert len(dispatches) == 1, dispatches
        session.refresh_from_db()
        assert session.dispatch_id == dispatches[0].id


# --- PostgreSQL restarts ----------------------------------------------------------------------------


def test_postgres_restart_the_api_and_worker_recover_by_themselves(redis_server: PrivateRedis) -> None:
    cluster = PrivatePostgres()
    web = worker = None
    try:
        cluster.start()
        env = dict(os.environ)
        env.update(
            stack_env(
                DATABASE_URL=cluster.url(),
                CELERY_BROKER_URL=redis_server.url(0),
                REDIS_URL=redis_server.url(1),
            )
        )
        env.pop("TEST_DATABASE_NAME", None)
        manage = [sys.executable, "manage.py"]
        subprocess.run(
            [*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=180
        )
        seeded = subprocess.run(
            [*manage, "seed_demo", "--json"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        ids = json.loads(seeded.stdout)
        port = free_port()
        web = start_gunicorn(env, port)
        worker = start_celery(env)
        http = requests.Session()
        http.headers["X-Widget-Key"] = ids["widget_key"]
        base = f"http://127.0.0.1:{port}"

        def start(session_id: str) -> requests.Response:
            body = {"session_id": session_id, "agent_id": ids["agent_id"], "company_id": ids["company_id"]}
            return http.post(base + START, json=body, timeout=30)

        def status(session_id: str) -> str:
            return str(http.get(base + STATUS.format(session_id), timeout=30).json()["status"])

        assert start("pg-before").status_code == 201
        wait_for(
            lambda: status("pg-before") == AgentStatus.STARTING, timeout=30, what="dispatched before restart"
        )

        cluster.restart()  # every open connection of the API and the worker is cut

        # The very first request after the restart succeeds: the API's pooled
        # connection is health-checked and replaced, not reused and failed.
        response = start("pg-after")
        assert response.status_code == 201, response.text
        assert status("pg-before") == AgentStatus.STARTING
        # And the worker's: its next task (the dispatch) reaches the database.
        wait_for(
            lambda: status("pg-after") == AgentStatus.STARTING, timeout=30, what="dispatched after restart"
        )
        assert web.proc.poll() is None and worker.proc.poll() is None
        for session_id in ("pg-before", "pg-after"):
            http.post(base + STOP, json={"session_id": session_id}, timeout=30)
        wait_for(lambda: status("pg-after") == AgentStatus.STOPPED, timeout=30, what="stopped")
    finally:
        for proc in (worker, web):
            if proc is not None:
                proc.stop()
                show(proc)
        cluster.close()


# --- webhooks late, twice, out of order --------------------------------------------------------------


def signed_post(client: Client, event: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(event)
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).with_sha256(digest).to_jwt()
    )
    response = client.post(WEBHOOK, body, content_type="application/webhook+json", HTTP_AUTHORIZATION=token)
    assert response.status_code == 200, response.content
    return dict(response.json())


def event(
    kind: str, room: str, *, agent: bool = True, identity: str = "agent-1", at: int = 0
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": kind,
        "room": {"name": room},
        "id": f"EV_{kind}_{at}",
        "createdAt": str(at),
    }
    if kind != "room_finished" and kind != "room_started":
        payload["participant"] = {"identity": identity, "kind": "AGENT" if agent else "STANDARD"}
    return payload


def starting_session(agent: VoiceAgent, session_id: str) -> ConversationSession:
    with pytest.MonkeyPatch.context() as patch:
        tasks_not_queued(patch)
        session = session_start(company=agent.company, agent_id=agent.pk, session_id=session_id).session
    assert session_transition(session_pk=session.pk, to=AgentStatus.DISPATCHING)
    assert session_transition(session_pk=session.pk, to=AgentStatus.STARTING)
    return session


def test_webhooks_twice_late_or_out_of_order_leave_the_right_status(client: Client) -> None:
    agent = VoiceAgentFactory()

    # Twice: the second join is a no-op, the agent's start time is the first one's.
    a = starting_session(agent, "twice")
    assert signed_post(client, event("participant_joined", a.agent_room_name))["outcome"] == "active"
    first_start = ConversationSession.objects.get(pk=a.pk).agent_started_at
    assert signed_post(client, event("participant_joined", a.agent_room_name))["outcome"] == "noop"
    assert ConversationSession.objects.get(pk=a.pk).agent_started_at == first_start
    # The agent left without its worker's report of the end: lost, recovered once.
    assert signed_post(client, event("participant_left", a.agent_room_name))["outcome"] == "recovering"
    assert signed_post(client, event("participant_left", a.agent_room_name))["outcome"] == "noop"
    assert status_of("twice") == AgentStatus.RECOVERING
    assert ConversationSession.objects.get(pk=a.pk).recovery_count == 1

    # Out of order: the leave overtakes the join. The agent has gone; its join that
    # arrives afterwards must not pass for its replacement.
    b = starting_session(agent, "overtaken")
    signed_post(client, event("participant_left", b.agent_room_name, at=2))
    assert signed_post(client, event("participant_joined", b.agent_room_name, at=1))["outcome"] == "noop"
    assert status_of("overtaken") == AgentStatus.RECOVERING
    # a new agent does
    assert (
        signed_post(client, event("participant_joined", b.agent_room_name, identity="agent-2"))["outcome"]
        == "active"
    )

    # Late: room_finished already ended the session; stragglers change nothing.
    c = starting_session(agent, "late")
    signed_post(client, event("participant_joined", c.agent_room_name))
    signed_post(client, event("room_finished", c.agent_room_name))
    stopped_at = ConversationSession.objects.get(pk=c.pk).agent_stopped_at
    for straggler in (
        "participant_joined",
        "participant_connection_aborted",
        "participant_left",
        "room_finished",
    ):
        signed_post(client, event(straggler, c.agent_room_name))
    session = ConversationSession.objects.get(pk=c.pk)
    assert session.agent_status == AgentStatus.STOPPED and session.agent_stopped_at == stopped_at

    # A join that arrives after the visitor pressed stop does not undo the stop.
    d = starting_session(agent, "stopping")
    assert session_transition(session_pk=d.pk, to=AgentStatus.STOPPING)
    signed_post(client, event("participant_joined", d.agent_room_name))
    assert status_of("stopping") == AgentStatus.STOPPING

    # An aborted agent connection: recovering; the room closing meanwhile fails the
    # session (a crash is never recorded as stopped), whatever comes after it.
    e = starting_session(agent, "aborted")
    signed_post(client, event("participant_joined", e.agent_room_name))
    signed_post(client, event("participant_connection_aborted", e.agent_room_name))
    assert status_of("aborted") == AgentStatus.RECOVERING
    signed_post(client, event("participant_left", e.agent_room_name))
    signed_post(client, event("room_finished", e.agent_room_name))
    session = ConversationSession.objects.get(pk=e.pk)
    assert session.agent_status == AgentStatus.FAILED and "being replaced" in session.failure_reason

    # A webhook for a room that no longer exists (or never was ours): nothing to do, no error.
    for kind in ("participant_left", "participant_connection_aborted", "participant_joined", "room_finished"):
        assert signed_post(client, event(kind, "ac-gone-room"))["outcome"] == "noop"

    # The visitor's own comings and goings never move the agent's status.
    f = starting_session(agent, "visitor-only")
    signed_post(client, event("participant_left", f.agent_room_name, agent=False, identity="visitor-x"))
    assert status_of("visitor-only") == AgentStatus.STARTING


# --- the agent worker killed mid-conversation: sessions/tests/test_recovery.py ------------------------
