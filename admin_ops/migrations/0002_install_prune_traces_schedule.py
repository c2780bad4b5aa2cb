"""Once installed the Beat schedule of the trace pruning; a no-op now, kept for the migration graph.

The schedule is declared once, in CELERY_BEAT_SCHEDULE (amy/settings.py), and Beat's database
scheduler writes it into its tables when it starts.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("admin_ops", "0001_trace_events"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
