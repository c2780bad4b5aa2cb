"""Sync stamps and tombstones for `GET /v1/sync` (docs/api.md).

The fields and indexes are Django's; the triggers that fill them are here, so that every writer
(the bulk upsert, the ORM, cascaded deletes, a psql session) stamps its rows:

- BEFORE INSERT OR UPDATE, per row: `sync_stamp` := the writing transaction's id
  (`pg_current_xact_id()`, 64-bit, never wraps). An UPDATE that changes nothing keeps the old stamp,
  so it does not re-send the row (a whole-row comparison: a column type without equality, like
  `json` — not `jsonb` — would need this function changed).
- AFTER DELETE, per statement: one `sync_deletions` row per deleted row, stamped the same way.
- AFTER UPDATE OF user_id, per row: a tombstone for the user that no longer owns the row.

Rows that exist already are stamped with this migration's transaction id before the triggers exist.
"""


import django.db.models.functions.datetime
from django.db import migrations, models

TABLES = [
    "daily_summary",
    "sleep_sessions",
    "activities",
    "body_measurements",
    "nutrition_daily",
    "menstruation_days",
    "biomarkers",
    "lab_uploads",
    "terra_connections",
]

FUNCTIONS = """
CREATE FUNCTION sync_stamp_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Whatever the statement assigned, the stamp is ours to set.
        NEW.sync_stamp := OLD.sync_stamp;
        IF OLD.sync_stamp IS NOT NULL AND NEW IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;  -- nothing changed: the client already has this version
        END IF;
    END IF;
    NEW.sync_stamp := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$;

CREATE FUNCTION sync_record_deletions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sync_deletions (table_name, row_id, user_id, sync_stamp, deleted_at)
    SELECT TG_TABLE_NAME, gone.id, gone.user_id, pg_current_xact_id()::text::bigint, now()
    FROM sync_gone_rows AS gone;
    RETURN NULL;
END
$$;

CREATE FUNCTION sync_record_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sync_deletions (table_name, row_id, user_id, sync_stamp, deleted_at)
    VALUES (TG_TABLE_NAME, OLD.id, OLD.user_id, pg_current_xact_id()::text::bigint, now());
    RETURN NULL;
END
$$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS sync_record_move();
DROP FUNCTION IF EXISTS sync_record_deletions();
DROP FUNCTION IF EXISTS sync_stamp_row();
"""


def create_triggers(table: str) -> str:
    return f"""
UPDATE {table} SET sync_stamp = pg_current_xact_id()::text::bigint WHERE sync_stamp IS NULL;
CREATE TRIGGER {table}_sync_stamp BEFORE INSERT OR UPDATE ON {table}
    FOR EACH ROW EXECUTE FUNCTION sync_stamp_row();
CREATE TRIGGER {table}_sync_deleted AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS sync_gone_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sync_record_deletions();
CREATE TRIGGER {table}_sync_moved AFTER UPDATE OF user_id ON {table}
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id) EXECUTE FUNCTION sync_record_move();
"""


def drop_triggers(table: str) -> str:
    return f"""
DROP TRIGGER IF EXISTS {table}_sync_moved ON {table};
DROP TRIGGER IF EXISTS {table}_sync_deleted ON {table};
DROP TRIGGER IF EXISTS {table}_sync_stamp ON {table};
"""


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_cli_tokens'),
        ('ingest', '0005_biomarkers_wide_view'),
    ]

    operations = [
        migrations.CreateModel(
            name='SyncDeletion',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('table_name', models.CharField(max_length=64)),
                ('row_id', models.BigIntegerField()),
                ('user_id', models.CharField(max_length=255)),
                ('sync_stamp', models.BigIntegerField()),
                ('deleted_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                'db_table': 'sync_deletions',
            },
        ),
        migrations.AddField(
            model_name='activity',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='biomarker',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='bodymeasurement',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='dailysummary',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='labupload',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='menstruationday',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='nutritiondaily',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='sleepsession',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='terraconnection',
            name='sync_stamp',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name='activity',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='activities_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='biomarker',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='biomarkers_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='bodymeasurement',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='body_measurements_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='dailysummary',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='daily_summary_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='labupload',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='lab_uploads_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='menstruationday',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='menstruation_days_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='nutritiondaily',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='nutrition_daily_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='sleepsession',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='sleep_sessions_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='terraconnection',
            index=models.Index(fields=['user', 'sync_stamp', 'id'], name='terra_connections_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='syncdeletion',
            index=models.Index(fields=['user_id', 'table_name', 'sync_stamp', 'id'], name='sync_deletions_sync_idx'),
        ),
        migrations.RunSQL(
            FUNCTIONS + "".join(create_triggers(table) for table in TABLES),
            "".join(drop_triggers(table) for table in TABLES) + DROP_FUNCTIONS,
        ),
    ]
