"""`trace_events`: the stored trace of webhooks, workers, drains and reconciles.

No foreign keys: a trace row outlives (and never holds up) the rows it names.
"""

from __future__ import annotations

from django.db import models


class TraceEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    ts = models.DateTimeField()
    request_id = models.CharField(max_length=128, null=True, blank=True)
    user_id = models.CharField(max_length=255, null=True, blank=True)
    terra_user_id = models.CharField(max_length=255, null=True, blank=True)
    raw_event_id = models.BigIntegerField(null=True, blank=True)
    level = models.CharField(max_length=10)
    event = models.CharField(max_length=100)
    message = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error_name = models.CharField(max_length=255, null=True, blank=True)
    error_stack = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "trace_events"
        indexes = [
            models.Index(fields=["ts"], name="trace_events_ts"),
            models.Index(fields=["request_id", "ts"], name="trace_events_request_ts"),
            models.Index(fields=["raw_event_id", "ts"], name="trace_events_raw_event_ts"),
            models.Index(fields=["user_id", "ts"], name="trace_events_user_ts"),
        ]

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.level} {self.event}"


class AuditRecord(models.Model):
    """One operator write (a replay, a group marked skipped): who, when, what, on which rows.

    Written by the ops services for the JSON endpoints, the commands and the console alike; the
    ids are kept as given, so a record stays readable after the rows have moved on.
    """

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=255)
    action = models.CharField(max_length=64)
    request_id = models.CharField(max_length=128, null=True, blank=True)
    raw_event_count = models.PositiveIntegerField(default=0)
    raw_event_ids = models.JSONField(default=list, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "ops_audit_records"
        indexes = [models.Index(fields=["-at"], name="ops_audit_records_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} ({self.raw_event_count} rows)"
