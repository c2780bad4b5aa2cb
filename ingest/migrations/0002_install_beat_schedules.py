"""Once installed the Beat schedule of the drain; a no-op now, kept for the migration graph.

The schedule is declared once, in CELERY_BEAT_SCHEDULE (amy/settings.py), and Beat's database
scheduler writes it into its tables when it starts.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
