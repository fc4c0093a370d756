"""The deployment files: docker-compose.yml, deploy/livekit.yaml, the Dockerfile, the
entrypoint, the systemd units and .env.example, checked as far as this machine can
(no Docker engine here): parsed, cross-checked, and run for real where a piece can run
without Docker (gunicorn, the agent worker's health server, the entrypoint's roles,
livekit-server with the compose configuration, systemd-analyze)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.urls import resolve

from tests.helpers import wait_for
from tests.processes import ROOT, Process
from tests.processes import test_database_env as database_env

COMPOSE = ROOT / "docker-compose.yml"
LIVEKIT_YAML = ROOT / "deploy" / "livekit.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
UNITS = ROOT / "deploy" / "systemd"
ENV_EXAMPLE = ROOT / ".env.example"

APP_SERVICES = {"web", "worker", "beat", "voice-agent", "conference-agent"}
SERVICES = {"postgres", "redis", "livekit", "migrate", *APP_SERVICES}
UNIT_ROLES = {
    "agentconnect-web.service": "web",
    "agentconnect-celery-worker.service": "worker",
    "agentconnect-celery-beat.service": "beat",
    "agentconnect-voice-agent.service": "voice-agent",
    "agentconnect-conference-agent.service": "conference-agent",
}
AGENT_ROLES = {"voice-agent", "conference-agent"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def example_vars() -> dict[str, str]:
    """Variables named in .env.example, active or shown commented out, with their values."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


def example_active() -> dict[str, str]:
    active = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            value = match.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            active[match.group(1)] = value
    return active


def entrypoint_roles() -> set[str]:
    return set(re.findall(r"^\s{4}([a-z-]+)\)\s*$", ENTRYPOINT.read_text(), re.M))


