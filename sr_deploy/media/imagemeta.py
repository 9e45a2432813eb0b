"""A source image's metadata, carried into its PNG or JPEG output: the colour profile, EXIF, XMP, PNG text
(a generator's prompt and settings, say) and JPEG comments.

OpenCV encodes srdeploy's image outputs (16-bit colour PNG included, which Pillow cannot write) and writes
no metadata; Pillow cannot add metadata to an encoded file without encoding it again. So the blocks are
spliced into the file OpenCV wrote, by each format's own rules: PNG, ``iCCP``, ``eXIf`` and ``iTXt``
chunks before the first ``IDAT``; JPEG, APP1 ``Exif`` and XMP, APP2 ``ICC_PROFILE`` and COM segments
after the JFIF header. Pillow reads all of it and serializes the EXIF.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_said: set[str] = set()  # what this process has warned about (a folder: once, not per file); see warn_once

JPEG_SEGMENT_MAX = 65533  # a JPEG segment's payload, its two length bytes aside
ICC_CHUNK = JPEG_SEGMENT_MAX - 14  # ICC.1 Annex B.4: "ICC_PROFILE\0", sequence number and count first
PIL_METADATA_FORMATS = ("AVIF", "JPEG", "HEIF")  # Pillow writes these with a colour profile and EXIF
XMP_KEY = "XML:com.adobe.xmp"  # XMP's PNG keyword
XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\0"


@dataclass(frozen=True)
class Metadata:
    icc: bytes | None = None  # the colour profile: without it a Display P3 or Adobe RGB photo shows wrong colours
    exif: bytes | None = None  # camera, date, GPS...: as Pillow serializes it
    xmp: bytes | None = None
    text: tuple[tuple[str, str], ...] = ()  # PNG text chunks other than XMP (Stable Diffusion's "parameters")
    comment: bytes | None = None  # a JPEG comment


def read_metadata(im) -> Metadata | None:
    """What ``im`` (an open Pillow image, header only: no pixels are decoded) carries, None when nothing.
    A damaged EXIF block is left out; the rest is kept."""
    import warnings

    try:
        with warnings.catch_warnings():  # Pillow's "Corrupt EXIF data": what it can read is kept
            warnings.simplefilter("ignore")
            ex = im.getexif()
            exif = ex.tobytes() if len(ex) else None
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on broken EXIF
        exif = None
    info = im.info
    text = tuple((k, v) for k, v in info.items() if im.format == "PNG" and isinstance(v, str) and k != XMP_KEY)
    xmp = info.get("xmp") or (info[XMP_KEY].encode("utf-8") if isinstance(info.get(XMP_KEY), str) else None)
    comment = info.get("comment") if im.format in ("JPEG", "MPO") and isinstance(info.get("comment"), bytes) else None
    meta = Metadata(info.get("icc_profile") or None, exif, xmp or None, text, comment or None)
    return meta if meta != Metadata() else None


def icc_for(icc: bytes | None, *, gray: bool, source: str) -> bytes | None:
    """``icc`` when its colour space (the header's data colour space field) is the output's: "RGB " for a
    colour output, "GRAY" for a gray one; else None, with one warning. A CMYK photo's profile describes
    CMYK numbers: written into the RGB output that decoding made of them, it would be an invalid file
    that colour-managed viewers reject or misread (and so would an RGB profile on a gray PNG)."""
    if not icc:
        return None
    space = icc[16:20].decode("latin-1").strip() if len(icc) >= 128 else "?"
    want = "GRAY" if gray else "RGB"
    if space == want:
        return icc
    warn_once(f"icc:{space}>{want}", "warning: %s: the source's colour profile is for %s data and the output is "
              "%s: it is not written (the colours were converted without it)", source, space or "unknown", want)
    return None


def warn_once(key: str, message: str, *args) -> None:
    """Log ``message % args`` as a warning the first time this process meets ``key``."""
    if key not in _said:
        _said.add(key)
        log.warning(message, *args)


def output_exif(exif: bytes, width: int, height: int) -> bytes:
    """The source's EXIF as the output's: upright (srdeploy turned the pixels by the orientation tag) and
    with the output's pixel size where the source gave one; Pillow's serialization (``Exif\\0\\0`` + TIFF)."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # Pillow's "Corrupt EXIF data" on stderr: what it can read is kept
        warnings.simplefilter("ignore")
        ex = Image.Exif()
        ex.load(exif)
        if 0x0112 in ex:
            ex[0x0112] = 1
        sub = ex.get_ifd(0x8769)  # the Exif sub-IFD, where PixelXDimension/PixelYDimension live
        if 0xA002 in sub or 0xA003 in sub:
            sub[0xA002], sub[0xA003] = width, height
        return ex.tobytes()


def exif_for_output(exif: bytes | None, size: tuple[int, int], source: str) -> bytes | None:
    """``output_exif``, or None (with one warning) for EXIF Pillow read but cannot write again: the image is
    still written, without it."""
    if not exif:
        return None
    try:
        return output_exif(exif, *size)
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on EXIF it read but cannot rewrite
        log.warning("warning: %s: the source's EXIF cannot be rewritten and is left out", source)
        return None


def warn_lost(suffix: str, meta: Metadata, source: str) -> None:
    """One warning per output format (per process) that a colour profile or EXIF is not written to it."""
    lost = [w for w, v in (("colour profile", meta.icc), ("EXIF", meta.exif)) if v]
    if lost:
        warn_once(f"lost:{suffix}", "warning: %s: the source's %s %s not written to %s outputs (PNG, JPEG, AVIF and "
                  "HEIC keep them)", source, " and ".join(lost), "are" if len(lost) > 1 else "is", suffix)


def carry_metadata(path: Path, suffix: str, meta: Metadata, *, size: tuple[int, int], source: str,
                   gray: bool = False) -> None:
    """Add a source's ``meta`` to the encoded image at ``path``, whose format ``suffix`` names; formats other
    than PNG and JPEG are left as they are, with one warning when a colour profile or EXIF is lost. PNG text
    reaches PNG outputs, a JPEG comment JPEG outputs; XMP either. ``gray``: the output is gray (its colour
    profile must be a gray one)."""
    if suffix not in (".png", ".jpg", ".jpeg", ".jpe"):
        warn_lost(suffix, meta, source)
        return
    meta = dataclasses.replace(meta, icc=icc_for(meta.icc, gray=gray, source=source))
    exif = exif_for_output(meta.exif, size, source)
    tiff = exif[6:] if exif else None  # without "Exif\0\0": JPEG's segment adds it, PNG's chunk has none
    data = path.read_bytes()
    if suffix == ".png":
        data = _png_with(data, meta, tiff)
    else:
        data = _jpeg_with(data, meta, tiff, source)
    path.write_bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with(data: bytes, meta: Metadata, tiff: bytes | None) -> bytes:
    pos = 8  # the signature
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            break
        pos += 12 + length
    else:
        raise ValueError("no IDAT chunk in the PNG just written")
    extra = b""
    if meta.icc:  # iCCP: a profile name, a NUL, compression method 0 (zlib), the compressed profile
        extra += _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(meta.icc))
    if tiff:
        extra += _png_chunk(b"eXIf", tiff)
    text = list(meta.text) + ([(XMP_KEY, meta.xmp.decode("utf-8", "replace"))] if meta.xmp else [])
    for key, value in text:  # iTXt: keyword, NUL, uncompressed, no language or translated keyword, UTF-8 text
        try:
            keyword = key.encode("latin-1")
        except UnicodeEncodeError:
            continue  # not a PNG keyword; Pillow would not have read it as one
        if 1 <= len(keyword) <= 79:
            extra += _png_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8"))
    return data[:pos] + extra + data[pos:]


