"""--outscale: the output at another multiple of the input's size than the model's scale."""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.media.resize import final_size
from tests.conftest import pattern_image
from tests.media.test_robust import _clip_alpha


def _run(*args):
    r = CliRunner().invoke(app, ["run", *map(str, args)])
    return r.exit_code, r.output


def test_sizes_round_half_up_to_the_multiple_a_format_needs():
    assert final_size(61, 45, scale=4, outscale=None) == (244, 180)
    assert final_size(61, 45, scale=4, outscale=1.5) == (92, 68)  # 91.5 and 67.5, rounded up
    assert final_size(61, 45, scale=4, outscale=1.5, multiple=(2, 2)) == (92, 68)
    assert final_size(41, 24, scale=4, outscale=1.3, multiple=(2, 2)) == (54, 32)  # 53.3 → 54, 31.2 → 32
    assert final_size(41, 24, scale=4, outscale=1.3) == (53, 31)
    assert final_size(3, 3, scale=4, outscale=0.01) == (1, 1)


def test_images_are_the_models_output_resized(tmp_path, tiny_ckpt):
    """Shrinking is area averaging and enlarging Lanczos, of exactly what the model gives; dtype, channels,
    alpha and gray survive; the default name carries the factor; too large an output is refused first."""
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    for name, img in (("rgb.png", pattern_image(20, 26, 3)), ("rgba.png", pattern_image(18, 22, 4)),
                      ("deep.png", pattern_image(16, 20, 3, np.uint16)), ("gray.png", pattern_image(21, 17, 1))):
        src = tmp_path / name
        cv2.imwrite(str(src), img)
        code, said = _run(src, "-o", tmp_path / f"x2-{name}", *model)
        assert code == 0, said
        at2 = cv2.imread(str(tmp_path / f"x2-{name}"), cv2.IMREAD_UNCHANGED)
        for f, interp in ((1.5, cv2.INTER_AREA), (3, cv2.INTER_LANCZOS4)):
            code, said = _run(src, *model, "--outscale", f)
            assert code == 0, said
            out = src.with_name(f"{src.stem}_x{f:g}.png")
            got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
            size = (int(img.shape[1] * f + 0.5), int(img.shape[0] * f + 0.5))
            assert got.shape[:2] == size[::-1] and got.dtype == img.dtype and got.ndim == img.ndim, (name, f)
            assert np.array_equal(got, cv2.resize(at2, size, interpolation=interp)), (name, f)
    code, said = _run(tmp_path / "rgb.png", "-o", tmp_path / "huge.png", *model, "--outscale", 100000)
    assert code != 0 and said.startswith("error: ") and "x100000 output of 26x20 needs" in said, said
    assert not (tmp_path / "huge.png").exists()
    for bad in ("0", "-2", "nan", "inf"):
        code, said = _run(tmp_path / "rgb.png", *model, "--outscale", bad)
        assert code != 0 and said.startswith("error: --outscale must be a positive number"), said


