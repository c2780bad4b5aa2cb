"""`Idempotency-Key` on authenticated `POST /v1/*`, kept in PostgreSQL per user for
AMY_IDEMPOTENCY_SECONDS (24 h).

What a key promises (the README's API section says the same):

- The same key with the same request replays the first answer (marked `Idempotent-Replayed:
  true`) without running the request again. "The same request" is what it means, not its bytes:
  method, path, query and media type; a JSON body compared as parsed (key order and spacing do not
  matter); a multipart body by its fields and, per file, its field name, file name and a SHA-256 of
  its whole content, so a retry under a new boundary matches and another file of the same length
  does not. Any other body is compared by a SHA-256 of all of it, whatever its size.
- The same key with another request answers 409 `idempotency_key_mismatch`.
- While the first request runs, the key answers 409 `idempotency_key_in_use`; a request that died
  without answering frees its key after AMY_IDEMPOTENCY_IN_PROGRESS_SECONDS.
- Answers that ask the client to try again (429, 408, any 5xx) are not kept, so the retry runs.
- Keys live in the database, with the data they protect: a Redis outage or flush does not make a
  retry run twice. If the database does not answer, neither does the request (503 `unavailable`),
  since running it without its key could run it twice.

A middleware rather than a view mixin so every endpoint gets it the same way; it reads the bearer
token itself (the views authenticate again, cheaply) because the key is per user. To compare
bodies it reads the whole body first, spooled to a temporary file past 1 MiB, and hands the view
that file as the request's stream: the upload endpoints still read it as a stream.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.files.uploadhandler import FileUploadHandler
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils import timezone

from accounts.authentication import user_for_token
from accounts.models import IdempotencyKey
from accounts.tokens import InvalidToken
from amy.errors import ErrorCode, error_response

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_READ_BYTES = 256 * 1024
_SPOOL_IN_MEMORY_BYTES = 1024 * 1024
# Expired keys deleted by each new claim: each claim adds at most one row, so the table stays
# bounded without a scheduled job.
_PRUNE_PER_CLAIM = 100
# Answers that say "try again": keeping one would replay the refusal to every retry.
_RETRYABLE = frozenset({408, 425, 429})


def idempotency_forget_user(user_id: str) -> int:
    """Delete every key (and the answers kept with them) of this user; returns how many."""
    deleted, _ = IdempotencyKey.objects.filter(user_id=user_id).delete()
    return deleted


def idempotency_prune_expired(limit: int = _PRUNE_PER_CLAIM) -> int:
    """Delete up to `limit` expired keys, oldest first; rows another request holds are skipped."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM idempotency_keys WHERE id IN ("
            " SELECT id FROM idempotency_keys WHERE expires_at <= now()"
            " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)",
            [limit],
        )
        return cursor.rowcount


def _applies(request: HttpRequest) -> bool:
    return (
        request.method == "POST"
        and request.path.startswith("/v1/")
        and not request.path.startswith("/v1/auth/")
        and HEADER.lower() in {h.lower() for h in request.headers}
    )


