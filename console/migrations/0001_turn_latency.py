"""The dashboard's narrow copy of turn latencies (console.models.TurnLatency), kept by a
PostgreSQL trigger on transcript_turns, and filled from the turns already there.

Only on PostgreSQL: the dashboard's percentiles are PostgreSQL's, and on SQLite
(`make run`) the dashboard is off, so the table stays empty there.
"""

import django.db.models.deletion
from django.db import migrations, models


def _number(key: str, row: str) -> str:
    # A figure that is not a JSON number (never written so, but the column is JSON) is NULL
    # rather than an error that would refuse the turn's insert.
    return f"CASE WHEN jsonb_typeof({row}.metrics -> '{key}') = 'number' THEN ({row}.metrics ->> '{key}')::float8 END"


METRICS = ("response_latency", "end_of_turn_delay", "transcription_delay", "llm_ttft", "tts_ttfb")
COLUMNS = (
    "turn_id, session_id, session_created_at, company_id, agent_id, llm_provider, stt_provider, "
    "tts_provider, " + ", ".join(METRICS)
)


def _select(row: str) -> str:
    return f"""
    SELECT {row}.id, s.id, s.created_at, s.company_id, s.agent_id,
           coalesce(s.config ->> 'llm_provider', ''), coalesce(s.config ->> 'stt_provider', ''),
           coalesce(s.config ->> 'tts_provider', ''), {", ".join(_number(m, row) for m in METRICS)}
    FROM conversation_sessions s WHERE s.id = {row}.session_id"""


POSTGRES = f"""
CREATE FUNCTION console_turn_latency_write() RETURNS trigger AS $$
BEGIN
    INSERT INTO console_turn_latency ({COLUMNS}) {_select("NEW")}
    ON CONFLICT (turn_id) DO UPDATE SET {", ".join(f"{m} = EXCLUDED.{m}" for m in METRICS)};
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER turn_latency_write
    AFTER INSERT OR UPDATE OF metrics ON transcript_turns
    FOR EACH ROW EXECUTE FUNCTION console_turn_latency_write();
CREATE FUNCTION console_turn_latency_delete() RETURNS trigger AS $$
BEGIN
    DELETE FROM console_turn_latency WHERE turn_id = OLD.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER turn_latency_delete
    AFTER DELETE ON transcript_turns
    FOR EACH ROW EXECUTE FUNCTION console_turn_latency_delete();
{{backfill}}
"""
BACKFILL = f"""
INSERT INTO console_turn_latency ({COLUMNS})
SELECT t.id, s.id, s.created_at, s.company_id, s.agent_id,
       coalesce(s.config ->> 'llm_provider', ''), coalesce(s.config ->> 'stt_provider', ''),
       coalesce(s.config ->> 'tts_provider', ''), {", ".join(_number(m, "t") for m in METRICS)}
FROM transcript_turns t JOIN conversation_sessions s ON s.id = t.session_id
ON CONFLICT (turn_id) DO NOTHING;
"""
POSTGRES = POSTGRES.replace("{backfill}", BACKFILL)
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS turn_latency_delete ON transcript_turns;
DROP TRIGGER IF EXISTS turn_latency_write ON transcript_turns;
DROP FUNCTION IF EXISTS console_turn_latency_delete();
DROP FUNCTION IF EXISTS console_turn_latency_write();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_REVERSE)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("conversation_sessions", "0004_live_session_release_trigger"),
    ]

    operations = [
        migrations.CreateModel(
            name="TurnLatency",
            fields=[
                (
                    "turn",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="conversation_sessions.transcriptturn",
                    ),
                ),
                ("session_id", models.BigIntegerField()),
                ("session_created_at", models.DateTimeField()),
                ("company_id", models.BigIntegerField()),
                ("agent_id", models.BigIntegerField()),
                ("llm_provider", models.CharField(blank=True, max_length=20)),
                ("stt_provider", models.CharField(blank=True, max_length=20)),
                ("tts_provider", models.CharField(blank=True, max_length=20)),
                ("response_latency", models.FloatField(null=True)),
                ("end_of_turn_delay", models.FloatField(null=True)),
                ("transcription_delay", models.FloatField(null=True)),
                ("llm_ttft", models.FloatField(null=True)),
                ("tts_ttfb", models.FloatField(null=True)),
            ],
            options={
                "db_table": "console_turn_latency",
                "indexes": [
                    models.Index(fields=["session_created_at"], name="turn_latency_created"),
                    models.Index(fields=["company_id", "session_created_at"], name="turn_latency_company"),
                ],
            },
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
