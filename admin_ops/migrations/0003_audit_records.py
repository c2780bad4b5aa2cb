from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("admin_ops", "0002_install_prune_traces_schedule"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditRecord",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("at", models.DateTimeField(auto_now_add=True)),
                ("actor", models.CharField(max_length=255)),
                ("action", models.CharField(max_length=64)),
                ("request_id", models.CharField(blank=True, max_length=128, null=True)),
                ("raw_event_count", models.PositiveIntegerField(default=0)),
                ("raw_event_ids", models.JSONField(blank=True, default=list)),
                ("details", models.JSONField(blank=True, default=dict)),
            ],
            options={
                "db_table": "ops_audit_records",
                "indexes": [models.Index(fields=["-at"], name="ops_audit_records_at")],
            },
        ),
    ]
