import cv2
import numpy as np
from typer.testing import CliRunner

from sr_deploy.cli import app
from tests.conftest import pattern_image


def _tree(root):
    (root / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(root / "rgb.png"), pattern_image(20, 26, 3))
    cv2.imwrite(str(root / "sub" / "rgba.png"), pattern_image(18, 22, 4))
    cv2.imwrite(str(root / "sub" / "deep16.png"), pattern_image(16, 20, 3, np.uint16))
    cv2.imwrite(str(root / "sub" / "deeper" / "gray.jpg"), pattern_image(21, 17, 1))
    (root / "sub" / "corrupt.png").write_bytes(b"\x89PNG broken")


def test_folder_run_keeps_layout_depth_alpha_gray(tmp_path, tiny_ckpt):
    src, dst = tmp_path / "in", tmp_path / "out"
    _tree(src)
    res = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
    assert res.exit_code == 1, res.output  # one file failed, the others were processed
    assert "corrupt.png" in res.output
    for rel in ["rgb.png", "sub/rgba.png", "sub/deep16.png", "sub/deeper/gray.jpg"]:
        a = cv2.imread(str(src / rel), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(dst / rel), cv2.IMREAD_UNCHANGED)
        assert b.shape[:2] == (a.shape[0] * 2, a.shape[1] * 2), rel
        assert b.ndim == a.ndim and (a.ndim == 2 or a.shape[2] == b.shape[2]), rel
        assert b.dtype == a.dtype, rel
    assert not (dst / "sub" / "corrupt.png").exists()
    assert not list(dst.rglob("*.part*")), "no temporary files left"
    # alpha upscaled, not dropped or flattened
    alpha = cv2.imread(str(dst / "sub/rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert alpha.std() > 0
    # the same command again resumes from the run's journal: only the failed file is tried again
    again = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
    assert again.exit_code == 1 and "0 upscaled, 0 skipped (existing), 1 failed, 4 resumed" in again.output
    assert "output exists" not in again.output
    # without the journal, existing outputs are refused, or left with --skip-existing
    (dst / ".srdeploy-run.jsonl").unlink()
    again = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
    assert again.exit_code == 1 and "output exists" in again.output
    (dst / ".srdeploy-run.jsonl").unlink(missing_ok=True)
    again = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--skip-existing", "--backend", "onnxruntime"])
    assert "4 skipped" in again.output


def test_single_image_and_refusals(tmp_path, tiny_ckpt):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), pattern_image(12, 14, 3))
    before = src.read_bytes()
    r = CliRunner().invoke(app, ["run", str(src), "--model", str(tiny_ckpt), "--backend", "torch"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "a_x2.png"
    assert cv2.imread(str(out)).shape == (24, 28, 3)
    r = CliRunner().invoke(app, ["run", str(src), "--model", str(tiny_ckpt), "--backend", "torch"])
    assert r.exit_code != 0 and "exists" in r.output
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(src), "--model", str(tiny_ckpt), "--overwrite"])
    assert r.exit_code != 0 and "input" in r.output
    assert src.read_bytes() == before
    r = CliRunner().invoke(app, ["run", str(tmp_path / "missing.png"), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "missing.png" in r.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"xx")
    r = CliRunner().invoke(app, ["run", str(bad), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "not a readable image" in r.output
    assert not (tmp_path / "bad_x2.png").exists()


def test_animations_keep_every_frame_their_timing_and_loop(tmp_path):
    # OpenCV decodes only an animation's first frame; every frame must come out, in order, with its duration.
    from PIL import Image

    def frames_of(path):
        with Image.open(path) as im:
            out = []
            for i in range(im.n_frames):
                im.seek(i)
                im.load()
                out.append((np.asarray(im.convert("RGBA")).astype(float), im.info.get("duration")))
            return out, im.info.get("loop")

    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    src_frames = []
    for i, c in enumerate(colours):
        a = np.full((16, 20, 4), (*c, 255), np.uint8)
        if i == 0:
            a[:, :10, 3] = 0  # half transparent
        src_frames.append(Image.fromarray(a, "RGBA"))
    src = tmp_path / "in"
    src.mkdir()
    for ext, kw in ((".webp", {"lossless": True}), (".png", {}), (".gif", {})):
        frames = [f.convert("RGB") for f in src_frames] if ext == ".gif" else src_frames
        frames[0].save(src / f"anim{ext}", save_all=True, append_images=frames[1:], duration=[40, 80, 120, 160],
                       loop=2, **kw)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(out), "--model", "light_x4", "--backend", "onnxruntime"])
    assert r.exit_code == 0, r.output
    for ext in (".webp", ".png", ".gif"):
        got, loop = frames_of(out / f"anim{ext}")
        assert loop == 2 and [d for _, d in got] == [40, 80, 120, 160], ext
        for (arr, _), c in zip(got, colours, strict=True):
            assert arr.shape == (64, 80, 4)
            assert np.abs(arr[32, 60, :3] - c).max() <= 12, (ext, arr[32, 60], c)  # each frame its own colour
        if ext == ".webp":
            assert got[0][0][32, 5, 3] < 30 and got[0][0][32, 60, 3] > 225  # the first frame's alpha kept
    r = CliRunner().invoke(app, ["run", str(src / "anim.gif"), "-o", str(tmp_path / "still.jpg"), "--model", "light_x4"])
    assert r.exit_code != 0 and "is an animation (4 frames)" in r.output and not (tmp_path / "still.jpg").exists()


def test_folder_decodes_ahead_of_the_model_and_encodes_behind_it(tmp_path, monkeypatch):
    """While the model runs on one image, the next is being decoded and the previous encoded (threads),
    so a GPU is not left waiting on the CPU; a model that waits for that work to start would time out
    (and fail its file) if the folder ran one step after another."""
    import threading

    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.media import images
    from sr_deploy.runtime.base import Runner

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        cv2.imwrite(str(src / f"{i}.png"), pattern_image(12, 14 + i, 3, seed=i))
    decoding = {str(i): threading.Event() for i in range(4)}
    encoding = {str(i): threading.Event() for i in range(4)}
    real_prepare, real_write = images._prepare, images.write_image

    def prepare(runner, f, out, **kw):
        decoding[f.stem].set()
        return real_prepare(runner, f, out, **kw)

    def write(path, img, **kw):
        encoding[path.stem].set()
        return real_write(path, img, **kw)

    monkeypatch.setattr(images, "_prepare", prepare)
    monkeypatch.setattr(images, "write_image", write)

    class Nearest(Runner):
        calls = 0

        def _activate(self):
            pass

        def _infer(self, batch):
            k = Nearest.calls
            Nearest.calls += 1
            if k + 1 < 4:
                assert decoding[str(k + 1)].wait(10), f"image {k + 1} not being decoded while the model ran on {k}"
            if k >= 1:
                assert encoding[str(k - 1)].wait(10), f"image {k - 1} not being encoded while the model ran on {k}"
            return batch.repeat(2, axis=2).repeat(2, axis=3)

    with Nearest(ModelDescriptor(name="n", scale=2)) as r:
        s = images.upscale_folder(r, src, dst, quiet=True)
    assert not s.failed, s.failed
    assert len(s.done) == 4
    for i in range(4):
        a = cv2.imread(str(src / f"{i}.png"))
        assert np.array_equal(cv2.imread(str(dst / f"{i}.png")), a.repeat(2, axis=0).repeat(2, axis=1))


def test_the_model_makes_one_output_at_most_beyond_what_the_encoders_hold(tmp_path, monkeypatch):
    """With both encoders busy, the model has made the outputs they hold and one more (waiting to be handed
    over), and does not start the next: outputs in memory stay bounded however far decoding runs ahead."""
    import threading

    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.media import images
    from sr_deploy.runtime.base import Runner

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(6):
        cv2.imwrite(str(src / f"{i}.png"), pattern_image(10, 12, 3, seed=i))
    writing, release, seen = [], threading.Event(), []
    real_write = images.write_image

    def write(path, img, **kw):
        writing.append(path.stem)
        assert release.wait(10)
        return real_write(path, img, **kw)

    class Nearest(Runner):
        calls = 0

        def _activate(self):
            pass

        def _infer(self, batch):
            Nearest.calls += 1
            return batch.repeat(2, axis=2).repeat(2, axis=3)

    def watch():
        while len(writing) < images.ENCODERS or Nearest.calls < images.ENCODERS + 1:
            threading.Event().wait(0.01)
        threading.Event().wait(0.3)  # time for a broken bound to show
        seen.append(Nearest.calls)
        release.set()

    monkeypatch.setattr(images, "write_image", write)
    threading.Thread(target=watch, daemon=True).start()
    with Nearest(ModelDescriptor(name="n", scale=2)) as r:
        s = images.upscale_folder(r, src, dst, quiet=True)
    assert seen == [images.ENCODERS + 1]
    assert len(s.done) == 6 and not s.failed


def test_a_folder_run_whose_journal_cannot_be_written_stops(tmp_path, monkeypatch):
    """A failure of the run's own bookkeeping in the encoder threads is not swallowed: the run ends with it."""
    import pytest

    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.media import images, journal
    from sr_deploy.runtime.base import Runner

    class Nearest(Runner):
        def _activate(self):
            pass

        def _infer(self, batch):
            return batch.repeat(2, axis=2).repeat(2, axis=3)

    def full(self, *a, **kw):
        raise OSError(28, "No space left on device")

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), pattern_image(10, 12, 3, seed=i))
    monkeypatch.setattr(journal.Journal, "record", full)
    with Nearest(ModelDescriptor(name="n", scale=2)) as r, pytest.raises(OSError, match="No space left"):
        images.upscale_folder(r, src, tmp_path / "out", quiet=True)


