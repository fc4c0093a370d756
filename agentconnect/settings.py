"""Settings for AgentConnect Voice, read from the environment (django-environ).

A real environment variable wins over `.env`. Without DATABASE_URL the project
runs on SQLite; without CELERY_BROKER_URL Celery uses an embedded filesystem
broker, so `make run` needs no database or broker server. Production secrets
have no silent default when DEBUG is off.
"""

from __future__ import annotations

import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from agentconnect.logconfig import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A real environment variable wins: read_env does not overwrite what is set.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _secret(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DJANGO_DEBUG is off")


SECRET_KEY = _secret("DJANGO_SECRET_KEY", "dev-insecure-agentconnect-secret-key-change-me")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "voiceagents",
    "sessions.apps.ConversationSessionsConfig",
    "demo",
    "console",
]

MIDDLEWARE = [
    # First: probes reach /healthz and /readyz by IP, before the host check (agentconnect/health.py).
    "agentconnect.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "agentconnect.urls"
WSGI_APPLICATION = "agentconnect.wsgi.application"
ASGI_APPLICATION = "agentconnect.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
# A connection that died while idle (a database restart) is replaced, not reused.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, whose health check looks at the socket instead of sending
    # `SELECT 1`: no extra round trip per request (agentconnect/db/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "agentconnect.db.postgresql"
    # An unreachable database host fails a connection (and /readyz) in seconds, not minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        # Parameters sent apart from the query, and each query prepared on its
        # connection from its second use: PostgreSQL then skips parsing and
        # planning the same few statements on every request. Off for a pooler in transaction mode
        # that cannot follow prepared statements (PgBouncer before 1.21).
        DATABASES["default"]["OPTIONS"].setdefault("server_side_binding", True)
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 2)
# Lets two test runs share one PostgreSQL server without dropping each other's database.
if env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
# The deployment's time zone: the admin shows times in it and the console's daily figures
# are days in it.
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [d for d in [BASE_DIR / "static"] if d.exists()]
if not DEBUG and STATIC_ROOT.is_dir():
    # Collected static files (the Docker image collects them at build: admin, widget.js)
    # are served by the app itself under gunicorn, with no separate file server.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )

# /demo/ lists every active agent with its company's widget key: for development
# and demos only, so it follows DEBUG unless set.
DEMO_PAGE_ENABLED = env.bool("DEMO_PAGE_ENABLED", default=DEBUG)

# --- REST framework -----------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "agentconnect.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AgentConnect Voice API",
    "DESCRIPTION": "Start, inspect and stop AI voice agent sessions in LiveKit rooms.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs pages load their JavaScript and CSS from our static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sessions.schema.strict_inputs",  # request bodies refuse unknown fields
    ],
}

# --- CORS: widget endpoints are called from company websites -------------------------
# Which origins may call is decided per company (Company.allowed_origins) by
# corsheaders' signal handler in sessions.apps; nothing is allowed globally.
CORS_URLS_REGEX = r"^/api/v1/livekit-agents/.*$"
CORS_ALLOW_HEADERS = [
    "accept",
    "content-type",
    "x-widget-key",
    "x-requested-with",
]
# The widget reads Retry-After on a 429/503 to know when to try again.
CORS_EXPOSE_HEADERS = ["Retry-After"]

# --- Celery ---------------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
CELERY_BROKER_FILESYSTEM_DIR = Path(
    env.str("CELERY_BROKER_FILESYSTEM_DIR", default=str(BASE_DIR / ".run" / "broker"))
)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_RECONCILE_INTERVAL_SECONDS = env.float("CELERY_RECONCILE_INTERVAL_SECONDS", default=15.0)
# Dispatch/stop retries on a LiveKit outage: backoff 2, 4, 8 … s, capped here (sessions/tasks.py).
CELERY_TASK_MAX_RETRIES = env.int("CELERY_TASK_MAX_RETRIES", default=5)
CELERY_RETRY_BACKOFF_MAX_SECONDS = env.int("CELERY_RETRY_BACKOFF_MAX_SECONDS", default=60)

