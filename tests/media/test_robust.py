"""Bad input and big input: folders finish and report, memory is bounded by the tile, outputs stay faithful."""

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.export.onnx_export import read_descriptor
from sr_deploy.media.tiling import auto_tile, upscale_frame
from sr_deploy.runtime.ort_runner import OrtRunner
from tests.conftest import make_clip, pattern_image, write_clip


def _run(*args):
    r = CliRunner().invoke(app, ["run", *map(str, args)])
    return r.exit_code, r.output


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming width x height, with one tiny IDAT: what a decompression
    bomb looks like before its pixels are inflated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- folders
def test_folder_reports_every_failure_and_finishes(tmp_path, tiny_ckpt, monkeypatch):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "locked").mkdir()
    for name in ("a.png", "sub/b.png", "z.png", "locked/c.png", "denied.png"):
        cv2.imwrite(str(src / name), pattern_image(12, 14))
    (src / "junk.png").write_text("not an image")
    (src / "dangling.png").symlink_to(tmp_path / "missing.png")
    os.mkfifo(src / "fifo.png")
    _png_header_only(src / "bomb.png", 30000, 30000)
    # permission denied on a file and on a subfolder; faked, since the tests may run as root
    real_fromfile, real_scandir = np.fromfile, os.scandir

    def fromfile(path, *a, **kw):
        if Path(path).name == "denied.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_fromfile(path, *a, **kw)

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(np, "fromfile", fromfile)
    monkeypatch.setattr(os, "scandir", scandir)
    code, out = _run(src, "-o", tmp_path / "out", "--model", tiny_ckpt)
    assert code == 1, out
    done = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert done == ["a.png", "sub/b.png", "z.png"]  # everything readable was processed, around the failures
    assert "3 upscaled, 0 skipped (existing), 6 failed" in out
    for name, words in {"junk.png": "not a readable image", "dangling.png": "broken link",
                        "fifo.png": "not a regular file", "bomb.png": "decompression bomb",
                        "denied.png": "Permission denied", "locked": "folder cannot be read"}.items():
        assert any(line.startswith("error:") and name in line and words in line for line in out.splitlines()), (name, out)
    assert "Traceback" not in out


def test_folder_survives_a_backend_error_on_one_file(tmp_path, tiny_ckpt, monkeypatch):
    from sr_deploy.media import images

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(src / name), pattern_image(12, 14))
    real = images.upscale_image_array
    calls = []

    def flaky(runner, img, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation")
        if len(calls) == 3:
            raise MemoryError()
        return real(runner, img, **kw)

    monkeypatch.setattr(images, "upscale_image_array", flaky)
    code, out = _run(src, "-o", tmp_path / "out", "--model", tiny_ckpt)
    assert code == 1 and "1 upscaled, 0 skipped (existing), 2 failed" in out, out
    assert "b.png: RuntimeError: [ONNXRuntimeError]" in out and "c.png: out of memory" in out


# ----------------------------------------------------------------------------- size and memory
def test_decompression_bomb_refused_before_decoding(tmp_path, tiny_ckpt, monkeypatch):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40000, 30000)
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: decoded.append(1) or real(*a, **k))
    code, out = _run(bomb, "-o", tmp_path / "o.png", "--model", tiny_ckpt)
    assert code != 0 and out.startswith("error:") and "40000x30000 (1200 MP)" in out and "--max-megapixels" in out
    assert not decoded and not (tmp_path / "o.png").exists()
    # the limit is the user's to raise; small images can be refused by a lower one
    img = tmp_path / "small.png"
    cv2.imwrite(str(img), pattern_image(40, 50))
    code, out = _run(img, "-o", tmp_path / "s.png", "--model", tiny_ckpt, "--max-megapixels", "0.001")
    assert code != 0 and "over the 0.001 MP limit" in out


def test_output_that_cannot_fit_in_memory_is_refused(tmp_path, tiny_ckpt, monkeypatch):
    import sr_deploy.machine as machine

    img = tmp_path / "in.png"
    cv2.imwrite(str(img), pattern_image(200, 300))
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: 100_000)
    code, out = _run(img, "-o", tmp_path / "o.png", "--model", tiny_ckpt)
    assert code != 0 and "needs" in out and "GiB is available" in out and not (tmp_path / "o.png").exists()


class BudgetRunner(OrtRunner):
    """An ONNX Runtime runner with a small memory budget that records the pixels of every call."""

    budget = 0
    calls: list

    def memory_budget(self):
        return self.budget

    def _infer(self, batch):
        self.calls.append(batch.shape[0] * batch.shape[2] * batch.shape[3])
        return super()._infer(batch)

    def _infer_u8(self, batch):
        self.calls.append(batch.shape[0] * batch.shape[1] * batch.shape[2])
        return super()._infer_u8(batch)


def test_default_tile_keeps_every_call_within_the_memory_budget(tiny_onnx):
    runner = BudgetRunner(tiny_onnx, read_descriptor(tiny_onnx))
    frame = pattern_image(300, 420, 3)
    with runner:
        runner.budget, runner.calls = 10**12, []
        whole = upscale_frame(runner, frame, tile=None)
        assert runner.calls == [300 * 420], "within the budget the frame runs whole"
        runner.budget, runner.calls = int(150 * 150 * runner.bytes_per_pixel()), []
        th, tw = auto_tile(runner, 300, 420)
        assert th * tw <= 150 * 150
        tiled = upscale_frame(runner, frame, tile=None)
    assert len(runner.calls) > 1 and max(runner.calls) * runner.bytes_per_pixel() <= runner.budget
    # balanced tiles: the pixels computed stay close to the frame's (overlaps only), unlike square tiles
    # anchored at the edges
    assert sum(runner.calls) <= 1.25 * 300 * 420, sum(runner.calls) / (300 * 420)
    from sr_deploy.metrics import psnr

    assert tiled.shape == whole.shape and psnr(tiled, whole, 255.0) > 45  # blended, no visible seams


