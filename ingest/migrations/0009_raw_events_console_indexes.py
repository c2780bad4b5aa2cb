"""Two indexes for the console on a big ledger (bench/console.py): a plain btree on raw_events
(terra_user_id, id) for the exact search on a Terra user (and the newest rows of one Terra user,
the ops snapshot), and a partial one on id for the rows not from webhooks (the source filter).
Without them both scan the ledger.

CREATE INDEX CONCURRENTLY takes no lock that blocks the webhook's INSERTs, so it cannot run in a
transaction (atomic = False). If the build fails (a deadlock, a cancelled migrate), PostgreSQL leaves
an INVALID index behind: `DROP INDEX CONCURRENTLY <name>;` and migrate again.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("ingest", "0008_import_jobs"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="rawevent",
            index=models.Index(fields=["terra_user_id", "id"], name="raw_events_terra_user_idx"),
        ),
        AddIndexConcurrently(
            model_name="rawevent",
            index=models.Index(
                condition=models.Q(("source", "webhook"), _negated=True),
                fields=["id"],
                name="raw_events_not_webhook_idx",
            ),
        ),
    ]
