"""`POST /v1/import` and `GET /v1/import/<id>`.

The upload is read as a stream and never whole: a raw body (a JSON array as `application/json`,
NDJSON as `application/x-ndjson` or any `text/*`) chunk by chunk, a multipart file through an
upload handler; both go into an ImportSpool that refuses the byte past AMY_IMPORT_MAX_BYTES (413
`payload_too_large`, nothing stored). A declared Content-Length that cannot fit is refused before
anything is read. The format comes from the content, not the Content-Type: a first non-blank
character `[` is a JSON array, `{` NDJSON; anything else is refused (400), as is an empty upload.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from amy.errors import ApiError, ErrorCode, NotFound, error_body
from ingest.imports.services import ImportSpool, ImportStorageUnavailable, ImportTooLarge, import_job_create
from ingest.models import ImportJob
from ingest.quotas import IMPORTS, daily_quota_refusal

logger = logging.getLogger(__name__)

FIELD = "file"
# What a multipart body may carry besides the file (boundaries, part headers, a long file name):
# a body declared larger than the cap plus this is refused before any of it is read.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
BODY_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/octet-stream",
    }
)
_READ_BYTES = 256 * 1024
_MAX_ID = 2**63 - 1


def _too_large() -> ApiError:
    mib = settings.AMY_IMPORT_MAX_BYTES // (1024 * 1024)
    return ApiError(f"The import is larger than {mib} MB.", code=ErrorCode.PAYLOAD_TOO_LARGE, status=413)


def _error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response={"$ref": "#/components/schemas/Error"}, description=description)


class ImportFileUploadHandler(FileUploadHandler):
    """The first multipart file part named `file`, into an ImportSpool; every other file part is
    skipped unread, and the upload stops at the first byte over the cap."""

    def __init__(self, request: HttpRequest | None = None, *, spool: ImportSpool) -> None:
        super().__init__(request)
        self.spool = spool
        self.too_large = False
        self.taken = False
        # `self.file` is set only once a file is taken: Django's parser closes `handler.file`, when
        # the attribute exists, whenever it skips a part or an upload stops.

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, Any] | None = None,
    ) -> None:
        if field_name != FIELD or self.taken:
            raise SkipFile
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.taken = True
        if content_length is not None and content_length > self.spool.max_bytes:
            self.too_large = True
            raise StopUpload(connection_reset=False)
        self.file = self.spool.file

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        try:
            self.spool.write(raw_data)
        except ImportTooLarge:
            self.too_large = True
            # The parser then reads the rest of the body and drops it (bounded by the
            # Content-Length check the view made first), so the client still gets our answer.
            raise StopUpload(connection_reset=False) from None

    def file_complete(self, file_size: int) -> UploadedFile | None:
        file = getattr(self, "file", None)
        if file is None or self.too_large:
            return None
        return UploadedFile(file, name=self.file_name or "", size=self.spool.size)


def _declared_length(request: HttpRequest) -> int | None:
    declared = request.META.get("CONTENT_LENGTH") or ""
    return int(declared) if declared.isdigit() else None


def _spool_multipart(request: HttpRequest, spool: ImportSpool) -> None:
    declared = _declared_length(request)
    if declared is not None and declared > spool.max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise _too_large()
    handler = ImportFileUploadHandler(request, spool=spool)
    request.upload_handlers = [handler]
    try:
        files = request.FILES
    except RequestDataTooBig:
        raise _too_large() from None
    except (MultiPartParserError, SuspiciousOperation, UnreadablePostError):
        raise ApiError("The multipart body could not be read.", code=ErrorCode.INVALID_REQUEST) from None
    if handler.too_large:
        raise _too_large()
    if files.get(FIELD) is None:
        raise ApiError(
            "Send the payloads as a file in the multipart field `file`.",
            code=ErrorCode.INVALID_FIELD,
            details={"field": FIELD},
        )
    if spool.format is None:
        problem = "is empty" if spool.size == 0 else "is not a JSON array or NDJSON (one JSON object per line)"
        raise ApiError(f"The file {problem}.", code=ErrorCode.INVALID_FIELD, details={"field": FIELD})


def _spool_body(request: HttpRequest, spool: ImportSpool) -> None:
    declared = _declared_length(request)
    if declared is not None and declared > spool.max_bytes:
        raise _too_large()
    try:
        while chunk := request.read(_READ_BYTES):
            spool.write(chunk)
    except ImportTooLarge:
        raise _too_large() from None
    except UnreadablePostError:
        raise ApiError("The body could not be read.", code=ErrorCode.INVALID_REQUEST) from None
    if spool.size == 0:
        raise ApiError("The body is empty: send a JSON array or NDJSON.", code=ErrorCode.INVALID_REQUEST)
    if spool.format is None:
        raise ApiError(
            "The body is not a JSON array or NDJSON (one JSON object per line).", code=ErrorCode.INVALID_REQUEST
        )


class ImportErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="0-based position of the entry in the file.")
    error = serializers.CharField()


@extend_schema_serializer(component_name="Import")
class ImportJobSerializer(serializers.ModelSerializer):
    errors = ImportErrorSerializer(many=True, help_text="The first 20 rejected entries.")  # type: ignore[assignment]  # a declared field, not Serializer.errors

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "status",
            "total",
            "accepted",
            "duplicates",
            "rejected",
            "errors",
            "error",
            "created_at",
            "finished_at",
        ]


class ImportCreateApi(APIView):
    """`POST /v1/import`: a file of Terra payloads, imported for the caller by a task."""

    parser_classes: list[Any] = []  # the view reads the body itself, as a stream

    @extend_schema_serializer(component_name="ImportUpload")
    class FileSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="A JSON array of Terra payloads, or NDJSON (one per line).")

    @extend_schema_serializer(component_name="ImportAccepted")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()

    @extend_schema(
        request={
            "multipart/form-data": FileSerializer,
            "application/json": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
            "application/x-ndjson": {"type": "string", "description": "One Terra payload (a JSON object) per line."},
        },
        responses={
            202: OutputSerializer,
            413: _error_response("`payload_too_large`: the upload is over 50 MB."),
            429: _error_response(
                "`rate_limit_exceeded`: the daily quota of imports (`details.quota` = `imports_per_day`, "
                "`limit`, `used`, `resets_at`) is used up; `Retry-After` is the seconds to midnight UTC."
            ),
            503: _error_response(
                "`upstream_unavailable`: the file store is not answering; `unavailable`: our database is not answering."
            ),
        },
        summary="Import Terra payloads (a JSON array or NDJSON, at most 50 MB) as the caller's data",
        description=(
            "A multipart file (field `file`) or the body itself. Each payload enters the ledger as the "
            "caller's (`source = import`, the webhook's dedup) and goes the normal worker path; follow the "
            "job with `GET /v1/import/{import_id}`. 400 codes: `invalid_request` (an empty body, a body that "
            "is not a JSON array or NDJSON, an unreadable multipart body, another Content-Type), "
            "`invalid_field` (no `file` part, or a file that is empty or not a JSON array or NDJSON)."
        ),
        tags=["imports"],
    )
    def post(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        refusal = daily_quota_refusal(IMPORTS, user=user)
        if refusal is not None:
            return refusal
        django_request: HttpRequest = request._request
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        spool = ImportSpool(settings.AMY_IMPORT_MAX_BYTES)
        try:
            if media_type == "multipart/form-data":
                _spool_multipart(django_request, spool)
            elif media_type in BODY_MEDIA_TYPES or media_type.startswith("text/"):
                _spool_body(django_request, spool)
            else:
                raise ApiError(
                    "Send a JSON array (application/json), NDJSON (application/x-ndjson) or a multipart file "
                    "in the field `file`.",
                    code=ErrorCode.INVALID_REQUEST,
                )
            try:
                job = import_job_create(user=user, spool=spool, request_id=getattr(django_request, "request_id", None))
            except ImportStorageUnavailable:
                return Response(
                    error_body(
                        ErrorCode.UPSTREAM_UNAVAILABLE, "Cannot store the import: the file store is not answering."
                    ),
                    status=503,
                )
        finally:
            spool.close()
        return Response(self.OutputSerializer({"id": job.pk, "status": job.status}).data, status=202)


class ImportDetailApi(APIView):
    """`GET /v1/import/<id>`: one of the caller's imports; anyone else's answers as unknown."""

    @extend_schema(
        responses={200: ImportJobSerializer},
        summary="An import's status and counters",
        tags=["imports"],
    )
    def get(self, request: Request, import_id: int) -> Response:
        job = (
            ImportJob.objects.filter(pk=import_id, user_id=str(request.user.pk)).first()
            if 0 < import_id <= _MAX_ID
            else None
        )
        if job is None:
            raise NotFound("No such import.", code="import_not_found")
        return Response(ImportJobSerializer(job).data)
