"""/healthz: a `SELECT 1` and nothing more; deep checks live under /admin."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from admin_ops import services
from admin_ops.auth import AdminApiView
from amy import pagination
from amy.errors import ApiError, ErrorCode, Unavailable, error_response, invalid_field
from amy.http import allow_methods
from amy.request_context import current_request_id
from ingest.models import RawEventState

logger = logging.getLogger(__name__)


@csrf_exempt
@allow_methods("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("healthz: database not answering: %s", type(exc).__name__)
        return error_response(ErrorCode.UNAVAILABLE, "The database is not answering.", 503)
    return JsonResponse({"ok": True, "environment": settings.ENVIRONMENT})


# The JSON ops API, behind the admin key -------------------------------------------------------------
# Every write records its actor (`x-admin-actor`) and time: on the ledger row (replay lineage) and
# as a JSON log line (admin_ops/services.py).

_ADMIN_TAG = ["admin"]


_JSON_OBJECT = OpenApiTypes.OBJECT


def _parse_since(raw: Any) -> datetime | None:
    if raw is None or raw == "":
        return None
    parsed = parse_datetime(raw) if isinstance(raw, str) else None
    if parsed is None:
        raise invalid_field("since", "since must be an ISO 8601 date-time.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _is_true(raw: str | None) -> bool:
    return (raw or "").lower() in {"1", "true", "yes"}


@extend_schema_serializer(component_name="AdminHealth")
class AdminHealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    users = serializers.IntegerField()
    active_connections = serializers.IntegerField()
    raw_events_total = serializers.IntegerField()
    raw_events_unprocessed = serializers.IntegerField()
    raw_events_errored = serializers.IntegerField()
    raw_events_dead_lettered = serializers.IntegerField()
    raw_events_last_hour = serializers.IntegerField()
    daily_summary = serializers.IntegerField()
    activities = serializers.IntegerField()
    sleep_sessions = serializers.IntegerField()
    biomarkers = serializers.IntegerField()
    lab_uploads = serializers.IntegerField()
    raw_events_parked = serializers.IntegerField()
    raw_events_skipped = serializers.IntegerField()
    queue_depth = serializers.IntegerField(allow_null=True)
    dlq_depth = serializers.IntegerField(allow_null=True)


class AdminHealthApi(AdminApiView):
    @extend_schema(
        responses={200: AdminHealthSerializer},
        summary="Ledger and queue counters; ok is false when work piles up or Redis is down",
        tags=_ADMIN_TAG,
    )
    def get(self, request: Request) -> Response:
        try:
            counters = services.ops_counters()
        except DatabaseError as exc:
            logger.warning("admin healthz: database not answering: %s", type(exc).__name__)
            raise Unavailable("The database is not answering.") from exc
        return Response(counters)


@extend_schema_serializer(component_name="DeadLetter")
class DeadLetterSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event_type = serializers.CharField()
    terra_user_id = serializers.CharField()
    provider = serializers.CharField()
    state = serializers.CharField()
    process_error = serializers.CharField(allow_null=True)
    attempts = serializers.IntegerField()
    received_at = serializers.DateTimeField()
    dead_lettered_at = serializers.DateTimeField(allow_null=True)
    request_id = serializers.CharField()
    replay_count = serializers.IntegerField()


@extend_schema_serializer(component_name="DeadLetterPage")
class DeadLetterPageSerializer(serializers.Serializer):
    data = DeadLetterSerializer(many=True)  # type: ignore[assignment]  # a declared field, not Serializer.data
    next_cursor = serializers.CharField(allow_null=True)


class DeadLetterListApi(AdminApiView):
    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=["dead", "parked"], description="dead (default) or parked."),
            OpenApiParameter("limit", int, description=f"1..{services.DLQ_MAX_LIMIT}, default 50."),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page."),
        ],
        responses={200: DeadLetterPageSerializer},
        summary="Dead-lettered (or parked) ledger rows, newest first",
        tags=_ADMIN_TAG,
    )
    def get(self, request: Request) -> Response:
        state = request.query_params.get("state") or RawEventState.DEAD
        if state not in services.LISTABLE_STATES:
            raise invalid_field("state", "state must be dead or parked.")
        page = services.dlq_page(
            state=state,
            limit=pagination.parse_limit(
                request.query_params.get("limit"), default=services.DLQ_DEFAULT_LIMIT, maximum=services.DLQ_MAX_LIMIT
            ),
            cursor=request.query_params.get("cursor") or None,
        )
        return Response(page)


class RawEventDetailApi(AdminApiView):
    @extend_schema(
        responses={200: _JSON_OBJECT},
        summary="Every column of a ledger row, the payload verbatim and parsed (payload_json)",
        tags=_ADMIN_TAG,
    )
    def get(self, request: Request, raw_event_id: int) -> Response:
        return Response(services.raw_event_detail(raw_event_id=raw_event_id))


@extend_schema_serializer(component_name="Replay")
class ReplaySerializer(serializers.Serializer):
    raw_event_id = serializers.IntegerField()
    state = serializers.CharField(required=False)
    replay_count = serializers.IntegerField(required=False)
    dry_run = serializers.BooleanField(required=False)
    rows = serializers.DictField(
        child=serializers.ListField(child=serializers.DictField()),
        required=False,
        help_text="dry_run only: the typed rows the replay would write, by table.",
    )
    outcome = serializers.DictField(required=False, help_text="dry_run only: the state and reason it would reach.")


class RawEventReplayApi(AdminApiView):
    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("dry_run", bool, description="Normalize in a rolled-back transaction.")],
        responses={200: ReplaySerializer},
        summary="Replay a ledger row (back to received, re-enqueued, lineage recorded)",
        tags=_ADMIN_TAG,
    )
    def post(self, request: Request, raw_event_id: int) -> Response:
        if _is_true(request.query_params.get("dry_run")):
            result = services.raw_event_replay_dry_run(raw_event_id=raw_event_id)
            return Response(
                {
                    "raw_event_id": result.raw_event_id,
                    "dry_run": True,
                    "rows": result.rows,
                    "outcome": {"state": result.state, "reason": result.reason},
                }
            )
        row = services.raw_event_replay(
            raw_event_id=raw_event_id, actor=self.actor(), request_id=current_request_id.get()
        )
        return Response({"raw_event_id": row.raw_event_id, "state": row.state, "replay_count": row.replay_count})


class BulkReplayInputSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=10_000)
    event_type = serializers.CharField(required=False, max_length=64)
    since = serializers.DateTimeField(required=False)
    error_contains = serializers.CharField(required=False, max_length=500)


@extend_schema_serializer(component_name="BulkReplay")
class BulkReplaySerializer(serializers.Serializer):
    matched = serializers.IntegerField()
    replayed = serializers.IntegerField()
    skipped = serializers.IntegerField()


class DeadLetterReplayApi(AdminApiView):
    @extend_schema(
        request=BulkReplayInputSerializer,
        responses={200: BulkReplaySerializer},
        summary="Bulk replay by ids, or by a filter over the dead rows",
        tags=_ADMIN_TAG,
    )
    def post(self, request: Request) -> Response:
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ApiError("The body must be a JSON object.", code=ErrorCode.INVALID_REQUEST)
        ids = body.get("ids")
        if ids is not None and (
            not isinstance(ids, list) or not ids or not all(type(i) is int and i > 0 for i in ids) or len(ids) > 10_000
        ):
            raise invalid_field("ids", "ids must be a list of 1 to 10000 raw event ids.")
        for name in ("event_type", "error_contains"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise invalid_field(name, f"{name} must be a string.")
        replay_filter = services.ReplayFilter(
            event_type=body.get("event_type") or None,
            since=_parse_since(body.get("since")),
            error_contains=body.get("error_contains") or None,
        )
        if ids is None and replay_filter.is_empty():
            raise ApiError(
                "Give ids, or at least one of event_type, since, error_contains.", code=ErrorCode.INVALID_REQUEST
            )
        result = services.raw_events_replay(
            actor=self.actor(),
            ids=ids,
            replay_filter=None if ids is not None else replay_filter,
            request_id=current_request_id.get(),
        )
        return Response({"matched": result.matched, "replayed": result.replayed, "skipped": result.skipped})


class UserSnapshotApi(AdminApiView):
    @extend_schema(
        responses={200: _JSON_OBJECT},
        summary="One user: rows per table, connections, lab uploads, ledger rows by state, recent traces",
        description=(
            "`traces`: the newest trace rows (at most `traces_limit`, 50), newest first, in the shape of "
            "`GET /admin/traces`: rows naming the user, and the webhook and worker journeys of the newest "
            f"{services.USER_TRACES_LEDGER_ROWS} ledger rows of each of the user's Terra users."
        ),
        tags=_ADMIN_TAG,
    )
    def get(self, request: Request, user_id: str) -> Response:
        return Response(services.user_snapshot(user_id=user_id))
