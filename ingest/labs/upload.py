"""Reading a lab file out of a multipart body as a stream, refusing it past the size cap.

Django's own handlers keep small files in memory and large ones in a temporary file, but neither
limits the size of a file: this handler takes the place of both for the upload view. It takes the
first part named `file`, skips every other file part unread, counts and hashes the bytes as they
arrive, keeps the first bytes for sniffing, and stops the upload at the first byte over the cap,
so a file that is too large is never held whole, in memory or on disk.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import unicodedata
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest

from ingest.labs.sniff import SNIFF_BYTES

FIELD = "file"
# What a multipart body may carry besides the file itself (boundaries, part headers, a long file
# name): a body declared larger than the cap plus this is refused before any of it is read.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
FILENAME_MAX_CHARS = 255
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,16})$")
_WHITESPACE = re.compile(r"\s+")


class LabFile(UploadedFile):
    """The received file: spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE, with its size,
    SHA-256 and first bytes as they were streamed."""

    def __init__(self, file: Any, *, name: str, content_type: str, size: int, sha256: str, head: bytes) -> None:
        super().__init__(file=file, name=name, content_type=content_type, size=size)
        self.sha256 = sha256
        self.head = head


class LabFileUploadHandler(FileUploadHandler):
    def __init__(self, request: HttpRequest | None = None, *, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.too_large = False
        self.taken = False
        self.completed = False
        # Not named `file`: Django's parser closes `handler.file` whenever it skips a part, which
        # would close the file already taken when a later part is skipped.
        self.spool: Any = None
        self._size = 0
        self._digest = hashlib.sha256()
        self._head = b""

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
            raise SkipFile  # read past and dropped, never stored
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.taken = True
        if content_length is not None and content_length > self.max_bytes:
            self.too_large = True
            raise StopUpload(connection_reset=False)
        self.spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by the request, or by the parser on a stop
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, dir=settings.FILE_UPLOAD_TEMP_DIR
        )

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self._size += len(raw_data)
        if self._size > self.max_bytes:
            self.too_large = True
            self.spool.close()
            # The parser then reads the rest of the body and drops it (bounded by the
            # Content-Length check the view made first), so the client still gets our answer.
            raise StopUpload(connection_reset=False)
        if len(self._head) < SNIFF_BYTES:
            self._head += raw_data[: SNIFF_BYTES - len(self._head)]
        self._digest.update(raw_data)
        self.spool.write(raw_data)
        # Returning nothing: no other handler sees the bytes.

    def file_complete(self, file_size: int) -> LabFile | None:
        if self.spool is None or self.too_large:
            return None
        self.spool.seek(0)
        self.completed = True
        return LabFile(
            self.spool,
            name=self.file_name or "",
            content_type=self.content_type or "",
            size=self._size,
            sha256=self._digest.hexdigest(),
            head=self._head,
        )

    def upload_interrupted(self) -> None:
        # Also called when the body's last file part was one we skipped: the file taken before
        # it is complete and stays open.
        if self.spool is not None and not self.completed:
            self.spool.close()


def declared_too_large(request: HttpRequest, max_bytes: int) -> bool:
    """True when the body's Content-Length alone says the file cannot fit."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    return declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES


def display_filename(name: str | None) -> str:
    """The client's file name, for display only: one line, normalized, at most 255 characters.

    Django's parser has already dropped any path and the characters that are not printable (control
    and format characters, such as bidirectional overrides). The name never reaches a storage key.
    """
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", name or ""))
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if len(text) <= FILENAME_MAX_CHARS:
        return text
    match = _EXTENSION.search(text)
    suffix = match.group(0) if match else ""
    return text[: FILENAME_MAX_CHARS - len(suffix)].rstrip() + suffix


def download_filename(display_name: str, extension: str, fallback_stem: str) -> str:
    """The name a download is saved under: the display name's stem with the extension of the
    sniffed type, so the name never claims a type the content is not."""
    match = _EXTENSION.search(display_name)
    stem = display_name[: match.start()] if match else display_name
    stem = stem.strip(" .") or fallback_stem
    return f"{stem[: FILENAME_MAX_CHARS - len(extension) - 1]}.{extension}"
