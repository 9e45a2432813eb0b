import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sr_deploy.errors import InputError, ModelError
from sr_deploy.models.checkpoint import read_checkpoint, save_checkpoint
from sr_deploy.models.vgg import VGGFeatures
from sr_deploy.train.config import TrainConfig, load_recipe
from sr_deploy.train.data import CropDataset, StepSampler
from sr_deploy.train.trainer import train
from tests.conftest import pattern_image, tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hr")
    (d / "nested").mkdir()
    for i in range(4):
        cv2.imwrite(str(d / ("nested" if i % 2 else ".") / f"img{i}.png"), pattern_image(48, 56, 3, seed=i))
    cv2.imwrite(str(d / "tiny.png"), pattern_image(10, 10, 3))  # smaller than a crop: skipped
    return d


def _cfg(hr_dir, out, **kw):
    base = dict(data=(str(hr_dir),), val=str(hr_dir), out=str(out), scale=2, num_blocks=2, channels=8,
                hr_patch=24, batch_size=2, steps=2, lr=1e-3, val_every=2, ckpt_every=2, log_every=1,
                num_workers=0, channels_last=False, bf16=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return read_checkpoint(path)["state_dict"]


def test_srresnet_step_changes_weights(hr_dir, tmp_path):
    # start from known weights, so "changed" means trained (a fresh model's random init differs anyway);
    # parameters only: BatchNorm running statistics move in train mode even with a zero learning rate
    init = save_checkpoint(tmp_path / "init.pt", tiny_model(2))
    cfg = _cfg(hr_dir, tmp_path / "r", ema_decay=0.9, init=str(init))
    train(cfg, quiet=True)
    before = _weights(init)
    after = _weights(tmp_path / "r" / "last.pt")
    params = {n for n, _ in tiny_model(2).named_parameters()}
    changed = [k for k in params if not torch.equal(after[k], before[k])]
    assert len(changed) == len(params), f"unchanged after 2 steps: {sorted(params - set(changed))}"
    rows = (tmp_path / "r" / "log.csv").read_text().splitlines()
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert np.isfinite(float(last["loss_g"])) and np.isfinite(float(last["val_psnr"]))
    assert (tmp_path / "r" / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_bn_trains_the_deployed_network_and_keeps_the_statistics(hr_dir, tmp_path, freeze):
    """freeze_bn: BatchNorm's running statistics stay as they were through training and after a
    validation (which puts the network back in training mode), while every parameter, BN's scale and
    shift included, still learns; without it the statistics follow the batches."""
    init = save_checkpoint(tmp_path / "init.pt", tiny_model(2))
    cfg = _cfg(hr_dir, tmp_path / "r", init=str(init), steps=4, val_every=2, ckpt_every=4, ema_decay=0.9,
               freeze_bn=freeze)
    train(cfg, quiet=True)
    before, ck = _weights(init), read_checkpoint(tmp_path / "r" / "last.pt")
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats
    for state in (ck["state_dict"], {k.removeprefix("module."): v for k, v in ck["ema_state_dict"].items()}):
        # (the EMA's average of a constant rounds in the last bit: "moved" is beyond that)
        moved = [k for k in stats if not torch.allclose(state[k], before[k], rtol=1e-6, atol=1e-7)]
        assert moved == ([] if freeze else stats)
    params = [n for n, _ in tiny_model(2).named_parameters()]
    assert all(not torch.equal(ck["state_dict"][k], before[k]) for k in params)


def test_a_generator_grows_from_a_checkpoint_with_fewer_blocks(hr_dir, tmp_path):
    """--blocks above the init checkpoint's: its blocks first, the extra ones as identities, so the grown
    network computes what the checkpoint did; then it trains. Shrinking or another width is refused."""
    from sr_deploy.models.checkpoint import build_generator
    from sr_deploy.train.trainer import _grown

    small = tiny_model(2)
    init = save_checkpoint(tmp_path / "init.pt", small)
    big = build_generator({**read_checkpoint(init)["arch"], "num_blocks": 4})
    big.load_state_dict(_grown(read_checkpoint(init), big, False))
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.allclose(big.eval()(x), small.eval()(x), atol=1e-6)
    sd = big.state_dict()
    for i in (2, 3):  # the extra blocks: a zero last BN (so identities), the rest trainable as initialised
        assert not sd[f"trunk.{i}.body.4.weight"].any() and not sd[f"trunk.{i}.body.4.bias"].any()
        assert sd[f"trunk.{i}.body.0.weight"].abs().sum() > 0
    train(_cfg(hr_dir, tmp_path / "r", init=str(init), num_blocks=4), quiet=True)
    ck = read_checkpoint(tmp_path / "r" / "last.pt")
    assert ck["arch"]["num_blocks"] == 4 and ck["step"] == 2
    assert not torch.equal(ck["state_dict"]["trunk.3.body.4.weight"], torch.zeros(8))  # the new blocks learn
    for kw in ({"num_blocks": 1}, {"channels": 16}, {"num_blocks": 4, "channels": 16}):
        with pytest.raises(ModelError, match="init checkpoint architecture"):
            train(_cfg(hr_dir, tmp_path / "no", init=str(init), **kw), quiet=True)


def _vgg_file(path, *, wrong=False):
    feats = VGGFeatures("vgg54").features if not wrong else torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    state = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
    torch.save(state, path)
    return path


@pytest.mark.parametrize("content", ["mse", "vgg22"])
def test_srgan_step(hr_dir, tmp_path, content):
    init = save_checkpoint(tmp_path / "init.pt", tiny_model(2))
    vgg = _vgg_file(tmp_path / "vgg19.pth") if content != "mse" else None
    cfg = _cfg(hr_dir, tmp_path / "g", recipe="srgan", init=str(init), content_loss=content,
               vgg_weights=str(vgg) if vgg else None, steps=1, val_every=1, ckpt_every=1)
    train(cfg, quiet=True)
    payload = read_checkpoint(tmp_path / "g" / "last.pt")
    before = _weights(init)
    assert any(not torch.equal(payload["state_dict"][k], before[k]) for k in before if before[k].dtype.is_floating_point)
    assert "d_state_dict" in payload
    rows = (tmp_path / "g" / "log.csv").read_text().splitlines()
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    for key in ("loss_g", "loss_d", "loss_adv", "loss_content"):
        assert np.isfinite(float(last[key])), key


def test_vgg_loader(tmp_path):
    good = _vgg_file(tmp_path / "good.pth")
    v = VGGFeatures("vgg54").load_torchvision(good)
    assert v(torch.rand(1, 3, 32, 32)).shape == (1, 512, 2, 2)
    with pytest.raises(ModelError, match="not a torchvision VGG19"):
        VGGFeatures("vgg54").load_torchvision(_vgg_file(tmp_path / "wrong.pth", wrong=True))


def test_missing_vgg_names_the_flag(hr_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    init = save_checkpoint(tmp_path / "init.pt", tiny_model(2))
    with pytest.raises(InputError, match="--vgg-weights"):
        train(_cfg(hr_dir, tmp_path / "x", recipe="srgan", init=str(init), content_loss="vgg54"), quiet=True)
    with pytest.raises(InputError, match="not found"):
        train(_cfg(hr_dir, tmp_path / "x", recipe="srgan", init=str(init), vgg_weights=str(tmp_path / "no.pth")), quiet=True)
    assert not (tmp_path / "x").exists(), "no work started"


def test_resume_same_step_same_batch(hr_dir, tmp_path):
    full = _cfg(hr_dir, tmp_path / "full", steps=4, ckpt_every=2, val_every=100)
    train(full, quiet=True)
    half = replace(full, out=str(tmp_path / "half"), stop_at=2)  # as if interrupted after step 2
    train(half, quiet=True)
    resumed = replace(full, out=str(tmp_path / "half"), resume=str(tmp_path / "half" / "last.pt"))
    train(resumed, quiet=True)
    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(tmp_path / "half" / "last.pt")
    assert a["step"] == b["step"] == 4
    for k in a["state_dict"]:
        assert torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6), k


def test_batches_depend_only_on_step(hr_dir):
    ds = CropDataset([hr_dir], scale=2, hr_patch=24, seed=3)
    assert ds.skipped == 1
    idx = list(StepSampler(batch_size=2, start_step=5, total_steps=6))[0]
    assert idx == list(StepSampler(batch_size=2, start_step=0, total_steps=6))[5]
    lr, hr = ds[idx[0]]
    lr2, hr2 = CropDataset([hr_dir], scale=2, hr_patch=24, seed=3)[idx[0]]
    assert lr.shape == (3, 12, 12) and hr.shape == (3, 24, 24)
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)


def test_scale_augmentation_crops_a_downscaled_image(tmp_path):
    # A ramp rising by one level per pixel: a crop of the image itself keeps that slope; a crop of the image
    # downscaled by f in [0.6, 1] rises by 1/f per pixel (flips and rotations only change the direction).
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (64, 1, 3))
    cv2.imwrite(str(tmp_path / "ramp.png"), ramp)

    def slopes(**kw):
        ds = CropDataset([tmp_path], scale=2, hr_patch=24, seed=1, **kw)
        out = []
        for i in range(40):
            hr = ds[i][1][0].numpy() * 255.0
            assert hr.shape == (24, 24)
            inner = hr[4:-4, 4:-4]
            out.append(max(np.abs(np.diff(inner, axis=0)).mean(), np.abs(np.diff(inner, axis=1)).mean()))
        return np.array(out)

    plain, aug = slopes(), slopes(scale_aug=0.6)
    assert np.allclose(plain, 1.0, atol=0.02)
    assert aug.min() > 0.97 and aug.max() < 1 / 0.6 + 0.05
    assert (aug > 1.1).mean() > 0.5, aug
    ds = CropDataset([tmp_path], scale=2, hr_patch=24, seed=1, scale_aug=0.6)
    assert torch.equal(ds[7][1], ds[7][1]), "a sample is a function of (seed, index)"
    with pytest.raises(InputError, match="scale_aug"):
        TrainConfig(scale_aug=0.1)