def _jpeg_segment(marker: bytes, body: bytes) -> bytes:
    return marker + struct.pack(">H", len(body) + 2) + body


def _jpeg_with(data: bytes, meta: Metadata, tiff: bytes | None, source: str) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    pos = 2
    if data[2:4] == b"\xff\xe0":  # the JFIF header stays first, as readers expect
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    extra = b""
    for what, marker, body in (("EXIF", b"\xff\xe1", b"Exif\0\0" + tiff if tiff else None),
                               ("XMP", b"\xff\xe1", XMP_JPEG + meta.xmp if meta.xmp else None),
                               ("comment", b"\xff\xfe", meta.comment)):
        if body is None:
            continue
        if len(body) <= JPEG_SEGMENT_MAX:
            extra += _jpeg_segment(marker, body)
        else:  # EXIF and standard XMP must fit one segment (extended XMP is not written)
            log.warning("warning: %s: the source's %s (%d bytes) is larger than a JPEG segment holds and is not "
                        "written", source, what, len(body))
    if meta.icc:
        parts = [meta.icc[i:i + ICC_CHUNK] for i in range(0, len(meta.icc), ICC_CHUNK)]
        for n, part in enumerate(parts, 1):
            extra += _jpeg_segment(b"\xff\xe2", b"ICC_PROFILE\0" + bytes((n, len(parts))) + part)
    return data[:pos] + extra + data[pos:]
