"""A session that ends gives its company's counted place back in the same statement.

The decrement of `company_live_sessions` is a trigger, not application code: a
status change to stopped or failed (session_transition's conditional UPDATE) or
the deletion of a live session releases the place whichever path made it, and
the change stays one autocommit statement. The increment stays in admission
(sessions.services.admission), which must read the new count to refuse a start.
"""

from django.db import migrations

LIVE = "('pending', 'dispatching', 'starting', 'active', 'stopping')"
ENDED = "('stopped', 'failed')"
RELEASE = "UPDATE company_live_sessions SET live = live - 1 WHERE company_id = OLD.company_id AND live > 0"

POSTGRES = f"""
CREATE FUNCTION company_live_sessions_release() RETURNS trigger AS $$
BEGIN
    {RELEASE};
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER session_ended_releases_place
    AFTER UPDATE OF agent_status ON conversation_sessions
    FOR EACH ROW WHEN (OLD.agent_status IN {LIVE} AND NEW.agent_status IN {ENDED})
    EXECUTE FUNCTION company_live_sessions_release();
CREATE TRIGGER session_deleted_releases_place
    AFTER DELETE ON conversation_sessions
    FOR EACH ROW WHEN (OLD.agent_status IN {LIVE})
    EXECUTE FUNCTION company_live_sessions_release();
"""
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS session_deleted_releases_place ON conversation_sessions;
DROP TRIGGER IF EXISTS session_ended_releases_place ON conversation_sessions;
DROP FUNCTION IF EXISTS company_live_sessions_release();
"""
SQLITE = [
    f"""CREATE TRIGGER session_ended_releases_place
    AFTER UPDATE OF agent_status ON conversation_sessions
    FOR EACH ROW WHEN OLD.agent_status IN {LIVE} AND NEW.agent_status IN {ENDED}
    BEGIN {RELEASE}; END""",
    f"""CREATE TRIGGER session_deleted_releases_place
    AFTER DELETE ON conversation_sessions
    FOR EACH ROW WHEN OLD.agent_status IN {LIVE}
    BEGIN {RELEASE}; END""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS session_deleted_releases_place",
    "DROP TRIGGER IF EXISTS session_ended_releases_place",
]


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES)
    elif vendor == "sqlite":
        for statement in SQLITE:
            schema_editor.execute(statement)
    else:
        raise NotImplementedError(f"no live-session release trigger for {vendor}")


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in [POSTGRES_REVERSE] if vendor == "postgresql" else SQLITE_REVERSE:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("conversation_sessions", "0003_live_session_counter"),
    ]

    operations = [migrations.RunPython(create, drop)]