@pytest.mark.parametrize("kw,says", [({"batch_size": 0}, "batch_size must be at least 1"),
                                     ({"steps": 0}, "steps must be at least 1"),
                                     ({"lr": -1.0}, "lr must be positive"),
                                     ({"hr_patch": 30}, "hr_patch 30 is not a multiple of the scale 4"),
                                     ({"ema_decay": 1.0}, "ema_decay must be in"),
                                     ({"val_every": 0}, "val_every must be at least 1"),
                                     ({"clean_prob": 1.5}, "clean_prob must be between 0 and 1"),
                                     ({"degradation": "real", "clean_prob": 0.6, "mild_prob": 0.5},
                                      r"mild_prob must be between 0 and 1 - clean_prob \(0.4\), got 0.5"),
                                     ({"degradation": "real", "mild_prob": -0.1}, "mild_prob must be between"),
                                     ({"mild_prob": 0.2}, "mild_prob mixes lighter samples into degradation"),
                                     ({"val_degradation": "jpeg"}, "val_degradation must be")])
def test_numbers_out_of_range_are_refused(kw, says):
    with pytest.raises(InputError, match=says):
        TrainConfig(**kw)


def test_cli_train_out_of_range_is_one_line_and_makes_no_folder(tmp_path):
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "0"])
    assert r.exit_code != 0 and r.output == "error: steps must be at least 1, got 0\n", r.output
    assert not (tmp_path / "run").exists()


