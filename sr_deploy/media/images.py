"""Images and folders: keep format, alpha, bit depth and grayscale; write atomically."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError, OutputError, SRDeployError
from sr_deploy.fsutil import atomic_path, check_destination
from sr_deploy.imagefiles import IMAGE_SUFFIXES, PIL_ONLY_SUFFIXES, heif_support  # noqa: F401  (re-exported)
from sr_deploy.media.imagemeta import (PIL_METADATA_FORMATS, Metadata, carry_metadata, exif_for_output, icc_for,
                                       read_metadata, warn_lost, warn_once)
from sr_deploy.media.resize import final_size, label, resize_to
from sr_deploy.media.tiling import upscale_frame
from sr_deploy.progress import Progress
from sr_deploy.runtime.base import Runner

log = logging.getLogger(__name__)

ALPHA_MODES = ("bicubic", "model")


DEFAULT_MAX_MEGAPIXELS = 100.0  # input size refused before decoding unless raised (--max-megapixels)

# EXIF orientation (tag 0x0112) → the array operation that shows the picture upright; the same
# mapping as PIL.ImageOps.exif_transpose (checked against it in the tests).
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    mode: str  # PIL's mode name ("RGB", "LA", "I;16"...); "" when PIL cannot read the header
    orientation: int = 1  # EXIF orientation, 1 = upright
    frames: int = 1  # more than one: an animation (WebP, APNG, GIF)
    meta: Metadata | None = None  # colour profile, EXIF, XMP, text: carried into the output (media/imagemeta.py)
    gain_map: bool = False  # an Ultra HDR JPEG: its HDR gain map (a second image) is not carried


def probe_image(path: Path) -> ImageHeader | None:
    """Size, mode and EXIF orientation from the file's header, without decoding its pixels
    (None when PIL does not know the format; OpenCV may still decode it)."""
    from PIL import Image, UnidentifiedImageError

    heif_support()
    try:
        Image.MAX_IMAGE_PIXELS = None  # srdeploy applies its own limit, with the size in the message
        with Image.open(path) as im:
            try:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation
                orientation = 1
            frames, meta = int(getattr(im, "n_frames", 1) or 1), read_metadata(im)
            if im.format == "MPO":
                # A JPEG with more images behind it (MPF): a camera's large preview or a stereo camera's second
                # view. The first is the picture, not a frame of an animation.
                frames = 1
            # An Ultra HDR photo (Android phones since 2023; Pillow opens it as a plain JPEG): an MPF gain map
            # that its XMP describes. The output has no gain map, so that XMP is not carried either.
            gain_map = bool("mp" in im.info and meta and meta.xmp and b"hdrgm" in meta.xmp)
            if gain_map:
                meta = dataclasses.replace(meta, xmp=None)
            return ImageHeader(im.width, im.height, im.mode, orientation if orientation in range(1, 9) else 1,
                               frames, meta, gain_map)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return _probe_tiff_gray_alpha(path)


TIFF_SUFFIXES = (".tif", ".tiff")


def _probe_tiff_gray_alpha(path: Path) -> ImageHeader | None:
    """The header of a gray+alpha TIFF (two samples per pixel, 8 or 16 bits: mode "LA" or "LA;16"), else None.

    OpenCV decodes such a file as gray alone (the alpha dropped, 16 bits given as 8), and Pillow cannot open
    the 16-bit kind at all, so these are read with tifffile (scikit-image's own TIFF reader)."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            if page.samplesperpixel == 2 and page.bitspersample in (8, 16):
                return ImageHeader(int(page.imagewidth), int(page.imagelength),
                                   "LA;16" if page.bitspersample == 16 else "LA")
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        pass
    return None


def _decode_tiff_gray_alpha(path: Path) -> np.ndarray:
    """A gray+alpha TIFF as BGRA (gray in all three colour channels), at its own bit depth."""
    import tifffile

    try:
        la = tifffile.imread(path, key=0)
    except (tifffile.TiffFileError, OSError, ValueError) as exc:  # a compression this install cannot decode
        raise InputError(f"{path}: a gray+alpha TIFF that cannot be decoded here ({exc})") from exc
    if la.ndim != 3 or la.shape[2] != 2:
        raise InputError(f"{path}: a gray+alpha TIFF whose pixels are not gray+alpha (shape {la.shape})")
    return np.ascontiguousarray(np.dstack([la[..., 0], la[..., 0], la[..., 0], la[..., 1]]))


def check_size(path: Path, header: ImageHeader, scale: int, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, *,
               outscale: float | None = None) -> None:
    """Refuse, before decoding, an image over the pixel limit or whose output cannot fit in memory (the
    model's output and, with ``outscale``, its resized copy)."""
    from sr_deploy.machine import available_memory_bytes

    mp = header.width * header.height / 1e6
    if mp > max_megapixels:
        raise InputError(f"{path}: {header.width}x{header.height} ({mp:.0f} MP) is over the {max_megapixels:g} MP "
                         f"limit for one image (a decompression bomb?); raise it with --max-megapixels")
    px = header.width * header.height * scale * scale
    if outscale is not None:
        w, h = final_size(header.width, header.height, scale=scale, outscale=outscale)
        px += w * h
    out_bytes = px * 4 * 2  # up to 4 channels, 16-bit
    if "16" not in header.mode and header.mode not in ("I", "F"):
        out_bytes //= 2
    avail = available_memory_bytes()
    if out_bytes > 0.8 * avail:
        raise InputError(f"{path}: the x{label(scale, outscale)} output of {header.width}x{header.height} needs "
                         f"{out_bytes / 2**30:.1f} GiB "
                         f"of memory and {avail / 2**30:.1f} GiB is available")


def read_image(path: Path, *, scale: int | None = None, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Read with OpenCV, unchanged (uint8/uint16; 1, 3 (BGR) or 4 (BGRA) channels), shown upright
    (EXIF orientation applied). The header is checked first: over the pixel limit, or with an output
    that cannot fit in memory (``scale``), the file is refused before its pixels are decoded."""
    return _read_image(path, scale, max_megapixels)[0]


def _read_image(path: Path, scale: int | None, max_megapixels: float) -> tuple[np.ndarray, ImageHeader | None]:
    """read_image, also returning the header it read (None when PIL does not know the format)."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    header = probe_image(path)
    return _decode(path, header, scale, max_megapixels), header


def _decode(path: Path, header: ImageHeader | None, scale: int | None, max_megapixels: float,
            outscale: float | None = None) -> np.ndarray:
    """The pixels of ``path``, whose header ``probe_image`` has read, checked against the limits first."""
    import cv2

    if header is not None:
        check_size(path, header, scale or 1, max_megapixels, outscale=outscale)
        if header.gain_map:
            warn_once("gain map", "warning: %s is an Ultra HDR photo: its HDR gain map is not kept, the output is "
                      "the SDR picture", path)
    if path.suffix.lower() in PIL_ONLY_SUFFIXES:
        heif_support(path)
        img = _decode_pil(path)
    elif header is not None and header.mode in ("LA", "LA;16") and path.suffix.lower() in TIFF_SUFFIXES:
        img = _decode_tiff_gray_alpha(path)
    else:
        data = np.fromfile(path, dtype=np.uint8)
        # Errors only: a damaged file gets srdeploy's one `error:` line, not OpenCV's decoder warnings too.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        except cv2.error:  # OpenCV's own limits (OPENCV_IO_MAX_IMAGE_PIXELS) or a broken codec stream
            img = None
        del data
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: unsupported pixel type {img.dtype} (8- or 16-bit images only)")
    if header is None:
        check_size(path, ImageHeader(img.shape[1], img.shape[0], ""), scale or 1, max_megapixels, outscale=outscale)
    else:
        if header.mode == "CMYK" and img.ndim == 3 and img.shape[2] == 4:  # OpenCV gives a CMYK TIFF as BGRA,
            img = np.ascontiguousarray(img[..., :3])  # its alpha all opaque: an RGB picture, as a CMYK JPEG gives
        if header.orientation != 1:
            img = np.ascontiguousarray(_ORIENT[header.orientation](img))
    return img


def _decode_pil(path: Path) -> np.ndarray | None:
    """An image OpenCV cannot read (AVIF), decoded by Pillow into OpenCV's layout (gray, BGR or BGRA, 8-bit;
    Pillow gives 10/12-bit AVIF as 8-bit), unrotated like OpenCV's (the header's orientation turns it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if im.mode == "L" else "RGBA" if "A" in im.mode else "RGB"))
    except (OSError, ValueError, SyntaxError):
        return None
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    return np.ascontiguousarray(arr)


def upscale_image_array(runner: Runner, img: np.ndarray, *, tile: int | None = None, alpha: str = "bicubic",
                        outscale: float | None = None) -> np.ndarray:
    """Upscale an OpenCV image array, keeping its dtype and channel count; ``outscale``: resized to that
    multiple of the input's size (media/resize.py), else the model's scale.

    Memory: besides the output, only tile-sized buffers and a copy of the input exist: 8-bit images go
    through the runner as bytes (pixels in the graph), 16-bit ones are rounded into uint16 strip by strip,
    and channel reordering, gray averaging and alpha are done in place or in row chunks; with ``outscale``,
    the resized output exists beside the model's while it is made.
    """
    up = _upscale_array(runner, img, tile=tile, alpha=alpha)
    return resize_to(up, final_size(img.shape[1], img.shape[0], scale=runner.scale, outscale=outscale))


def _upscale_array(runner: Runner, img: np.ndarray, *, tile: int | None, alpha: str) -> np.ndarray:
    import cv2

    planes = img if img.ndim == 3 else img[..., None]
    ch = planes.shape[2]
    colour = planes[..., 2::-1] if ch >= 3 else np.repeat(planes[..., :1], 3, axis=2)  # RGB
    up = _upscale_rgb(runner, colour, tile)  # RGB, the input's dtype
    s = runner.scale
    if ch < 3:  # gray: the mean of the model's three channels
        out = np.empty(up.shape[:2], dtype=img.dtype)
        for r in range(0, up.shape[0], ROW_CHUNK):
            out[r:r + ROW_CHUNK] = np.rint(up[r:r + ROW_CHUNK].mean(axis=2, dtype=np.float32))
        return out if img.ndim == 2 else out[..., None]
    if ch == 3:
        _rgb_to_bgr_inplace(up)
        return up
    out = np.empty((up.shape[0], up.shape[1], 4), dtype=img.dtype)
    for r in range(0, up.shape[0], ROW_CHUNK):
        out[r:r + ROW_CHUNK, :, :3] = up[r:r + ROW_CHUNK, :, ::-1]
    del up
    a = np.ascontiguousarray(planes[..., 3])
    if alpha == "model":
        ua = _upscale_rgb(runner, np.repeat(a[..., None], 3, axis=2), tile)
        for r in range(0, ua.shape[0], ROW_CHUNK):
            out[r:r + ROW_CHUNK, :, 3] = np.rint(ua[r:r + ROW_CHUNK].mean(axis=2, dtype=np.float32))
    else:  # bicubic in the alpha's own dtype (OpenCV saturates, so no clipping pass)
        out[..., 3] = cv2.resize(a, (a.shape[1] * s, a.shape[0] * s), interpolation=cv2.INTER_CUBIC)
    return out


ROW_CHUNK = 256  # rows per chunk of the whole-image passes above


def _upscale_rgb(runner: Runner, rgb: np.ndarray, tile: int | None) -> np.ndarray:
    """RGB (any strides) in uint8 or uint16 → upscaled RGB of the same dtype."""
    if rgb.dtype == np.uint8:
        return upscale_frame(runner, np.ascontiguousarray(rgb), tile=tile)
    return upscale_frame(runner, rgb.astype(np.float32) * (1.0 / 65535.0), tile=tile, out_max=65535.0,
                         out_dtype=np.uint16)


def _rgb_to_bgr_inplace(x: np.ndarray) -> None:
    for r in range(0, x.shape[0], ROW_CHUNK):
        x[r:r + ROW_CHUNK] = x[r:r + ROW_CHUNK, :, ::-1]


def write_image(path: Path, img: np.ndarray, *, overwrite: bool, gray_alpha: bool = False,
                meta: ImageHeader | None = None) -> None:
    """Encode straight into a temporary file beside ``path`` (no encoded copy in memory), then publish it.

    ``gray_alpha``: ``img`` is BGRA of a gray+alpha source; written as gray+alpha where the format
    has it (PNG, WebP via PIL's LA mode), else as BGRA. ``meta``: the source's header, whose metadata is
    carried into PNG and JPEG outputs (media/imagemeta.py)."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg", ".jpe") else []
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"{path}: {path.suffix or 'no suffix'} is not an image format "
                          f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if img.ndim == 3 and img.shape[2] == 4 and path.suffix.lower() in NO_ALPHA_SUFFIXES:
        warn_once(f"alpha:{path.suffix.lower()}", "warning: %s: %s files hold no alpha channel: the source's "
                  "transparency is dropped (PNG, WebP, TIFF, TGA, QOI and AVIF keep it)", path, path.suffix.lower())
        img = np.rint(img[..., :3].mean(axis=2)).astype(img.dtype) if gray_alpha else img[..., :3]
        gray_alpha = False
    la = gray_alpha and img.dtype == np.uint8 and path.suffix.lower() in (".png", ".apng", ".webp", ".tif", ".tiff")
    la16 = gray_alpha and img.dtype == np.uint16 and path.suffix.lower() in TIFF_SUFFIXES
    gray_out = la or la16 or img.ndim == 2 or img.shape[2] == 1
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            if path.suffix.lower() in PIL_ONLY_SUFFIXES:
                _encode_pil(tmp, img, path, meta)
                return
            if la:
                from PIL import Image

                la = np.dstack([np.rint(img[..., :3].mean(axis=2)).astype(np.uint8), img[..., 3]])
                Image.fromarray(la, "LA").save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
                ok = True
            elif la16:  # 16-bit gray+alpha: Pillow has no such mode; tifffile writes it as the source was
                import tifffile

                gray16 = np.rint(img[..., :3].mean(axis=2)).astype(np.uint16)
                tifffile.imwrite(tmp, np.dstack([gray16, img[..., 3]]), photometric="minisblack",
                                 extrasamples=["unassalpha"])
                ok = True
            elif _utf8(str(tmp)):
                ok = cv2.imwrite(str(tmp), img, params)  # the temporary name keeps the suffix: same encoder
            else:  # a name that is not UTF-8 (OpenCV's path argument crashes the process on it): via memory
                ok, buf = cv2.imencode(path.suffix.lower(), img, params)
                if ok:
                    buf.tofile(tmp)
        except cv2.error:
            ok = False
        except OSError as exc:
            raise OutputError(f"{path}: write failed ({exc.strerror or exc})") from exc
        if not ok:
            raise OutputError(f"{path}: cannot encode this image as {path.suffix} (or the disk refused the write)")
        if meta is not None and meta.meta is not None:
            try:
                carry_metadata(tmp, path.suffix.lower(), meta.meta, size=(img.shape[1], img.shape[0]), source=str(path),
                               gray=gray_out)
            except OSError as exc:
                raise OutputError(f"{path}: write failed ({exc.strerror or exc})") from exc


def _encode_pil(tmp: Path, img: np.ndarray, path: Path, meta: ImageHeader | None) -> None:
    """Write ``img`` (OpenCV's layout) in a format only Pillow writes (8-bit: 16-bit input is rounded), with
    the source's colour profile and EXIF where the format holds them (AVIF, JPEG), which Pillow writes."""
    import cv2
    from PIL import Image

    heif_support(path)
    if img.dtype == np.uint16:  # rounded like np.rint(img / 257) (checked over every value), with no float copy
        img = cv2.convertScaleAbs(img, alpha=1 / 257.0)
    arr = img if img.ndim == 2 or img.shape[2] == 1 else img[..., [2, 1, 0, 3][: img.shape[2]]]
    fmt = Image.registered_extensions()[path.suffix.lower()]
    extra: dict = {"quality": 95 if fmt == "JPEG" else 90}  # JPEG: as OpenCV's JPEG outputs
    m = meta.meta if meta is not None else None
    if fmt not in PIL_METADATA_FORMATS:
        if m is not None:
            warn_lost(path.suffix.lower(), m, str(path))
        m = None
    icc = icc_for(m.icc if m is not None else None, gray=img.ndim == 2 or img.shape[2] == 1, source=str(path))
    if icc:
        extra["icc_profile"] = icc
    exif = exif_for_output(m.exif if m is not None else None, (img.shape[1], img.shape[0]), str(path))
    if exif:
        extra["exif"] = exif
    Image.fromarray(np.ascontiguousarray(arr.squeeze())).save(tmp, format=fmt, **extra)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes in a file name, kept by Python as surrogate escapes
        return False


def upscale_image(runner: Runner, src: Path, dst: Path, *, overwrite: bool = False, tile: int | None = None,
                  alpha: str = "bicubic", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                  outscale: float | None = None) -> Path:
    header, img = _prepare(runner, src, dst, overwrite=overwrite, max_megapixels=max_megapixels, outscale=outscale)
    if img is None:
        return _upscale_animation(runner, src, dst, header, overwrite=overwrite, tile=tile, alpha=alpha,
                                  max_megapixels=max_megapixels, outscale=outscale)
    out = upscale_image_array(runner, img, tile=tile, alpha=alpha, outscale=outscale)
    del img
    write_image(dst, out, overwrite=overwrite, gray_alpha=_gray_alpha(header), meta=header)
    return dst


def _prepare(runner: Runner, src: Path, dst: Path, *, overwrite: bool, max_megapixels: float,
             outscale: float | None = None) -> tuple[ImageHeader | None, np.ndarray | None]:
    """upscale_image's checks and decode: (header, pixels), or (header, None) for an animation."""
    check_destination(src, dst, overwrite=overwrite)
    if not src.is_file():
        raise InputError(f"{src}: file not found")
    header = probe_image(src)  # read once: an animation goes its own way, a still image is decoded from it
    if header is not None and header.frames > 1:
        return header, None
    return header, _decode(src, header, runner.scale, max_megapixels, outscale)


def _gray_alpha(header: ImageHeader | None) -> bool:
    return bool(header and header.mode in ("LA", "La", "LA;16"))


NO_ALPHA_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".ppm", ".pgm", ".pnm")

ANIMATION_SUFFIXES = (".webp", ".png", ".apng", ".gif")


def check_frames_fit(src: Path, dst: Path, header: ImageHeader) -> str:
    """How ``dst`` holds the frames of ``src`` (``header.frames`` > 1): "pages" (a multi-page TIFF into a
    TIFF) or "animation"; one line when its format cannot hold them."""
    pages = src.suffix.lower() in (".tif", ".tiff")  # a multi-page TIFF (a scan, a fax): pages, not frames
    if pages and dst.suffix.lower() in (".tif", ".tiff"):
        return "pages"
    if dst.suffix.lower() not in ANIMATION_SUFFIXES:
        what = f"has {header.frames} pages" if pages else f"is an animation ({header.frames} frames)"
        holds = ".tif" if pages else ", ".join(ANIMATION_SUFFIXES)
        raise OutputError(f"{dst}: {src.name} {what} and {dst.suffix or 'this'} files cannot hold "
                          f"{'them' if pages else 'one'}; write {holds}")
    return "animation"


def _upscale_animation(runner: Runner, src: Path, dst: Path, header: ImageHeader, *, overwrite: bool,
                       tile: int | None, alpha: str, max_megapixels: float, outscale: float | None = None) -> Path:
    """Every frame of an animated WebP, PNG (APNG) or GIF, written as an animation with the source's frame
    durations and loop count. OpenCV decodes only the first frame, which would silently drop the rest;
    PIL reads each frame composed (disposal and blending applied) and writes the animation."""
    from PIL import Image, ImageSequence

    from sr_deploy.machine import available_memory_bytes

    if check_frames_fit(src, dst, header) == "pages":
        return _upscale_pages(runner, src, dst, header, overwrite=overwrite, tile=tile, alpha=alpha,
                              max_megapixels=max_megapixels, outscale=outscale)
    check_size(src, header, runner.scale, max_megapixels, outscale=outscale)
    out_w, out_h = final_size(header.width, header.height, scale=runner.scale, outscale=outscale)
    need = out_w * out_h * 4 * header.frames  # every upscaled frame, RGBA
    if need > 0.5 * available_memory_bytes():
        raise InputError(f"{src}: {header.frames} frames of {out_w}x{out_h} need {need / 2**30:.1f} GiB to write as "
                         f"one animation; "
                         f"convert it to a video and run that")
    frames, durations = [], []
    try:
        with Image.open(src) as im:
            loop = im.info.get("loop", 0)
            for frame in ImageSequence.Iterator(im):
                frame.load()  # WebP sets the frame's duration only once it is decoded
                durations.append(int(frame.info.get("duration") or im.info.get("duration") or 100))
                rgba = frame.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in frame.info
                arr = np.asarray(frame.convert("RGBA" if rgba else "RGB"))
                order = [2, 1, 0, 3] if rgba else [2, 1, 0]  # OpenCV's channel order, as read_image gives
                up = upscale_image_array(runner, np.ascontiguousarray(arr[..., order]), tile=tile, alpha=alpha,
                                         outscale=outscale)
                frames.append(Image.fromarray(np.ascontiguousarray(up[..., order])))
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{src}: animation frame {len(frames) + 1} cannot be read ({exc})") from exc
    if any(f.mode == "RGBA" for f in frames):
        frames = [f.convert("RGBA") for f in frames]
    fmt = Image.registered_extensions()[dst.suffix.lower()]
    extra = {"quality": 95} if fmt == "WEBP" else {}
    icc = icc_for(header.meta.icc if header.meta else None, gray=False, source=str(src))  # frames are RGB(A)
    if fmt in ("WEBP", "PNG") and icc:  # Pillow writes it (GIF has no colour profile)
        extra["icc_profile"] = icc
    with atomic_path(dst, overwrite=overwrite) as tmp:
        try:
            frames[0].save(tmp, format=fmt, save_all=True, append_images=frames[1:], duration=durations, loop=loop,
                           **extra)
        except OSError as exc:
            raise OutputError(f"{dst}: write failed ({exc.strerror or exc})") from exc
    return dst


def _upscale_pages(runner: Runner, src: Path, dst: Path, header: ImageHeader, *, overwrite: bool, tile: int | None,
                   alpha: str, max_megapixels: float, outscale: float | None) -> Path:
    """Every page of a multi-page TIFF, each in its own form (gray, RGB, RGBA, 8 or 16 bits; pages may differ
    in size), written as a multi-page TIFF. Pages are upscaled and kept one at a time in memory as output."""
    from PIL import Image, ImageSequence

    from sr_deploy.machine import available_memory_bytes

    out: list = []
    held = 0
    try:
        with Image.open(src) as im:
            for page in ImageSequence.Iterator(im):
                # every page against the limits, before it is decoded: the first page's size says nothing of the rest
                check_size(src, ImageHeader(page.width, page.height, page.mode), runner.scale, max_megapixels,
                           outscale=outscale)
                mode = page.mode if page.mode in ("L", "RGB", "RGBA", "I;16") else (
                    "RGBA" if "A" in page.mode or "transparency" in page.info else "RGB")
                arr = np.asarray(page if page.mode == mode else page.convert(mode))
                if arr.ndim == 3:  # OpenCV's channel order, as read_image gives
                    arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
                up = upscale_image_array(runner, np.ascontiguousarray(arr), tile=tile, alpha=alpha, outscale=outscale)
                held += up.nbytes
                if held > 0.5 * available_memory_bytes():
                    raise InputError(f"{src}: its upscaled pages do not fit in memory together (page {len(out) + 1})")
                if up.ndim == 3:
                    up = up[..., [2, 1, 0, 3][: up.shape[2]]]
                out.append(Image.fromarray(np.ascontiguousarray(up)))  # uint16 gray: I;16
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{src}: page {len(out) + 1} cannot be read ({exc})") from exc
    with atomic_path(dst, overwrite=overwrite) as tmp:
        try:
            out[0].save(tmp, format="TIFF", save_all=True, append_images=out[1:], compression="tiff_deflate")
        except OSError as exc:
            raise OutputError(f"{dst}: write failed ({exc.strerror or exc})") from exc
    return dst


@dataclass
class FolderSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    resumed: list[Path] = field(default_factory=list)  # finished by an earlier run of the same command

    def line(self) -> str:
        again = f", {len(self.resumed)} resumed (finished by an earlier run)" if self.resumed else ""
        return f"{len(self.done)} upscaled, {len(self.skipped)} skipped (existing), {len(self.failed)} failed{again}"


def list_folder(src: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image and video files under ``src`` (sorted; hidden files and folders left out), and what could not be
    listed or is not a readable file: an unreadable subfolder, a broken link, a FIFO or device named like an
    image."""
    import os

    files: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def onerror(exc: OSError) -> None:
        problems.append((Path(exc.filename or src), f"{exc.filename or src}: folder cannot be read ({exc.strerror or exc})"))

    for root, dirs, names in os.walk(src, onerror=onerror, followlinks=False):
        # hidden files and folders are not the user's pictures: macOS's "._IMG_1.jpg" metadata twins on
        # shared drives, thumbnail caches, and the temporary files of writers (srdeploy's own included)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            f = Path(root) / name
            if not (is_image(f) or _is_video(f)) or name.startswith("."):
                continue
            if f.is_file():
                files.append(f)
            else:
                why = "a broken link" if f.is_symlink() and not f.exists() else "not a regular file"
                problems.append((f, f"{f}: {why}"))
    return files, problems


def upscale_folder(runner: Runner, src: Path, dst: Path, *, overwrite: bool = False, skip_existing: bool = False,
                   tile: int | None = None, alpha: str = "bicubic", quiet: bool = False,
                   max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, pool=None, identity: str | None = None,
                   restart: bool = False, outscale: float | None = None, video=None,
                   image_suffix: str | None = None) -> FolderSummary:
    """Upscale every image and video under ``src`` into ``dst`` with the same relative paths (a video format
    srdeploy does not write, .vob say, as .mkv); videos after the images, each as ``upscale_video`` with
    ``video`` (its VideoOptions; default settings when None). ``image_suffix`` (".png"): every image written
    in that format instead of its own; two images that would then share a name (a.jpg, a.png) are refused.

    Every per-file failure (unreadable, permission denied, decode error, too large, out of memory, a
    backend error) is reported on one line and the rest are still processed; unreadable subfolders are
    failures too. The caller turns a non-empty ``failed`` into exit status 1. ``pool``
    (sr_deploy.media.distributed) shards the files over workers; each output is still written whole or not at all.
    Finished files are journaled in the output folder (media/journal.py): the same call after a crash
    skips them; a journal of another model (``identity``) or settings is refused unless ``restart``.
    """
    from sr_deploy.media.journal import Journal

    check_destination(src, dst, overwrite=overwrite, folder=True)
    from sr_deploy.media.video import VideoOptions

    files, problems = list_folder(src)
    if not files and not problems:
        raise InputError(f"{src}: no images or videos found ({'/'.join(sorted(s[1:] for s in IMAGE_SUFFIXES))}, "
                         "mp4/mkv/mov...)")
    summary = FolderSummary()
    video = video or VideoOptions()
    settings = {"tile": tile, "alpha": alpha, **({"outscale": outscale} if outscale is not None else {}),
                **({"format": image_suffix} if image_suffix else {})}
    if any(not is_image(f) for f in files):  # what changes a video's pixels or encoding, as its manifest says
        settings["video"] = {k: getattr(video, k) for k in ("codec", "crf", "preset", "pix_fmt", "bitrate",
                                                            "deinterlace", "start", "duration", "max_frames")}
    journal = Journal(dst, {"model": identity or runner.describe(), "settings": settings})
    journal.open(restart=restart, take_over=overwrite)  # --overwrite: this run replaces what another run wrote
    try:
        videos = _folder(runner, src, dst, files, problems, summary, journal, overwrite=overwrite,
                         skip_existing=skip_existing, tile=tile, alpha=alpha, quiet=quiet, max_megapixels=max_megapixels,
                         pool=pool, outscale=outscale, image_suffix=image_suffix)
        _folder_videos(runner, src, videos, summary, journal, quiet=quiet, pool=pool, identity=identity,
                       restart=restart, options=dataclasses.replace(video, outscale=outscale, tile=tile))
    finally:
        # kept whenever files were finished: the same command again resumes an interrupted run, and finds a
        # finished one done (rather than refusing every output as existing)
        journal.close(remove=not (summary.done or summary.resumed))
    return summary


def _folder(runner, src, dst, files, problems, summary, journal, *, overwrite, skip_existing, tile, alpha, quiet,
            max_megapixels, pool, outscale, image_suffix=None) -> list[tuple[Path, Path, bool]]:
    """The images of a folder run; returns its videos still to do, as (input, output, overwrite)."""
    from sr_deploy.media.video import DEFAULT_VIDEO_SUFFIX, VIDEO_SUFFIXES

    videos = []
    named: dict[Path, Path] = {}  # output → the input writing it
    with Progress(sum(map(is_image, files)), desc="images", unit="file", quiet=quiet) as bar:
        for path, why in problems:
            summary.failed.append((path, why))
            bar.write(f"error: {why}")
        todo = []
        outs = {}
        for f in files:
            out = dst / f.relative_to(src)
            if not is_image(f) and f.suffix.lower() not in VIDEO_SUFFIXES:
                out = out.with_name(out.name + DEFAULT_VIDEO_SUFFIX)  # dvd.vob -> dvd.vob.mkv, a video we write
            elif is_image(f) and image_suffix:
                out = out.with_suffix(image_suffix)
            outs[f] = out
            # two inputs, one output (a.jpg and a.png under --format png; dvd.vob beside dvd.vob.mkv): the one
            # whose own name it is keeps it, else the first; the other would replace it, so it is refused
            if out not in named or (out.name == f.name and named[out].name != out.name):
                named[out] = f
        for f in files:
            out = outs[f]
            step = bar.update if is_image(f) else (lambda n: None)
            if named[out] != f:
                summary.failed.append((f, f"{f}: its output {out} is also {named[out]}'s; rename one of them"))
                bar.write(f"error: {summary.failed[-1][1]}")
                step(1)
                continue
            state = journal.state(str(f.relative_to(src)), f, out)
            if state == "done":
                summary.resumed.append(out)
                step(1)
                continue
            if state == "output changed" and not overwrite:
                summary.skipped.append(out)
                bar.write(f"note: {out} changed since an earlier run of this folder wrote it: left alone "
                          "(--overwrite replaces it)")
                step(1)
                continue
            # an output this run's journal lists, whose input changed since, is this run's to replace
            ours = state == "input changed"
            if out.exists() and not overwrite and not ours:
                if skip_existing:
                    summary.skipped.append(out)
                else:
                    summary.failed.append((f, f"{out}: output exists; pass --overwrite or --skip-existing"))
                    bar.write(f"error: {summary.failed[-1][1]}")
                step(1)
                continue
            (todo if is_image(f) else videos).append((f, out, overwrite or ours))

        def done(f: Path, out: Path, why: str | None) -> None:
            if why is None:
                summary.done.append(out)
                journal.record(str(f.relative_to(src)), f, out)
            else:
                summary.failed.append((f, why))
                bar.write(f"error: {why}")
            bar.update(1)

        if pool is not None:
            pool.run_files(todo, on_result=done)
        else:
            _overlapped(runner, todo, done, tile=tile, alpha=alpha, max_megapixels=max_megapixels, outscale=outscale)
    return videos


def _folder_videos(runner, src, videos, summary, journal, *, quiet, pool, identity, restart, options) -> None:
    """A folder run's videos, one after another, each resumable by its own segments; a failure is that
    video's alone."""
    import sys

    from sr_deploy.media.video import upscale_video

    for i, (f, out, ow) in enumerate(videos, 1):
        if not quiet:
            print(f"video {i} of {len(videos)}: {f.relative_to(src)}", file=sys.stderr)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            upscale_video(runner, f, out, options=options, overwrite=ow, quiet=quiet, identity=identity,
                          restart=restart, pool=pool)
        except Exception as exc:  # noqa: BLE001 - one video's failure, reported; the rest go on
            summary.failed.append((f, _reason(f, exc)))
            if not quiet:  # with --quiet the caller lists the failures at the end, as for images
                print(f"error: {summary.failed[-1][1]}", file=sys.stderr)
            continue
        summary.done.append(out)
        journal.record(str(f.relative_to(src)), f, out)


DECODE_AHEAD = 2  # images decoded ahead of the model
ENCODERS = 2  # outputs encoded behind it at once


@dataclasses.dataclass
class _Image:
    """One file of a folder run between the stages: decoded (``img``), then upscaled (``up``), or its
    one-line failure (``why``); ``written`` when the model stage wrote it itself (an animation)."""

    f: Path
    out: Path
    overwrite: bool
    header: object = None
    img: np.ndarray | None = None
    up: np.ndarray | None = None
    why: str | None = None
    written: bool = False
    held: bool = False  # the model took the one place for an output not yet handed to the encoders


def _overlapped(runner: Runner, todo: list[tuple[Path, Path, bool]], done, *, tile, alpha, max_megapixels,
                outscale=None) -> None:
    """The folder's images through the video's three stages (media/stages.py): decoding ahead of the model,
    the model in its own thread, and encoding behind it on ENCODERS threads (OpenCV releases the GIL while it
    decodes and encodes), so on a GPU the model does not wait for the CPU to read the next image and write the
    last one. Outputs are published as before (whole or not at all) and reported as they finish; outputs
    waiting to be encoded are bounded in count and in bytes (a quarter of the memory available, or one
    output), the model makes the next output only once the last one is handed to the encoders (so one output
    at most waits between them), and an interrupted run first finishes the files being written, so its
    journal lists them."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from sr_deploy.machine import available_memory_bytes
    from sr_deploy.media.stages import TIMED_OUT, ThreeStages, wait_or_stop

    lock = threading.Lock()
    room = threading.Semaphore(1)  # one output made and not yet handed to the encoders, at most

    def take_room() -> None:
        wait_or_stop(lambda timeout: True if room.acquire(timeout=timeout) else TIMED_OUT, stages.stop)

    def report(item: _Image) -> None:
        with lock:
            done(item.f, item.out, item.why)

    def decode(put) -> None:
        for f, out, ow in todo:
            item = _Image(f, out, ow)
            try:
                item.header, item.img = _prepare(runner, f, out, overwrite=ow, max_megapixels=max_megapixels,
                                                 outscale=outscale)
            except Exception as exc:  # noqa: BLE001 - one file's failure, reported; the rest go on
                item.why = _reason(f, exc)
            put(item)
            del item

    def upscale(decoded, put) -> None:
        for item in decoded:
            if item.why is None:
                try:
                    if item.img is None:  # an animation: decoded, upscaled and written frame by frame, here
                        item.why = upscale_one(runner, item.f, item.out, overwrite=item.overwrite, tile=tile,
                                               alpha=alpha, max_megapixels=max_megapixels, outscale=outscale)
                        item.written = True
                    else:
                        take_room()
                        item.held = True
                        item.up = upscale_image_array(runner, item.img, tile=tile, alpha=alpha, outscale=outscale)
                except Exception as exc:  # noqa: BLE001 - one file's failure, reported; the rest go on
                    item.why = _reason(item.f, exc)
                item.img = None
            put(item)
            del item

    def encode(item: _Image, up: np.ndarray) -> None:
        try:
            write_image(item.out, up, overwrite=item.overwrite, gray_alpha=_gray_alpha(item.header), meta=item.header)
        except Exception as exc:  # noqa: BLE001 - reported for this file only, as upscale_one does
            item.why = _reason(item.f, exc)
        report(item)

    writes: dict = {}  # future -> bytes of the output it holds
    budget = available_memory_bytes() // 4
    with ThreadPoolExecutor(ENCODERS, thread_name_prefix="encode") as encoder, \
            ThreeStages(decode, upscale, ahead=DECODE_AHEAD, behind=1) as stages:
        for item in stages:
            if item.why is not None or item.written:
                if item.held:  # the model failed on it: nothing to hand over
                    room.release()
                report(item)
                continue
            up, item.up = item.up, None
            while writes and (len(writes) >= ENCODERS or sum(writes.values()) + up.nbytes > budget):
                for fut in wait(writes, return_when=FIRST_COMPLETED).done:
                    writes.pop(fut)
                    fut.result()  # the run's own bookkeeping failing (its journal) ends the run, as before
            writes[encoder.submit(encode, item, up)] = up.nbytes
            room.release()  # handed over: the model may make the next one
            del up, item
        for fut in wait(writes).done:
            fut.result()


def upscale_one(runner: Runner, f: Path, out: Path, **kw) -> str | None:
    """One file of a folder run: None when written, else the one-line reason it was not."""
    try:
        upscale_image(runner, f, out, **kw)
        return None
    except Exception as exc:  # noqa: BLE001 - see _reason
        return _reason(f, exc)


def _reason(f: Path, exc: Exception) -> str:
    """The one line a folder run reports for a file that failed; any error ends that file only."""
    if isinstance(exc, SRDeployError):
        return str(exc)
    if isinstance(exc, OSError):  # permission denied, I/O error
        return f"{f}: {exc.strerror or exc}"
    if isinstance(exc, MemoryError):
        return f"{f}: out of memory (try --tile 256)"
    first = (str(exc).strip().splitlines() or [""])[0][:200]  # a backend's own error
    return f"{f}: {exc.__class__.__name__}: {first}"


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_video(path: Path) -> bool:
    from sr_deploy.media.video import is_video

    return is_video(path)


def default_output(src: Path, scale: int, outscale: float | None = None, image_suffix: str | None = None) -> Path:
    """NAME_x4.EXT beside ``src`` (FOLDER_x4 for a folder); a video format srdeploy reads but does not
    write (.vob, .m2ts...) gives NAME_x4.mkv, an image NAME_x4``image_suffix`` when one is given."""
    from sr_deploy.media.video import DEFAULT_VIDEO_SUFFIX, INPUT_ONLY_VIDEO_SUFFIXES

    x = label(scale, outscale)
    if src.is_dir():
        return src.with_name(f"{src.name}_x{x}")
    suffix = DEFAULT_VIDEO_SUFFIX if src.suffix.lower() in INPUT_ONLY_VIDEO_SUFFIXES else src.suffix
    if image_suffix and is_image(src):
        suffix = image_suffix
    return src.with_name(f"{src.stem}_x{x}{suffix}")