# --- Cache: shared rate-limit counters ------------------------------------------------
# Redis when REDIS_URL is set, so every web process shares one count; otherwise
# this process's memory (enough for `make run`). Short socket timeouts: a Redis
# outage must cost a request milliseconds, not seconds (the limits then fail open).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="agentconnect"),
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Abuse control: rate limits and admission control (docs/security.md) ---------------
# "<count>/<s|min|hour|day>", or "off". Per client IP (checked before the widget
# key, so bad keys count too) and per widget key, on start-voice-session and
# widget-voice-token (sessions/throttling.py).
RATE_LIMITS = {
    "start_per_ip": env.str("RATE_LIMIT_START_PER_IP", default="20/min"),
    "start_per_key": env.str("RATE_LIMIT_START_PER_KEY", default="300/min"),
    "token_per_ip": env.str("RATE_LIMIT_TOKEN_PER_IP", default="60/min"),
    "token_per_key": env.str("RATE_LIMIT_TOKEN_PER_KEY", default="1200/min"),
}
for _scope, _rate in RATE_LIMITS.items():
    if _rate.lower() not in ("off", "") and not re.fullmatch(
        r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", _rate
    ):
        raise ImproperlyConfigured(
            f"rate limit {_scope}: {_rate!r} is not '<count>/<s|min|hour|day>' or 'off'"
        )
RATE_LIMIT_KEY_PREFIX = "ratelimit"
# The client address is REMOTE_ADDR unless this names a header that *our* proxy
# sets (e.g. X-Forwarded-For behind a load balancer); a client can forge any header.
RATE_LIMIT_CLIENT_IP_HEADER = env.str("RATE_LIMIT_CLIENT_IP_HEADER", default="")
# How many proxies of ours append to that header (X-Forwarded-For is read from the right).
RATE_LIMIT_TRUSTED_PROXIES = env.int("RATE_LIMIT_TRUSTED_PROXIES", default=1)
# Live (non-terminal) sessions the whole deployment accepts at once, across
# companies: what its agent workers and LiveKit are sized for. 0: no cap.
MAX_LIVE_SESSIONS = env.int("MAX_LIVE_SESSIONS", default=500)
# Within this many of the cap, starts take the deployment-wide lock (strict);
# further from it they do not (fast). Keep it at least the number of requests
# the web tier serves at once (processes x threads, all nodes).
MAX_LIVE_SESSIONS_SLACK = env.int("MAX_LIVE_SESSIONS_SLACK", default=100)

# --- LiveKit --------------------------------------------------------------------------

