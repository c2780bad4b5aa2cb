"""`GET /v1/sync`: the CLI's incremental mirror. The selection lives in ingest/sync.py."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingest.sync import DEFAULT_LIMIT, MAX_LIMIT, SYNC_TABLES, decode_cursor, parse_limit, parse_tables, read_sync_page

_ROWS = {"type": "array", "items": {"type": "object", "additionalProperties": True}}
_IDS = {"type": "array", "items": {"type": "integer"}}
_SYNC_RESPONSE = {
    "type": "object",
    "required": ["tables", "deleted", "cursor", "has_more"],
    "properties": {
        "tables": {"type": "object", "properties": dict.fromkeys(SYNC_TABLES, _ROWS), "additionalProperties": False},
        "deleted": {"type": "object", "properties": dict.fromkeys(SYNC_TABLES, _IDS), "additionalProperties": False},
        "cursor": {"type": "string"},
        "has_more": {"type": "boolean"},
    },
}


class SyncApi(APIView):
    @extend_schema(
        operation_id="sync",
        summary="Changes to the caller's tables since a cursor",
        description=(
            "Rows inserted or updated and ids deleted since `cursor`, at most `limit` items (rows and "
            "deleted ids together) over the requested tables. Apply `deleted` before `tables`; call "
            "again with the returned `cursor` while `has_more` is true."
        ),
        parameters=[
            OpenApiParameter(
                "cursor", str, description="The `cursor` of the previous answer; none = from the beginning."
            ),
            OpenApiParameter("limit", int, description=f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}."),
            OpenApiParameter("tables", str, description=f"Comma-separated, default all: {', '.join(SYNC_TABLES)}."),
        ],
        responses={200: _SYNC_RESPONSE},
        tags=["sync"],
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        limit = parse_limit(params.get("limit"))
        tables = parse_tables(params.get("tables"))
        cursor = decode_cursor(params.get("cursor"))
        page = read_sync_page(user_id=str(request.user.pk), cursor=cursor, tables=tables, limit=limit)
        return Response(page.as_json(), headers={"Cache-Control": "no-store"})