def test_video_frames_are_tiled_within_the_budget(tmp_path, tiny_onnx):
    from sr_deploy.media.video import VideoOptions, upscale_video

    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=3, size=(160, 96), audio=False)
    runner = BudgetRunner(tiny_onnx, read_descriptor(tiny_onnx))
    with runner:
        runner.budget, runner.calls = int(64 * 64 * runner.bytes_per_pixel()), []
        res = upscale_video(runner, clip, tmp_path / "o.mp4", options=VideoOptions(batch=4), quiet=True)
    assert res.frames == 3 and max(runner.calls) <= 64 * 64


# ----------------------------------------------------------------------------- faithful outputs
def test_exif_orientation_table_matches_pil():
    from PIL import Image, ImageOps

    from sr_deploy.media.images import _ORIENT

    arr = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    for o in range(2, 9):
        im = Image.fromarray(arr)
        exif = im.getexif()
        exif[0x0112] = o
        im.info["exif"] = exif.tobytes()
        im = Image.open(_save(im, exif))
        assert np.array_equal(_ORIENT[o](arr), np.asarray(ImageOps.exif_transpose(im))), o


def _save(im, exif):
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif)
    buf.seek(0)
    return buf


def test_exif_rotated_photo_comes_out_upright(tmp_path, tiny_ckpt):
    from PIL import Image, ImageOps

    stored = pattern_image(20, 32)  # as the camera stored it, landscape; orientation 6 = shown rotated 90° CW
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    src = tmp_path / "photo.png"
    im.save(src, exif=exif)
    code, out = _run(src, "-o", tmp_path / "o.png", "--model", tiny_ckpt)
    assert code == 0, out
    up = cv2.imread(str(tmp_path / "o.png"))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    assert up.shape[:2] == (upright.shape[0] * 2, upright.shape[1] * 2) == (64, 40)


def test_colour_profile_and_exif_are_carried_into_png_and_jpeg(tmp_path, tiny_ckpt, caplog):
    """A photo's ICC profile (Display P3, Adobe RGB: without it the colours show wrong) and EXIF (camera, date,
    GPS) reach PNG and JPEG outputs, single or in a folder, upright (orientation 1) and with the output's pixel
    size; the pixels are those of the same image without metadata. Other formats say what they lose."""
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im = Image.fromarray(pattern_image(20, 32))
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Camera maker", 6
    exif.get_ifd(0x8769).update({0xA002: 32, 0xA003: 20, 0x9003: "2026:01:02 03:04:05"})
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 0.0)})
    src, plain = tmp_path / "in", tmp_path / "plain"
    src.mkdir(), plain.mkdir()
    for suffix, kw in ((".png", {}), (".jpg", {"quality": 95})):
        im.save(src / f"photo{suffix}", icc_profile=icc, exif=exif, **kw)
        # the same pixels, decoded by OpenCV (which turns them by the orientation too), without metadata
        cv2.imwrite(str(plain / f"photo{suffix}.png"), cv2.imread(str(src / f"photo{suffix}")))
    code, said = _run(src, "-o", tmp_path / "folder", "--model", tiny_ckpt)  # the folder path writes too
    assert code == 0, said
    for suffix in (".png", ".jpg"):
        outs = []
        for name, source in (("one", src / f"photo{suffix}"), ("bare", plain / f"photo{suffix}.png")):
            out = tmp_path / f"{name}{suffix}"
            code, said = _run(source, "-o", out, "--model", tiny_ckpt)
            assert code == 0, said
            outs.append(out)
        for out in (outs[0], tmp_path / "folder" / f"photo{suffix}"):
            with Image.open(out) as o:
                got = o.getexif()
                assert o.info.get("icc_profile") == icc, out
                assert got.get(0x010F) == "Camera maker" and got.get(0x0112) == 1, dict(got)
                assert got.get_ifd(0x8769).get(0xA002) == 40 and got.get_ifd(0x8769).get(0xA003) == 64
                assert got.get_ifd(0x8769).get(0x9003) == "2026:01:02 03:04:05"
                assert got.get_ifd(0x8825).get(2) == (51.0, 30.0, 0.0)
            assert np.array_equal(cv2.imread(str(out)), cv2.imread(str(outs[1]))), out  # same pixels as without
    with caplog.at_level("WARNING"):
        code, said = _run(src / "photo.png", "-o", tmp_path / "o.webp", "--model", tiny_ckpt)
    assert code == 0 and (tmp_path / "o.webp").is_file()
    assert any("colour profile and EXIF are not written to .webp" in r.getMessage() for r in caplog.records)


def test_a_colour_profile_larger_than_a_jpeg_segment_is_split(tmp_path):
    """ICC.1 Annex B: a profile over 64 KB spans numbered APP2 segments, which readers join again."""
    from PIL import Image

    from sr_deploy.media.imagemeta import ICC_CHUNK, Metadata, carry_metadata

    out = tmp_path / "o.jpg"
    cv2.imwrite(str(out), pattern_image(16, 16))
    icc = bytearray(np.random.default_rng(0).integers(0, 256, 2 * ICC_CHUNK + 100, dtype=np.uint8).tobytes())
    icc[16:20] = b"RGB "  # the header's colour space, which must be the output's
    icc = bytes(icc)
    carry_metadata(out, ".jpg", Metadata(icc=icc), size=(16, 16), source="o.jpg")
    with Image.open(out) as o:
        assert o.info.get("icc_profile") == icc
        o.load()
    assert cv2.imread(str(out)).shape == (16, 16, 3)  # still a JPEG OpenCV decodes