LIVEKIT_URL = env.str("LIVEKIT_URL", default="ws://127.0.0.1:7880")
LIVEKIT_API_KEY = _secret("LIVEKIT_API_KEY", "devkey")
LIVEKIT_API_SECRET = _secret("LIVEKIT_API_SECRET", "secret")
# The URL a browser is told to connect to; differs from LIVEKIT_URL behind a proxy.
LIVEKIT_PUBLIC_URL = env.str("LIVEKIT_PUBLIC_URL", default="") or LIVEKIT_URL
LIVEKIT_API_TIMEOUT_SECONDS = env.float("LIVEKIT_API_TIMEOUT_SECONDS", default=5.0)
LIVEKIT_USER_TOKEN_TTL_SECONDS = env.int("LIVEKIT_USER_TOKEN_TTL_SECONDS", default=600)
LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS = env.int("LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS", default=300)
LIVEKIT_ROOM_DEPARTURE_TIMEOUT_SECONDS = env.int("LIVEKIT_ROOM_DEPARTURE_TIMEOUT_SECONDS", default=20)
LIVEKIT_CONFERENCE_MAX_PARTICIPANTS = env.int("LIVEKIT_CONFERENCE_MAX_PARTICIPANTS", default=50)
LIVEKIT_VOICE_AGENT_NAME = env.str("LIVEKIT_VOICE_AGENT_NAME", default="agentconnect-voice")
LIVEKIT_CONFERENCE_AGENT_NAME = env.str("LIVEKIT_CONFERENCE_AGENT_NAME", default="agentconnect-conference")
# A session whose agent has not joined this long after dispatch is failed by reconcile.
AGENT_START_TIMEOUT_SECONDS = env.int("AGENT_START_TIMEOUT_SECONDS", default=60)
# A session stuck in pending/dispatching this long (lost task, broker outage) is failed.
AGENT_DISPATCH_TIMEOUT_SECONDS = env.int("AGENT_DISPATCH_TIMEOUT_SECONDS", default=120)
# A session still pending this long (its dispatch task never ran: lost in a broker
# restart) has the task queued again by reconcile, until the dispatch timeout; 0: never.
AGENT_REQUEUE_AFTER_SECONDS = env.int("AGENT_REQUEUE_AFTER_SECONDS", default=20)
# An agent lost mid-conversation (job or worker died, drain timeout) is replaced by a
# new one in the same room this many times per session; once more and it fails.
AGENT_MAX_RECOVERIES = env.int("AGENT_MAX_RECOVERIES", default=2)
# A recovering session that no worker took over within this long is failed.
AGENT_RECOVERY_TIMEOUT_SECONDS = env.int("AGENT_RECOVERY_TIMEOUT_SECONDS", default=30)
# LiveKit offers a job once; when every worker refuses it at that moment (a burst, a
# deploy) it is dropped. A session still waiting for its agent this long after the
# offer has its dispatch checked, and offered again if no worker took it; 0: never.
AGENT_REDISPATCH_AFTER_SECONDS = env.float("AGENT_REDISPATCH_AFTER_SECONDS", default=2.0)
# Each worker's main process stamps the sessions it serves every interval; the
# watchdog (Celery beat, every CELERY_WATCHDOG_INTERVAL_SECONDS) recovers a session
# whose stamp is older than the timeout: its whole worker is gone.
AGENT_HEARTBEAT_INTERVAL_SECONDS = env.float("AGENT_HEARTBEAT_INTERVAL_SECONDS", default=0.5)
AGENT_HEARTBEAT_TIMEOUT_SECONDS = env.float("AGENT_HEARTBEAT_TIMEOUT_SECONDS", default=2.0)
CELERY_WATCHDOG_INTERVAL_SECONDS = env.float("CELERY_WATCHDOG_INTERVAL_SECONDS", default=1.0)

# --- Agent workers (manage.py run_voice_agent / run_conference_agent) ------------------

AGENT_DRAIN_TIMEOUT_SECONDS = env.int("AGENT_DRAIN_TIMEOUT_SECONDS", default=300)
AGENT_NUM_IDLE_PROCESSES = env.int("AGENT_NUM_IDLE_PROCESSES", default=2)
# A worker's load is active conversations / AGENT_MAX_JOBS_PER_WORKER; at
# AGENT_LOAD_THRESHOLD it stops taking jobs and LiveKit sends them elsewhere.
AGENT_MAX_JOBS_PER_WORKER = env.int("AGENT_MAX_JOBS_PER_WORKER", default=8)
AGENT_LOAD_THRESHOLD = env.float("AGENT_LOAD_THRESHOLD", default=1.0)
# LiveKit's `agents.target_load` (its default 0.7): it routes jobs only to workers whose
# reported load is below it, so workers report their share of slots scaled to it.
LIVEKIT_AGENT_TARGET_LOAD = env.float("LIVEKIT_AGENT_TARGET_LOAD", default=0.7)
if not 0 < LIVEKIT_AGENT_TARGET_LOAD <= 1:
    raise ImproperlyConfigured("LIVEKIT_AGENT_TARGET_LOAD must be above 0 and at most 1")
