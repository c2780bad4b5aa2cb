"""Per-user quotas per UTC day on what costs us storage and Terra's work: lab uploads and imports.

Counted from PostgreSQL, the rows the user created since the last UTC midnight: what is counted is
what exists, whatever Redis remembers. A request past the quota answers 429 `rate_limit_exceeded`
with `Retry-After` (the seconds to the next UTC midnight) and the quota in `details`. A replayed
`Idempotency-Key` is answered by its middleware before the view runs, so it never counts.
Concurrent requests may each pass at the last unit: a quota bounds use, it is not a ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db.models import Model
from django.utils import timezone
from rest_framework.response import Response

from accounts.models import User
from amy.errors import ErrorCode, error_body
from ingest.models import ImportJob, LabUpload


@dataclass(frozen=True)
class DailyQuota:
    name: str  # as `details.quota` names it
    model: type[Model]  # rows of the user, with `created_at`
    setting: str

    @property
    def limit(self) -> int:
        return int(getattr(settings, self.setting))


LAB_UPLOADS = DailyQuota("lab_uploads_per_day", LabUpload, "AMY_LAB_UPLOADS_PER_DAY")
IMPORTS = DailyQuota("imports_per_day", ImportJob, "AMY_IMPORTS_PER_DAY")


def _day_bounds(now: datetime) -> tuple[datetime, datetime]:
    today = now.astimezone(UTC).date()
    start = datetime.combine(today, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def daily_quota_refusal(quota: DailyQuota, *, user: User) -> Response | None:
    """The 429 to answer when the user has used up `quota` today; None while there is room."""
    now = timezone.now()
    start, reset_at = _day_bounds(now)
    limit = quota.limit
    used = quota.model.objects.filter(user=user, created_at__gte=start).count()  # type: ignore[attr-defined]
    if used < limit:
        return None
    details = {"quota": quota.name, "limit": limit, "used": used, "resets_at": reset_at.isoformat()}
    response = Response(
        error_body(
            ErrorCode.RATE_LIMIT_EXCEEDED,
            f"The daily quota of {limit} is used up; it resets at midnight UTC.",
            details,
        ),
        status=429,
    )
    response["Retry-After"] = str(max(1, math.ceil((reset_at - now).total_seconds())))
    return response