def test_texture_web_and_netpbm_formats_round_trip(tmp_path, tiny_ckpt):
    """TGA, DDS and QOI (game textures, with alpha), JPEG 2000, .jfif/.jpe (JPEG under browser names),
    PPM/PGM/PNM and .apng: read, upscaled and written in their own format; the lossless ones hold exactly
    the pixels the same image gives as PNG."""
    from PIL import Image

    src, ref = tmp_path / "in", tmp_path / "ref"
    src.mkdir(), ref.mkdir()
    rgb, rgba, gray = pattern_image(20, 26, 3), pattern_image(18, 22, 4, seed=1), pattern_image(21, 17, 1, seed=2)
    cases = {"t.tga": rgba, "t.dds": rgba, "t.qoi": rgba, "t.jp2": rgb, "t.ppm": rgb, "t.pnm": rgb, "t.pgm": gray,
             "t.apng": rgb, "t.jfif": rgb, "t.jpe": rgb}
    for name, img in cases.items():
        Image.fromarray(img).save(src / name)
        Image.fromarray(img).save(ref / f"{name}.png")
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    code, said = _run_cli(src, "-o", tmp_path / "out", *model)
    assert code == 0 and f"{len(cases)} upscaled" in said, said
    code, said = _run_cli(ref, "-o", tmp_path / "refout", *model)
    assert code == 0, said
    for name, img in cases.items():
        with Image.open(tmp_path / "out" / name) as o, Image.open(tmp_path / "refout" / f"{name}.png") as r:
            assert o.size == (img.shape[1] * 2, img.shape[0] * 2) and o.mode == r.mode, (name, o.mode, r.mode)
            if name not in ("t.jfif", "t.jpe"):  # JPEG is lossy
                assert np.array_equal(np.asarray(o), np.asarray(r)), name


