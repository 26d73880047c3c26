"""Which image formats we accept, and telling them from everything else by magic bytes.

`sniff_image_format` looks only at the leading bytes, so an upload in a known but
unsupported format (HEIC, AVIF, PDF, ...) gets a 415 that names it, and anything
else that is not an image a 422, before Pillow is asked to parse a single byte.
"""

from __future__ import annotations

PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
SUPPORTED_MEDIA_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif", "image/tiff"}
)
FORMAT_HINT = "send a PNG, JPEG, WebP, BMP, GIF or TIFF image of one handwritten digit"
# (offset, magic, media type): enough to tell a supported format from a known
# unsupported one (415) and from something that is not an image at all (422).
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (8, b"WEBP", "image/webp"),
    (0, b"BM", "image/bmp"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftypheic", "image/heic"),
    (4, b"ftypheix", "image/heic"),
    (4, b"ftypmif1", "image/heif"),
    (0, b"\x00\x00\x00\x0cjP  ", "image/jp2"),
    (0, b"\xff\x4f\xff\x51", "image/jp2"),
    (0, b"\x00\x00\x00\x0cJXL ", "image/jxl"),
    (0, b"\xff\x0a", "image/jxl"),
    (0, b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
    (0, b"8BPS", "image/vnd.adobe.photoshop"),
    (0, b"qoif", "image/qoi"),
    (0, b"%PDF", "application/pdf"),
    (0, b"<svg", "image/svg+xml"),
    (0, b"<?xml", "image/svg+xml"),
)


def sniff_image_format(data: bytes) -> str | None:
    """The media type that the leading bytes announce (supported or not), else None."""
    for offset, magic, media_type in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if media_type == "image/webp" and not data.startswith(b"RIFF"):
                continue
            return media_type
    return None
