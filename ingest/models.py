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
    """The ledger: every accepted body, verbatim, and the state of its processing.

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
    # Transient failures retried so far: on the row, so that a lost retry message or a drain's
    # nudge continues the count instead of starting it again.
    retries = models.PositiveIntegerField(default=0, db_default=0)
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
            # Un-parking lab reports when their upload appears (keyed by Terra's upload id).
            models.Index(fields=["reference_id"], name="raw_events_parked_ref_idx", condition=Q(state="parked")),
            # The console's exact search on a Terra user and a user's newest rows (the ops snapshot):
            # with the id, the newest rows of one Terra user come from a backward scan of the index.
            # Built CONCURRENTLY (migration 0009) so that a live ledger keeps taking webhooks.
            models.Index(fields=["terra_user_id", "id"], name="raw_events_terra_user_idx"),
            # The console's source filter: imported rows are few among webhooks, newest first.
            models.Index(fields=["id"], name="raw_events_not_webhook_idx", condition=~Q(source="webhook")),
            models.Index(fields=["received_at"], name="raw_events_received_at_idx"),
            models.Index(fields=["request_id"], name="raw_events_request_id_idx"),
        ]

    def __str__(self) -> str:
        return f"raw_event {self.pk} ({self.event_type}, {self.state})"


# Sync stamps (`GET /v1/sync`, docs/api.md) ---------------------------------------------------------
#
# Every synced table has a `sync_stamp` column that a PostgreSQL trigger sets, on every insert and
# every real update, to the id of the writing transaction; deletes are recorded in `sync_deletions`
# by a trigger too (migration 0006), so every writer — the bulk upsert, the ORM, cascades — is
# covered. The value any code assigns to the field is overwritten by the trigger.


def _sync_stamp() -> models.BigIntegerField:
    return models.BigIntegerField(null=True, blank=True, editable=False)


def _sync_index(table: str) -> models.Index:
    return models.Index(fields=["user", "sync_stamp", "id"], name=f"{table}_sync_idx")


class SyncDeletion(models.Model):
    """A tombstone: a synced row that was deleted (or moved to another user), written by a trigger.

    `user_id` is the user whose mirror held the row; not a foreign key, so a tombstone can be
    written while the user's rows are being deleted.
    """

    id = models.BigAutoField(primary_key=True)
    table_name = models.CharField(max_length=64)
    row_id = models.BigIntegerField()
    user_id = models.CharField(max_length=255)
    sync_stamp = models.BigIntegerField()
    deleted_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "sync_deletions"
        indexes = [models.Index(fields=["user_id", "table_name", "sync_stamp", "id"], name="sync_deletions_sync_idx")]

    def __str__(self) -> str:
        return f"{self.table_name} {self.row_id} deleted"


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active"
    DEGRADED = "degraded"
    REVOKED = "revoked"
    DEAUTHORIZED = "deauthorized"
    REPLACED = "replaced"


INACTIVE_CONNECTION_STATUSES = (ConnectionStatus.REVOKED, ConnectionStatus.DEAUTHORIZED)


class TerraConnection(models.Model):
    """One Terra user (one wearable account) of one of our users."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="terra_connections")
    terra_user_id = models.CharField(max_length=128, unique=True)
    provider = models.CharField(max_length=64, default="", blank=True)
    scopes = models.TextField(null=True, blank=True)  # Terra's comma-separated string, as sent
    status = models.CharField(max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    connected_at = models.DateTimeField(db_default=Now())
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_webhook_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "terra_connections"
        indexes = [_sync_index("terra_connections")]

    def __str__(self) -> str:
        return f"{self.provider} {self.terra_user_id} ({self.status})"


# Typed tables -------------------------------------------------------------------------------------


class TypedRow(models.Model):
    """Columns every typed row has. `NATURAL_KEY` names the fields a payload's record is unique by;
    the writer upserts on it (ingest/services/typed_rows.py)."""

    NATURAL_KEY: tuple[str, ...] = ()
    # Filled by the writer or the database, never by a parser.
    SHARED_FIELDS = (
        "id",
        "user",
        "provider",
        "terra_user_id",
        "raw_event",
        "ordering_ts",
        "created_at",
        "updated_at",
        "sync_stamp",
    )
    # Filled from data_enrichment: a null in a later copy never replaces a stored value.
    MERGED_FIELDS: tuple[str, ...] = ()

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=64, default="", blank=True)
    terra_user_id = models.CharField(max_length=128, default="", blank=True)
    raw_event = models.ForeignKey(RawEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ordering_ts = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self._meta.db_table} {self.pk}"

    @classmethod
    def parsed_fields(cls) -> list[str]:
        """The fields a parser fills for this table."""
        return [field.name for field in cls._meta.concrete_fields if field.name not in cls.SHARED_FIELDS]