# process: each conversation in its own job process (a crash or a leak stays there);
# thread: conversations share the worker's process and its GIL (docs/benchmarks.md).
AGENT_JOB_EXECUTOR = env.str("AGENT_JOB_EXECUTOR", default="process")
if AGENT_JOB_EXECUTOR not in ("process", "thread"):
    raise ImproperlyConfigured("AGENT_JOB_EXECUTOR must be process or thread")
# Set up Django (apps, models, session services) once in the worker's forkserver, in
# pages every job process shares, instead of in each job process.
AGENT_PRELOAD_DJANGO = env.bool("AGENT_PRELOAD_DJANGO", default=True)
# Memory (PSS, MB) a conversation's process may use. Over it, the process ends with its
# conversation (it is never stopped mid-call) and the worker's load counts it; a thread
# worker over AGENT_MAX_JOBS_PER_WORKER times it is replaced once its conversations end.
# 0: no limit. Above AGENT_JOB_MEMORY_KILL_MB (0: never) livekit-agents kills a job
# process outright; the worker reports it lost and a new agent resumes the conversation.
AGENT_JOB_MEMORY_LIMIT_MB = env.float("AGENT_JOB_MEMORY_LIMIT_MB", default=500)
AGENT_JOB_MEMORY_KILL_MB = env.float("AGENT_JOB_MEMORY_KILL_MB", default=1500)
# The worker takes no job after this many conversations, lets the running ones end and
# exits 3 for its supervisor to start a fresh one (0: never). Job processes are fresh
# for every conversation already; this renews the worker's own process (and, with
# AGENT_JOB_EXECUTOR=thread, the one all its conversations run in).
AGENT_RECYCLE_AFTER_CONVERSATIONS = env.int("AGENT_RECYCLE_AFTER_CONVERSATIONS", default=0)
if AGENT_JOB_MEMORY_LIMIT_MB < 0 or AGENT_JOB_MEMORY_KILL_MB < 0 or AGENT_RECYCLE_AFTER_CONVERSATIONS < 0:
    raise ImproperlyConfigured(
        "AGENT_JOB_MEMORY_LIMIT_MB, AGENT_JOB_MEMORY_KILL_MB and AGENT_RECYCLE_AFTER_CONVERSATIONS must not be negative"
    )
if AGENT_JOB_MEMORY_KILL_MB and AGENT_JOB_MEMORY_KILL_MB < AGENT_JOB_MEMORY_LIMIT_MB:
    raise ImproperlyConfigured("AGENT_JOB_MEMORY_KILL_MB must be 0 or at least AGENT_JOB_MEMORY_LIMIT_MB")
