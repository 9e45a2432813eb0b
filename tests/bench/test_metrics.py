import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.metrics import psnr, rgb_to_y, shave, ssim, y_psnr_ssim
from tests.conftest import pattern_image


def test_y_conversion_matches_matlab_rgb2ycbcr():
    # MATLAB: rgb2ycbcr(uint8([0 0 0])) → Y 16; white → 235; pure red → 81.481
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert np.allclose(rgb_to_y(px)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    gray = np.full((2, 2), 100, np.uint8)
    assert np.allclose(rgb_to_y(gray), 16 + 100 * (65.481 + 128.553 + 24.966) / 255)


def test_psnr_hand_computed():
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    b[0, 0] = 16  # MSE = 256 / 16 = 16 → PSNR = 10 log10(255² / 16)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16))
    assert psnr(a, a) == math.inf


def test_shave_border():
    img = np.arange(100).reshape(10, 10)
    s = shave(img, 2)
    assert s.shape == (6, 6) and s[0, 0] == 22
    assert shave(img, 0).shape == (10, 10)


def test_ssim_hand_computed_constant_images():
    # constant images: σ = 0, so SSIM = (2 μa μb + C1) / (μa² + μb² + C1)
    a, b = np.full((16, 16), 100.0), np.full((16, 16), 110.0)
    c1 = (0.01 * 255) ** 2
    want = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert ssim(a, b) == pytest.approx(want, rel=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_gaussian_window_definition():
    """SSIM on a random pair equals a direct Wang et al. computation with an 11x11 σ=1.5 Gaussian."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    f = lambda x: gaussian_filter(x, 1.5, truncate=3.5)  # radius 5 → 11x11 window
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = f(a), f(b)
    va, vb, cov = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
    m = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    want = m[5:-5, 5:-5].mean()  # valid region, as scikit-image crops
    assert ssim(a, b) == pytest.approx(want, rel=1e-6)


def test_y_psnr_shaves_scale_border():
    hr = np.full((20, 20, 3), 120, np.uint8)
    sr = hr.copy()
    sr[:3, :] = 0  # damage only inside a 3-pixel border
    p, s = y_psnr_ssim(sr, hr, scale=3)
    assert p == math.inf and s == pytest.approx(1.0)
    assert y_psnr_ssim(sr, hr, scale=2)[0] < 100


def test_bench_json_shape(tmp_path, tiny_ckpt):
    out = tmp_path / "b.json"
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_ckpt), "--backends", "onnxruntime,torch",
                                 "--precisions", "fp32", "--size", "16x16", "--min-time", "0.05", "--json", str(out),
                                 "--markdown", str(tmp_path / "b.md")])
    assert r.exit_code == 0, r.output
    # the run's place and time left, after every backend/precision row (a full bench takes many minutes)
    assert "[1/2 rows, " in r.output and "left]" in r.output and "[2/2 rows, " in r.output, r.output
    data = json.loads(out.read_text())
    assert {"machine", "quality", "speed", "video"} <= set(data)
    for row in data["speed"]:
        assert {"backend", "precision", "input", "batch", "latency_ms_p50", "latency_ms_p95", "fps", "mpix_per_s",
                "peak_mem_mb"} <= set(row)
    assert data["speed"] and data["speed"][0]["backend"] == "onnxruntime"
    assert (tmp_path / "b.md").read_text().count("|") > 10


def test_bench_library_notes_a_backend_it_cannot_run_and_runs_the_rest():
    """The CLI refuses a misspelt name (tests/test_cli_errors.py); the library, called with one, says so
    in a note and keeps the rest."""
    from sr_deploy.bench.run import BenchConfig, _combos

    notes: list[str] = []
    combos = _combos(BenchConfig(backends=("onnxruntime", "notabackend"), precisions=("fp32",)), notes.append)
    assert combos == [("onnxruntime", "fp32")]
    assert any("notabackend" in n and "unknown" in n for n in notes), notes


def test_bench_quality_rows(tmp_path, tiny_ckpt):
    import cv2

    from tests.conftest import pattern_image

    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), pattern_image(40, 48, 3))
    cv2.imwrite(str(d / "b.png"), pattern_image(56, 60, 3))
    cv2.imwrite(str(d / "tiny.png"), pattern_image(3, 3, 3))  # smaller than the scale allows: skipped
    (d / "cut.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # unreadable: skipped with a note, the rest measured
    out = tmp_path / "q.json"
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_ckpt), "--data", str(d), "--backends", "onnxruntime",
                                 "--precisions", "fp32", "--size", "16x16", "--min-time", "0.05", "--json", str(out),
                                 "--montage", str(tmp_path / "m.png"), "--plot", str(tmp_path / "p.png"),
                                 "--markdown", str(tmp_path / "r.md")])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert any(n.startswith(f"skipped {d / 'cut.jpg'}: not a readable image") for n in res["notes"]), res["notes"]
    q = res["quality"]
    # the speed row carries the model's PSNR on the first dataset and its speed-up over ORT fp32 (itself: 1.00)
    auto = res["auto"]["tiny_x2"]
    assert auto["backend"] in ("openvino", "onnxruntime", "torch") and auto["why"]
    row = next(l for l in (tmp_path / "r.md").read_text().splitlines() if l.startswith("| tiny_x2 | onnxruntime"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-3] == f"{q[1]['psnr_y']:.3f}" and cells[-2] == "0.000" and cells[-1] == "1.00"
    assert [row["method"] for row in q] == ["bicubic", "model"]
    for row in q:
        assert {"dataset", "method", "model", "backend", "precision", "scale", "psnr_y", "ssim_y", "detail", "images"} <= set(row)
        assert 0 < row["detail"] < 5
        assert row["dataset"] == "imgs" and row["images"] == 2
    # one row per image, each zoomed 4x on its own most detailed crop (the whole image when smaller than 64)
    montage = cv2.imread(str(tmp_path / "m.png"))
    assert montage.shape[:2] == (40 * 4 + 4 + 56 * 4, 3 * 56 * 4 + 2 * 4)
    assert cv2.imread(str(tmp_path / "p.png")) is not None


def test_detail_ratio_orders_blurred_sharp_and_identical():
    import cv2

    from sr_deploy.metrics import detail_ratio
    from tests.conftest import pattern_image

    hr = pattern_image(64, 64, 3, seed=3)
    hr = np.clip(hr.astype(np.int16) + np.random.default_rng(0).integers(-40, 40, hr.shape), 0, 255).astype(np.uint8)
    assert detail_ratio(hr, hr, 4) == pytest.approx(1.0)
    blurred = cv2.GaussianBlur(hr, (0, 0), 1.5)
    lighter = cv2.GaussianBlur(hr, (0, 0), 0.7)
    r_blur, r_light = detail_ratio(blurred, hr, 4), detail_ratio(lighter, hr, 4)
    assert r_blur < r_light < 1.0
    assert detail_ratio(hr, blurred, 4) > 1.0  # more fine detail than the reference


def test_conv_macs_per_pixel_counts_every_convolution(tmp_path):
    """light x2 (8 features, one 4-channel mapping layer): 5x5 3->8, 3x3 8->4, 3x3 4->12, all at the input's
    resolution: 600 + 288 + 432 multiply-adds per input pixel."""
    from sr_deploy.bench.run import conv_macs_per_pixel
    from sr_deploy.export import export_onnx
    from sr_deploy.models.light import LightSR

    rep = export_onnx(LightSR(scale=2, channels=8, mid=4, depth=1), tmp_path / "l.onnx", name="l")
    assert conv_macs_per_pixel(rep.path) == 600 + 288 + 432


def test_images_too_small_to_score_are_skipped_and_named(tmp_path):
    # at x4 the border shave takes 8 px and SSIM's Gaussian window needs 11: a 17x18 image (16x16 after the
    # mod-crop) once reached SSIM and ended the bench in scikit-image's words
    from sr_deploy.errors import InputError
    from sr_deploy.quality import evaluate, load_eval_set

    for name, (h, w) in {"small": (17, 18), "edge": (19, 20), "ok": (20, 20)}.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), pattern_image(h, w, 3))
    said: list[str] = []
    pairs = load_eval_set(tmp_path, 4, say=said.append)
    assert [p.name for p in pairs] == ["ok"]
    assert len(said) == 2 and all("too small to score at x4" in s for s in said) and any("small.png" in s for s in said)
    assert evaluate(pairs, 4, lambda lr: np.repeat(np.repeat(lr, 4, 0), 4, 1)).images == 1
    (tmp_path / "ok.png").unlink()
    with pytest.raises(InputError, match="no images large enough"):
        load_eval_set(tmp_path, 4)


def test_bench_outscale_scores_the_resized_output_at_that_factor(tmp_path, tiny_ckpt):
    """`bench --outscale 4` of a x2 model: LR images downscaled by 4, the model's x2 output resized to x4
    (Lanczos, as `run --outscale` does), scored with a border of 4; bicubic at x4 beside it."""
    from sr_deploy.metrics import make_lr, mod_crop, y_psnr_ssim
    from sr_deploy.runtime.select import make_runner, resolve_model

    data = tmp_path / "set"
    data.mkdir()
    hrs = [pattern_image(64, 72, 3, seed=i) for i in range(2)]
    for i, hr in enumerate(hrs):
        cv2.imwrite(str(data / f"{i}.png"), hr[..., ::-1])
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_ckpt), "--data", str(data), "--no-speed",
                                 "--backends", "onnxruntime", "--precisions", "fp32", "--outscale", "4",
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = {q["method"]: q for q in json.loads(out.read_text())["quality"]}
    assert rows["model"]["scale"] == rows["bicubic"]["scale"] == 4
    runner, _ = make_runner(resolve_model(str(tiny_ckpt)), "onnxruntime", "fp32")
    want = []
    with runner:
        for hr in hrs:
            hr = mod_crop(hr, 4)
            lr = make_lr(hr, 4)
            y = runner.infer((lr.astype(np.float32) / 255).transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
            y = np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)
            want.append(y_psnr_ssim(cv2.resize(y, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_LANCZOS4), hr, 4)[0])
    assert rows["model"]["psnr_y"] == pytest.approx(np.mean(want), abs=1e-6)
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_ckpt), "--outscale", "0", "--no-speed"])
    assert r.exit_code != 0 and r.output.startswith("error: --outscale must be at least 1"), r.output


def test_speed_table_has_psnr_columns_only_with_quality():
    from sr_deploy.bench.run import BenchResult, markdown

    row = {"model": "m", "backend": "onnxruntime", "precision": "fp32", "input": "32x32", "batch": 1,
           "latency_ms_p50": 2.0, "latency_ms_p95": 2.5, "fps": 500.0, "mpix_per_s": 0.5, "gflops": 1.0,
           "peak_mem_mb": 100.0}
    q = {"dataset": "set", "model": "m", "method": "m", "backend": "onnxruntime", "precision": "fp32", "scale": 4,
         "psnr_y": 30.1234, "ssim_y": 0.9, "detail": 0.5, "images": 2}
    speed_only = [l for l in markdown(BenchResult(machine={}, speed=[row])).splitlines() if l.startswith("| m |")]
    assert speed_only == ["| m | onnxruntime | fp32 | 32x32 | 1 | 2.0 | 2.5 | 500.00 | 0.50 | 1.0 | 100 | 1.00 |"]
    both = markdown(BenchResult(machine={}, speed=[row], quality=[q])).splitlines()
    header = next(l for l in both if l.startswith("| model | backend |"))
    assert header.endswith("| PSNR-Y set | ΔPSNR vs fp32 | x ORT fp32 |")
    assert "| m | onnxruntime | fp32 | 32x32 | 1 | 2.0 | 2.5 | 500.00 | 0.50 | 1.0 | 100 | 30.123 | 0.000 | 1.00 |" in both
