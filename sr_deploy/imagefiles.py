"""Image files on disk: which suffixes are images, listing them, reading one as RGB.

Shared by training data, calibration, evaluation and media, so it sits below all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError

# formats OpenCV's wheels neither read nor write, which Pillow does: AVIF, JPEG saved as .jfif (browsers),
# game textures (TGA, DDS), QOI and JPEG 2000 (OpenCV's OpenJPEG refuses small images)
HEIF_SUFFIXES = {".heic", ".heif"}  # iPhone photos: Pillow reads and writes them with pillow-heif's plugin
PIL_ONLY_SUFFIXES = {".avif", ".jfif", ".tga", ".dds", ".qoi", ".jp2"} | HEIF_SUFFIXES
IMAGE_SUFFIXES = {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm",
                  ".pnm"} | PIL_ONLY_SUFFIXES


def heif_support(path: Path | None = None) -> bool:
    """Register pillow-heif's Pillow plugin (once) and say whether it is there. With ``path`` a HEIC/HEIF
    file and the plugin missing, raise the one-line error that says how to add it."""
    global _heif
    if _heif is None:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()  # libheif turns the picture upright and resets EXIF orientation to 1
            _heif = True
        except ImportError:
            _heif = False
    if path is not None and not _heif and Path(path).suffix.lower() in HEIF_SUFFIXES:
        raise InputError(f"{path}: HEIC/HEIF images need pillow-heif: pip install 'srdeploy[heif]'")
    return _heif


_heif: bool | None = None


def list_images(folders: list[Path] | list[str]) -> list[Path]:
    """Every image file under ``folders`` (recursive, sorted per folder)."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: data folder not found")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8 (grayscale expanded, alpha dropped)."""
    from PIL import Image

    heif_support(path)
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):  # 16-bit gray: Pillow's convert("RGB") would clip it to white
                g = np.clip(np.rint(np.asarray(im, dtype=np.float32) / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(g[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # PIL's "cannot identify", truncation
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from exc