# Attempts to reach LiveKit before the worker gives up and exits non-zero.
AGENT_WORKER_MAX_RETRY = env.int("AGENT_WORKER_MAX_RETRY", default=6)
AGENT_HTTP_HOST = env.str("AGENT_HTTP_HOST", default="127.0.0.1")
VOICE_AGENT_HTTP_PORT = env.int("VOICE_AGENT_HTTP_PORT", default=8081)
CONFERENCE_AGENT_HTTP_PORT = env.int("CONFERENCE_AGENT_HTTP_PORT", default=8082)
# Each agent worker's Prometheus endpoint (0: none): per-turn latency histograms.
VOICE_AGENT_METRICS_PORT = env.int("VOICE_AGENT_METRICS_PORT", default=0)
CONFERENCE_AGENT_METRICS_PORT = env.int("CONFERENCE_AGENT_METRICS_PORT", default=0)
# Where job processes keep their metric files; the worker empties it on start.
AGENT_METRICS_DIR = env.str("AGENT_METRICS_DIR", default=str(BASE_DIR / ".run" / "agent-metrics"))
# Turns in a row whose provider call failed (after the plugin's own retries)
# before the conversation ends as failed.
AGENT_PROVIDER_FAILURES_TO_END = env.int("AGENT_PROVIDER_FAILURES_TO_END", default=1)
# Seconds one STT/LLM/TTS request may take before it counts as failed (and is retried).
AGENT_PROVIDER_TIMEOUT_SECONDS = env.float("AGENT_PROVIDER_TIMEOUT_SECONDS", default=10.0)
AGENT_VISITOR_JOIN_TIMEOUT_SECONDS = env.int("AGENT_VISITOR_JOIN_TIMEOUT_SECONDS", default=60)
# Turn-taking (VAD turn detection). The agent's turn starts AGENT_ENDPOINTING_DELAY_SECONDS
# after the visitor's last speech. The VAD closes an utterance for the STT after
# AGENT_VAD_MIN_SILENCE_SECONDS of silence; when that is the shorter of the two, the STT
# and the LLM (and, with AGENT_PREEMPTIVE_TTS, the TTS) work inside the endpointing delay
# and the reply can start the moment it ends. A shorter VAD silence also cuts speech
# with pauses into more STT requests; preemptive TTS spends characters on replies that
# are thrown away when the visitor goes on talking.
AGENT_ENDPOINTING_DELAY_SECONDS = env.float("AGENT_ENDPOINTING_DELAY_SECONDS", default=0.5)
# How turns end when the profile does not say: model (the VAD plus livekit's local audio
# end-of-turn model, turn-detector-v1-mini, no network), vad (a fixed delay) or stt. With
# the model, a plainly finished sentence is answered AGENT_MODEL_ENDPOINTING_DELAY_SECONDS
# after the last speech, and one that sounds unfinished ("so, um...") only after
# AGENT_MAX_ENDPOINTING_DELAY_SECONDS; AGENT_ENDPOINTING_DELAY_SECONDS is vad's and stt's.
AGENT_TURN_DETECTION = env.str("AGENT_TURN_DETECTION", default="model")
AGENT_MODEL_ENDPOINTING_DELAY_SECONDS = env.float("AGENT_MODEL_ENDPOINTING_DELAY_SECONDS", default=0.25)
AGENT_MAX_ENDPOINTING_DELAY_SECONDS = env.float("AGENT_MAX_ENDPOINTING_DELAY_SECONDS", default=2.5)
# Barge-in. This much speech while the agent talks pauses its voice at once; the
# reply is dropped when the visitor's words arrive, and resumes when none came within
# AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS (a cough, a door) or when the words were only
# a backchannel ("mhm", "yeah"; voiceagents/worker/backchannel.py).
AGENT_INTERRUPTION_MIN_SECONDS = env.float("AGENT_INTERRUPTION_MIN_SECONDS", default=0.1)
AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS = env.float("AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS", default=1.0)
AGENT_VAD_MIN_SILENCE_SECONDS = env.float("AGENT_VAD_MIN_SILENCE_SECONDS", default=0.25)
AGENT_PREEMPTIVE_TTS = env.bool("AGENT_PREEMPTIVE_TTS", default=True)
# The VAD's speech probability (smoothed) below which speech is over. The endpointing
# delay counts from the first window under it, so a higher value ends the turn sooner
# after the last word (a few ms in docs/benchmarks.md) but may close an utterance at a
# soft syllable or pause; 0.35 is silero's own default. At most 0.5, the probability
# speech has to reach to start: above that it would have no effect.
AGENT_VAD_DEACTIVATION_THRESHOLD = env.float("AGENT_VAD_DEACTIVATION_THRESHOLD", default=0.35)
# The agent's words reach the room (the widget's captions) in step with its voice, and an
# interrupted reply is kept as far as it was heard. Off, the text goes out as soon as it
# is written and an interrupted reply is kept whole; the reply's first audio frame goes
# out sooner, because the speaking-rate estimate behind the sync works through the
# whole pre-synthesized reply on the event loop just as it starts (docs/benchmarks.md).
# The VAD's backend: native (livekit-local-inference's streaming VAD, run in place),
# native-thread (the same, one worker thread per stream as upstream has it) or silero
# (the plugin's ONNX model). Chosen by bench/bench_capacity.py, docs/benchmarks.md.
AGENT_VAD_BACKEND = env.str("AGENT_VAD_BACKEND", default="native")
if AGENT_VAD_BACKEND not in ("native", "native-thread", "silero"):
    raise ImproperlyConfigured("AGENT_VAD_BACKEND must be native, native-thread or silero")