def _natural_key(table: str, *fields: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(fields=list(fields), name=f"{table}_natural_key")


class DailySummary(TypedRow):
    NATURAL_KEY = ("user", "provider", "date")

    date = models.DateField()
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    steps = models.BigIntegerField(null=True, blank=True)
    distance_meters = models.FloatField(null=True, blank=True)
    floors_climbed = models.FloatField(null=True, blank=True)
    elevation_gain_meters = models.FloatField(null=True, blank=True)
    total_burned_calories = models.FloatField(null=True, blank=True)
    active_calories = models.FloatField(null=True, blank=True)
    bmr_calories = models.FloatField(null=True, blank=True)
    activity_seconds = models.FloatField(null=True, blank=True)
    low_intensity_seconds = models.FloatField(null=True, blank=True)
    moderate_intensity_seconds = models.FloatField(null=True, blank=True)
    vigorous_intensity_seconds = models.FloatField(null=True, blank=True)
    inactivity_seconds = models.FloatField(null=True, blank=True)
    avg_hr_bpm = models.FloatField(null=True, blank=True)
    max_hr_bpm = models.FloatField(null=True, blank=True)
    min_hr_bpm = models.FloatField(null=True, blank=True)
    resting_hr_bpm = models.FloatField(null=True, blank=True)
    avg_hrv_rmssd = models.FloatField(null=True, blank=True)
    avg_hrv_sdnn = models.FloatField(null=True, blank=True)
    avg_saturation_percentage = models.FloatField(null=True, blank=True)
    vo2max_ml_per_min_per_kg = models.FloatField(null=True, blank=True)
    avg_stress_level = models.FloatField(null=True, blank=True)
    max_stress_level = models.FloatField(null=True, blank=True)
    recovery_score = models.FloatField(null=True, blank=True)
    activity_score = models.FloatField(null=True, blank=True)
    sleep_score = models.FloatField(null=True, blank=True)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "daily_summary"
        constraints = [_natural_key("daily_summary", "user", "provider", "date")]
        indexes = [_sync_index("daily_summary")]


class SleepSession(TypedRow):
    NATURAL_KEY = ("user", "provider", "summary_id")
    MERGED_FIELDS = ("sleep_score",)

    summary_id = models.CharField(max_length=255)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    is_nap = models.BooleanField(null=True, blank=True)
    asleep_seconds = models.FloatField(null=True, blank=True)
    light_seconds = models.FloatField(null=True, blank=True)
    deep_seconds = models.FloatField(null=True, blank=True)
    rem_seconds = models.FloatField(null=True, blank=True)
    awake_seconds = models.FloatField(null=True, blank=True)
    in_bed_seconds = models.FloatField(null=True, blank=True)
    sleep_latency_seconds = models.FloatField(null=True, blank=True)
    wakeup_events = models.IntegerField(null=True, blank=True)
    efficiency = models.FloatField(null=True, blank=True)
    avg_hr_bpm = models.FloatField(null=True, blank=True)
    min_hr_bpm = models.FloatField(null=True, blank=True)
    resting_hr_bpm = models.FloatField(null=True, blank=True)
    avg_hrv_rmssd = models.FloatField(null=True, blank=True)
    avg_breaths_per_min = models.FloatField(null=True, blank=True)
    avg_saturation_percentage = models.FloatField(null=True, blank=True)
    temperature_delta = models.FloatField(null=True, blank=True)
    readiness = models.FloatField(null=True, blank=True)
    sleep_score = models.FloatField(null=True, blank=True)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "sleep_sessions"
        constraints = [_natural_key("sleep_sessions", "user", "provider", "summary_id")]
        indexes = [_sync_index("sleep_sessions")]


class Activity(TypedRow):
    NATURAL_KEY = ("user", "provider", "summary_id")

    summary_id = models.CharField(max_length=255)
    name = models.TextField(null=True, blank=True)
    activity_type = models.IntegerField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    active_seconds = models.FloatField(null=True, blank=True)
    distance_meters = models.FloatField(null=True, blank=True)
    steps = models.BigIntegerField(null=True, blank=True)
    elevation_gain_meters = models.FloatField(null=True, blank=True)
    total_burned_calories = models.FloatField(null=True, blank=True)
    active_calories = models.FloatField(null=True, blank=True)
    avg_hr_bpm = models.FloatField(null=True, blank=True)
    max_hr_bpm = models.FloatField(null=True, blank=True)
    avg_speed_meters_per_second = models.FloatField(null=True, blank=True)
    avg_pace_minutes_per_kilometer = models.FloatField(null=True, blank=True)
    avg_cadence_rpm = models.FloatField(null=True, blank=True)
    avg_watts = models.FloatField(null=True, blank=True)
    max_watts = models.FloatField(null=True, blank=True)
    vo2max_ml_per_min_per_kg = models.FloatField(null=True, blank=True)
    device_name = models.TextField(null=True, blank=True)
    # A delete (`upload_type` 4) kept as a tombstone with its ordering position, its values
    # cleared: a stale delete then loses to a newer copy, and an older copy arriving after the
    # delete loses to it. /v1/sync serves a tombstone as a deleted id; nothing else shows it.
    deleted = models.BooleanField(default=False, db_default=False)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "activities"
        verbose_name_plural = "activities"
        constraints = [_natural_key("activities", "user", "provider", "summary_id")]
        indexes = [_sync_index("activities")]


class BodyMeasurement(TypedRow):
    NATURAL_KEY = ("user", "provider", "measured_at", "metric")

    measured_at = models.DateTimeField()
    metric = models.CharField(max_length=64)
    value = models.FloatField(null=True, blank=True)
    unit = models.CharField(max_length=16)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "body_measurements"
        constraints = [_natural_key("body_measurements", "user", "provider", "measured_at", "metric")]
        indexes = [_sync_index("body_measurements")]


class NutritionDaily(TypedRow):
    NATURAL_KEY = ("user", "provider", "date")

    date = models.DateField()
    calories = models.FloatField(null=True, blank=True)
    protein_g = models.FloatField(null=True, blank=True)
    carbohydrates_g = models.FloatField(null=True, blank=True)
    fat_g = models.FloatField(null=True, blank=True)
    fiber_g = models.FloatField(null=True, blank=True)
    sugar_g = models.FloatField(null=True, blank=True)
    water_ml = models.FloatField(null=True, blank=True)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "nutrition_daily"
        verbose_name_plural = "nutrition daily"
        constraints = [_natural_key("nutrition_daily", "user", "provider", "date")]
        indexes = [_sync_index("nutrition_daily")]


class MenstruationDay(TypedRow):
    NATURAL_KEY = ("user", "provider", "date")

    date = models.DateField()
    period_start_date = models.DateField(null=True, blank=True)
    period_length_days = models.IntegerField(null=True, blank=True)
    day_in_cycle = models.IntegerField(null=True, blank=True)
    cycle_length_days = models.IntegerField(null=True, blank=True)
    phase = models.IntegerField(null=True, blank=True)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "menstruation_days"
        constraints = [_natural_key("menstruation_days", "user", "provider", "date")]
        indexes = [_sync_index("menstruation_days")]


class Athlete(TypedRow):
    """The provider's profile of the user: no names or email are kept."""

    NATURAL_KEY = ("user", "provider")

    sex = models.CharField(max_length=32, null=True, blank=True)
    date_of_birth = models.DateField(null=True, blank=True)
    age = models.IntegerField(null=True, blank=True)
    country = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        db_table = "athletes"
        constraints = [_natural_key("athletes", "user", "provider")]


class LabUploadStatus(models.TextChoices):
    PROCESSING = "processing"
    PARSED = "parsed"
    FAILED = "failed"


class LabUpload(models.Model):
    """A lab report a user uploaded; Terra parses it and posts the biomarkers back."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="lab_uploads")
    filename = models.CharField(max_length=255, default="", blank=True)
    storage_key = models.CharField(max_length=512, default="", blank=True)
    content_type = models.CharField(max_length=64, default="", blank=True)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, default="", blank=True)
    status = models.CharField(max_length=16, choices=LabUploadStatus.choices, default=LabUploadStatus.PROCESSING)
    terra_upload_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    terra_session_id = models.CharField(max_length=255, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    submitted_at = models.DateTimeField(null=True, blank=True)
    parsed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "lab_uploads"
        indexes = [_sync_index("lab_uploads")]

    def __str__(self) -> str:
        return f"lab upload {self.pk} ({self.status})"


class Biomarker(TypedRow):
    NATURAL_KEY = ("user", "lab_upload", "code")

    lab_upload = models.ForeignKey(LabUpload, on_delete=models.CASCADE, related_name="biomarkers")
    code = models.CharField(max_length=128)
    name = models.TextField(null=True, blank=True)
    loinc_code = models.CharField(max_length=32, null=True, blank=True)
    panel = models.TextField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True)
    value_text = models.TextField(null=True, blank=True)
    unit = models.CharField(max_length=64, null=True, blank=True)
    reference_low = models.FloatField(null=True, blank=True)
    reference_high = models.FloatField(null=True, blank=True)
    flag = models.CharField(max_length=16, null=True, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)

    sync_stamp = _sync_stamp()

    class Meta:
        db_table = "biomarkers"
        constraints = [_natural_key("biomarkers", "user", "lab_upload", "code")]
        indexes = [_sync_index("biomarkers")]


# Every typed table, in one order wherever they are listed (the sync's tie-break, the ops counters).
TYPED_MODELS: tuple[type[TypedRow], ...] = (
    DailySummary,
    SleepSession,
    Activity,
    BodyMeasurement,
    NutritionDaily,
    MenstruationDay,
    Athlete,
    Biomarker,
)


# The codes biomarkers_wide has a column for; the view's migration reads this list.
WIDE_BIOMARKER_CODES = (
    "hemoglobin",
    "hematocrit",
    "wbc",
    "platelets",
    "glucose_fasting",
    "hba1c",
    "total_cholesterol",
    "ldl_cholesterol",
    "hdl_cholesterol",
    "triglycerides",
    "creatinine",
    "egfr",
    "alt",
    "ast",
    "tsh",
    "free_t4",
    "vitamin_d_25_hydroxy",
    "vitamin_b12",
    "ferritin",
    "iron",
    "c_reactive_protein_hs",
    "testosterone_total",
    "cortisol",
    "insulin_fasting",
    "uric_acid",
)


class BiomarkersWide(models.Model):
    """Read-only: one row per (user, lab upload), one column per tracked code (a database view)."""

    id = models.BigIntegerField(primary_key=True)  # the lab upload's id
    user = models.ForeignKey(User, on_delete=models.DO_NOTHING, related_name="+")
    lab_upload = models.ForeignKey(LabUpload, on_delete=models.DO_NOTHING, related_name="+")
    collected_at = models.DateTimeField(null=True)
    hemoglobin = models.FloatField(null=True)
    hematocrit = models.FloatField(null=True)
    wbc = models.FloatField(null=True)
    platelets = models.FloatField(null=True)
    glucose_fasting = models.FloatField(null=True)
    hba1c = models.FloatField(null=True)
    total_cholesterol = models.FloatField(null=True)
    ldl_cholesterol = models.FloatField(null=True)
    hdl_cholesterol = models.FloatField(null=True)
    triglycerides = models.FloatField(null=True)
    creatinine = models.FloatField(null=True)
    egfr = models.FloatField(null=True)
    alt = models.FloatField(null=True)
    ast = models.FloatField(null=True)
    tsh = models.FloatField(null=True)
    free_t4 = models.FloatField(null=True)
    vitamin_d_25_hydroxy = models.FloatField(null=True)
    vitamin_b12 = models.FloatField(null=True)
    ferritin = models.FloatField(null=True)
    iron = models.FloatField(null=True)
    c_reactive_protein_hs = models.FloatField(null=True)
    testosterone_total = models.FloatField(null=True)
    cortisol = models.FloatField(null=True)
    insulin_fasting = models.FloatField(null=True)
    uric_acid = models.FloatField(null=True)

    class Meta:
        managed = False
        db_table = "biomarkers_wide"
        verbose_name_plural = "biomarkers wide"

    def __str__(self) -> str:
        return f"biomarkers of lab upload {self.pk}"


# Imports (`POST /v1/import`) ----------------------------------------------------------------------


class ImportJobStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class ImportFormat(models.TextChoices):
    JSON = "json"  # one JSON array of payloads
    NDJSON = "ndjson"  # one payload per line


class ImportJob(models.Model):
    """A file of Terra payloads a user imports; its entries enter the ledger in batches.

    `position` (entries consumed) and `byte_offset` (where the next entry starts in the stored
    file) are the checkpoint: they are committed with each batch's ledger rows and counters, so a
    job whose worker dies resumes there. `attempts` counts deliveries before any work;
    `checkpoint_attempt` is the delivery that committed the last checkpoint, so the deliveries
    since the last progress (attempts - checkpoint_attempt) are what AMY_MAX_DELIVERIES bounds.
    """

    MAX_ERRORS = 20

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="import_jobs")
    status = models.CharField(max_length=16, choices=ImportJobStatus.choices, default=ImportJobStatus.PENDING)
    storage_key = models.CharField(max_length=512, default="", blank=True)
    format = models.CharField(max_length=8, choices=ImportFormat.choices)
    size_bytes = models.BigIntegerField(default=0)
    request_id = models.CharField(max_length=128, default="", blank=True)
    total = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)  # the first MAX_ERRORS {index, error}
    error = models.TextField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    checkpoint_attempt = models.PositiveIntegerField(default=0)
    position = models.BigIntegerField(default=0)
    byte_offset = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "import_jobs"
        indexes = [
            # Requeueing jobs whose message was lost: the unfinished ones, oldest update first.
            models.Index(
                fields=["updated_at", "id"],
                name="import_jobs_unfinished_idx",
                condition=Q(status__in=["pending", "processing"]),
            ),
        ]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"
