"""The staff console on a large history: dashboard queries, page render, EXPLAIN, streamed export.

Run (from the repository root, test services up: scripts/test-services.sh start):

    .venv/bin/python bench/bench_console.py [--sessions 100000] [--turns-per-session 20]
                                            [--days 180] [--range-days 30] [--repeat 7]

Uses a database of its own, `bench_console`, on the test PostgreSQL (.run/test/env),
created and migrated if needed. Generates the history inside PostgreSQL with
generate_series (sessions spread evenly over --days (a year) up to now, five companies with four
agents each, 85 % stopped, 10 % failed with one of five reasons, a few live in the last
hour; every session has --turns-per-session turns, user and assistant alternating, with
their latency figures), then ANALYZE. An existing history of the same size is reused
(--regenerate to rebuild it).

Then, for the last --range-days days (all companies, then one company):
- each dashboard aggregate (console/analytics.py) run --repeat times: median and p95 ms;
- the dashboard page rendered through Django (test client, staff login) --repeat times;
- the EXPLAIN (ANALYZE) of each aggregate, and which indexes its plan uses;
- an export of >= 100,000 turns as CSV, consumed chunk by chunk: rows, time, and the
  peak Python memory (tracemalloc) against materialising the same rows in a list.

Prints figures; asserts nothing. Bounded: fixed counts, one statement timeout.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _stack import bench_env, ensure_services  # noqa: E402

DB_NAME = "bench_console"
REASONS = [
    "The agent did not join within 60 s.",
    "LiveKit was unreachable after 5 dispatch retries.",
    "The LLM provider failed 1 turn(s) in a row.",
    "The dispatch task was lost (stuck in pending).",
    "The visitor did not join within 60 s.",
]


def _env() -> dict[str, str]:
    env = bench_env(DJANGO_ALLOWED_HOSTS="testserver,127.0.0.1,localhost")
    parsed = urlparse(env["DATABASE_URL"])
    env["DATABASE_URL"] = urlunparse(parsed._replace(path=f"/{DB_NAME}"))
    return env


def _ensure_database(env: dict[str, str]) -> None:
    import psycopg

    base = urlparse(env["DATABASE_URL"])._replace(path="/postgres")
    with psycopg.connect(urlunparse(base), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


GENERATE_SESSIONS = """
INSERT INTO conversation_sessions (
    session_id, company_id, agent_id, mode, agent_room_name, agent_worker_id, agent_identity,
    agent_status, agent_started_at, agent_stopped_at, status_changed_at, config, visitor_identity,
    dispatch_id, failure_reason, usage, created_at, updated_at)
SELECT
    'bench-' || g.i,
    a.company_id, a.id, 'one_to_one', 'bench-room-' || g.i, 'AW_' || (g.i %% 8), '', s.status,
    s.started, s.stopped, coalesce(s.stopped, s.started, s.created),
    jsonb_build_object(
        'llm_provider', (ARRAY['openai', 'groq'])[1 + g.i %% 2],
        'stt_provider', (ARRAY['deepgram', 'groq', 'openai'])[1 + g.i %% 3],
        'tts_provider', 'openai'),
    'visitor-' || g.i, '',
    CASE WHEN s.status = 'failed' THEN (ARRAY[%(reasons)s])[1 + g.i %% 5] ELSE '' END,
    jsonb_build_object(
        'llm_prompt_tokens', 2000 + g.i %% 3000, 'llm_completion_tokens', 300 + g.i %% 500,
        'stt_audio_seconds', 30 + g.i %% 300, 'tts_characters', 500 + g.i %% 2000),
    s.created, s.created
FROM generate_series(1, %(n)s) AS g(i)
JOIN LATERAL (
    SELECT id, company_id FROM voice_agents ORDER BY id OFFSET (g.i %% %(agents)s) LIMIT 1
) a ON true
CROSS JOIN LATERAL (
    SELECT
        c.created, c.status,
        CASE WHEN c.status = 'pending' THEN NULL
             ELSE c.created + make_interval(secs => 0.3 + (g.i %% 27) / 10.0) END AS started,
        CASE WHEN c.status IN ('stopped', 'failed')
             THEN c.created + make_interval(secs => 30 + (g.i * 7919) %% 570) END AS stopped
    FROM (
        SELECT
            CASE WHEN g.i > %(n)s - %(live)s THEN now() - make_interval(secs => (g.i %% 3000))
                 ELSE now() - make_interval(secs => (%(n)s - g.i) * %(spacing)s) END AS created,
            CASE WHEN g.i > %(n)s - %(live)s THEN (ARRAY['active', 'starting', 'pending'])[1 + g.i %% 3]
                 WHEN g.i %% 10 = 3 THEN 'failed' ELSE 'stopped' END AS status
    ) c
) s
"""

GENERATE_TURNS = """
INSERT INTO transcript_turns (
    session_id, sequence, role, speaker_identity, speaker_name, text, started_at, ended_at,
    interrupted, metrics, created_at)
