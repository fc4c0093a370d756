"""Crash recovery: the `recovering` status, the recovery count, the worker heartbeat.

The live-session release triggers of 0004 named the live statuses; they are
recreated to fire on any change from a non-ended status to an ended one, so a
live status added later (like `recovering`) is covered without a new copy.
"""

from django.db import migrations, models

ENDED = "('stopped', 'failed')"
RELEASE = "UPDATE company_live_sessions SET live = live - 1 WHERE company_id = OLD.company_id AND live > 0"
DROP = [
    "DROP TRIGGER IF EXISTS session_ended_releases_place{on}",
    "DROP TRIGGER IF EXISTS session_deleted_releases_place{on}",
]
POSTGRES = [
    f"""CREATE TRIGGER session_ended_releases_place
    AFTER UPDATE OF agent_status ON conversation_sessions
    FOR EACH ROW WHEN (OLD.agent_status NOT IN {ENDED} AND NEW.agent_status IN {ENDED})
    EXECUTE FUNCTION company_live_sessions_release()""",
    f"""CREATE TRIGGER session_deleted_releases_place
    AFTER DELETE ON conversation_sessions
    FOR EACH ROW WHEN (OLD.agent_status NOT IN {ENDED})
    EXECUTE FUNCTION company_live_sessions_release()""",
]
SQLITE = [
    f"""CREATE TRIGGER session_ended_releases_place
    AFTER UPDATE OF agent_status ON conversation_sessions
    FOR EACH ROW WHEN OLD.agent_status NOT IN {ENDED} AND NEW.agent_status IN {ENDED}
    BEGIN {RELEASE}; END""",
    f"""CREATE TRIGGER session_deleted_releases_place
    AFTER DELETE ON conversation_sessions
    FOR EACH ROW WHEN OLD.agent_status NOT IN {ENDED}
    BEGIN {RELEASE}; END""",
]


def _recreate(schema_editor, statements_by_vendor):
    vendor = schema_editor.connection.vendor
    on = " ON conversation_sessions" if vendor == "postgresql" else ""
    for statement in DROP:
        schema_editor.execute(statement.format(on=on))
    for statement in statements_by_vendor[vendor]:
        schema_editor.execute(statement)


def forwards(apps, schema_editor):
    _recreate(schema_editor, {"postgresql": POSTGRES, "sqlite": SQLITE})


def backwards(apps, schema_editor):
    # the triggers as 0004 made them: live statuses named
    old = "('pending', 'dispatching', 'starting', 'active', 'stopping')"
    _recreate(
        schema_editor,
        {
            "postgresql": [stmt.replace(f"NOT IN {ENDED}", f"IN {old}") for stmt in POSTGRES],
            "sqlite": [stmt.replace(f"NOT IN {ENDED}", f"IN {old}") for stmt in SQLITE],
        },
    )


class Migration(migrations.Migration):
    dependencies = [
        ("conversation_sessions", "0004_live_session_release_trigger"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="conversationsession",
            name="session_valid_status",
        ),
        migrations.AddField(
            model_name="conversationsession",
            name="agent_heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="conversationsession",
            name="recovery_count",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="conversationsession",
            name="agent_status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("dispatching", "Dispatching"),
                    ("starting", "Starting"),
                    ("active", "Active"),
                    ("recovering", "Recovering"),
                    ("stopping", "Stopping"),
                    ("stopped", "Stopped"),
                    ("failed", "Failed"),
                ],
                db_index=True,
                default="pending",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="conversationsession",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "agent_status__in",
                        [
                            "pending",
                            "dispatching",
                            "starting",
                            "active",
                            "recovering",
                            "stopping",
                            "stopped",
                            "failed",
                        ],
                    )
                ),
                name="session_valid_status",
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