def test_alpha_into_a_format_without_one_is_dropped_with_a_warning(tmp_path, tiny_ckpt, caplog, monkeypatch):
    from PIL import Image

    from sr_deploy.media import imagemeta

    src = tmp_path / "icon.png"
    Image.fromarray(pattern_image(16, 18, 4)).save(src)
    for out in ("o.jpg", "o.jfif", "o.ppm"):
        monkeypatch.setattr(imagemeta, "_said", set())  # warned once per process: here, once per run
        caplog.clear()
        with caplog.at_level("WARNING"):
            code, said = _run_cli(src, "-o", tmp_path / out, "--model", tiny_ckpt)
        assert code == 0, said
        with Image.open(tmp_path / out) as o:
            assert o.mode == "RGB" and o.size == (36, 32), out
        warned = [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()]
        assert len(warned) == 1 and "transparency is dropped" in warned[0], (out, warned)


def _run_cli(*args):
    r = CliRunner().invoke(app, ["run", *map(str, args)])
    return r.exit_code, r.output


def test_heic_photos_are_read_upright_and_written_with_their_metadata(tmp_path, tiny_ckpt, monkeypatch):
    """iPhone photos (HEIC): decoded upright by libheif (its rotation applied, EXIF orientation then 1),
    upscaled like any photo, written as HEIC or PNG with the colour profile and EXIF; without pillow-heif,
    one line says what to install."""
    import subprocess
    import sys

    import pytest

    pillow_heif = pytest.importorskip("pillow_heif")
    from PIL import Image, ImageCms

    from sr_deploy import imagefiles

    # Written as a phone writes it (Pillow's plugin turns EXIF orientation 6 into HEIF's own rotation), in
    # another process: in this one, registering the plugin is srdeploy's job, which this test checks.
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "IMG_0001.HEIC"
    np.save(tmp_path / "px.npy", pattern_image(20, 30))
    (tmp_path / "p.icc").write_bytes(icc)
    subprocess.run([sys.executable, "-c", f"""
import numpy as np, pillow_heif
from PIL import Image
pillow_heif.register_heif_opener()
exif = Image.Exif()
exif[0x0112], exif[0x010F] = 6, "Phone maker"
Image.fromarray(np.load({str(tmp_path / "px.npy")!r})).save({str(src)!r}, exif=exif.tobytes(), quality=95,
                                                           icc_profile=open({str(tmp_path / "p.icc")!r}, "rb").read())
"""], check=True)
    upright = np.asarray(pillow_heif.open_heif(src))
    assert upright.shape == (30, 20, 3)  # stored landscape, shown portrait
    Image.fromarray(upright).save(tmp_path / "plain.png")
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    for out in ("o.heic", "o.png"):
        code, said = _run_cli(src, "-o", tmp_path / out, *model)
        assert code == 0, said
        with Image.open(tmp_path / out) as o:
            assert o.size == (40, 60) and o.getexif().get(0x0112) in (None, 1), out
            assert o.getexif().get(0x010F) == "Phone maker" and o.info.get("icc_profile") == icc, out
    code, said = _run_cli(tmp_path / "plain.png", "-o", tmp_path / "plain_x2.png", *model)
    assert code == 0, said
    assert np.array_equal(cv2.imread(str(tmp_path / "o.png")), cv2.imread(str(tmp_path / "plain_x2.png")))
    monkeypatch.setattr(imagefiles, "_heif", False)
    code, said = _run_cli(src, "-o", tmp_path / "again.png", *model)
    assert code != 0 and said.strip().endswith("HEIC/HEIF images need pillow-heif: pip install 'srdeploy[heif]'"), said