def seconds(duration: str | int) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    if isinstance(duration, int):
        return float(duration)
    assert match and any(match.groups()), duration
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(**extra: str) -> dict[str, str]:
    env = database_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_has_every_service_with_image_command_healthcheck_and_restart() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    one_shot = set()
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        if name != "postgres":
            assert service.get("command"), name
        if service.get("restart") == "no":
            one_shot.add(name)
            continue
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        check = service.get("healthcheck")
        assert check and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        for key in ("interval", "timeout"):
            assert seconds(check[key]) > 0, (name, key)
        assert seconds(check["timeout"]) <= seconds(check["interval"]), name
    # The only run-once service is migrate, and the app waits for it to succeed.
    assert one_shot == {"migrate"}
    for name in ("web", "worker", "beat", "voice-agent", "conference-agent"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    # postgres has its image's own command (the server); it is still set, for its settings.
    assert services["postgres"]["command"][0] == "postgres"


def test_compose_app_services_run_the_one_image_with_env_from_dotenv() -> None:
    services = compose()["services"]
    roles = entrypoint_roles()
    for name in (*APP_SERVICES, "migrate"):
        service = services[name]
        assert service["build"] == "." and service["image"] == "agentconnect-voice:latest", name
        assert service["env_file"] == ".env", name
        assert service["init"] is True, name  # signals reach the process; zombies are reaped
        assert service["command"][0] in roles, name
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["LIVEKIT_URL"] == "ws://livekit:7880"
        # Each container's multiprocess metrics directory is on its own tmpfs: empty at each start.
        assert any(env["PROMETHEUS_MULTIPROC_DIR"].startswith(mount) for mount in service["tmpfs"]), name
    assert services["web"]["command"] == ["web"]
    assert {services[name]["command"][0] for name in APP_SERVICES} == APP_SERVICES


def test_compose_agents_get_longer_to_stop_than_their_drain() -> None:
    services = compose()["services"]
    drain = settings.AGENT_DRAIN_TIMEOUT_SECONDS
    assert drain == int(example_vars()["AGENT_DRAIN_TIMEOUT_SECONDS"])
    for name in AGENT_ROLES:
        assert seconds(services[name]["stop_grace_period"]) > drain, name
        assert services[name]["depends_on"]["livekit"]["condition"] == "service_healthy"


def test_compose_variables_are_all_in_env_example() -> None:
    text = COMPOSE.read_text()
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert referenced >= {"POSTGRES_PASSWORD", "LIVEKIT_API_SECRET"}
    missing = referenced - set(example_vars())
    assert not missing, f"referenced in docker-compose.yml but not in .env.example: {sorted(missing)}"
    # No bare $VAR (compose would interpolate it silently).
    assert not re.findall(r"(?<!\$)\$[A-Za-z_]", text)


def test_every_setting_from_the_environment_is_in_env_example() -> None:
    source = (ROOT / "agentconnect" / "settings.py").read_text()
    read = set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    read |= set(re.findall(r"_secret\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "LOG_FORMAT", "METRICS_TOKEN"} <= read
    missing = read - set(example_vars())
    assert not missing, f"read in settings.py but not listed in .env.example: {sorted(missing)}"
    assert "PROMETHEUS_MULTIPROC_DIR" in example_vars()


def test_env_example_is_a_working_development_configuration(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not re.match(r"^(DJANGO|DATABASE|REDIS|CELERY|LIVEKIT|TEST_)", k)
    }
    env.update(example_active())
    env["DJANGO_SETTINGS_MODULE"] = "agentconnect.settings"
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DEBUG, s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.LOG_FORMAT]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    debug, engine, broker, log_format = json.loads(result.stdout.strip().splitlines()[-1])
    assert (debug, engine, broker, log_format) == (
        True,
        "django.db.backends.sqlite3",
        "filesystem://",
        "text",
    )


# --- deploy/livekit.yaml --------------------------------------------------------------------------


def test_livekit_config_signs_webhooks_for_the_web_service_with_the_apps_key() -> None:
    config = yaml.safe_load(LIVEKIT_YAML.read_text())
    services = compose()["services"]
    livekit = services["livekit"]
    assert livekit["image"] == "livekit/livekit-server:v1.13.5"
    assert livekit["volumes"] == ["./deploy/livekit.yaml:/etc/livekit.yaml:ro"]
    assert livekit["command"] == ["--config", "/etc/livekit.yaml"]
    # Secrets stay out of the repository: the keys come from the environment.
    assert "keys" not in config and "key_file" not in config
    key_name, _, secret = livekit["environment"]["LIVEKIT_KEYS"].partition(": ")
    assert secret.startswith("${LIVEKIT_API_SECRET")
    app_key = services["web"]["environment"]["LIVEKIT_API_KEY"]
    assert config["webhook"]["api_key"] == key_name == app_key
    for name in APP_SERVICES:
        assert services[name]["environment"]["LIVEKIT_API_KEY"] == app_key, name
        assert "LIVEKIT_API_SECRET" not in services[name]["environment"], name  # from .env, like livekit's

    [url] = config["webhook"]["urls"]
    assert url.startswith("http://web:8000/")
    path = url.removeprefix("http://web:8000")
    assert resolve(path).func.__name__ == "livekit_webhook"
    assert "8000:8000" in services["web"]["ports"]
    assert config["port"] == 7880 and "7880:7880" in livekit["ports"]
    assert f"{config['rtc']['tcp_port']}:{config['rtc']['tcp_port']}" in livekit["ports"]
    assert f"{config['rtc']['udp_port']}:{config['rtc']['udp_port']}/udp" in livekit["ports"]


def _livekit_with_compose_config(tmp_path: Path, keys: str) -> tuple[subprocess.Popen[str], int]:
    """Start the real livekit-server on the compose configuration, moved to free loopback ports."""
    binary = ROOT / ".bin" / "livekit-server"
    assert binary.exists(), "livekit-server missing: run scripts/install-deps.sh"
    config = yaml.safe_load(LIVEKIT_YAML.read_text())
    config["port"] = free_port()
    config["rtc"].update(
        tcp_port=free_port(), udp_port=free_port(), use_external_ip=False, node_ip="127.0.0.1"
    )
    config["bind_addresses"] = ["127.0.0.1"]
    path = tmp_path / "livekit.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [str(binary), "--config", str(path)],
        env={"PATH": os.environ.get("PATH", ""), "LIVEKIT_KEYS": keys},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ), config["port"]


def test_real_livekit_server_accepts_the_compose_keys_and_webhook(tmp_path: Path) -> None:
    secret = "0123456789abcdef0123456789abcdef0123456789abcdef"
    proc, port = _livekit_with_compose_config(tmp_path, f"agentconnect: {secret}")
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout=30, what="livekit-server on the compose config")
    finally:
        proc.kill()  # a throwaway server; its graceful stop waits for rooms to drain
        proc.wait(timeout=20)


