from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from accounts.models import User


class RawEventState(models.TextChoices):
    RECEIVED = "received"
    PROCESSING = "processing"
    PROCESSED = "processed"
    SKIPPED = "skipped"
    PARKED = "parked"
    DEAD = "dead"


class RawEventSource(models.TextChoices):
    WEBHOOK = "webhook"
    IMPORT = "import"
    S3_PAYLOAD = "s3_payload"


UNPROCESSED_STATES = (RawEventState.RECEIVED, RawEventState.PROCESSING)


class RawEvent(models.Model):
    """The ledger: every accepted body, verbatim, and the state of its processing (SPEC §3).

    PostgreSQL is the truth for an event's state and the dead-letter store; Redis only carries
    nudges that point at a row.
    """

    id = models.BigAutoField(primary_key=True)
    event_type = models.CharField(max_length=64)
    terra_user_id = models.CharField(max_length=128, default="", blank=True)
    reference_id = models.CharField(max_length=255, default="", blank=True)
    provider = models.CharField(max_length=64, default="", blank=True)
    payload = models.TextField(null=True, blank=True)  # null only once erased (tombstone)
    signature_verified = models.BooleanField(default=False)
    dedup_key = models.CharField(max_length=64)
    request_id = models.CharField(max_length=128, default="", blank=True)
    trace_id = models.CharField(max_length=255, null=True, blank=True)
    terra_reference = models.CharField(max_length=255, null=True, blank=True)
    ordering_ts = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=RawEventSource.choices, default=RawEventSource.WEBHOOK)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    import_id = models.BigIntegerField(null=True, blank=True)
    received_at = models.DateTimeField(db_default=Now())
    queued_at = models.DateTimeField(db_default=Now())
    state = models.CharField(max_length=16, choices=RawEventState.choices, default=RawEventState.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    process_error = models.TextField(null=True, blank=True)
    dead_lettered_at = models.DateTimeField(null=True, blank=True)
    replay_count = models.PositiveIntegerField(default=0)
    last_replayed_at = models.DateTimeField(null=True, blank=True)
    last_replayed_by = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        db_table = "raw_events"
        constraints = [
            models.UniqueConstraint(fields=["event_type", "terra_user_id", "dedup_key"], name="raw_events_dedup_uniq"),
        ]
        indexes = [
            # The drain: unprocessed rows, oldest first.
            models.Index(
                fields=["queued_at", "id"],
                name="raw_events_unprocessed_idx",
                condition=Q(state__in=["received", "processing"]),
            ),
            # The DLQ view, newest first.
            models.Index(fields=["-dead_lettered_at", "-id"], name="raw_events_dead_idx", condition=Q(state="dead")),
            # Un-parking when a connection appears.
            models.Index(fields=["terra_user_id"], name="raw_events_parked_idx", condition=Q(state="parked")),
            models.Index(fields=["received_at"], name="raw_events_received_at_idx"),
            models.Index(fields=["request_id"], name="raw_events_request_id_idx"),
        ]

    def __str__(self) -> str:
        return f"raw_event {self.pk} ({self.event_type}, {self.state})"


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active"
    DEGRADED = "degraded"
    REVOKED = "revoked"
    DEAUTHORIZED = "deauthorized"
    REPLACED = "replaced"


INACTIVE_CONNECTION_STATUSES = (ConnectionStatus.REVOKED, ConnectionStatus.DEAUTHORIZED)


class TerraConnection(models.Model):
    """One Terra user (one wearable account) of one of our users (SPEC §4)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="terra_connections")
    terra_user_id = models.CharField(max_length=128, unique=True)
    provider = models.CharField(max_length=64, default="", blank=True)
    scopes = models.TextField(null=True, blank=True)  # Terra's comma-separated string, as sent
    status = models.CharField(max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    connected_at = models.DateTimeField(db_default=Now())
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_webhook_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        db_table = "terra_connections"

    def __str__(self) -> str:
        return f"{self.provider} {self.terra_user_id} ({self.status})"
