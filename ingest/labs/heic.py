"""HEIC (the iPhone camera's format) to JPEG for Terra, within the worker's memory.

A HEIC is small on disk and large once decoded: its memory grows with its pixels, not its bytes.
So an image past AMY_HEIC_MAX_PIXELS (a budget that fits the worker's memory cap, amy/settings.py)
is refused from its dimensions alone, which libheif reads from the file's header without decoding
a pixel: at upload (413, so the person learns at once) and again before the worker converts it.
"""

from __future__ import annotations

import io
from typing import IO

from django.conf import settings

JPEG_QUALITY = 90


class HeicUnreadable(Exception):
    """The file is not a HEIC image libheif can read."""


class HeicTooLarge(Exception):
    """The image has more pixels than AMY_HEIC_MAX_PIXELS."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(f"The image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted.")
        self.width, self.height, self.max_pixels = width, height, max_pixels


def heic_size(content: bytes) -> tuple[int, int]:
    """Width and height from the header (the primary image's properties); nothing is decoded."""
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(io.BytesIO(content), convert_hdr_to_8bit=True)
        width, height = heif.size
    except (OSError, ValueError, RuntimeError, SyntaxError) as exc:
        raise HeicUnreadable("The HEIC image could not be read.") from exc
    return int(width), int(height)


def heic_pixels_check(content: bytes) -> None:
    """HeicTooLarge when the image is past the budget; HeicUnreadable when its header is not HEIC."""
    width, height = heic_size(content)
    max_pixels = settings.AMY_HEIC_MAX_PIXELS
    if width * height > max_pixels:
        raise HeicTooLarge(width, height, max_pixels)


def heic_upload_check(file: IO[bytes]) -> None:
    """The upload-time check of a received HEIC: HeicTooLarge past the budget. A file whose header
    cannot be read is left to the worker, which records why it failed."""
    content = file.read()
    file.seek(0)
    try:
        heic_pixels_check(content)
    except HeicUnreadable:
        return


def heic_to_jpeg(content: bytes) -> bytes:
    """The image re-encoded as JPEG (8-bit RGB, no metadata), checked against the budget first.

    Raises HeicTooLarge or HeicUnreadable.
    """
    import pillow_heif
    from PIL import Image

    heic_pixels_check(content)
    pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(content), formats=["HEIF"]) as image:
            rgb = image.convert("RGB")
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise HeicUnreadable("The HEIC image could not be read.") from exc
    return out.getvalue()
