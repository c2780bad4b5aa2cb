"""`/v1/labs`: upload a lab report, list and read uploads, download the file, delete.

Another user's upload answers exactly as an unknown id does: 404 `lab_not_found`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import FileResponse, HttpResponseBase, HttpResponseRedirect, UnreadablePostError
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from amy import pagination
from amy.errors import ApiError, ErrorCode, NotFound, error_body
from ingest.labs.heic import HeicTooLarge, heic_upload_check
from ingest.labs.services import (
    LabFileUnreadable,
    LabStorageUnavailable,
    lab_file_open,
    lab_file_url,
    lab_upload_create,
    lab_upload_delete,
    lab_upload_get,
    lab_upload_list,
)
from ingest.labs.sniff import HEIC, KINDS_BY_CONTENT_TYPE, sniff
from ingest.labs.upload import (
    FIELD,
    LabFileUploadHandler,
    declared_too_large,
    display_filename,
    download_filename,
)
from ingest.models import Biomarker, LabUpload
from ingest.quotas import LAB_UPLOADS, daily_quota_refusal

logger = logging.getLogger(__name__)

INVALID_FILE_TYPE = "invalid_file_type"
LAB_NOT_FOUND = "lab_not_found"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MAX_ID = 2**63 - 1
ACCEPTED = "PDF, JPEG, PNG or HEIC"


def _error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response={"$ref": "#/components/schemas/Error"}, description=description)


def _lab_not_found() -> NotFound:
    return NotFound("No such lab upload.", code=LAB_NOT_FOUND)


def _valid_id(lab_id: int) -> bool:
    return 0 < lab_id <= _MAX_ID  # a larger number is no id of ours (and no bigint)


def _owned(user: User, lab_id: int) -> LabUpload:
    lab_upload = lab_upload_get(user=user, lab_upload_id=lab_id) if _valid_id(lab_id) else None
    if lab_upload is None:
        raise _lab_not_found()
    return lab_upload


def _storage_unavailable(action: str) -> Response:
    return Response(
        error_body(ErrorCode.UPSTREAM_UNAVAILABLE, f"Cannot {action}: the file store is not answering; retry later."),
        status=503,
    )


def _too_large() -> ApiError:
    mib = settings.AMY_LAB_MAX_BYTES // (1024 * 1024)
    return ApiError(f"The file is larger than {mib} MB.", code=ErrorCode.PAYLOAD_TOO_LARGE, status=413)


# Serializers --------------------------------------------------------------------------------------


@extend_schema_serializer(component_name="LabUpload")
class LabUploadSerializer(serializers.ModelSerializer):
    class Meta:
        model = LabUpload
        fields = ["id", "filename", "content_type", "size_bytes", "status", "error", "created_at", "parsed_at"]
        read_only_fields = fields


@extend_schema_serializer(component_name="Biomarker")
class BiomarkerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Biomarker
        fields = [
            "code",
            "name",
            "value",
            "value_text",
            "unit",
            "reference_low",
            "reference_high",
            "flag",
            "collected_at",
        ]
        read_only_fields = fields


@extend_schema_serializer(component_name="LabUploadDetail")
class LabUploadDetailSerializer(LabUploadSerializer):
    biomarkers = BiomarkerSerializer(many=True, read_only=True)

    class Meta(LabUploadSerializer.Meta):
        fields = [*LabUploadSerializer.Meta.fields, "biomarkers"]
        read_only_fields = fields


# Pagination ---------------------------------------------------------------------------------------


def encode_cursor(before_id: int) -> str:
    return pagination.encode_cursor({"before": before_id})


def decode_cursor(raw: str | None) -> int | None:
    if not raw:
        return None
    body = pagination.decode_cursor(raw)
    before = body.get("before") if set(body) == {"before"} else None
    if type(before) is not int or not 0 < before <= _MAX_ID:
        raise pagination.malformed_cursor()
    return before


# APIs ---------------------------------------------------------------------------------------------


class LabUploadApi(APIView):
    """`POST /v1/labs/upload` (and `POST /v1/labs`): one lab report file, multipart field `file`."""

    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="LabUploadRequest")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text=f"The lab report: {ACCEPTED}, at most 10 MB (10,485,760 bytes).")

    @extend_schema_serializer(component_name="LabUploadAccepted")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()

    upload_schema: dict[str, Any] = dict(  # noqa: C408 - the keywords of extend_schema
        request={"multipart/form-data": InputSerializer},
        responses={
            202: OutputSerializer,
            413: _error_response(
                "`payload_too_large`: the file is over 10 MB, or a HEIC image has more pixels than the server "
                "converts (`details.max_pixels`)."
            ),
            429: _error_response(
                "`rate_limit_exceeded`: the daily quota of uploads (`details.quota` = `lab_uploads_per_day`, "
                "`limit`, `used`, `resets_at`) is used up; `Retry-After` is the seconds to midnight UTC."
            ),
            503: _error_response(
                "`upstream_unavailable`: the file store is not answering; `unavailable`: our database is not answering."
            ),
        },
        summary="Upload a lab report (PDF, JPEG, PNG or HEIC, by content) for Terra to parse",
        description=(
            "400 codes: `invalid_file_type` (empty, or not a PDF, JPEG, PNG or HEIC by its content: the name "
            "and Content-Type are not trusted), `invalid_field` (no `file` part), `invalid_request` (not "
            "multipart/form-data). The biomarkers appear in `GET /v1/labs/{lab_id}` once Terra has parsed it."
        ),
        tags=["labs"],
    )

    @extend_schema(operation_id="labs_upload", **upload_schema)
    def post(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        refusal = daily_quota_refusal(LAB_UPLOADS, user=user)
        if refusal is not None:
            return refusal
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "multipart/form-data":
            raise ApiError(
                "The body must be multipart/form-data, with the file in the field `file`.",
                code=ErrorCode.INVALID_REQUEST,
            )
        max_bytes = settings.AMY_LAB_MAX_BYTES
        if declared_too_large(request._request, max_bytes):
            raise _too_large()
        handler = LabFileUploadHandler(request._request, max_bytes=max_bytes)
        request._request.upload_handlers = [handler]
        try:
            files = request.FILES
        except RequestDataTooBig:
            raise _too_large() from None
        except (SuspiciousOperation, UnreadablePostError):
            raise ApiError("The multipart body could not be read.", code=ErrorCode.INVALID_REQUEST) from None
        if handler.too_large:
            raise _too_large()
        file = files.get(FIELD)
        if file is None:
            raise ApiError(
                "Send the lab report in the multipart field `file`.",
                code=ErrorCode.INVALID_FIELD,
                details={"field": FIELD},
            )
        kind = sniff(file.head) if file.size else None
        if kind is None:
            raise ApiError(f"The file is empty or not a {ACCEPTED}.", code=INVALID_FILE_TYPE, details={"field": FIELD})
        if kind == HEIC:
            try:
                heic_upload_check(file)
            except HeicTooLarge as exc:
                details = {"field": FIELD, "max_pixels": exc.max_pixels}
                raise ApiError(str(exc), code=ErrorCode.PAYLOAD_TOO_LARGE, status=413, details=details) from None
        try:
            lab_upload = lab_upload_create(
                user=user,
                file=file,
                kind=kind,
                filename=display_filename(file.name),
                request_id=getattr(request._request, "request_id", None),
            )
        except LabStorageUnavailable:
            return _storage_unavailable("store the file")
        return Response(self.OutputSerializer({"id": lab_upload.pk, "status": lab_upload.status}).data, status=202)


class LabsApi(LabUploadApi):
    """`GET /v1/labs` (the caller's uploads, newest first) and `POST /v1/labs` (an upload)."""

    @extend_schema_serializer(component_name="LabUploadPage")
    class PageSerializer(serializers.Serializer):
        data = LabUploadSerializer(many=True)  # type: ignore[assignment]  # a declared field, not Serializer.data
        next_cursor = serializers.CharField(
            allow_null=True, help_text="Pass as `cursor` for the next page; null at the end."
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description=f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}."),
            OpenApiParameter("cursor", str, description="The `next_cursor` of the previous page; none = the newest."),
        ],
        operation_id="labs_list",
        responses={200: PageSerializer},
        summary="The caller's lab uploads, newest first",
        tags=["labs"],
    )
    def get(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        limit = pagination.parse_limit(request.query_params.get("limit"), default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        before_id = decode_cursor(request.query_params.get("cursor"))
        uploads = lab_upload_list(user=user, before_id=before_id, limit=limit + 1)
        page, more = uploads[:limit], len(uploads) > limit
        return Response(
            {
                "data": LabUploadSerializer(page, many=True).data,
                "next_cursor": encode_cursor(page[-1].pk) if more else None,
            }
        )

    @extend_schema(operation_id="labs_create", **LabUploadApi.upload_schema)
    def post(self, request: Request) -> Response:
        return super().post(request)


class LabDetailApi(APIView):
    """`GET /v1/labs/<id>` (with its biomarkers) and `DELETE /v1/labs/<id>`."""

    @extend_schema(
        operation_id="lab_retrieve",
        responses={200: LabUploadDetailSerializer},
        summary="One lab upload and the biomarkers parsed from it",
        tags=["labs"],
    )
    def get(self, request: Request, lab_id: int) -> Response:
        user: User = request.user  # type: ignore[assignment]
        lab_upload = (
            lab_upload_get(user=user, lab_upload_id=lab_id, with_biomarkers=True) if _valid_id(lab_id) else None
        )
        if lab_upload is None:
            raise _lab_not_found()
        return Response(LabUploadDetailSerializer(lab_upload).data)

    @extend_schema(
        operation_id="lab_delete",
        responses={
            204: None,
            503: _error_response(
                "`upstream_unavailable`: the file store is not answering (nothing was deleted); "
                "`unavailable`: our database is not answering."
            ),
        },
        summary="Delete a lab upload, its biomarkers and its stored file",
        tags=["labs"],
    )
    def delete(self, request: Request, lab_id: int) -> Response:
        user: User = request.user  # type: ignore[assignment]
        if not _valid_id(lab_id):
            raise _lab_not_found()
        try:
            deleted = lab_upload_delete(user=user, lab_upload_id=lab_id)
        except LabStorageUnavailable:
            return _storage_unavailable("delete the file")
        if not deleted:
            raise _lab_not_found()
        return Response(status=204)


class IgnoreAcceptNegotiation(BaseContentNegotiation):
    """The download answers whatever the client accepts (the file, a redirect, or a JSON error):
    an `Accept: application/pdf` must not turn into 406."""

    def select_parser(self, request: Request, parsers: Iterable[Any]) -> Any:
        return next(iter(parsers), None)

    def select_renderer(self, request: Request, renderers: Iterable[Any], format_suffix: str | None = None) -> Any:
        renderer = next(iter(renderers))
        return (renderer, renderer.media_type)


_FILE_TYPES = sorted(KINDS_BY_CONTENT_TYPE)


class LabFileApi(APIView):
    """`GET /v1/labs/<id>/file`: the original bytes, as an attachment of the sniffed type."""

    content_negotiation_class = IgnoreAcceptNegotiation

    @extend_schema(
        operation_id="lab_file",
        responses={
            **{
                (200, media_type): OpenApiResponse(
                    response=OpenApiTypes.BINARY, description="When files are on local disk: the file itself."
                )
                for media_type in _FILE_TYPES
            },
            302: OpenApiResponse(
                description="When files are on S3: a redirect to a pre-signed URL valid for a few minutes, "
                "which answers the file with the same Content-Type and Content-Disposition."
            ),
            503: _error_response(
                "`upstream_unavailable`: the file store is not answering; `unavailable`: our database is not answering."
            ),
        },
        summary="Download the uploaded file (Content-Disposition: attachment, the sniffed Content-Type)",
        tags=["labs"],
    )
    def get(self, request: Request, lab_id: int) -> HttpResponseBase:
        lab_upload = _owned(request.user, lab_id)  # type: ignore[arg-type]
        kind = KINDS_BY_CONTENT_TYPE.get(lab_upload.content_type)
        if kind is None or not lab_upload.storage_key:
            raise _lab_not_found()
        filename = download_filename(lab_upload.filename, kind.extension, f"lab-report-{lab_upload.pk}")
        disposition = content_disposition_header(True, filename)
        url = lab_file_url(lab_upload=lab_upload, content_disposition=disposition)
        if url is not None:
            response: HttpResponseBase = HttpResponseRedirect(url)
        else:
            try:
                stored = lab_file_open(lab_upload=lab_upload)
            except LabFileUnreadable:
                logger.error("lab upload %d has no stored file", lab_upload.pk)
                raise _lab_not_found() from None
            except LabStorageUnavailable:
                return _storage_unavailable("read the file")
            response = FileResponse(stored, as_attachment=True, filename=filename, content_type=kind.content_type)
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response
