"""Images and folders: keep format, alpha, bit depth and grayscale; write atomically."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError, OutputError, SRDeployError
from sr_deploy.fsutil import atomic_path
from sr_deploy.imagefiles import IMAGE_SUFFIXES  # noqa: F401  (re-exported)
from sr_deploy.media.tiling import upscale_frame
from sr_deploy.progress import Progress
from sr_deploy.runtime.base import Runner

ALPHA_MODES = ("bicubic", "model")


def read_image(path: Path) -> np.ndarray:
    """Read with OpenCV, unchanged: uint8/uint16, 1, 3 (BGR) or 4 (BGRA) channels."""
    import cv2

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: unsupported pixel type {img.dtype} (8- or 16-bit images only)")
    return img


def upscale_image_array(runner: Runner, img: np.ndarray, *, tile: int = 0, alpha: str = "bicubic") -> np.ndarray:
    """Upscale an OpenCV image array, keeping its dtype and channel count."""
    import cv2

    maxval = 65535.0 if img.dtype == np.uint16 else 255.0
    gray = img.ndim == 2 or img.shape[2] == 1
    if not gray and img.shape[2] == 3 and img.dtype == np.uint8:
        # 8-bit colour: bytes to the runner (pixels in the graph), bytes back
        up = upscale_frame(runner, np.ascontiguousarray(img[..., ::-1]), tile=tile)
        return np.ascontiguousarray(up[..., ::-1])
    if not gray and img.shape[2] == 3:
        # 16-bit colour: tiles are rounded straight into the output dtype, no full-size float copies
        rgb = np.ascontiguousarray(img[..., ::-1], dtype=np.float32) / maxval
        up = upscale_frame(runner, rgb, tile=tile, out_max=maxval, out_dtype=img.dtype)
        return np.ascontiguousarray(up[..., ::-1])
    x = img.astype(np.float32) / maxval
    if gray:
        x2 = x.reshape(x.shape[0], x.shape[1])
        rgb, a = np.stack([x2] * 3, axis=-1), None
    else:
        rgb = x[..., 2::-1] if x.shape[2] >= 3 else x  # BGR(A) → RGB
        a = x[..., 3] if x.shape[2] == 4 else None
    up = upscale_frame(runner, np.ascontiguousarray(rgb), tile=tile)
    if gray:
        out = up.mean(axis=2)
    else:
        out = up[..., ::-1]
        if a is not None:
            s = runner.scale
            if alpha == "model":
                ua = upscale_frame(runner, np.ascontiguousarray(np.stack([a] * 3, axis=-1)), tile=tile).mean(axis=2)
            else:
                ua = cv2.resize(a, (a.shape[1] * s, a.shape[0] * s), interpolation=cv2.INTER_CUBIC)
            out = np.concatenate([out, np.clip(ua, 0, 1)[..., None]], axis=2)
    return np.clip(np.rint(out * maxval), 0, maxval).astype(img.dtype)


def write_image(path: Path, img: np.ndarray, *, overwrite: bool) -> None:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"{path}: {path.suffix or 'no suffix'} is not an image format "
                          f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            ok, buf = cv2.imencode(path.suffix, img, params)
        except cv2.error:
            ok = False
        if not ok:
            raise OutputError(f"{path}: cannot encode this image as {path.suffix}")
        try:
            buf.tofile(tmp)
        except OSError as exc:
            raise OutputError(f"{path}: write failed ({exc.strerror or exc})") from exc


def upscale_image(runner: Runner, src: Path, dst: Path, *, overwrite: bool = False, tile: int = 0,
                  alpha: str = "bicubic") -> Path:
    if dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: output path is the input; choose another")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst}: output exists; pass --overwrite to replace it")
    img = read_image(src)
    write_image(dst, upscale_image_array(runner, img, tile=tile, alpha=alpha), overwrite=overwrite)
    return dst


@dataclass
class FolderSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def line(self) -> str:
        return f"{len(self.done)} upscaled, {len(self.skipped)} skipped (existing), {len(self.failed)} failed"


def upscale_folder(runner: Runner, src: Path, dst: Path, *, overwrite: bool = False, skip_existing: bool = False,
                   tile: int = 0, alpha: str = "bicubic", quiet: bool = False) -> FolderSummary:
    """Upscale every image under ``src`` into ``dst`` with the same relative paths.

    A bad file is reported and skipped; the rest are still processed.
    """
    if dst.resolve() == src.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise OutputError(f"{dst}: output folder must not be the input folder or inside it")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{src}: no images found (png/jpg/bmp/webp/tif)")
    summary = FolderSummary()
    with Progress(len(files), desc="images", unit="file", quiet=quiet) as bar:
        for f in files:
            out = dst / f.relative_to(src)
            if out.exists() and not overwrite:
                if skip_existing:
                    summary.skipped.append(out)
                else:
                    summary.failed.append((f, f"{out}: output exists; pass --overwrite or --skip-existing"))
                    bar.write(f"error: {summary.failed[-1][1]}")
                bar.update(1)
                continue
            try:
                upscale_image(runner, f, out, overwrite=overwrite, tile=tile, alpha=alpha)
                summary.done.append(out)
            except SRDeployError as exc:
                summary.failed.append((f, str(exc)))
                bar.write(f"error: {exc}")
            bar.update(1)
    return summary


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def default_output(src: Path, scale: int) -> Path:
    if src.is_dir():
        return src.with_name(f"{src.name}_x{scale}")
    return src.with_name(f"{src.stem}_x{scale}{src.suffix}")