def test_format_writes_every_image_in_one_format(tmp_path, tiny_ckpt):
    """--format png: a folder's JPEG/TGA images come out as PNG (the same pixels as a PNG run of the same
    decoded image), two inputs that would share an output name are refused rather than one replacing the
    other, a single image's default name takes the format, and contradictions are one line."""
    from PIL import Image

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(pattern_image(20, 26)).save(src / "a.jpg", quality=90)
    Image.fromarray(pattern_image(18, 22, 4, seed=3)).save(src / "sub" / "t.tga")  # would also be sub/t.png
    Image.fromarray(pattern_image(12, 14, seed=4)).save(src / "sub" / "t.png")
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    code, said = _run_cli(src, "-o", tmp_path / "out", *model, "--format", "png")
    assert code == 1 and "2 upscaled" in said and "is also" in said, said
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == \
        ["a.png", "sub/t.png"]
    assert "t.tga: its output" in said  # sorted: sub/t.png came first and kept its name
    with Image.open(tmp_path / "out" / "sub" / "t.png") as o:
        assert o.mode == "RGB" and o.size == (28, 24)
    cv2.imwrite(str(tmp_path / "a_decoded.png"), cv2.imread(str(src / "a.jpg")))
    code, said = _run_cli(tmp_path / "a_decoded.png", "-o", tmp_path / "ref.png", *model)
    assert code == 0 and np.array_equal(cv2.imread(str(tmp_path / "out" / "a.png")), cv2.imread(str(tmp_path / "ref.png")))
    code, said = _run_cli(src / "a.jpg", *model, "--format", "webp")
    assert code == 0 and (src / "a_x2.webp").is_file(), said
    for args, msg in ((("--format", "xyz"), "error: --format xyz: not an image format"),
                      (("-o", tmp_path / "q.jpg", "--format", "png"), "error: --format png and -o q.jpg disagree")):
        code, said = _run_cli(src / "a.jpg", *model, *args)
        assert code != 0 and said.startswith(msg), said