def _user_id(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        user, _ = user_for_token(token.strip())
    except (InvalidToken, UnicodeError):
        return None
    return user.pk


# The multipart overhead the upload endpoints allow over their file cap (ingest/labs/upload.py,
# ingest/imports/views.py).
_MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _max_body_bytes(path: str) -> int:
    """The largest body this endpoint accepts. A body declared larger is refused by its view from
    the declared length before any of it is read, so it is not read here either: reading it to
    compare it would commit memory or disk to a body the endpoint refuses."""
    if path == "/v1/import":
        return settings.AMY_IMPORT_MAX_BYTES + _MULTIPART_OVERHEAD_BYTES
    if path in ("/v1/labs", "/v1/labs/upload"):
        return settings.AMY_LAB_MAX_BYTES + _MULTIPART_OVERHEAD_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE or _SPOOL_IN_MEMORY_BYTES


class _ChainedStream(io.RawIOBase):
    """What was read so far, then the rest of the original stream (a body over the cap)."""

    def __init__(self, head: IO[bytes], rest: Any) -> None:
        self._parts: Iterator[Any] = iter((head, rest))
        self._current = next(self._parts)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self._current is not None and (size < 0 or len(out) < size):
            chunk = self._current.read(-1 if size < 0 else size - len(out))
            if chunk:
                out += chunk
            else:
                self._current = next(self._parts, None)
        return out


class _SpooledBody:
    """The whole body, read once: its size, its SHA-256 and a file to hand to the view."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
        self.size = 0
        self.over_limit = False
        digest = hashlib.sha256()
        while chunk := request.read(min(_READ_BYTES, limit + 1 - self.size)):
            self.file.write(chunk)
            self.size += len(chunk)
            digest.update(chunk)
            if self.size > limit:
                self.over_limit = True
                break
        self.sha256 = digest.hexdigest()
        self.file.seek(0)

    def hand_to_view(self, request: HttpRequest) -> None:
        """The view reads the body from here, as if nothing had been read."""
        self.file.seek(0)
        original = request._stream
        # Django's private stream, replaced as a whole: any readable file object will do.
        request._stream = _ChainedStream(self.file, original) if self.over_limit else self.file  # type: ignore[assignment]
        request._read_started = False  # type: ignore[attr-defined]

    def read_all(self) -> bytes:
        self.file.seek(0)
        try:
            return self.file.read()
        finally:
            self.file.seek(0)

    def close(self) -> None:
        self.file.close()


class _FileHasher(FileUploadHandler):
    """Multipart file parts as (field name, file name, size, SHA-256), content discarded."""

    def __init__(self) -> None:
        super().__init__(None)
        self.files: list[tuple[str, str, int, str]] = []
        self._digest = hashlib.sha256()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self._digest.update(raw_data)

    def file_complete(self, file_size: int) -> None:
        self.files.append((self.field_name, self.file_name or "", file_size, self._digest.hexdigest()))


def _multipart_meaning(request: HttpRequest, body: _SpooledBody) -> dict[str, Any] | None:
    meta = {"CONTENT_TYPE": request.META.get("CONTENT_TYPE", ""), "CONTENT_LENGTH": str(body.size)}
    hasher = _FileHasher()
    body.file.seek(0)
    try:
        fields, _ = MultiPartParser(meta, body.file, [hasher], request.encoding).parse()  # type: ignore[arg-type]
    except (MultiPartParserError, SuspiciousOperation, UnicodeError, ValueError):
        return None  # unreadable: the view refuses it; compare its bytes meanwhile
    finally:
        body.file.seek(0)
    return {"fields": sorted(fields.lists()), "files": sorted(hasher.files)}


def _json_meaning(body: _SpooledBody) -> str | None:
    if body.size > (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or _SPOOL_IN_MEMORY_BYTES):
        return None  # a large import: its bytes, rather than its parse in memory
    try:
        return json.dumps(json.loads(body.read_all()), sort_keys=True, separators=(",", ":"))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        return None


def _fingerprint(request: HttpRequest, body: _SpooledBody) -> str:
    media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    meaning: Any = None
    if not body.over_limit:
        if media_type == "multipart/form-data":
            meaning = _multipart_meaning(request, body)
        elif media_type == "application/json" or media_type.endswith("+json"):
            meaning = _json_meaning(body)
    if meaning is None:
        meaning = {"sha256": body.sha256, "size": body.size, "whole": not body.over_limit}
    described = {
        "method": request.method,
        "path": request.path,
        "query": sorted(request.GET.lists()),
        "media_type": media_type,
        "body": meaning,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _applies(request):
            return self.get_response(request)
        key = request.headers[HEADER]
        if not _VALID_KEY.fullmatch(key):
            return error_response(
                ErrorCode.INVALID_FIELD,
                "Idempotency-Key must be 1-255 printable ASCII characters.",
                400,
                {"field": HEADER},
            )
        user_id = _user_id(request)
        if user_id is None:
            return self.get_response(request)  # the view answers 401
        limit = _max_body_bytes(request.path)
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and int(declared) > limit:
            return self.get_response(request)  # the view refuses it without reading it
        try:
            body = _SpooledBody(request, limit)
        except UnreadablePostError:
            return error_response(ErrorCode.INVALID_REQUEST, "The body could not be read.", 400)
        try:
            fingerprint = _fingerprint(request, body)
            body.hand_to_view(request)
            if body.over_limit:
                return self.get_response(request)  # the view refuses it
            return self._once(request, user_id, key, fingerprint)
        finally:
            body.close()

    def _once(self, request: HttpRequest, user_id: str, key: str, fingerprint: str) -> HttpResponse:
        claim = uuid.uuid4()
        stored = None
        try:
            # Twice: a key released between our claim and our read is free for us to take.
            for _ in range(2):
                if claimed := _claim(user_id, key, fingerprint, claim):
                    break
                if (stored := IdempotencyKey.objects.filter(user_id=user_id, key=key).first()) is not None:
                    break
        except DatabaseError as exc:
            logger.warning("idempotency store unavailable: %s", type(exc).__name__)
            return error_response(ErrorCode.UNAVAILABLE, "The database is not answering; retry later.", 503)
        if not claimed:
            return _answer_from(stored, fingerprint)
        try:
            response = self.get_response(request)
        except BaseException:
            _release(user_id, key, claim)
            raise
        if response.status_code >= 500 or response.status_code in _RETRYABLE or getattr(response, "streaming", False):
            _release(user_id, key, claim)
            return response
        try:
            IdempotencyKey.objects.filter(user_id=user_id, key=key, claim=claim).update(
                status=response.status_code,
                content_type=response.get("Content-Type", "application/json"),
                content=response.content,
            )
        except DatabaseError as exc:
            # The request ran; its answer still goes out. The claim lapses and a retry would run
            # again, as it would have without a key.
            logger.warning("idempotency answer not kept: %s", type(exc).__name__)
        return response


def _claim(user_id: str, key: str, fingerprint: str, claim: uuid.UUID) -> bool:
    """Take the key for this request: a new key, an expired one, or one whose request died
    (its claim lapsed unanswered). One statement, so two racing requests cannot both take it."""
    now = timezone.now()
    in_progress = settings.AMY_IDEMPOTENCY_IN_PROGRESS_SECONDS
    ttl = settings.AMY_IDEMPOTENCY_SECONDS
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO idempotency_keys"
            " (user_id, key, fingerprint, claim, locked_until, status, content_type, content, created_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, NULL, '', NULL, %s, %s)"
            " ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
            " claim = EXCLUDED.claim, locked_until = EXCLUDED.locked_until, status = NULL, content_type = '',"
            " content = NULL, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at"
            " WHERE idempotency_keys.expires_at <= %s"
            " OR (idempotency_keys.status IS NULL AND idempotency_keys.locked_until <= %s)"
            " RETURNING id",
            [
                user_id,
                key,
                fingerprint,
                claim,
                now + timedelta(seconds=in_progress),
                now,
                now + timedelta(seconds=ttl),
                now,
                now,
            ],
        )
        claimed = cursor.fetchone() is not None
        if claimed:
            idempotency_prune_expired()
    return claimed


def _release(user_id: str, key: str, claim: uuid.UUID) -> None:
    try:
        IdempotencyKey.objects.filter(user_id=user_id, key=key, claim=claim).delete()
    except DatabaseError as exc:
        logger.warning("idempotency claim not released (it lapses): %s", type(exc).__name__)


def _answer_from(stored: IdempotencyKey | None, fingerprint: str) -> HttpResponse:
    if stored is None:  # released twice under us: another request is retrying with this key
        return error_response(
            ErrorCode.IDEMPOTENCY_KEY_IN_USE, "A request with this Idempotency-Key is still running.", 409
        )
    if stored.fingerprint != fingerprint:
        return error_response(
            ErrorCode.IDEMPOTENCY_KEY_MISMATCH, "This Idempotency-Key was used with another request.", 409
        )
    if stored.status is None:
        return error_response(
            ErrorCode.IDEMPOTENCY_KEY_IN_USE, "A request with this Idempotency-Key is still running.", 409
        )
    response = HttpResponse(bytes(stored.content or b""), status=stored.status, content_type=stored.content_type)
    response["Idempotent-Replayed"] = "true"
    return response