def test_real_livekit_server_refuses_a_webhook_key_it_does_not_have(tmp_path: Path) -> None:
    secret = "0123456789abcdef0123456789abcdef0123456789abcdef"
    proc, _ = _livekit_with_compose_config(tmp_path, f"another-key: {secret}")
    try:
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # It stops at once, saying why (livekit-server v1.13.5 exits 0 even so).
    assert "api_key is required to use webhooks" in output


# --- Dockerfile and entrypoint ---------------------------------------------------------------------------


def test_dockerfile_is_pinned_layered_and_non_root() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.M):
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", image
    assert "COPY requirements.txt /tmp/requirements.txt" in lines
    assert any("silero.VAD.load()" in line for line in lines)
    assert "collectstatic --noinput" in text
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0")
    assert 'ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]' in lines
    assert 'CMD ["web"]' in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    for private in (".env", ".venv", ".git", "db.sqlite3", "**/node_modules"):
        assert private in ignored, private


def test_dockerfile_model_check_runs_against_the_installed_packages() -> None:
    # The build-time model check, run here against the same pinned packages.
    match = re.search(r'RUN python -c "\\\n(.*?)"\n', DOCKERFILE.read_text(), re.S)
    assert match
    code = match.group(1).replace("\\\n", "")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "bundled models present" in result.stdout