def test_bad_inputs(hr_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        train(_cfg(empty, tmp_path / "o"), quiet=True)
    small = tmp_path / "small"
    small.mkdir()
    cv2.imwrite(str(small / "a.png"), pattern_image(8, 8, 3))
    with pytest.raises(InputError, match="smaller than"):
        train(_cfg(small, tmp_path / "o"), quiet=True)
    other = save_checkpoint(tmp_path / "x4.pt", tiny_model(4))
    with pytest.raises(ModelError, match="another model"):
        train(_cfg(hr_dir, tmp_path / "o", resume=str(other)), quiet=True)


def test_shipped_recipes_parse_and_train_help_names_each():
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    names = sorted(p.stem for p in (REPO / "train").glob("*.toml"))
    assert {"srresnet_x4", "srgan_x4", "light_x4", "srresnet_x4_real"} <= set(names)
    for name in names:
        cfg = load_recipe(name, REPO / "train")
        assert cfg.scale == 4
    assert load_recipe("srresnet_x4", REPO / "train").num_blocks == 16
    # the help is read by people choosing a recipe: every shipped one is named there, and every degradation
    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    help_text = " ".join(out.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())  # rich's frame, its wrapping undone
    for name in names:
        assert name in help_text, name
    for kind in ("bicubic", "degraded", "real"):
        assert f"{kind} (" in help_text, kind


def test_ddp_two_cpu_processes(hr_dir, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "sr_deploy.cli", "train", "--data", str(hr_dir), "--val", str(hr_dir), "--scale", "2",
           "--steps", "2", "--patch", "24", "--blocks", "1", "--channels", "8", "--batch-size", "2", "--workers", "0",
           "--no-bf16", "--out", str(out), "--quiet", "--val-every", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    # a rank's own last words come before torchrun's long report of its end: both kept
    assert res.returncode == 0, res.stderr[:4000] + "\n[...]\n" + res.stderr[-1500:]
    assert read_checkpoint(out / "last.pt")["step"] == 2


def test_warm_start_from_weights_continues_step(hr_dir, tmp_path):
    first = _cfg(hr_dir, tmp_path / "a", steps=6, stop_at=2, val_every=100)
    train(first, quiet=True)
    weights = save_checkpoint(tmp_path / "shipped.safetensors", read_and_build(tmp_path / "a" / "last.pt"))
    cont = replace(first, out=str(tmp_path / "b"), init=str(weights), start_step=2, stop_at=0)
    train(cont, quiet=True)
    payload = read_checkpoint(tmp_path / "b" / "last.pt")
    assert payload["step"] == 6
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]
    assert int(rows[0].split(",")[0]) == 3, "the log continues at step 3"


def read_and_build(path):
    from sr_deploy.models.checkpoint import load_checkpoint

    return load_checkpoint(path)[0]


def test_cli_flags_reach_the_config(hr_dir, tmp_path):
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(hr_dir), "--scale", "2", "--blocks", "2", "--channels", "8",
                                 "--patch", "24", "--batch-size", "2", "--steps", "1", "--lr", "3e-3", "--workers", "0",
                                 "--pixel-loss", "mse", "--ema-decay", "0.9", "--scale-aug", "0.7",
                                 "--no-bf16", "--freeze-bn", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    cfg = read_checkpoint(out / "last.pt")["config"]
    assert (cfg["lr"], cfg["steps"], cfg["num_blocks"], cfg["hr_patch"]) == (3e-3, 1, 2, 24)
    assert (cfg["pixel_loss"], cfg["ema_decay"], cfg["scale_aug"], cfg["freeze_bn"]) == ("mse", 0.9, 0.7, True)


def test_best_means_psnr_for_srresnet_and_hr_like_detail_for_srgan():
    from sr_deploy.quality import QualityResult
    from sr_deploy.train.trainer import val_score

    blurry = QualityResult(psnr_y=30.0, ssim_y=0.86, images=5, detail=0.45)
    textured = QualityResult(psnr_y=29.1, ssim_y=0.81, images=5, detail=0.95)
    noisy = QualityResult(psnr_y=28.0, ssim_y=0.79, images=5, detail=1.25)
    assert val_score("srresnet", blurry) > val_score("srresnet", textured) > val_score("srresnet", noisy)
    assert val_score("srgan", textured) > val_score("srgan", noisy) > val_score("srgan", blurry)


def test_resumed_log_gains_new_columns_and_keeps_rows(tmp_path):
    import csv

    from sr_deploy.train.trainer import CSV_FIELDS, _open_log

    path = tmp_path / "log.csv"
    old = [f for f in CSV_FIELDS if f != "val_detail"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, old)
        w.writeheader()
        w.writerow({k: "1" for k in old})
    _open_log(path, keep=True)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_FIELDS and len(rows) == 1 and rows[0]["step"] == "1" and rows[0]["val_detail"] == ""
    _open_log(path, keep=False)  # a new run starts an empty log
    assert path.read_text().strip() == ",".join(CSV_FIELDS)


def test_bf16_autocast_only_where_native(monkeypatch):
    import torch

    from sr_deploy import machine
    from sr_deploy.train.trainer import bf16_pays

    cpu = torch.device("cpu")
    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: False)
    assert not bf16_pays(True, cpu) and bf16_pays(True, torch.device("cuda", 0)) and not bf16_pays(False, cpu)
    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: True)
    assert bf16_pays(True, cpu)


