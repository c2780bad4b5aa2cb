"""The retry count of a ledger row kept on the row (`raw_events.retries`), not in its message."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0010_activity_delete_tombstones"),
    ]

    operations = [
        migrations.AddField(
            model_name="rawevent",
            name="retries",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
    ]