def test_entrypoint_is_executable_and_refuses_an_unknown_role() -> None:
    mode = subprocess.run(
        ["git", "ls-files", "-s", "deploy/docker-entrypoint.sh"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert not mode or mode.startswith("100755"), "commit the entrypoint executable"
    assert os.access(ENTRYPOINT, os.X_OK)
    assert entrypoint_roles() >= {
        "web",
        "worker",
        "beat",
        "voice-agent",
        "conference-agent",
        "migrate",
        "healthcheck",
    }
    result = subprocess.run([str(ENTRYPOINT), "bogus"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "unknown command" in result.stderr


def test_agent_health_check_fails_when_nothing_answers() -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    result = subprocess.run(
        [str(ENTRYPOINT), "healthcheck", "voice-agent", closed], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 1 and "unhealthy" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_beat_health_check_follows_the_broker() -> None:
    ok = subprocess.run(
        [str(ENTRYPOINT), "healthcheck", "beat"], env=app_env(), capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(
        [str(ENTRYPOINT), "healthcheck", "beat"],
        env=app_env(CELERY_BROKER_URL="redis://127.0.0.1:9/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "broker" in down.stderr


@pytest.mark.django_db(transaction=True)
def test_web_role_runs_gunicorn_with_probes_metrics_and_json_logs(tmp_path: Path) -> None:
    port = free_port()
    multiproc = tmp_path / "prometheus"
    web = Process(
        [str(ENTRYPOINT), "web", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        app_env(
            PROMETHEUS_MULTIPROC_DIR=str(multiproc),
            LOG_FORMAT="json",
            DJANGO_ALLOWED_HOSTS="voice.example.com",
        ),
        "gunicorn",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        web.wait_for_output("Booting worker", timeout=60)

        def get(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(base + path, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        wait_for(lambda: get("/healthz")[0] == 200, timeout=30, what="gunicorn /healthz")
        check = subprocess.run(
            [str(ENTRYPOINT), "healthcheck", "web", f"{base}/healthz"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert check.returncode == 0, check.stderr
        status, body = get("/readyz")
        assert status == 200, body
        assert json.loads(body)["status"] == "ok"
        status, body = get("/metrics")
        assert status == 200
        text = body.decode()
        assert "agentconnect_metrics_database_up 1.0" in text
        assert 'agentconnect_sessions{status="active"}' in text
        # Multiprocess mode: the per-process collectors (process_cpu_seconds_total …) are not mixed in.
        assert "process_cpu_seconds_total" not in text
        assert multiproc.is_dir()
        # Other paths keep the host check (127.0.0.1 is not in DJANGO_ALLOWED_HOSTS here).
        assert get("/api/v1/livekit-agents/agent-status/x")[0] == 400
        boot = next(line for line in web.lines if "Booting worker" in line)
        assert json.loads(boot)["logger"] == "gunicorn.error"
    finally:
        code = web.stop(timeout=40)
    assert code == 0, web.tail()
    # No access line per request unless asked for (--access-logfile)
    assert not [line for line in web.lines if "gunicorn.access" in line], web.tail()


@pytest.mark.django_db(transaction=True)
def test_web_role_writes_access_lines_when_asked(tmp_path: Path) -> None:
    port = free_port()
    web = Process(
        [str(ENTRYPOINT), "web", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", "-"],
        app_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"), LOG_FORMAT="json"),
        "gunicorn",
    )
    try:
        web.wait_for_output("Booting worker", timeout=60)
        wait_for(
            lambda: _status(f"http://127.0.0.1:{port}/healthz") == 200, timeout=30, what="gunicorn /healthz"
        )
        line = web.wait_for_output("GET /healthz", timeout=10)
    finally:
        code = web.stop(timeout=40)
    assert code == 0, web.tail()
    assert json.loads(line)["logger"] == "gunicorn.access"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except (urllib.error.URLError, OSError):
        return 0


@pytest.mark.django_db(transaction=True)
def test_voice_agent_role_serves_the_livekit_agents_health_endpoint() -> None:
    if not (ROOT / "voiceagents" / "management" / "commands" / "run_voice_agent.py").exists():
        pytest.fail("manage.py run_voice_agent is missing")
    port = free_port()
    agent = Process(
        [str(ENTRYPOINT), "voice-agent"],
        app_env(VOICE_AGENT_HTTP_PORT=str(port), AGENT_NUM_IDLE_PROCESSES="0", LOG_FORMAT="json"),
        "voice agent",
    )
    try:

        def healthy() -> bool:
            assert agent.proc.poll() is None, agent.tail()
            check = subprocess.run(
                [str(ENTRYPOINT), "healthcheck", "voice-agent"],
                env={**os.environ, "VOICE_AGENT_HTTP_PORT": str(port)},
                capture_output=True,
                text=True,
                timeout=20,
            )
            return check.returncode == 0

        wait_for(healthy, timeout=90, interval=0.5, what="the voice agent's health endpoint")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=5) as response:
            info = json.loads(response.read())
        assert info["agent_name"] == settings.LIVEKIT_VOICE_AGENT_NAME
        assert info.get("active_jobs", 0) == 0  # protobuf JSON leaves out zero values
    finally:
        code = agent.stop(timeout=60)
    assert code == 0, agent.tail()


# --- systemd units ---------------------------------------------------------------------------------------------


def units() -> dict[str, configparser.ConfigParser]:
    parsed = {}
    for path in sorted(UNITS.glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read(path)
        parsed[path.name] = parser
    return parsed


def test_systemd_units_have_the_keys_for_a_graceful_supervised_process() -> None:
    parsed = units()
    assert set(parsed) == set(UNIT_ROLES)
    for name, unit in parsed.items():
        service = unit["Service"]
        assert service["EnvironmentFile"] == "/etc/agentconnect/agentconnect.env", name
        assert service["User"] == "agentconnect", name
        assert service["Restart"] == "on-failure", name
        assert service["KillSignal"] == "SIGTERM", name
        assert service["KillMode"] == "mixed", name
        role = service["ExecStart"].split()[1]
        assert service["ExecStart"].split()[0] == "/opt/agentconnect/deploy/docker-entrypoint.sh", name
        assert role == UNIT_ROLES[name] and role in entrypoint_roles(), name
        assert f"PROMETHEUS_MULTIPROC_DIR=/run/{service['RuntimeDirectory']}" in service["Environment"], name
        stop = int(service["TimeoutStopSec"])
        if role in AGENT_ROLES:
            assert stop == 330 and stop > settings.AGENT_DRAIN_TIMEOUT_SECONDS, name
        else:
            assert stop >= 30, name
        assert unit["Install"]["WantedBy"] == "multi-user.target", name
    assert (
        parsed["agentconnect-web.service"]["Service"]["Type"] == "notify"
    )  # gunicorn tells systemd it is ready


# optional on a developer's machine; under CI a missing tool fails the run instead
@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
    reason="systemd-analyze not installed",
)
def test_systemd_units_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point the units at this checkout.
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/agentconnect", str(ROOT)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify reports unknown keys and bad values on stderr, and still exits 0.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