def _cli_train(hr_dir, out, *extra):
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    return CliRunner().invoke(app, ["train", "--data", str(hr_dir), "--scale", "2", "--blocks", "2", "--channels", "8",
                                    "--patch", "24", "--batch-size", "2", "--workers", "0", "--no-bf16",
                                    "--val-every", "100", "--out", str(out), "--quiet", *extra])


def test_resume_keeps_the_checkpoint_schedule(hr_dir, tmp_path):
    # interrupted at step 2 of a 6-step cosine from lr 3e-3; `--resume` alone must finish that schedule,
    # not re-plan the recipe's own (100k steps at peak lr)
    r = _cli_train(hr_dir, tmp_path / "a", "--steps", "6", "--lr", "3e-3", "--stop-at", "2")
    assert r.exit_code == 0, r.output
    full = _cli_train(hr_dir, tmp_path / "full", "--steps", "6", "--lr", "3e-3")
    assert full.exit_code == 0, full.output
    # (--stop-at 6 only bounds the test's time if the schedule were lost)
    r = _cli_train(hr_dir, tmp_path / "a", "--resume", str(tmp_path / "a" / "last.pt"), "--stop-at", "6")
    assert r.exit_code == 0, r.output
    a, b = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "full" / "last.pt")
    assert a["step"] == 6 and (a["config"]["steps"], a["config"]["lr"]) == (6, 3e-3)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(b["optimizer"]["param_groups"][0]["lr"])
    # a --steps not beyond the checkpoint says so, one line, non-zero
    for steps in ("4", "6"):
        r = _cli_train(hr_dir, tmp_path / "a", "--resume", str(tmp_path / "a" / "last.pt"), "--steps", steps)
        assert r.exit_code != 0 and r.output.strip().startswith("error:") and "step 6" in r.output, r.output
        assert "its schedule at 6" in r.output, r.output