def _icc_header(space: bytes) -> bytes:
    """The 128-byte header of an ICC profile (and an empty tag table) whose data colour space is ``space``."""
    import struct

    hdr = bytearray(132)
    struct.pack_into(">I", hdr, 0, len(hdr))
    hdr[12:16], hdr[16:20], hdr[20:24], hdr[36:40] = b"prtr", space, b"Lab ", b"acsp"
    return bytes(hdr)


def test_a_colour_profile_of_another_colour_space_is_not_written(tmp_path, tiny_ckpt, caplog, monkeypatch):
    """A CMYK JPEG decodes to RGB: its CMYK profile would make the RGB output an invalid file (so would an RGB
    profile on a gray PNG); such a profile is left out, with one warning. A gray profile on a gray output stays."""
    from PIL import Image

    from sr_deploy.media import imagemeta

    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 4), dtype=np.uint8)
    Image.fromarray(rgb, "CMYK").save(tmp_path / "print.jpg", icc_profile=_icc_header(b"CMYK"), quality=95)
    gray = Image.fromarray(pattern_image(20, 24, 1))
    gray.save(tmp_path / "wrong.png", icc_profile=_icc_header(b"RGB "))
    gray.save(tmp_path / "right.png", icc_profile=_icc_header(b"GRAY"))
    for name, out, kept, warning in (
            ("print.jpg", "o.jpg", None, "colour profile is for CMYK data and the output is RGB"),
            ("print.jpg", "o.png", None, "colour profile is for CMYK data and the output is RGB"),
            ("wrong.png", "w.png", None, "colour profile is for RGB data and the output is GRAY"),
            ("right.png", "r.png", _icc_header(b"GRAY"), None)):
        monkeypatch.setattr(imagemeta, "_said", set())  # warned once per process: here, once per run
        caplog.clear()
        with caplog.at_level("WARNING"):
            code, said = _run(tmp_path / name, "-o", tmp_path / out, "--model", tiny_ckpt)
        assert code == 0, said
        with Image.open(tmp_path / out) as o:
            assert o.info.get("icc_profile") == kept, out
        warned = [r.getMessage() for r in caplog.records if "colour profile" in r.getMessage()]
        assert len(warned) == (1 if warning else 0) and (not warning or warning in warned[0]), (out, warned)


def test_a_damaged_exif_keeps_what_can_be_read_and_prints_nothing(tmp_path, tiny_ckpt):
    """EXIF whose Exif sub-IFD points past its end: the output is written, with the tags that can be read,
    and Pillow's "Corrupt EXIF data" warning does not reach the user."""
    from PIL import Image

    ifd0 = (b"\x00\x02" + b"\x01\x0f\x00\x02\x00\x00\x00\x04Cam\x00"  # Make = "Cam"
            + b"\x87\x69\x00\x04\x00\x00\x00\x01\x00\x00\xff\xff" + b"\x00\x00\x00\x00")  # Exif IFD at 65535
    Image.fromarray(pattern_image(10, 12)).save(tmp_path / "in.jpg", exif=b"Exif\0\0MM\x00*\x00\x00\x00\x08" + ifd0)
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # pytest would otherwise keep them from stderr
        warnings.simplefilter("always")
        code, said = _run(tmp_path / "in.jpg", "-o", tmp_path / "o.jpg", "--model", tiny_ckpt, "--quiet")
    assert code == 0 and said == f"{tmp_path / 'o.jpg'}\n", said
    assert not [w for w in caught if "EXIF" in str(w.message)], [str(w.message) for w in caught]
    with Image.open(tmp_path / "o.jpg") as o:
        assert o.getexif().get(0x010F) == "Cam"


def test_exif_that_cannot_be_rewritten_is_left_out_and_the_image_written(tmp_path, tiny_ckpt, monkeypatch, caplog):
    from PIL import Image

    from sr_deploy.media import imagemeta

    def cannot(*a, **kw):
        raise ValueError("an EXIF Pillow cannot write again")

    monkeypatch.setattr(imagemeta, "output_exif", cannot)
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    Image.fromarray(pattern_image(10, 12)).save(tmp_path / "in.png", exif=exif)
    for out in ("o.png", "o.jpg", "o.avif"):
        with caplog.at_level("WARNING"):
            code, said = _run(tmp_path / "in.png", "-o", tmp_path / out, "--model", tiny_ckpt, "--quiet")
        assert code == 0 and (tmp_path / out).is_file(), said
    assert sum("EXIF cannot be rewritten and is left out" in r.getMessage() for r in caplog.records) == 3


