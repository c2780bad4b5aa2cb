"""What an upload is, by its first bytes only: never by its name or the Content-Type it was sent with.

Accepted: PDF, JPEG, PNG and HEIC (the iPhone camera's format). Everything else, including SVG,
HTML, GIF, WebP, executables and an empty file, is not a lab report we take.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileKind:
    content_type: str
    extension: str


PDF = FileKind("application/pdf", "pdf")
JPEG = FileKind("image/jpeg", "jpg")
PNG = FileKind("image/png", "png")
HEIC = FileKind("image/heic", "heic")

KINDS_BY_CONTENT_TYPE = {kind.content_type: kind for kind in (PDF, JPEG, PNG, HEIC)}

# An ISO BMFF `ftyp` box first: 4 bytes of box size, `ftyp`, then the major brand.
HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1"})
SNIFF_BYTES = 16


def sniff(head: bytes) -> FileKind | None:
    """The kind of a file from its first SNIFF_BYTES bytes (or all of it, if shorter); None if not taken."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in HEIC_BRANDS:
        box_size = int.from_bytes(head[0:4], "big")
        # A real ftyp box holds at least its size, type, major brand and minor version.
        if box_size >= 16:
            return HEIC
    return None
