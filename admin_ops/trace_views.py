"""`GET /admin/traces`: trace rows filtered by request id, level, user or raw event,
since a time (default 24 h ago), newest first, paginated `{"data", "next_cursor"}`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from admin_ops.auth import AdminApiView
from admin_ops.models import TraceEvent
from admin_ops.services import TRACE_FIELDS
from amy import pagination
from amy.errors import invalid_field

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
LEVELS = ("debug", "info", "warn", "error")
_LEVEL_ALIASES = {"warning": "warn"}
_DIGITS = re.compile(r"[0-9]{1,18}")


def encode_cursor(row: TraceEvent) -> str:
    return pagination.encode_cursor({"ts": row.ts.isoformat(), "id": row.pk})


def decode_cursor(raw: str | None) -> tuple[datetime, int] | None:
    if not raw:
        return None
    body = pagination.decode_cursor(raw)
    try:
        if set(body) != {"ts", "id"} or type(body["id"]) is not int:
            raise ValueError
        ts = parse_datetime(body["ts"]) if isinstance(body["ts"], str) else None
        if ts is None or ts.tzinfo is None:
            raise ValueError
    except ValueError:
        raise pagination.malformed_cursor() from None
    return ts, body["id"]


def _since(raw: str | None) -> datetime:
    if not raw:
        return timezone.now() - timedelta(hours=24)
    try:
        parsed = parse_datetime(raw)
        if parsed is None and (day := parse_date(raw)) is not None:
            parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        parsed = None
    if parsed is None:
        raise invalid_field("since", "since must be an ISO 8601 date or time.")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def traces_query(params: Any) -> QuerySet[TraceEvent]:
    """The filtered rows, newest first (before any cursor or limit)."""
    rows = TraceEvent.objects.filter(ts__gte=_since(params.get("since")))
    if request_id := params.get("request_id"):
        rows = rows.filter(request_id=request_id)
    if user_id := params.get("user_id"):
        rows = rows.filter(user_id=user_id)
    if raw_event_id := params.get("raw_event_id"):
        if not _DIGITS.fullmatch(raw_event_id):
            raise invalid_field("raw_event_id", "raw_event_id must be an integer.")
        rows = rows.filter(raw_event_id=int(raw_event_id))
    if level := params.get("level"):
        level = _LEVEL_ALIASES.get(level.lower(), level.lower())
        if level not in LEVELS:
            raise invalid_field("level", f"level must be one of {', '.join(LEVELS)}.")
        rows = rows.filter(level=level)
    return rows.order_by("-ts", "-id")


class TraceEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TraceEvent
        fields = list(TRACE_FIELDS)


class TracesApi(AdminApiView):
    """`GET /admin/traces`: one webhook's journey, a user's or a raw event's, or recent errors."""

    @extend_schema_serializer(component_name="TraceEventPage")
    class PageSerializer(serializers.Serializer):
        data = TraceEventSerializer(many=True)  # type: ignore[assignment]  # a declared field, not Serializer.data
        next_cursor = serializers.CharField(
            allow_null=True, help_text="Pass as `cursor` for the next page; null at the end."
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("request_id", str, description="Only this request's journey (webhook and worker)."),
            OpenApiParameter("level", str, enum=list(LEVELS), description="Only this level."),
            OpenApiParameter("user_id", str, description="Only this user's traces."),
            OpenApiParameter("raw_event_id", int, description="Only this ledger row's traces."),
            OpenApiParameter("since", str, description="ISO 8601 date or time; default 24 hours ago."),
            OpenApiParameter("limit", int, description=f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}."),
            OpenApiParameter("cursor", str, description="The `next_cursor` of the previous page; none = the newest."),
        ],
        operation_id="admin_traces_list",
        responses={200: PageSerializer},
        summary="Trace rows, newest first",
        tags=["admin"],
    )
    def get(self, request: Request) -> Response:
        rows = traces_query(request.query_params)
        limit = pagination.parse_limit(request.query_params.get("limit"), default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        if (cursor := decode_cursor(request.query_params.get("cursor"))) is not None:
            ts, before_id = cursor
            rows = rows.filter(Q(ts__lt=ts) | Q(ts=ts, id__lt=before_id))
        found = list(rows[: limit + 1])
        page, more = found[:limit], len(found) > limit
        return Response(
            {
                "data": TraceEventSerializer(page, many=True).data,
                "next_cursor": encode_cursor(page[-1]) if more else None,
            }
        )