def test_png_text_xmp_and_jpeg_comments_are_carried(tmp_path, tiny_ckpt):
    """A generator's prompt in PNG text (Stable Diffusion's "parameters"), XMP (ratings, edits) and a JPEG
    comment reach the outputs that hold them; XMP crosses between PNG and JPEG."""
    from PIL import Image, PngImagePlugin

    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk, Steps: 30")
    info.add_itxt("Description", "phare, crépuscule")
    info.add_itxt("XML:com.adobe.xmp", xmp)
    im = Image.fromarray(pattern_image(12, 16))
    im.save(tmp_path / "gen.png", pnginfo=info)
    im.save(tmp_path / "shot.jpg", quality=95, xmp=xmp.encode(), comment=b"scanned 1998")
    for src, out in (("gen.png", "gen_x2.png"), ("gen.png", "gen_x2.jpg"), ("shot.jpg", "shot_x2.jpg"),
                     ("shot.jpg", "shot_x2.png")):
        code, said = _run(tmp_path / src, "-o", tmp_path / out, "--model", tiny_ckpt)
        assert code == 0, said
    with Image.open(tmp_path / "gen_x2.png") as o:
        assert o.info.get("parameters") == "a lighthouse at dusk, Steps: 30"
        assert o.info.get("Description") == "phare, crépuscule" and o.info.get("XML:com.adobe.xmp") == xmp
    with Image.open(tmp_path / "gen_x2.jpg") as o:
        assert o.info.get("xmp") == xmp.encode() and "parameters" not in o.info
    with Image.open(tmp_path / "shot_x2.jpg") as o:
        assert o.info.get("xmp") == xmp.encode() and o.info.get("comment") == b"scanned 1998"
    with Image.open(tmp_path / "shot_x2.png") as o:
        assert o.info.get("XML:com.adobe.xmp") == xmp and "comment" not in o.info
        o.load()


def test_avif_in_and_out(tmp_path, tiny_ckpt):
    """AVIF (which OpenCV's wheels cannot read or write) goes through Pillow: read upright with its alpha, written
    with the colour profile and EXIF, found in folders; the pixels are those of the same image as PNG."""
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgba = np.dstack([pattern_image(12, 20), np.linspace(0, 255, 12 * 20).reshape(12, 20).astype(np.uint8)])
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Camera maker"
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgba, "RGBA").save(src / "pic.avif", icc_profile=icc, exif=exif, quality=90)
    with Image.open(src / "pic.avif") as im:  # the same decoded pixels, turned upright, as a PNG
        upright = np.rot90(np.asarray(im.convert("RGBA")), -1)
    Image.fromarray(np.ascontiguousarray(upright), "RGBA").save(tmp_path / "same.png")
    for out in ("o.png", "o.avif", "same_x2.png"):
        code, said = _run(tmp_path / ("same.png" if out.startswith("same") else "in/pic.avif"), "-o", tmp_path / out,
                          "--model", tiny_ckpt)
        assert code == 0, said
    for out in ("o.png", "o.avif"):
        with Image.open(tmp_path / out) as o:
            assert o.mode == "RGBA" and o.size == (24, 40), (out, o.mode, o.size)  # upright: 20x12 shown 12x20
            assert o.info.get("icc_profile") == icc and o.getexif().get(0x010F) == "Camera maker"
    assert np.array_equal(cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(tmp_path / "same_x2.png"), cv2.IMREAD_UNCHANGED))
    code, said = _run(src, "-o", tmp_path / "folder", "--model", tiny_ckpt)
    assert code == 0 and (tmp_path / "folder" / "pic.avif").is_file(), said


