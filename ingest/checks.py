"""System checks: settings that `manage.py check` (and so `migrate`) refuses when malformed."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from ingest.services.payload_fetch import allowed_origins


@checks.register(checks.Tags.security)
def s3_payload_hosts_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        allowed_origins()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="ingest.E001")]
    return []
