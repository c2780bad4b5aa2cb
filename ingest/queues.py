"""Task and queue names, in one place (no imports: amy/celery.py reads it before Django is set up).

`terra-events` carries normalize_raw_event only; `amy` carries everything else; `terra-events-dlq`
is a parking lot of copies for operators' tools, with no consumer (PostgreSQL is the DLQ of record).
"""

from __future__ import annotations

NORMALIZE_QUEUE = "terra-events"
DEFAULT_QUEUE = "amy"
DLQ_QUEUE = "terra-events-dlq"

NORMALIZE_TASK = "ingest.normalize_raw_event"
DRAIN_TASK = "ingest.drain_stuck_events"
BACKFILL_TASK = "ingest.connection_backfill"
RECONCILE_TASK = "ingest.reconcile_recent"
LAB_SUBMIT_TASK = "ingest.lab_upload_submit"
IMPORT_RUN_TASK = "ingest.import_job_run"
USER_ERASE_TASK = "ingest.user_erase"