def test_gray_alpha_stays_gray_alpha(tmp_path, tiny_ckpt):
    from PIL import Image

    la = np.dstack([pattern_image(16, 20)[..., 0], np.full((16, 20), 180, np.uint8)])
    src = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(src)
    code, out = _run(src, "-o", tmp_path / "o.png", "--model", tiny_ckpt)
    assert code == 0, out
    with Image.open(tmp_path / "o.png") as o:
        assert o.mode == "LA" and o.size == (40, 32)
        assert np.asarray(o)[..., 1].min() >= 170  # the alpha survived


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_gray_alpha_tiff_keeps_its_alpha_and_depth(tmp_path, tiny_ckpt, dtype):
    # OpenCV decodes a two-sample TIFF as gray alone (16 bits given as 8) and Pillow cannot open the 16-bit kind
    import tifffile

    top = np.iinfo(dtype).max
    gray = (pattern_image(16, 20)[..., 0].astype(np.float64) / 255 * top).astype(dtype)
    alpha = np.full((16, 20), top // 3, dtype)
    alpha[:, :10] = top
    src = tmp_path / "ga.tif"
    tifffile.imwrite(src, np.dstack([gray, alpha]), photometric="minisblack", extrasamples=["unassalpha"])
    code, out = _run(src, "-o", tmp_path / "o.tif", "--model", tiny_ckpt)
    assert code == 0, out
    o = tifffile.imread(tmp_path / "o.tif")
    assert o.shape == (32, 40, 2) and o.dtype == dtype, (o.shape, o.dtype)
    assert np.array_equal(o[:, :16, 1], np.full((32, 16), top, dtype))  # the opaque half stays opaque
    assert abs(int(o[:, 24:, 1].mean()) - top // 3) <= top // 100  # the translucent half stays translucent
    if dtype == np.uint16:
        assert len(np.unique(o[..., 0] % 257)) > 1  # 16-bit values, not 8-bit ones scaled by 257


def _clip_10bit(path: Path, x264_params: str | None = None) -> None:
    import av

    with av.open(str(path), "w") as c:
        # H.264 High 10 (libx265 in the same process as OpenVINO aborted a later OpenVINO compile here)
        s = c.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p10le"
        if x264_params:
            s.options = {"x264-params": x264_params}
        ramp = np.linspace(0, 65535, 32 * 48 * 3).reshape(32, 48, 3).astype(np.uint16)
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(ramp, format="rgb48le")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_10bit_video_stays_10bit(tmp_path, tiny_ckpt):
    import av

    src = tmp_path / "ten.mkv"
    _clip_10bit(src)
    code, out = _run(src, "-o", tmp_path / "o.mkv", "--model", tiny_ckpt)
    assert code == 0 and "10-bit" in out, out
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
        frame = next(c.decode(video=0)).to_ndarray(format="rgb48le")
    assert np.any(frame % 257 != 0), "the 16-bit values are not 8-bit values scaled up"
    # an 8-bit --pix-fmt is obeyed
    code, out = _run(src, "-o", tmp_path / "o8.mkv", "--model", tiny_ckpt, "--pix-fmt", "yuv420p")
    assert code == 0
    with av.open(str(tmp_path / "o8.mkv")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def _clip_alpha(path: Path, frames: int = 3, size: tuple[int, int] = (40, 24)) -> list[np.ndarray]:
    """A QuickTime Animation clip (argb, lossless) whose alpha varies across the frame and in time;
    returns each frame's alpha plane."""
    import av

    w, h = size
    alphas = []
    with av.open(str(path), "w") as c:
        s = c.add_stream("qtrle", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "argb"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            a = ((xx * 6 + yy * 3 + 50 * i) % 256).astype(np.uint8)
            alphas.append(a)
            rgba = np.dstack([pattern_image(h, w, seed=i), a])
            for p in s.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return alphas


def test_video_alpha_is_kept_where_the_codec_holds_it_and_named_where_not(tmp_path, tiny_ckpt):
    """ProRes 4444 / QuickTime Animation / PNG-in-MOV sources carry alpha: upscaled bicubic beside the model's
    colour (as for images) when the output codec holds alpha; a warning, even with --quiet, when it cannot."""
    import av

    src = tmp_path / "a.mov"
    alphas = _clip_alpha(src)
    want = [cv2.resize(a, (a.shape[1] * 2, a.shape[0] * 2), interpolation=cv2.INTER_CUBIC) for a in alphas]
    for codec, fmt, tol in (("qtrle", "argb", 0), ("prores_ks", "yuva444p10le", 2)):
        out = tmp_path / f"{codec}.mov"
        code, said = _run(src, "-o", out, "--model", tiny_ckpt, "--codec", codec, "--quiet")
        assert code == 0, said
        with av.open(str(out)) as c:
            assert c.streams.video[0].codec_context.pix_fmt == fmt
            got = [f.to_ndarray(format="rgba")[..., 3] for f in c.decode(video=0)]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and np.abs(g.astype(int) - w.astype(int)).max() <= tol, codec
    code, said = _run(src, "-o", tmp_path / "x264.mov", "--model", tiny_ckpt, "--quiet")
    warned = [line for line in said.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warned) == 1, said
    assert warned[0].startswith("warning: a.mov has an alpha channel (argb) and libx264 cannot keep one here"), said
    code, said = _run(src, "-o", tmp_path / "vp9.webm", "--model", tiny_ckpt, "--quiet")  # VP9 alpha: not in MP4
    assert code == 0 and "warning: a.mov has an alpha channel (argb) and libvpx-vp9 cannot keep one here" in said, said
    code, said = _run(src, "-o", tmp_path / "m.mov", "--model", tiny_ckpt, "--codec", "qtrle", "--alpha", "model")
    assert code != 0 and said.startswith("error: --alpha model applies to images"), said


def test_a_codec_the_files_cannot_hold_names_what_can(tmp_path, tiny_ckpt):
    """A codec the run's segment files cannot hold is named as such (it is in FFmpeg); a container that
    cannot hold the codec points to those that can, not to itself."""
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=2, audio=False)
    code, out = _run(clip, "-o", tmp_path / "o.mkv", "--model", tiny_ckpt, "--codec", "ffv1")
    assert code != 0 and out == "error: video codec 'ffv1': the run's segment files (mov) cannot hold it; pass another --codec\n", out
    code, out = _run(clip, "-o", tmp_path / "o.mkv", "--model", tiny_ckpt, "--codec", "qtrle")
    assert code != 0 and out.endswith(": .mkv files cannot hold qtrle video; write .mov, or pass another --codec\n"), out
    assert not any(p.name.startswith("o.") for p in tmp_path.iterdir())


def test_tags_track_languages_and_chapters_are_kept(tmp_path, tiny_ckpt):
    """The file's title and comment, each stream's language and title, and the chapters (shifted and cut
    to a --start/--duration window) reach the output, as ffmpeg keeps them by default."""
    import av

    clip = tmp_path / "c.mkv"
    make_clip(clip, frames=24, fps=12, tags=True)  # 2 s: chapters 0-1 s and 1-2 s
    for out, window in ((tmp_path / "o.mkv", ()), (tmp_path / "o.mp4", ()),
                        (tmp_path / "w.mkv", ("--start", "0.5", "--duration", "1"))):
        code, said = _run(clip, "-o", out, "--model", tiny_ckpt, "--quiet", *window)
        assert code == 0, said
        with av.open(str(out)) as c:
            tags = {k.lower(): v for k, v in c.metadata.items()}  # Matroska writes COMMENT
            assert tags.get("title") == "A clip" and tags.get("comment") == "made by a test", c.metadata
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.metadata.get("language") == "eng" and a.metadata.get("language") == "fra"
            title = "name" if out.suffix == ".mp4" else "title"  # the mov muxer stores a track's title as its name
            assert v.metadata.get(title) == "picture" and a.metadata.get(title) == "commentaire"
            chapters = [(ch["metadata"]["title"], float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]))
                        for ch in c.chapters()]
        want = [("first", 0.0, 0.5), ("second", 0.5, 1.0)] if window else [("first", 0.0, 1.0), ("second", 1.0, 2.0)]
        assert chapters == want, (out.name, chapters)


def test_attachments_are_kept_in_mkv_and_data_streams_named(tmp_path, tiny_ckpt):
    """A Matroska file's attachments (the fonts its subtitles are drawn with) are kept in .mkv outputs and named
    in a warning elsewhere; a timecode track is named in a warning, and the run still succeeds."""
    import av

    font = bytes(range(256)) * 4
    mkv = tmp_path / "c.mkv"
    make_clip(mkv, frames=4, audio=False, attachment=("subs.ttf", "font/ttf", font))
    code, said = _run(mkv, "-o", tmp_path / "o.mkv", "--model", tiny_ckpt, "--quiet")
    assert code == 0 and "warning" not in said, said
    with av.open(str(tmp_path / "o.mkv")) as c:
        kept = [(st.name, st.mimetype, bytes(st.data)) for st in c.streams if st.type == "attachment"]
    assert kept == [("subs.ttf", "font/ttf", font)]
    code, said = _run(mkv, "-o", tmp_path / "o.mp4", "--model", tiny_ckpt, "--quiet")
    assert code == 0 and "warning: attachment #1 (subs.ttf) is dropped: .mp4 files cannot hold it" in said, said
    mov = tmp_path / "tc.mov"
    make_clip(mov, frames=4, audio=False, timecode="01:00:00:00")
    with av.open(str(mov)) as c:
        assert [st.type for st in c.streams] == ["video", "data"]  # QuickTime's timecode track
    code, said = _run(mov, "-o", tmp_path / "tc_x2.mov", "--model", tiny_ckpt, "--quiet")
    assert code == 0 and "warning: data stream #1 (TimeCodeHandler) is not kept" in said, said


def _side_data(path: Path) -> dict:
    """The HDR10 side data on the first frame of ``path``, unpacked as FFmpeg's structs lay it out."""
    import struct

    import av

    from sr_deploy.media.video import side_data

    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    got = {}
    for sd in side_data(frame):
        if sd.type.name == "MASTERING_DISPLAY_METADATA":
            got["display"] = struct.unpack("<22i", bytes(sd))
        elif sd.type.name == "CONTENT_LIGHT_LEVEL":
            got["light"] = struct.unpack("<2I", bytes(sd))
    return got


def test_hdr10_metadata_reaches_the_output(tmp_path, tiny_ckpt):
    """An HDR10 source's mastering display and content light level reach an x264/x265 output (players tone-map
    with them); an encoder that is not given them is named in a warning."""
    src = tmp_path / "hdr.mkv"
    display = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
    _clip_10bit(src, f"mastering-display={display}:cll=1000,400")
    want = _side_data(src)
    assert want["light"] == (1000, 400) and want["display"][16:20] == (50, 10000, 10000000, 10000)
    code, said = _run(src, "-o", tmp_path / "o.mkv", "--model", tiny_ckpt, "--quiet")
    assert code == 0 and "warning" not in said, said
    assert _side_data(tmp_path / "o.mkv") == want
    code, said = _run(src, "-o", tmp_path / "o.webm", "--model", tiny_ckpt, "--quiet")
    assert code == 0 and "warning: hdr.mkv carries HDR10 metadata" in said, said


def test_quiet_still_warns_of_a_dropped_stream(tmp_path, tiny_ckpt):
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=3)  # H.264 + AAC: a .webm cannot hold the AAC
    code, out = _run(clip, "-o", tmp_path / "o.webm", "--model", tiny_ckpt, "--quiet")
    assert code == 0, out
    lines = sorted(out.splitlines(), key=lambda line: not line.startswith("warning:"))  # stderr, stdout
    assert len(lines) == 2 and lines[0].startswith("warning: audio stream #1 (aac) is dropped"), out
    assert lines[1].startswith(f"{tmp_path / 'o.webm'}: 3 frames")


