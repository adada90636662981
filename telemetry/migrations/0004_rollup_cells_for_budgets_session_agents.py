"""Rollup cells keep the routed model and the parent key (budget spend is read from them), and
SessionAgent remembers the subagents counted in each session's daily line.

The unique cell index now leads with the organization and serves every read of one
organization's cells; the team, key and organization indexes go (each cell the rollup job adds
was an insert into every one of them), and day cells get a small index by time.

Cells rolled up before this migration keep routed_model "" and parent_key_id 0. SessionAgent is
filled from the ledger rows already rolled up, so later rows count only new subagents.
"""

from django.db import migrations, models


def remember_counted_agents(apps, schema_editor):
    connection = schema_editor.connection
    cursor = apps.get_model("telemetry", "RollupCursor").objects.filter(name="ledger").first()
    if cursor is None or not cursor.last_usage_id:
        return
    if connection.vendor == "postgresql":
        day = "CAST((created_at AT TIME ZONE 'UTC') AS date)"
    else:
        day = "date(created_at)"
    with connection.cursor() as db:
        db.execute(
            "INSERT INTO telemetry_sessionagent (day, session_id, key_id, agent_id) "
            f"SELECT DISTINCT {day}, session_id, COALESCE(key_id, 0), agent_id "
            "FROM telemetry_usagerecord "
            "WHERE id <= %s AND session_id <> '' AND agent_id <> ''",
            [cursor.last_usage_id],
        )


class Migration(migrations.Migration):

    dependencies = [
        ('telemetry', '0003_alert_delivery_state'),
    ]

    operations = [
        migrations.CreateModel(
            name='SessionAgent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('session_id', models.CharField(max_length=100)),
                ('key_id', models.BigIntegerField(default=0)),
                ('agent_id', models.CharField(max_length=100)),
            ],
        ),
        migrations.RemoveConstraint(
            model_name='spendrollup',
            name='rollup_unique_cell',
        ),
        migrations.RemoveIndex(
            model_name='spendrollup',
            name='rollup_org_time',
        ),
        migrations.RemoveIndex(
            model_name='spendrollup',
            name='rollup_team_time',
        ),
        migrations.RemoveIndex(
            model_name='spendrollup',
            name='rollup_key_time',
        ),
        migrations.AddField(
            model_name='spendrollup',
            name='parent_key_id',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='spendrollup',
            name='routed_model',
            field=models.CharField(default='', max_length=200),
        ),
        migrations.AddIndex(
            model_name='spendrollup',
            index=models.Index(condition=models.Q(('granularity', 'day')), fields=['bucket_start'], name='rollup_day_time'),
        ),
        migrations.AddConstraint(
            model_name='spendrollup',
            constraint=models.UniqueConstraint(fields=('granularity', 'organization_id', 'bucket_start', 'team_id', 'project_id', 'key_id', 'model', 'provider', 'routed_model', 'parent_key_id'), name='rollup_unique_cell'),
        ),
        migrations.AddConstraint(
            model_name='sessionagent',
            constraint=models.UniqueConstraint(fields=('day', 'session_id', 'key_id', 'agent_id'), name='session_agent_unique'),
        ),
        migrations.RunPython(remember_counted_agents, migrations.RunPython.noop),
    ]
