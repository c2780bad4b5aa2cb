"""Small lab files made in code: valid ones of each accepted type, and hostile ones."""

from __future__ import annotations

import io

from PIL import Image

MAX_BYTES = 10 * 1024 * 1024  # the lab upload cap: 10 MB = 10,485,760 bytes


def pdf() -> bytes:
    """A minimal one-page PDF (valid structure, offsets computed)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
        b"<< /Length 44 >>\nstream\nBT /F1 12 Tf 20 100 Td (Hemoglobin 14.2) Tj ET\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def padded_pdf(size: int) -> bytes:
    """A PDF header followed by padding, exactly `size` bytes."""
    head = b"%PDF-1.4\n"
    return head + b"\0" * (size - len(head))


def _image(format_: str, mode: str = "RGB", size: tuple[int, int] = (32, 24), **options: object) -> bytes:
    image = Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 128)
    out = io.BytesIO()
    image.save(out, format=format_, **options)
    return out.getvalue()


def png() -> bytes:
    return _image("PNG")


def jpeg() -> bytes:
    return _image("JPEG", quality=80)


def heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _image("HEIF", quality=60)


# Hostile or not accepted --------------------------------------------------------------------------


ELF = b"\x7fELF\x02\x01\x01\x00" + b"\0" * 8 + b"\x02\x00\x3e\x00" + b"\0" * 100  # an x86-64 executable's start
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
# PDF text inside an HTML page: the magic is not at offset 0.
PDF_AFTER_HTML = b"<html>" + b"%PDF-1.4\n"
# An AVIF (an ftyp box of another brand).
AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"


def corrupt_heic() -> bytes:
    """HEIC magic with nothing decodable after it."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