def test_subtitles_the_container_cannot_hold_are_named(tmp_path, tiny_ckpt):
    import av

    clip = tmp_path / "c.mkv"
    make_clip(clip, frames=4, subtitles=True)
    code, out = _run(clip, "-o", tmp_path / "o.mp4", "--model", tiny_ckpt)
    assert code == 0, out
    assert any(line.startswith("warning: subtitle stream") and ".mkv" in line for line in out.splitlines()), out
    code, out = _run(clip, "-o", tmp_path / "o.mkv", "--model", tiny_ckpt)
    assert code == 0 and "warning" not in out
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert [s.type for s in c.streams if s.type == "subtitle"] == ["subtitle"]


# ----------------------------------------------------------------------------- killed runs
def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
    import subprocess
    import sys

    from sr_deploy.fsutil import atomic_path

    target = tmp_path / "out.png"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.{dead.stdout.strip()}-x1y2.part.png"
    live = tmp_path / f".out.{os.getppid()}-a3b4.part.png"  # a writer that is still running
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    with atomic_path(target, overwrite=False) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])


def test_plain_progress_lines_show_an_eta(capsys):
    from sr_deploy.progress import Progress

    with Progress(100, desc="frames", unit="frame", every_s=0.0) as bar:
        bar._t0 -= 10.0  # as if 10 s had passed
        bar.update(20)
    err = capsys.readouterr().err
    assert "frames: 20/100 frame" in err and "ETA 40s" in err


@pytest.mark.parametrize("fmt,bits", [("yuv420p", 8), ("nv12", 8), ("yuv420p10le", 10), ("p010le", 10),
                                      ("yuv444p12be", 12), ("rgb48le", 16)])
def test_bit_depth_of_pixel_formats(fmt, bits):
    from sr_deploy.media.video import _bit_depth

    assert _bit_depth(fmt) == bits