SELECT
    s.id, t.seq,
    CASE WHEN t.seq %% 2 = 1 THEN 'user' ELSE 'assistant' END,
    '', '', 'Turn ' || t.seq || ' of bench session ' || s.id,
    s.agent_started_at + make_interval(secs => t.seq * 4),
    s.agent_started_at + make_interval(secs => t.seq * 4 + 3),
    (s.id + t.seq) %% 17 = 0,
    CASE WHEN t.seq %% 2 = 1 THEN jsonb_build_object(
            'end_of_turn_delay', round((0.3 + ((s.id * 31 + t.seq) %% 400) / 1000.0)::numeric, 4),
            'transcription_delay', round((0.05 + ((s.id * 17 + t.seq) %% 200) / 1000.0)::numeric, 4))
         ELSE jsonb_build_object(
            'response_latency', round((0.6 + ((s.id * 13 + t.seq) %% 900) / 1000.0)::numeric, 4),
            'llm_ttft', round((0.2 + ((s.id * 7 + t.seq) %% 500) / 1000.0)::numeric, 4),
            'tts_ttfb', round((0.1 + ((s.id * 3 + t.seq) %% 300) / 1000.0)::numeric, 4)) END,
    s.agent_started_at
FROM conversation_sessions s
CROSS JOIN generate_series(1, %(turns)s) AS t(seq)
WHERE s.agent_started_at IS NOT NULL AND s.session_id LIKE 'bench-%%'
"""


def generate(sessions: int, turns: int, days: int, regenerate: bool) -> None:
    from django.db import connection, transaction

    from sessions.models import ConversationSession, TranscriptTurn
    from voiceagents.models import Company, VoiceAgent

    have = ConversationSession.objects.filter(session_id__startswith="bench-").count()
    have_turns = TranscriptTurn.objects.count() if have else 0
    live = 60
    expected_turns = (sessions - live // 3) * turns  # pending sessions never started
    if have == sessions and have_turns == expected_turns and not regenerate:
        print(f"history: reusing {have:,} sessions and {have_turns:,} turns in {DB_NAME}")
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE console_turn_latency, transcript_turns, conversation_sessions, company_live_sessions CASCADE"
        )
    if VoiceAgent.objects.count() < 20:
        for c in range(5):
            company, _ = Company.objects.get_or_create(
                slug=f"bench-{c}", defaults={"name": f"Bench company {c}", "max_concurrent_sessions": 40}
            )
            for a in range(4):
                VoiceAgent.objects.get_or_create(company=company, name=f"Agent {c}.{a}")
    agents = VoiceAgent.objects.count()
    spacing = days * 86400 / sessions
    reasons = ", ".join("'" + r.replace("'", "''") + "'" for r in REASONS)
    # The turns go in with the latency copy's trigger off, and the copy is filled after them
    # in one statement, as the migration fills it: 2,000,000 trigger calls would take minutes.
    backfill = importlib.import_module("console.migrations.0001_turn_latency").BACKFILL
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '900s'")
        cursor.execute("ALTER TABLE transcript_turns DISABLE TRIGGER turn_latency_write")
        try:
            with transaction.atomic():
                cursor.execute(
                    GENERATE_SESSIONS
                    % {"reasons": reasons, "n": sessions, "agents": agents, "live": live, "spacing": spacing}
                )
                cursor.execute(GENERATE_TURNS % {"turns": turns})
        finally:
            cursor.execute("ALTER TABLE transcript_turns ENABLE TRIGGER turn_latency_write")
        cursor.execute(backfill)
        cursor.execute("SET statement_timeout = '120s'")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversation_sessions")
        cursor.execute("ANALYZE transcript_turns")
        cursor.execute("VACUUM ANALYZE console_turn_latency")
    print(
        f"history: generated {ConversationSession.objects.count():,} sessions and "
        f"{TranscriptTurn.objects.count():,} turns in {time.perf_counter() - started:.1f} s"
    )


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm: plans cached, pages in shared buffers
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95


def explain(label: str, sql: str, params: Any) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS OFF, TIMING OFF, SUMMARY ON) " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
    indexes = sorted(
        set(
            re.findall(
                r"(?:Index|Index Only|Bitmap Index) Scan (?:Backward )?(?:using|on) (\w+)", "\n".join(plan)
            )
        )
    )
    seq = sorted(set(re.findall(r"Seq Scan on (\w+)", "\n".join(plan))))
    total = next((line.strip() for line in plan if line.strip().startswith("Execution Time")), "")
    print(f"\n-- EXPLAIN {label}: indexes {indexes or 'none'}; seq scans {seq or 'none'}; {total}")
    for line in plan:
        print("   " + line)
    return indexes


def captured_sql(fn: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The statements fn sends, with their parameters (to EXPLAIN them as they are)."""
    from django.db import connection

    statements: list[tuple[str, Any]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        fn()
    return statements


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--turns-per-session", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--range-days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--export-turns", type=int, default=100_000)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()

    ensure_services()
    env = _env()
    _ensure_database(env)
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from console import analytics
    from console.exports import export_response, export_turns
    from console.forms import SessionFilter, deployment_tz
    from voiceagents.models import Company

    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '120s'")
    generate(args.sessions, args.turns_per_session, args.days, args.regenerate)

    today = timezone.now().astimezone(deployment_tz()).date()
    start = today - timedelta(days=args.range_days - 1)
    company = Company.objects.filter(slug="bench-0").first()
    filters = {
        f"{args.range_days} days, all companies": SessionFilter(start=start, end=today),
        f"{args.range_days} days, one company": SessionFilter(start=start, end=today, company=company),
    }
    queries: dict[str, Callable[[SessionFilter], Any]] = {
        "sessions_by_outcome": analytics.sessions_by_outcome,
        "top_failure_reasons": analytics.top_failure_reasons,
        "dispatch_latency": analytics.dispatch_latency,
        "turn_latency_by_agent": analytics.turn_latency_by_agent,
        "turn_latency_by_provider (3 queries)": analytics.turn_latency_by_provider,
        "peak_concurrent": analytics.peak_concurrent,
        "usage_and_cost": analytics.usage_and_cost,
    }
    sessions_in = filters[next(iter(filters))].sessions().count()
    print(f"range: {start} .. {today} ({args.range_days} days): {sessions_in:,} sessions\n")
    print(f"{'query':40s} {'filter':28s} {'median ms':>10s} {'p95 ms':>8s}")
    for label, f in filters.items():
        for name, fn in queries.items():
            med, p95 = timed(functools.partial(fn, f), args.repeat)
            print(f"{name:40s} {label:28s} {med:10.1f} {p95:8.1f}")
        med, p95 = timed(functools.partial(analytics.dashboard, f), args.repeat)
        print(f"{'all aggregates (analytics.dashboard)':40s} {label:28s} {med:10.1f} {p95:8.1f}")

    user, _ = User.objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    print()
    for label, f in filters.items():
        params = f.querystring()

        def render(params: dict[str, str] = params) -> None:
            response = client.get("/admin/console/dashboard/", params)
            assert response.status_code == 200, response.status_code

        med, p95 = timed(render, args.repeat)
        print(
            f"{'dashboard page (GET, rendered)':40s} {label:28s} {med:10.1f} {p95:8.1f}   target: median < 500 ms"
        )

    if not args.no_explain:
        for label, f in filters.items():
            for name, fn in queries.items():
                for i, (sql, params) in enumerate(captured_sql(functools.partial(fn, f))):
                    if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                        explain(f"{name} [{i}], {label}", sql, params)

    # Export: a range ending today, long enough for --export-turns turns.
    per_day = max(1, export_turns(SessionFilter(start=today - timedelta(days=6), end=today)).count() // 7)
    days = max(1, -(-args.export_turns // per_day))
    f = SessionFilter(start=today - timedelta(days=days - 1), end=today)
    expected = export_turns(f).count()
    if not args.no_explain:
        export_sql, export_params = export_turns(f).query.sql_with_params()
        explain("export", export_sql, export_params)

    def stream() -> tuple[int, int]:
        response = export_response(f, "csv")
        lines = size = 0
        for chunk in cast(Iterator[bytes], response.streaming_content):
            lines += 1
            size += len(chunk)
        return lines - 1, size

    # Timed without tracemalloc (it slows Python down several times), then measured with it.
    started = time.perf_counter()
    rows, size = stream()
    streamed_s = time.perf_counter() - started
    started = time.perf_counter()
    listed = len(list(export_turns(f)))
    listed_s = time.perf_counter() - started
    tracemalloc.start()
    stream()
    _, streamed_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    materialised = list(export_turns(f))
    _, listed_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del materialised
    print(
        f"\nexport CSV, {days} days: {rows:,} turns of {expected:,} ({size / 1e6:.1f} MB) streamed in "
        f"{streamed_s:.2f} s ({rows / streamed_s:,.0f} turns/s; the same rows as a list of dicts: "
        f"{listed:,} in {listed_s:.2f} s); peak Python memory {streamed_peak / 1e6:.1f} MB streamed vs "
        f"{listed_peak / 1e6:.1f} MB held in a list: {listed_peak / max(streamed_peak, 1):.0f}x less"
    )


if __name__ == "__main__":
    main()