# One VAD inference per 1:1 conversation: the STT's utterances come from the session's own
# VAD stream. false: the framework's way, a second stream (and model run) for the STT.
AGENT_VAD_SHARED_STREAM = env.bool("AGENT_VAD_SHARED_STREAM", default=True)
# The agent's own gain control on the visitor's audio (WebRTC's AGC on every frame).
# Browsers level the microphone already; false saves that work per conversation.
AGENT_AUTO_GAIN_CONTROL = env.bool("AGENT_AUTO_GAIN_CONTROL", default=True)
AGENT_SYNC_TRANSCRIPTION = env.bool("AGENT_SYNC_TRANSCRIPTION", default=True)
for _name in (
    "AGENT_ENDPOINTING_DELAY_SECONDS",
    "AGENT_MODEL_ENDPOINTING_DELAY_SECONDS",
    "AGENT_MAX_ENDPOINTING_DELAY_SECONDS",
    "AGENT_INTERRUPTION_MIN_SECONDS",
    "AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS",
):
    if not 0 <= globals()[_name] <= 10:
        raise ImproperlyConfigured(f"{_name} must be between 0 and 10")
if AGENT_TURN_DETECTION not in ("model", "vad", "stt"):
    raise ImproperlyConfigured("AGENT_TURN_DETECTION must be model, vad or stt")
if not 0.05 <= AGENT_VAD_MIN_SILENCE_SECONDS <= 5:
    raise ImproperlyConfigured("AGENT_VAD_MIN_SILENCE_SECONDS must be between 0.05 and 5")
if not 0.01 <= AGENT_VAD_DEACTIVATION_THRESHOLD <= 0.5:
    raise ImproperlyConfigured("AGENT_VAD_DEACTIVATION_THRESHOLD must be between 0.01 and 0.5")
# How a conference agent hears the room (docs/benchmarks.md, "Conference"):
# per_participant: one VAD + STT stream per person, every utterance carries its speaker
# (STT cost and connections grow with the number of people); mixed: one STT stream on
# the mix, the speaker is whoever was loudest during the utterance (one stream's cost;
# overlapping speech is attributed to one of the speakers).
CONFERENCE_STT_STRATEGY = env.str("CONFERENCE_STT_STRATEGY", default="per_participant")
if CONFERENCE_STT_STRATEGY not in ("per_participant", "mixed"):
    raise ImproperlyConfigured("CONFERENCE_STT_STRATEGY must be per_participant or mixed")

# --- Agent defaults (used when neither the request nor the agent profile says) --------

AGENT_LLM_PROVIDER = env.str("AGENT_LLM_PROVIDER", default="openai")
AGENT_LLM_MODEL = env.str("AGENT_LLM_MODEL", default="gpt-4o-mini")
AGENT_STT_PROVIDER = env.str("AGENT_STT_PROVIDER", default="deepgram")
AGENT_TTS_PROVIDER = env.str("AGENT_TTS_PROVIDER", default="openai")
AGENT_TTS_VOICE = env.str("AGENT_TTS_VOICE", default="alloy")
AGENT_VAD_ENABLED = env.bool("AGENT_VAD_ENABLED", default=True)
AGENT_ALLOW_INTERRUPTIONS = env.bool("AGENT_ALLOW_INTERRUPTIONS", default=True)
AGENT_SYSTEM_PROMPT = env.str(
    "AGENT_SYSTEM_PROMPT",
    default="You are a helpful, concise voice assistant. Keep answers short and spoken.",
)
AGENT_GREETING_MESSAGE = env.str("AGENT_GREETING_MESSAGE", default="Hello! How can I help you today?")
# What a replacement agent says instead of the greeting (agent profile's resume line first).
AGENT_RESUME_MESSAGE = env.str("AGENT_RESUME_MESSAGE", default="Sorry, I lost you for a moment.")