def test_jpegs_with_more_images_behind_them_are_photos_not_animations(tmp_path, tiny_ckpt, caplog, monkeypatch):
    """A JPEG with an MPF second image (a camera's preview, a stereo view) is one photo: its first image is
    upscaled (it was refused as a 2-frame animation). An Ultra HDR photo's gain map is not kept: one warning,
    and its XMP, which describes that gain map, is not carried."""
    from PIL import Image

    from sr_deploy.media import imagemeta
    from sr_deploy.media.imagemeta import Metadata, _jpeg_with

    first = Image.fromarray(pattern_image(24, 32))
    first.save(tmp_path / "camera.jpg", format="MPO", save_all=True,
               append_images=[Image.fromarray(pattern_image(12, 16, seed=1))])
    with Image.open(tmp_path / "camera.jpg") as im:
        assert im.format == "MPO" and im.n_frames == 2
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" hdrgm:Version="1.0"/></rdf:RDF>'
           b'</x:xmpmeta>')
    (tmp_path / "uhdr.jpg").write_bytes(_jpeg_with((tmp_path / "camera.jpg").read_bytes(), Metadata(xmp=xmp), None, ""))
    cv2.imwrite(str(tmp_path / "primary.png"), cv2.imread(str(tmp_path / "camera.jpg")))
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    code, said = _run_cli(tmp_path / "primary.png", "-o", tmp_path / "primary_x2.jpg", *model)
    assert code == 0, said
    for name, warns in (("camera", False), ("uhdr", True)):
        monkeypatch.setattr(imagemeta, "_said", set())  # warned once per process: here, once per run
        caplog.clear()
        with caplog.at_level("WARNING"):
            code, said = _run_cli(tmp_path / f"{name}.jpg", "-o", tmp_path / f"{name}_x2.jpg", *model)
        assert code == 0, said
        assert np.array_equal(cv2.imread(str(tmp_path / f"{name}_x2.jpg")), cv2.imread(str(tmp_path / "primary_x2.jpg")))
        warned = [r.getMessage() for r in caplog.records if "gain map" in r.getMessage()]
        assert len(warned) == warns, (name, warned)
        with Image.open(tmp_path / f"{name}_x2.jpg") as o:  # a JPEG output, which an animation cannot be
            assert b"hdrgm" not in (o.info.get("xmp") or b""), name


def test_multi_page_tiffs_keep_every_page_in_its_own_form(tmp_path, tiny_ckpt):
    """A multi-page TIFF (a scan, a fax) was refused as an 'animation': every page is upscaled in its own
    form (RGB, gray, 16-bit gray, RGBA; sizes may differ) into a multi-page TIFF, each page exactly what the
    same page gives on its own; a format that holds one page is refused in one line."""
    from PIL import Image, ImageSequence

    pages = [pattern_image(20, 30), pattern_image(10, 12, 1, seed=1), pattern_image(8, 9, 1, np.uint16, seed=2),
             pattern_image(6, 7, 4, seed=3)]
    ims = [Image.fromarray(p) for p in pages]
    src = tmp_path / "scan.tif"
    ims[0].save(src, save_all=True, append_images=ims[1:])
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    code, said = _run_cli(src, *model)
    assert code == 0, said
    with Image.open(tmp_path / "scan_x2.tif") as out:
        got = [(p.mode, np.asarray(p).copy()) for p in ImageSequence.Iterator(out)]
    assert [m for m, _ in got] == ["RGB", "L", "I;16", "RGBA"]
    for i, (im, (mode, arr)) in enumerate(zip(ims, got)):
        im.save(tmp_path / f"page{i}.png")
        code, said = _run_cli(tmp_path / f"page{i}.png", *model)
        assert code == 0, said
        with Image.open(tmp_path / f"page{i}_x2.png") as alone:
            assert np.array_equal(arr, np.asarray(alone)), (i, mode)
    code, said = _run_cli(src, "-o", tmp_path / "scan.jpg", *model)
    assert code != 0 and said.startswith("error: ") and "has 4 pages and .jpg files cannot hold them" in said, said
    Image.fromarray(pattern_image(10, 10)).save(tmp_path / "bomb.tif", save_all=True,
                                                append_images=[Image.fromarray(pattern_image(40, 40))])
    code, said = _run_cli(tmp_path / "bomb.tif", *model, "--max-megapixels", "0.001")  # every page is checked
    assert code != 0 and "40x40 (0 MP) is over the 0.001 MP limit" in said, said
    assert not (tmp_path / "bomb_x2.tif").exists()


def test_a_cmyk_tiff_comes_out_rgb_without_an_alpha_it_never_had(tmp_path, tiny_ckpt):
    from PIL import Image

    Image.fromarray(pattern_image(16, 20)).convert("CMYK").save(tmp_path / "print.tif")
    code, said = _run_cli(tmp_path / "print.tif", "--model", tiny_ckpt)
    assert code == 0, said
    with Image.open(tmp_path / "print_x2.tif") as o:
        assert o.mode == "RGB" and o.size == (40, 32)