def test_resume_continues_the_run_as_it_was_trained(hr_dir, tmp_path):
    # a run started with a loss and a scale augmentation its recipe does not have, its recipe edited since:
    # `--resume` goes on with the checkpoint's settings (an MSE polish once went on in the recipe's L1); what
    # the command line names again wins; the first run's --stop-at is not carried over
    recipe = tmp_path / "r.toml"
    recipe.write_text('recipe = "srresnet"\npixel_loss = "l1"\nema_decay = 0.5\nsteps = 6\nlr = 1e-3\n')
    r = _cli_train(hr_dir, tmp_path / "a", "--recipe", str(recipe), "--pixel-loss", "mse", "--scale-aug", "0.7",
                   "--stop-at", "2")
    assert r.exit_code == 0, r.output
    resumed = load_recipe(recipe, resume=str(tmp_path / "a" / "last.pt"), data=(str(hr_dir),))
    assert resumed.betas == (0.9, 0.999) and resumed.data == (str(hr_dir),)  # tuples, as a recipe gives them
    recipe.write_text('recipe = "srresnet"\npixel_loss = "l1"\nema_decay = 0.9\nsteps = 6\nlr = 1e-3\n')
    r = _cli_train(hr_dir, tmp_path / "a", "--recipe", str(recipe), "--resume", str(tmp_path / "a" / "last.pt"),
                   "--freeze-bn")
    assert r.exit_code == 0, r.output
    payload = read_checkpoint(tmp_path / "a" / "last.pt")
    cfg = payload["config"]
    assert payload["step"] == 6 and cfg["stop_at"] == 0
    assert (cfg["pixel_loss"], cfg["scale_aug"], cfg["ema_decay"]) == ("mse", 0.7, 0.5)
    assert cfg["freeze_bn"] is True and (cfg["steps"], cfg["lr"]) == (6, 1e-3)
    # a checkpoint of the other recipe kind, or one without a run in it: one line each, nothing trained
    r = _cli_train(hr_dir, tmp_path / "a", "--recipe", "srgan", "--resume", str(tmp_path / "a" / "last.pt"))
    assert r.exit_code != 0 and r.output.strip().startswith("error:") and "srresnet recipe, not srgan" in r.output
    weights = save_checkpoint(tmp_path / "w.safetensors", read_and_build(tmp_path / "a" / "last.pt"))
    r = _cli_train(hr_dir, tmp_path / "b", "--resume", str(weights))
    assert r.exit_code != 0 and r.output.strip().startswith("error:") and "use it as --init" in r.output, r.output
    assert not (tmp_path / "b" / "last.pt").exists()


