"""Celery entry points of accounts: thin wrappers around services."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from accounts.device_login import device_login_purge_expired


@shared_task(name="accounts.purge_expired_device_logins")
def purge_expired_device_logins() -> int:
    """Daily (Beat, 04:00 UTC, queue `amy`): drop device logins expired for more than a day.
    The day's grace keeps a late poll answering `expired_token` rather than an unknown code."""
    return device_login_purge_expired(expired_before=timezone.now() - timedelta(days=1))
