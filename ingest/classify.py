"""What a webhook body is: its event type and whose it is, read from the parsed JSON.

Every value is bounded and made safe for a PostgreSQL text column here, so that a hostile body
(a 1 MB `type`, a NUL in `user_id`, a lone surrogate) is stored as an ordinary row rather than
breaking the insert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAB_REPORT = "lab_report"
UNKNOWN = "unknown"
LAB_REPORT_TYPES = frozenset({"lab_report.completed", "lab_report.failed"})

_MAX_EVENT_TYPE = 64
_MAX_TERRA_USER_ID = 128
_MAX_TEXT = 255


@dataclass(frozen=True)
class Classification:
    event_type: str
    terra_user_id: str = ""
    provider: str = ""
    reference_id: str = ""


def safe_text(value: Any, max_length: int = _MAX_TEXT) -> str | None:
    """`value` as storable text, or None when it is not a short, clean string or number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates parse from JSON but cannot be stored
        return None
    return value


def _user_fields(user: Any) -> tuple[str, str, str]:
    if not isinstance(user, dict):
        return "", "", ""
    return (
        safe_text(user.get("user_id"), _MAX_TERRA_USER_ID) or "",
        safe_text(user.get("provider"), 64) or "",
        safe_text(user.get("reference_id")) or "",
    )


def classify(body: dict[str, Any]) -> Classification:
    event_type = body.get("type")
    # `type` may be any JSON value: a list or an object is unhashable, so test the type first.
    if (isinstance(event_type, str) and event_type in LAB_REPORT_TYPES) or (
        event_type is None and "upload_id" in body and isinstance(body.get("data"), list)
    ):
        return Classification(event_type=LAB_REPORT, reference_id=safe_text(body.get("upload_id")) or "")
    if not isinstance(event_type, str) or not event_type or safe_text(event_type, _MAX_EVENT_TYPE) is None:
        return Classification(event_type=UNKNOWN)
    user = body.get("new_user") if event_type == "user_reauth" else body.get("user")
    terra_user_id, provider, reference_id = _user_fields(user)
    return Classification(
        event_type=event_type, terra_user_id=terra_user_id, provider=provider, reference_id=reference_id
    )
