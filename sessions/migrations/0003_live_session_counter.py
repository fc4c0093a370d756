import django.db.models.deletion
from django.db import migrations, models


LIVE = ["pending", "dispatching", "starting", "active", "stopping"]


def count_live_sessions(apps, schema_editor):
    """Start every company's counter at what the sessions table says is live now."""
    Session = apps.get_model("conversation_sessions", "ConversationSession")
    Counter = apps.get_model("conversation_sessions", "CompanyLiveSessions")
    live = (
        Session.objects.filter(agent_status__in=LIVE)
        .values("company_id")
        .annotate(n=models.Count("pk"))
        .values_list("company_id", "n")
    )
    Counter.objects.bulk_create([Counter(company_id=company_id, live=n) for company_id, n in live])


class Migration(migrations.Migration):
    dependencies = [
        ("conversation_sessions", "0002_transcripts"),
        ("voiceagents", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="CompanyLiveSessions",
            fields=[
                (
                    "company",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="voiceagents.company",
                    ),
                ),
                ("live", models.PositiveIntegerField(default=0)),
            ],
            options={
                "verbose_name_plural": "company live sessions",
                "db_table": "company_live_sessions",
            },
        ),
        migrations.RunPython(count_live_sessions, migrations.RunPython.noop),
    ]