# --- Company HTTP tools (docs/security.md) ----------------------------------------------

# Tool URLs resolving to loopback, private or link-local addresses are refused (the agent
# must not become a way into our own network); tests and a local demo switch this on.
COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES = env.bool("COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES", default=False)
# Extra CA certificates (PEM file) trusted for tool calls besides the system's; blank: none.
COMPANY_TOOLS_CA_FILE = env.str("COMPANY_TOOLS_CA_FILE", default="")
# A staff member's token for joining a handoff: short, since it is minted at the click.
LIVEKIT_STAFF_TOKEN_TTL_SECONDS = env.int("LIVEKIT_STAFF_TOKEN_TTL_SECONDS", default=120)

# --- AI providers (keys are secrets; base URLs allow OpenAI-compatible servers) --------

OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
GROQ_API_KEY = env.str("GROQ_API_KEY", default="")
GROQ_BASE_URL = env.str("GROQ_BASE_URL", default="")
DEEPGRAM_API_KEY = env.str("DEEPGRAM_API_KEY", default="")
DEEPGRAM_BASE_URL = env.str("DEEPGRAM_BASE_URL", default="")

# --- Staff console (console/) -----------------------------------------------------------

# Prices per provider for the dashboard's estimated cost, in USD: per million LLM prompt
# and completion tokens, per minute of STT audio, per million TTS characters. A JSON object
# in CONSOLE_PROVIDER_PRICES replaces a provider's entry; a provider absent costs nothing.
CONSOLE_PROVIDER_PRICES: dict[str, dict[str, float]] = {
    "openai": {
        "llm_prompt_per_million_tokens": 0.15,
        "llm_completion_per_million_tokens": 0.60,
        "stt_per_minute": 0.006,
        "tts_per_million_characters": 15.0,
    },
    "groq": {
        "llm_prompt_per_million_tokens": 0.05,
        "llm_completion_per_million_tokens": 0.08,
        "stt_per_minute": 0.00067,
    },
    "deepgram": {"stt_per_minute": 0.0043},
}
CONSOLE_PROVIDER_PRICES.update(env.json("CONSOLE_PROVIDER_PRICES", default={}))
# The live view marks a session that has been starting, dispatching or stopping longer than this.
CONSOLE_STUCK_AFTER_SECONDS = env.int("CONSOLE_STUCK_AFTER_SECONDS", default=60)
# How often the live view asks for fresh rows.
CONSOLE_LIVE_REFRESH_SECONDS = env.float("CONSOLE_LIVE_REFRESH_SECONDS", default=3.0)

# --- Logging --------------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# json: one JSON object per line (production); text: readable lines (development).
LOG_FORMAT = env.str("LOG_FORMAT", default="") or ("text" if DEBUG else "json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)

# --- Operations: metrics, health --------------------------------------------------------

# When set, /metrics requires `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A Celery worker serves its task metrics on this port (0: off); see docs/operations.md.
CELERY_METRICS_PORT = env.int("CELERY_METRICS_PORT", default=0)
CELERY_METRICS_HOST = env.str("CELERY_METRICS_HOST", default="127.0.0.1")
# livekit-server posts its signed webhooks over the private network in plain HTTP
# (docker-compose: http://web:8000/...): an HTTPS redirect would lose them.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/livekit-agents/webhook$"]

if not DEBUG:
    # Production defaults; `manage.py check --deploy` is clean with them (sessions/tests/test_security.py).
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    # Off only where plain HTTP is the point: the test rig on loopback.
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips a client's own).
    if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