def test_bad_recipes_are_one_line_errors(hr_dir, tmp_path):
    bad = {"broken.toml": 'recipe = "srresnet"\nsteps = \n', "typo.toml": 'recipe = "srresnet"\nstepz = 5\n'}
    said = {"broken.toml": "not a valid TOML recipe", "typo.toml": "unknown recipe keys stepz"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        r = _cli_train(hr_dir, tmp_path / "o", "--recipe", str(tmp_path / name))
        assert r.exit_code != 0 and r.output.strip().startswith("error:") and said[name] in r.output, r.output
    r = _cli_train(hr_dir, tmp_path / "o", "--recipe", "srresnet_x9")
    assert r.exit_code != 0 and "recipe 'srresnet_x9' not found" in r.output and "srresnet_x4_real" in r.output
    assert not (tmp_path / "o").exists()
    (tmp_path / "b.toml").write_text('recipe = "srresnet"\nbetas = [0.5, 0.9]\n')
    assert load_recipe(tmp_path / "b.toml").betas == (0.5, 0.9)


def test_resumed_log_drops_rows_of_a_lost_continuation(tmp_path):
    import csv

    from sr_deploy.train.trainer import CSV_FIELDS, _open_log

    path = tmp_path / "log.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        w.writerows({"step": str(s), "loss_g": "0.1"} for s in (50, 100, 150))
    _open_log(path, keep=True, upto=100)  # the checkpoint is at step 100; step 150 was never saved
    with open(path, newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["50", "100"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_saves_the_step_it_stopped_at(hr_dir, tmp_path, sig):
    # what a scheduler's preemption, `kill -- -PGID` or Ctrl-C in a terminal do: every process of the run,
    # data loader workers included, gets the signal at once
    import signal
    import time

    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "sr_deploy.cli", "train", "--data", str(hr_dir), "--scale", "2",
                          "--blocks", "2", "--channels", "8", "--patch", "24", "--batch-size", "2", "--workers", "1",
                          "--no-bf16", "--val-every", "100000", "--steps", "100000", "--out", str(out), "--quiet"],
                         cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # a shell without job control starts background jobs with SIGINT ignored, and the run
                         # would inherit that: give it the disposition a terminal gives
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log, deadline = out / "log.csv", time.monotonic() + 240
    try:
        while (not log.exists() or len(log.read_text().splitlines()) < 3) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()
        os.killpg(p.pid, getattr(signal, sig))
        _, err = p.communicate(timeout=120)
    finally:  # a run that did not stop is not left training in the background
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == (143 if sig == "SIGTERM" else 130) and "Traceback" not in err and err.strip().endswith("interrupted"), err
    logged = int(log.read_text().splitlines()[-1].split(",")[0])
    assert read_checkpoint(out / "last.pt")["step"] >= logged >= 2  # the step it stopped at, not a periodic one
    for _ in range(100):  # and no worker is left behind
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a data loader worker outlived the run")


def test_a_run_with_loader_workers_exits_when_it_is_done(hr_dir, tmp_path):
    """The workers ignore SIGTERM (so a signal to the group leaves the saving to the main process); the
    trainer must stop them itself, or the interpreter's exit waits for them forever. The collector is off
    here, as it may simply not run before exit in a long run (a 500-step run hung so)."""
    import signal

    out = tmp_path / "run"
    args = ["train", "--data", str(hr_dir), "--scale", "2", "--blocks", "1", "--channels", "8", "--patch", "24",
            "--batch-size", "2", "--workers", "1", "--no-bf16", "--steps", "6", "--stop-at", "3", "--out", str(out),
            "--quiet"]
    code = f"import gc, sys; gc.disable(); sys.argv = ['srdeploy'] + {args!r}; from sr_deploy.cli import main; main()"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("the run finished its steps but did not exit (its data loader worker was left running)")
    assert p.returncode == 0, err
    assert read_checkpoint(out / "last.pt")["step"] == 3


def test_clean_prob_reaches_the_second_order_degradation_and_mixed_validation_pools_both(hr_dir, tmp_path, monkeypatch):
    from sr_deploy import degradations as data
    from sr_deploy.train import trainer

    assert data.degradation_for("real", 0.5).clean_prob == 0.5
    assert data.degradation_for("real", 0.5, 0.25).mild_prob == 0.25
    assert data.degradation_for("real", 0.5).mild_prob == 0.0  # no lighter share unless asked
    assert data.degradation_for("bicubic") is None and type(data.degradation_for("degraded")) is data.Degradation
    with pytest.raises(ValueError, match="unknown evaluation degradation 'jpeg'"):
        data.degraded_eval_lr(pattern_image(48, 48, 3, seed=2), 4, 0, kind="jpeg")
    hr = pattern_image(48, 48, 3, seed=2)
    clean = data.make_lr(hr, 4)
    always = data.degradation_for("real", 1.0).apply(hr, 4, np.random.default_rng(0))
    never = data.degradation_for("real", 0.0).apply(hr, 4, np.random.default_rng(0))
    assert np.array_equal(always, clean) and not np.array_equal(never, clean)

    seen = []
    real_evaluate = trainer.evaluate

    def spy(pairs, scale, fn):
        seen.append(pairs)
        return real_evaluate(pairs, scale, fn)

    monkeypatch.setattr(trainer, "evaluate", spy)
    for kind, n in (("bicubic", 4), ("real", 4), ("mixed", 8), ("all", 12)):
        seen.clear()
        train(_cfg(hr_dir, tmp_path / kind, degradation="real", clean_prob=0.5, val_degradation=kind), quiet=True)
        assert seen and {len(p) for p in seen} == {n}, (kind, [len(p) for p in seen])
    # all: each image clean, second-order degraded and one-pass degraded (whose steps each come only sometimes,
    # so an image may draw none of them)
    pairs = seen[0]
    clean_draws = 0
    for i in range(4):
        first, second, third = (pairs[i + 4 * k].lr for k in range(3))
        assert np.array_equal(third, data.degraded_eval_lr(pairs[i].hr, 2, i, kind="degraded"))
        assert np.array_equal(second, data.degraded_eval_lr(pairs[i].hr, 2, i))
        assert not np.array_equal(second, third) and not np.array_equal(first, second)
        clean_draws += np.array_equal(first, third)
    assert clean_draws < 4
    made = []
    monkeypatch.setattr(trainer, "degradation_for", lambda *a: made.append(a) or data.degradation_for(*a))
    train(_cfg(hr_dir, tmp_path / "mild", degradation="real", clean_prob=0.3, mild_prob=0.2), quiet=True)
    assert made == [("real", 0.3, 0.2)]


def test_mild_prob_takes_that_share_from_the_second_order_after_the_clean_one(monkeypatch):
    """One draw decides each sample: below clean_prob clean, then mild_prob of the one-pass mix, the rest second
    order; with mild_prob 0 a sample is what it was before mild_prob existed (the held-out draws keep their figures)."""
    from sr_deploy import degradations as data

    hr = pattern_image(64, 64, 3, seed=4)
    mild_calls = []
    one_pass = data.Degradation.apply

    def counted(self, img, scale, rng):
        mild_calls.append(1)
        return one_pass(self, img, scale, rng)

    monkeypatch.setattr(data.Degradation, "apply", counted)
    both = data.SecondOrderDegradation(clean_prob=0.3, mild_prob=0.3)
    without = data.SecondOrderDegradation(clean_prob=0.3)
    kinds = {"clean": 0, "mild": 0, "second": 0}
    for i in range(60):
        u = np.random.default_rng(i).random()
        before = len(mild_calls)
        out = both.apply(hr, 4, np.random.default_rng(i))
        mild = len(mild_calls) > before
        if u < 0.3:
            assert np.array_equal(out, data.make_lr(hr, 4)) and not mild, i
            kinds["clean"] += 1
        elif u < 0.6:
            rng = np.random.default_rng(i)
            rng.random()
            assert mild and np.array_equal(out, one_pass(data.Degradation(), hr, 4, rng)), i
            kinds["mild"] += 1
        else:
            assert not mild and np.array_equal(out, without.apply(hr, 4, np.random.default_rng(i))), i
            kinds["second"] += 1
    assert min(kinds.values()) >= 10, kinds
    assert len(mild_calls) == kinds["mild"]
