"""The `uploads` store (lab files and import files): S3 through django-storages, or the local
disk when no bucket is configured (settings.STORAGES). One place for how it fails."""

from __future__ import annotations

import logging

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)

STORAGE_ALIAS = "uploads"

# What the stores raise when they fail: the local disk, and S3 through boto3.
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError, Boto3Error)


def uploads_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def is_missing(exc: BaseException) -> bool:
    """Whether a store error says the object is not there (deleting it again is then done)."""
    if isinstance(exc, FileNotFoundError):
        return True
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in {"NoSuchKey", "404", "NotFound"}


def delete_quietly(storage: Storage, name: str) -> None:
    """Delete a stored object whose row did not commit; a failure is logged, not raised."""
    try:
        storage.delete(name)
    except STORAGE_ERRORS as exc:
        logger.error("stored file %s left behind after a failed upload: %s", name, type(exc).__name__)
