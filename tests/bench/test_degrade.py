"""bench --degrade: quality scored on degraded inputs (second order, or one lighter pass), one seeded draw per image."""

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import InputError
from sr_deploy.metrics import make_lr
from sr_deploy.quality import HELD_OUT_SEED, load_eval_set, lr_maker
from tests.conftest import pattern_image


def test_a_seed_names_one_draw_per_image():
    hr = pattern_image(96, 128)
    assert lr_maker("bicubic") == ("bicubic", None) and lr_maker(None) == ("bicubic", None)
    label, make = lr_maker("real:5")
    assert label == "real:5"
    first = make(hr, 4, 0)
    assert first.shape == (24, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, make(hr, 4, 0))  # the same on every run
    assert not np.array_equal(first, make(hr, 4, 1))  # each image its own draw
    assert not np.array_equal(first, lr_maker("real:6")[1](hr, 4, 0))
    assert not np.array_equal(first, make_lr(hr, 4))
    default_label, default = lr_maker("real")
    assert default_label == f"real:{HELD_OUT_SEED}"
    assert np.array_equal(default(hr, 4, 0), lr_maker(f"real:{HELD_OUT_SEED}")[1](hr, 4, 0))


def test_degraded_is_the_one_pass_mix_with_draws_of_its_own():
    from sr_deploy.degradations import Degradation

    hr = pattern_image(96, 128)
    label, make = lr_maker("degraded:5")
    assert label == "degraded:5" and lr_maker("degraded")[0] == f"degraded:{HELD_OUT_SEED}"
    for i in range(4):  # the one-pass mix's draw for [SEED, image index], not the second order's
        assert np.array_equal(make(hr, 4, i), Degradation().apply(hr, 4, np.random.default_rng([5, i])))
        assert not np.array_equal(make(hr, 4, i), lr_maker("real:5")[1](hr, 4, i))
    assert np.array_equal(make(hr, 4, 0), make(hr, 4, 0))


@pytest.mark.parametrize("spec", ["jpeg", "real:x", "real:-1", "real:1.5", "real:٣", "bicubic:2", "degraded:x",
                                  "mild:3"])
def test_a_degradation_that_does_not_parse_is_refused(spec):
    with pytest.raises(InputError, match="--degrade must be"):
        lr_maker(spec)


@pytest.fixture
def hr_folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"p{i}.png"), pattern_image(64, 80, seed=i))
    return d


def _bench(*args):
    r = CliRunner().invoke(app, ["bench", "--no-speed", "--backends", "torch", "--precisions", "fp32", *map(str, args)])
    return r.exit_code, r.output


def test_bench_scores_the_degraded_set_under_its_own_name(tiny_ckpt, hr_folder, tmp_path):
    code, clean = _bench("--model", tiny_ckpt, "--data", hr_folder)
    assert code == 0, clean
    code, real = _bench("--model", tiny_ckpt, "--data", hr_folder, "--degrade", "real:3", "--montage",
                        tmp_path / "real.png")
    assert code == 0, real

    def psnr(out, dataset, method):
        row = next(line for line in out.splitlines() if line.startswith(f"| {dataset} | {method} |"))
        return float(row.split("|")[6])

    # the degraded rows: labelled with their draw, scored on the seeded LR (the bicubic baseline as well)
    pairs = load_eval_set(hr_folder, 2, make_lr=lr_maker("real:3")[1])
    from sr_deploy.quality import bicubic_upscale, evaluate

    expected = evaluate(pairs, 2, lambda lr: bicubic_upscale(lr, 2)).psnr_y
    assert psnr(real, "photos (real:3)", "bicubic") == pytest.approx(expected, abs=0.0015)
    assert abs(psnr(real, "photos (real:3)", "bicubic") - psnr(clean, "photos", "bicubic")) > 0.5
    assert "| photos |" not in real
    # the montage shows the same degraded input: its bicubic tile differs from the clean one's
    code, out = _bench("--model", tiny_ckpt, "--data", hr_folder, "--montage", tmp_path / "clean.png")
    assert code == 0, out
    a, b = cv2.imread(str(tmp_path / "real.png")), cv2.imread(str(tmp_path / "clean.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_bench_refuses_a_degradation_it_cannot_read_before_running(tiny_ckpt, hr_folder, tmp_path):
    code, out = _bench("--model", tiny_ckpt, "--data", hr_folder, "--degrade", "noise", "--montage", tmp_path / "m.png")
    assert code != 0 and out.startswith("error: --degrade must be") and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "m.png").exists()


def test_a_montage_in_webp_is_lossless_and_a_format_it_cannot_write_is_refused_first(tiny_ckpt, hr_folder, tmp_path):
    for name in ("m.png", "m.webp"):
        code, out = _bench("--model", tiny_ckpt, "--data", hr_folder, "--montage", tmp_path / name)
        assert code == 0, out
    png, webp = cv2.imread(str(tmp_path / "m.png")), cv2.imread(str(tmp_path / "m.webp"))
    assert (tmp_path / "m.webp").read_bytes()[8:12] == b"WEBP" and np.array_equal(png, webp)  # pixel for pixel
    code, out = _bench("--model", tiny_ckpt, "--data", hr_folder, "--montage", tmp_path / "m.jpg")
    assert out == f"error: --montage {tmp_path / 'm.jpg'}: name a .png or .webp file (both lossless)\n", out
    assert code != 0 and not (tmp_path / "m.jpg").exists()