def test_encoder_lookahead_is_capped_for_huge_frames(tmp_path, tiny_onnx, monkeypatch):
    import sr_deploy.media.video as video

    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=3, audio=False)
    runner = OrtRunner(tiny_onnx, read_descriptor(tiny_onnx))
    with runner:
        video.upscale_video(runner, clip, tmp_path / "plain.mp4", options=video.VideoOptions(codec="libx264"), quiet=True)
        # as if each frame were huge: ~3 frames' worth of lookahead budget
        monkeypatch.setattr(video, "ENCODER_LOOKAHEAD_BYTES", 96 * 64 * 3 // 2 * 3)
        video.upscale_video(runner, clip, tmp_path / "capped.mp4", options=video.VideoOptions(codec="libx264"), quiet=True)
        # a budget above the preset's own lookahead leaves it alone (never raised)
        monkeypatch.setattr(video, "ENCODER_LOOKAHEAD_BYTES", 96 * 64 * 3 // 2 * 25)
        video.upscale_video(runner, clip, tmp_path / "kept.mp4", options=video.VideoOptions(codec="libx264"), quiet=True)
        video.upscale_video(runner, clip, tmp_path / "medium.mp4", quiet=True,
                            options=video.VideoOptions(codec="libx264", preset="medium"))
    # x264 writes its settings into the stream (an SEI message); the default preset looks 10 frames ahead
    assert b"rc_lookahead=10" in (tmp_path / "plain.mp4").read_bytes()
    assert b"rc_lookahead=3" in (tmp_path / "capped.mp4").read_bytes()
    assert b"rc_lookahead=10" in (tmp_path / "kept.mp4").read_bytes()
    assert b"rc_lookahead=25" in (tmp_path / "medium.mp4").read_bytes()  # medium's 40, capped


def test_preset_is_kept_with_a_bitrate(tmp_path, tiny_onnx):
    """--bitrate replaces CRF, not the preset: x264's settings in the stream show the preset's choices."""
    import sr_deploy.media.video as video

    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=3, audio=False)
    with OrtRunner(tiny_onnx, read_descriptor(tiny_onnx)) as runner:
        for name, preset in (("fast.mp4", "ultrafast"), ("medium.mp4", "medium"), ("default.mp4", None)):
            video.upscale_video(runner, clip, tmp_path / name, quiet=True,
                                options=video.VideoOptions(codec="libx264", bitrate="200k", preset=preset))
    fast, medium, default = ((tmp_path / n).read_bytes() for n in ("fast.mp4", "medium.mp4", "default.mp4"))
    assert b"rc=abr" in fast and b"bitrate=200" in fast
    assert b"cabac=0" in fast and b"subme=0" in fast  # ultrafast
    assert b"cabac=1" in medium and b"subme=7" in medium
    assert b"cabac=1" in default and b"subme=2" in default  # veryfast


def test_output_beyond_the_encoders_size_limit_is_refused_before_any_work(tmp_path, tiny_ckpt):
    """x264 takes at most 16384 pixels a side: an 8200-wide source at x2 was refused by the encoder
    only when the first segment opened it, in FFmpeg's words."""
    clip = tmp_path / "wide.mp4"
    write_clip(clip, [pattern_image(16, 8200, seed=i) for i in range(2)])
    code, out = _run(clip, "-o", tmp_path / "o.mp4", "--model", tiny_ckpt, "--quiet")
    assert code != 0 and out.splitlines()[-1].startswith(
        f"error: {tmp_path / 'o.mp4'}: libx264 does not open for 16400x32 frames (x2 of 8200x16"), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.mp4"]


def test_encoder_options_per_codec():
    from sr_deploy.media.video import VideoOptions, encoder_options

    def opts(codec, **kw):
        return encoder_options(codec, VideoOptions(**kw), 640, 480, False)

    assert opts("libx264") == {"preset": "veryfast", "crf": "18"}
    assert opts("libx265", preset="slow", bitrate="4M") == {"preset": "slow", "x265-params": "log-level=error"}
    assert opts("hevc_nvenc", crf=23) == {"preset": "p5", "cq": "23"}
    assert opts("h264_nvenc", preset="p2", bitrate="8M") == {"preset": "p2"}
    assert opts("libvpx-vp9") == {"crf": "18", "b": "0"}
    assert opts("libvpx-vp9", bitrate="2M") == {}


def test_deep_sources_get_a_deep_format_the_encoder_takes(monkeypatch):
    import sr_deploy.media.video as video

    assert video.output_pix_fmt("libx264", None, False) == "yuv420p"
    assert video.output_pix_fmt("libx264", None, True) == "yuv420p10le"
    assert video.output_pix_fmt("hevc_nvenc", None, True) == "p010le"  # NVENC has no planar 10-bit 4:2:0
    assert video.output_pix_fmt("hevc_nvenc", "yuv444p", True) == "yuv444p"
    monkeypatch.setattr(video, "encoder_formats", lambda codec: ("yuv420p", "yuv444p"))
    assert video.output_pix_fmt("libvpx-vp9", None, True) == "yuv420p"  # an 8-bit-only encoder


def test_10bit_source_to_an_8bit_only_encoder_is_written_8bit_with_a_note(tmp_path, tiny_ckpt, monkeypatch):
    import av

    import sr_deploy.media.video as video

    src = tmp_path / "ten.mkv"
    _clip_10bit(src)
    # libvpx-vp9 takes no 10-bit format in some FFmpeg builds (PyAV's wheels among them): as if so here
    real = video.encoder_formats
    monkeypatch.setattr(video, "encoder_formats",
                        lambda codec: tuple(f for f in real(codec) if video._bit_depth(f) == 8))
    code, out = _run(src, "-o", tmp_path / "o.webm", "--model", tiny_ckpt)
    assert code == 0 and "no 10-bit 4:2:0 format" in out, out
    with av.open(str(tmp_path / "o.webm")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert len(list(c.decode(video=0))) == 3


def test_truncated_image_is_one_error_line_without_decoder_noise(tmp_path, capfd):
    from sr_deploy.errors import InputError
    from sr_deploy.media.images import read_image

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING)  # as a fresh process starts
    ok, buf = cv2.imencode(".png", pattern_image(40, 40))
    (tmp_path / "cut.png").write_bytes(buf.tobytes()[:80])  # the header survives, the pixel data does not
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "cut.png")
    assert "WARN" not in capfd.readouterr().err  # OpenCV writes its warnings to fd 2 itself


