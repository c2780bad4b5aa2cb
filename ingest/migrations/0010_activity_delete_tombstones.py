"""Activity deletes kept as tombstones (`activities.deleted`), so they obey the ordering rule."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0009_raw_events_console_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="activity",
            name="deleted",
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