def test_folders_and_animations_take_it_and_a_resumed_folder_keeps_it(tmp_path, tiny_ckpt):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), pattern_image(20, 26, 3))
    frames = [Image.fromarray(pattern_image(12, 16, 3, seed=i)) for i in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    code, said = _run(src, "-o", dst, *model, "--outscale", 1.5)
    assert code == 1 and "1 failed" in said, said
    assert cv2.imread(str(dst / "a.png")).shape == (30, 39, 3)
    with Image.open(dst / "anim.gif") as im:
        assert im.size == (24, 18) and im.n_frames == 3
    # the journal remembers the size: a rerun at another size is refused rather than mixing sizes
    code, said = _run(src, "-o", dst, *model, "--outscale", 2)
    assert code != 0 and "--restart" in said, said
    code, said = _run(src, "-o", dst, *model, "--outscale", 1.5)
    assert "2 resumed" in said, said


def test_video_frames_are_resized_before_encoding(tmp_path, tiny_ckpt):
    """A lossless RGBA clip: the colour is the x2 run's frames resized, the alpha the source's resized
    straight to the final size; odd sizes stay where the format holds them and become even (not cut)
    where it subsamples chroma."""
    import av

    src = tmp_path / "a.mov"
    alphas = _clip_alpha(src, size=(41, 24))
    model = ("--model", tiny_ckpt, "--backend", "onnxruntime", "--quiet")
    code, said = _run(src, "-o", tmp_path / "x2.mov", *model, "--codec", "qtrle")
    assert code == 0, said
    code, said = _run(src, "-o", tmp_path / "x13.mov", *model, "--codec", "qtrle", "--outscale", 1.3)
    assert code == 0 and "53x31" in said, said

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgba") for f in c.decode(video=0)]

    at2, got = frames(tmp_path / "x2.mov"), frames(tmp_path / "x13.mov")
    assert len(got) == len(at2) == len(alphas)
    for g, x2, a in zip(got, at2, alphas):
        assert g.shape == (31, 53, 4)
        assert np.array_equal(g[..., :3], cv2.resize(np.ascontiguousarray(x2[..., :3]), (53, 31),
                                                     interpolation=cv2.INTER_AREA))
        assert np.array_equal(g[..., 3], cv2.resize(a, (53, 31), interpolation=cv2.INTER_CUBIC))
    code, said = _run(src, "-o", tmp_path / "x13.mp4", *model, "--outscale", 1.3)  # x264, yuv420p
    assert code == 0 and "54x32" in said and "cut" not in said, said
    with av.open(str(tmp_path / "x13.mp4")) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (54, 32)
        assert sum(1 for _ in c.decode(v)) == len(alphas)


def test_a_divisor_of_the_scale_is_averaged_in_the_graph(tmp_path, tiny_ckpt):
    """--outscale 1 with a x2 model: the runner says it averages in its graph; images and video frames come
    out at the final size within a level of the host's area resize of the x2 output (one rounding instead
    of two), alpha resized from the source as before."""
    import av

    model = ("--model", tiny_ckpt, "--backend", "onnxruntime")
    src = tmp_path / "rgba.png"
    cv2.imwrite(str(src), pattern_image(18, 22, 4))
    code, said = _run(src, "-o", tmp_path / "x2.png", *model)
    assert code == 0, said
    code, said = _run(src, "-o", tmp_path / "x1.png", *model, "--outscale", 1)
    assert code == 0 and "area-resized to x1 in the graph" in said, said
    at2 = cv2.imread(str(tmp_path / "x2.png"), cv2.IMREAD_UNCHANGED)
    got = cv2.imread(str(tmp_path / "x1.png"), cv2.IMREAD_UNCHANGED)
    area = cv2.resize(at2, (22, 18), interpolation=cv2.INTER_AREA)
    assert got.shape == area.shape == (18, 22, 4)
    assert np.abs(got[..., :3].astype(int) - area[..., :3].astype(int)).max() <= 1
    assert not np.array_equal(got[..., :3], area[..., :3])  # rounded once, in the graph: not the host's resize

    clip = tmp_path / "a.mov"
    alphas = _clip_alpha(clip, size=(40, 24))
    code, said = _run(clip, "-o", tmp_path / "v2.mov", *model, "--codec", "qtrle", "--quiet")
    assert code == 0, said
    code, said = _run(clip, "-o", tmp_path / "v1.mov", *model, "--codec", "qtrle", "--outscale", 1)
    assert code == 0 and "area-resized to x1 in the graph" in said and "40x24" in said, said

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgba") for f in c.decode(video=0)]

    for g, x2, a in zip(frames(tmp_path / "v1.mov"), frames(tmp_path / "v2.mov"), alphas, strict=True):
        area = cv2.resize(np.ascontiguousarray(x2[..., :3]), (40, 24), interpolation=cv2.INTER_AREA)
        assert g.shape == (24, 40, 4) and np.abs(g[..., :3].astype(int) - area.astype(int)).max() <= 1
        assert np.array_equal(g[..., 3], cv2.resize(a, (40, 24), interpolation=cv2.INTER_CUBIC))