def _ts_part(path: Path, size: tuple[int, int], first_pts: int, frames: int = 10) -> bytes:
    w, h = size
    write_clip(path, [pattern_image(h, w, seed=i) for i in range(frames)], options={"bf": "0", "g": "5"},
               first_pts=first_pts)
    return path.read_bytes()


def test_resolution_change_midway_keeps_every_frame(tmp_path, tiny_ckpt):
    # MPEG-TS recordings joined end to end (timestamps continuing): the second part is larger. Its frames
    # are scaled to the stream's declared size, as ffmpeg does, in one piece and across segments.
    import av

    src = tmp_path / "joined.ts"
    src.write_bytes(_ts_part(tmp_path / "a.ts", (48, 32), 0) + _ts_part(tmp_path / "b.ts", (64, 48), 10))
    for seconds in ("100", "0.5"):
        dst = tmp_path / f"out{seconds}.mp4"
        code, out = _run(src, "-o", dst, "--model", tiny_ckpt, "--backend", "onnxruntime", "--segment-seconds", seconds)
        assert code == 0, out
        assert "changes resolution to 64x48" in out
        with av.open(str(dst)) as c:
            sizes = [(f.width, f.height) for f in c.decode(video=0)]
        assert sizes == [(96, 64)] * 20, seconds


def test_repeated_timestamps_are_refused_before_any_work(tmp_path, tiny_ckpt):
    src = tmp_path / "twice.ts"
    src.write_bytes(_ts_part(tmp_path / "a.ts", (48, 32), 0) + _ts_part(tmp_path / "b.ts", (48, 32), 0))
    dst = tmp_path / "out.mp4"
    code, out = _run(src, "-o", dst, "--model", tiny_ckpt, "--backend", "onnxruntime")
    assert code != 0 and "repeat another frame's timestamp" in out, out
    assert [line for line in out.splitlines() if line.startswith("error:")] and "Traceback" not in out
    assert not dst.exists() and not list(tmp_path.glob("out.mp4*"))


def test_undecodable_names_and_hidden_files_in_a_folder(tmp_path, tiny_ckpt):
    # A file name that is not UTF-8 (kept by Python as surrogate escapes) crashed the process inside
    # OpenCV's writer; hidden files (macOS "._" twins, caches) are not pictures and are left alone. Run as
    # a user runs it, with output streams that are strict UTF-8 (PYTHONIOENCODING), which printing such a
    # name would break.
    import subprocess
    import sys

    src = tmp_path / "in"
    (src / ".cache").mkdir(parents=True)
    odd = os.fsdecode(b"bad\xffname.png")
    cv2.imwrite(str(src / "plain.png"), pattern_image(12, 14))
    (src / odd).write_bytes((src / "plain.png").read_bytes())
    (src / "._plain.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    cv2.imwrite(str(src / ".cache" / "thumb.png"), pattern_image(12, 14))
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", OMP_NUM_THREADS="1")

    def run(*args):
        cmd = [sys.executable, "-c", "from sr_deploy.cli import main; main()", "run", *map(os.fsencode, args),
               "--model", str(tiny_ckpt), "--backend", "onnxruntime"]
        res = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
        return res.returncode, (res.stdout + res.stderr).decode("utf-8", "backslashreplace")

    code, out = run(src, "-o", tmp_path / "out")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == sorted([odd, "plain.png"])
    assert cv2.imdecode(np.fromfile(tmp_path / "out" / odd, np.uint8), cv2.IMREAD_UNCHANGED).shape == (24, 28, 3)
    one = tmp_path / os.fsdecode(b"one\xfe.png")
    code, out = run(src / odd, "-o", one)
    assert code == 0 and one.stat().st_size > 0 and "one\\xfe.png" in out, out


def test_odd_output_size_is_cut_to_what_4_2_0_holds(tmp_path):
    # A 33x25 source at x3 is 99x75: 4:2:0 needs even sizes, so the last column and row are cut (with a
    # note) instead of the encoder failing after the work; 4:4:4 keeps every pixel.
    import av

    from sr_deploy.models.checkpoint import save_checkpoint
    from tests.conftest import tiny_model

    x3 = save_checkpoint(tmp_path / "x3.pt", tiny_model(3))
    src = tmp_path / "odd.mkv"
    write_clip(src, [pattern_image(25, 33, seed=i) for i in range(4)], codec="ffv1", pix_fmt="yuv444p")
    for name, extra, size in (("o.mp4", [], (98, 74)), ("o.mkv", ["--pix-fmt", "yuv444p"], (99, 75))):
        code, out = _run(src, "-o", tmp_path / name, "--model", x3, "--backend", "onnxruntime", *extra)
        assert code == 0, out
        assert f"4 frames at {size[0]}x{size[1]}" in out, out
        with av.open(str(tmp_path / name)) as c:
            assert [(f.width, f.height) for f in c.decode(video=0)] == [size] * 4
        assert ("last column and row cut" in out) == (not extra)
