"""A source image's colour profile and EXIF, carried into its PNG or JPEG output.

OpenCV encodes srdeploy's image outputs (16-bit colour PNG included, which Pillow cannot write) and writes
no metadata; Pillow cannot add metadata to an encoded file without encoding it again. So the two blocks
are spliced into the file OpenCV wrote, by each format's own rules: PNG, ``iCCP`` and ``eXIf`` chunks
before the first ``IDAT``; JPEG, an APP1 ``Exif`` segment and APP2 ``ICC_PROFILE`` segments after the
JFIF header. Pillow parses and serializes the EXIF itself.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

_said: set[str] = set()  # output formats already warned about in this process (a folder: once, not per file)

JPEG_SEGMENT_MAX = 65533  # a JPEG segment's payload, its two length bytes aside
ICC_CHUNK = JPEG_SEGMENT_MAX - 14  # ICC.1 Annex B.4: "ICC_PROFILE\0", sequence number and count first


def output_exif(exif: bytes, width: int, height: int) -> bytes:
    """The source's EXIF as the output's: upright (srdeploy turned the pixels by the orientation tag) and
    with the output's pixel size where the source gave one; Pillow's serialization (``Exif\\0\\0`` + TIFF)."""
    from PIL import Image

    ex = Image.Exif()
    ex.load(exif)
    if 0x0112 in ex:
        ex[0x0112] = 1
    sub = ex.get_ifd(0x8769)  # the Exif sub-IFD, where PixelXDimension/PixelYDimension live
    if 0xA002 in sub or 0xA003 in sub:
        sub[0xA002], sub[0xA003] = width, height
    return ex.tobytes()


def carry_metadata(path: Path, suffix: str, *, icc: bytes | None, exif: bytes | None, size: tuple[int, int],
                   source: str) -> None:
    """Add ``icc`` and ``exif`` (a source's, see ``ImageHeader``) to the encoded image at ``path``, whose
    format ``suffix`` names; other formats than PNG and JPEG are left as they are, with one warning."""
    if suffix not in (".png", ".jpg", ".jpeg"):
        if suffix not in _said:
            _said.add(suffix)
            what = " and ".join(w for w, v in (("colour profile", icc), ("EXIF", exif)) if v)
            log.warning("warning: %s: the source's %s %s not written to %s outputs (PNG and JPEG keep them)", source,
                        what, "are" if icc and exif else "is", suffix)
        return
    tiff = output_exif(exif, *size)[6:] if exif else None  # without the "Exif\0\0" that JPEG wants and PNG not
    data = path.read_bytes()
    if suffix == ".png":
        data = _png_with(data, icc, tiff)
    else:
        data = _jpeg_with(data, icc, tiff, source)
    path.write_bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with(data: bytes, icc: bytes | None, tiff: bytes | None) -> bytes:
    pos = 8  # the signature
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            break
        pos += 12 + length
    else:
        raise ValueError("no IDAT chunk in the PNG just written")
    extra = b""
    if icc:  # iCCP: a profile name, a NUL, compression method 0 (zlib), the compressed profile
        extra += _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    if tiff:
        extra += _png_chunk(b"eXIf", tiff)
    return data[:pos] + extra + data[pos:]


def _jpeg_with(data: bytes, icc: bytes | None, tiff: bytes | None, source: str) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    pos = 2
    if data[2:4] == b"\xff\xe0":  # the JFIF header stays first, as readers expect
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    extra = b""
    if tiff:
        body = b"Exif\0\0" + tiff
        if len(body) <= JPEG_SEGMENT_MAX:
            extra += b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
        else:
            log.warning("warning: %s: its EXIF (%d bytes) is larger than a JPEG segment holds and is not written",
                        source, len(tiff))
    if icc:
        parts = [icc[i:i + ICC_CHUNK] for i in range(0, len(icc), ICC_CHUNK)]
        for n, part in enumerate(parts, 1):
            body = b"ICC_PROFILE\0" + bytes((n, len(parts))) + part
            extra += b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body
    return data[:pos] + extra + data[pos:]
