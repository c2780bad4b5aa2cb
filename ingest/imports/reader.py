"""Entries out of a stored import file, streamed: never the whole file in memory.

Two formats, told apart by the upload's first non-blank character:
- `json`: one JSON array of payloads (`[`), pretty-printed or not;
- `ndjson`: one payload per line (`{`); blank lines are not entries.

Each entry comes with its raw text as it appears in the file, so the ledger stores it verbatim and
dedups on its bytes exactly as the webhook dedups a body, and with the byte offset just
after it: the checkpoint a resumed job seeks to, in the file or with an S3 range request.

How much is held at once: a read chunk (1 MiB) plus the entry being parsed. The array is parsed
with the standard library's C decoder (`raw_decode`) one element at a time on a sliding text
buffer, rather than with ijson, because ijson yields parsed values only and the raw text of each
element is what dedup and the ledger need.

What stops a file (ReaderError; the job then fails): an array that is not valid JSON at some
point (an element cannot be delimited, so nothing after it can be read), text that is not UTF-8
inside an array, or, in NDJSON, a first entry that is not JSON (the file is then not NDJSON at
all: a pretty-printed object, a CSV ...). A later NDJSON line that is not JSON (or not UTF-8) is
one bad entry: it is yielded with its error and the next line is read.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ingest.models import ImportFormat

CHUNK_BYTES = 1024 * 1024
BOM = codecs.BOM_UTF8
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_LINE_STRIP = b" \t\r\n"
# A decode error this close to the end of the buffer may only mean the element goes on in the
# next chunk (a literal such as `-Infinity` cut short is reported at its start).
_TRUNCATION_MARGIN = 16
_DECODER = json.JSONDecoder()

Read = Callable[[int], bytes]


class ReaderError(Exception):
    """The file cannot be read as JSON from here on."""


@dataclass(frozen=True, slots=True)
class Entry:
    index: int  # 0-based position among the file's entries
    raw: bytes  # the entry's bytes as in the file (for an NDJSON line: without the line break)
    text: str | None  # `raw` decoded; None when it is not UTF-8
    value: Any  # the parsed JSON; None when `error` is set
    error: str | None  # why the entry is not JSON (NDJSON lines only; an array stops instead)
    end: int  # byte offset just after the entry: where reading resumes


def iter_entries(read: Read, fmt: str, *, offset: int = 0, index: int = 0) -> Iterator[Entry]:
    """The entries of a file from `offset` (a checkpoint; 0 = the start), numbered from `index`.

    `read(n)` returns up to n bytes of the file from `offset` on, b"" at the end.
    """
    if fmt == ImportFormat.NDJSON:
        return _ndjson_entries(read, offset, index)
    if fmt == ImportFormat.JSON:
        return _array_entries(read, offset, index)
    raise ValueError(f"unknown import format {fmt!r}")


# NDJSON -------------------------------------------------------------------------------------------


def _line_entry(raw: bytes, index: int, end: int) -> Entry:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Entry(index, raw, None, None, f"not UTF-8 text (byte {exc.start} of the line)", end)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Entry(index, raw, text, None, f"not JSON: {exc.msg} (column {exc.colno})", end)
    except RecursionError:
        return Entry(index, raw, text, None, "not JSON: nested too deeply", end)
    return Entry(index, raw, text, value, None, end)


def _ndjson_entries(read: Read, offset: int, index: int) -> Iterator[Entry]:
    buffer = bytearray()
    start = offset  # the file offset of buffer[0]
    search = 0  # where to look for the next line break (the bytes before have none)
    at_file_start = offset == 0
    while True:
        chunk = read(CHUNK_BYTES)
        if at_file_start and chunk:
            if chunk.startswith(BOM):
                chunk, start = chunk[len(BOM) :], start + len(BOM)
            at_file_start = False
        buffer += chunk
        consumed = 0
        lines: list[tuple[bytes, int]] = []
        while (newline := buffer.find(b"\n", search)) >= 0:
            lines.append((bytes(buffer[consumed:newline]), start + newline + 1))
            consumed = search = newline + 1
        if not chunk and consumed < len(buffer):
            lines.append((bytes(buffer[consumed:]), start + len(buffer)))
            consumed = len(buffer)
        if consumed:
            del buffer[:consumed]
            start += consumed
        search = len(buffer)
        for line, end in lines:
            raw = line.strip(_LINE_STRIP)
            if not raw:
                continue
            entry = _line_entry(raw, index, end)
            if entry.error is not None and index == 0:
                detail = entry.error.removeprefix("not JSON: ")
                raise ReaderError(f"not JSON: the first line is not one JSON payload ({detail})")
            yield entry
            index += 1
        if not chunk:
            return


# JSON array ---------------------------------------------------------------------------------------


class _TextWindow:
    """The file decoded as UTF-8 a chunk at a time, as a str with a movable start."""

    def __init__(self, read: Read, offset: int) -> None:
        self._read = read
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0  # index into text of the next unread character
        self.byte = offset  # the file offset of text[pos]
        self.eof = False
        self._at_file_start = offset == 0

    def fill(self, size: int = CHUNK_BYTES) -> bool:
        """Append the next `size` bytes; False at the end of the file."""
        if self.eof:
            return False
        chunk = self._read(size)
        if self._at_file_start and chunk:
            if chunk.startswith(BOM):
                chunk = chunk[len(BOM) :]
                self.byte += len(BOM)
            self._at_file_start = False
        try:
            decoded = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise ReaderError(f"not UTF-8 text near byte {self.byte + len(self.text) - self.pos}") from exc
        if self.pos > CHUNK_BYTES:  # drop what has been read, now and then
            self.text = self.text[self.pos :]
            self.pos = 0
        self.text += decoded
        if not chunk:
            self.eof = True
        return bool(chunk)

    def skip_whitespace(self) -> bool:
        """Move past whitespace, reading on as needed; False at the end of the file."""
        while True:
            end = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            self.byte += end - self.pos  # whitespace is ASCII: one byte per character
            self.pos = end
            if self.pos < len(self.text):
                return True
            if not self.fill():
                return False

    def take(self, count: int) -> str:
        """Consume `count` ASCII characters (punctuation)."""
        taken = self.text[self.pos : self.pos + count]
        self.pos += count
        self.byte += count
        return taken


def _possibly_truncated(exc: json.JSONDecodeError, text: str) -> bool:
    return exc.pos >= len(text) - _TRUNCATION_MARGIN or exc.msg.startswith("Unterminated string")


def _array_entries(read: Read, offset: int, index: int) -> Iterator[Entry]:
    window = _TextWindow(read, offset)
    # start: before `[`; first: after `[`; value: after `,`; after: after an element; done: after `]`
    state = "start" if offset == 0 else "after"
    while True:
        if not window.skip_whitespace():
            if state == "done":
                return
            if state == "start":
                raise ReaderError("not JSON: the file is empty")
            raise ReaderError(f"the file ends at byte {window.byte} before the array is closed")
        char = window.text[window.pos]
        if state == "done":
            raise ReaderError(f"not JSON: more data after the array, at byte {window.byte}")
        if state == "start":
            if char != "[":
                raise ReaderError("not JSON: a JSON file must be one array of payloads")
            window.take(1)
            state = "first"
            continue
        if state == "after":
            if char not in ",]":
                raise ReaderError(f"not JSON: expected ',' or ']' at byte {window.byte}")
            state = "value" if window.take(1) == "," else "done"
            continue
        if char == "]" and state == "first":
            window.take(1)
            state = "done"
            continue
        entry = _array_element(window, index)
        if entry is None:
            continue  # more text was read; parse again
        yield entry
        index += 1
        state = "after"


def _array_element(window: _TextWindow, index: int) -> Entry | None:
    """The element at the window's position, or None when it needs more text (read meanwhile)."""
    text = window.text
    try:
        value, end = _DECODER.raw_decode(text, window.pos)
    except json.JSONDecodeError as exc:
        if not window.eof and _possibly_truncated(exc, text):
            # Read on, more each time, so one very large element costs a few parses, not one per chunk.
            window.fill(max(CHUNK_BYTES, 2 * (len(text) - window.pos)))
            return None
        at = window.byte + len(text[window.pos : exc.pos].encode("utf-8", "surrogatepass"))
        raise ReaderError(f"not JSON at byte {at}: {exc.msg}") from None
    except RecursionError:
        raise ReaderError(f"not JSON: the entry at byte {window.byte} is nested too deeply") from None
    if end == len(text) and not window.eof:
        # A number at the very end of the buffer may go on in the next chunk.
        window.fill()
        return None
    element = text[window.pos : end]
    raw = element.encode("utf-8")
    window.pos = end
    window.byte += len(raw)
    return Entry(index, raw, element, value, None, window.byte)
