from pathlib import Path
import json

import cv2
import numpy as np
import pytest

from sr_deploy.precision.convert import make_precision_onnx
from sr_deploy.runtime import select
from sr_deploy.runtime.openvino_runner import OpenVINORunner
from sr_deploy.runtime.select import make_runner, resolve_model
from tests.conftest import pattern_image


@pytest.fixture()
def model_dir(tiny_onnx, tmp_path):
    dst = tmp_path / "m.onnx"
    dst.write_bytes(tiny_onnx.read_bytes())
    return dst


def test_auto_prefers_gated_int8_on_openvino(model_dir, tmp_path, monkeypatch):
    if not OpenVINORunner.available():
        pytest.skip("openvino not installed")
    from sr_deploy import machine
    from sr_deploy.runtime.openvino_runner import cpu_supports_bf16

    monkeypatch.setattr(machine, "cpu_has_vnni", lambda: True)  # the fixed rule's INT8 case, on any CPU

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.png"), pattern_image(64, 64, 3, seed=i))
    no_int8 = "bf16" if cpu_supports_bf16() else "fp32"
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert (runner.backend, runner.precision) == ("openvino", no_int8) and "OpenVINO" in why
    make_precision_onnx(model_dir, "int8", calib=calib, calib_count=4, calib_size=16, budget_db=5.0)
    report = model_dir.with_name("m.int8.quality.json")
    data = json.loads(report.read_text())
    # the policy: a passed report faithful to the fp32 output (fidelity and 99.9th-percentile error set on
    # each side of the int8 limits); ΔPSNR vs HR alone no longer decides
    faithful = {**data, "passed": True, "fidelity_db": 40.5, "p999_levels": 12.0}
    report.write_text(json.dumps(faithful))
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert (runner.backend, runner.precision) == ("openvino", "int8") and "INT8" in why
    # a CPU without INT8 dot products: the unmeasured rule does not trust OpenVINO INT8 there
    monkeypatch.setattr(machine, "cpu_has_vnni", lambda: False)
    assert make_runner(resolve_model(str(model_dir)), "auto")[0].precision == no_int8
    monkeypatch.setattr(machine, "cpu_has_vnni", lambda: True)
    for unfaithful in ({"fidelity_db": 39.5}, {"p999_levels": 25.0}, {"fidelity_db": None}, {"passed": False}):
        report.write_text(json.dumps({**faithful, **unfaithful}))
        assert make_runner(resolve_model(str(model_dir)), "auto")[0].precision == no_int8, unfaithful
    # a report from before the fidelity gate (ΔPSNR vs HR only) is not trusted
    report.write_text(json.dumps({k: v for k, v in faithful.items() if k not in ("fidelity_db", "p999_levels")}))
    assert make_runner(resolve_model(str(model_dir)), "auto")[0].precision == no_int8
    report.write_text(json.dumps(faithful))
    # a variant given by path runs as given, even with a gated INT8 beside it
    fp16 = make_precision_onnx(model_dir, "fp16", min_fidelity_db=0, max_p999_levels=255).path
    runner, _ = make_runner(resolve_model(str(fp16)), "auto")
    assert Path(runner.path).name == "m.fp16.onnx" and runner.precision != "int8"


def test_auto_without_openvino_falls_back(model_dir, monkeypatch):
    monkeypatch.setattr(OpenVINORunner, "available", staticmethod(lambda: False))
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert runner.backend == "onnxruntime" and "not installed" in why


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_without_openvino_picks_torch_bf16_on_native_bf16_cpus(tiny_ckpt, monkeypatch, native_bf16):
    from sr_deploy import machine

    monkeypatch.setattr(OpenVINORunner, "available", staticmethod(lambda: False))
    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: native_bf16)
    runner, why = make_runner(resolve_model(str(tiny_ckpt)), "auto")
    expected = ("torch", "bf16") if native_bf16 else ("onnxruntime", "fp32")
    assert (runner.backend, runner.precision) == expected and "not installed" in why
    with runner:  # the choice runs: same output shape either way
        out = runner.infer(pattern_image(12, 10, 3, seed=1)[None].transpose(0, 3, 1, 2).astype("float32") / 255)
    assert out.shape == (1, 3, 24, 20)


def test_openvino_missing_is_a_clear_error(model_dir, monkeypatch):
    monkeypatch.setattr(OpenVINORunner, "available", staticmethod(lambda: False))
    from sr_deploy.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="openvino is not installed"):
        make_runner(resolve_model(str(model_dir)), "openvino")


def test_info_reports_auto_choice_and_never_times_the_candidates(monkeypatch):
    from typer.testing import CliRunner

    from sr_deploy.cli import app
    from sr_deploy.runtime import tune

    monkeypatch.setenv("SRDEPLOY_TUNE", "1")  # as a user has it: a run would time the candidates first
    monkeypatch.setattr(tune, "measure", lambda *a, **k: pytest.fail("info timed the candidates"))
    monkeypatch.setattr(tune, "cached_ranking", lambda source, background=False: (None, "not measured"))
    r = CliRunner().invoke(app, ["info"])
    assert r.exit_code == 0, r.output
    assert "backends:" in r.output and "auto:" in r.output and "GPU:" in r.output
    assert "not timed on this machine yet: the candidates are timed once the first run ends" in r.output
    assert select.available_backends()[0] == "torch"


def test_shipped_models_are_packaged_with_matching_cards():
    """Every packaged model has a model card whose hashes match the packaged weights (and the released
    ONNX where the repo holds it), with Set5 numbers; the default is srresnet_x4."""
    from sr_deploy.fsutil import sha256_file

    shipped = select.shipped_models()
    assert select.DEFAULT_MODEL in shipped
    repo_export = select.WEIGHTS_DIR.parents[1] / "export"
    for name, weights in shipped.items():
        card = json.loads(weights.with_suffix(".json").read_text())
        assert card["name"] == name and card["weights_sha256"] == sha256_file(weights)
        assert card["set5"]["psnr_y"] > card["set5"]["bicubic_psnr_y"] - 3  # a trained model, not noise
        onnx = repo_export / f"{name}.onnx"
        if onnx.exists():  # a source checkout (the wheel carries only the package)
            assert sha256_file(onnx) == card["onnx_sha256"]
            assert json.loads((repo_export / f"{name}.json").read_text()) == card
        assert resolve_model(name).path == weights
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert sorted(l.split()[0] for l in lines if "(zoo)" not in l) == sorted(shipped)
    assert any(l.startswith(f"{select.DEFAULT_MODEL} (default)") for l in lines)


def test_run_with_no_model_uses_the_default_shipped_model(tmp_path):
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    sample = select.WEIGHTS_DIR.parent / "assets" / "sample.mp4"
    out = tmp_path / "x4.mp4"
    r = CliRunner().invoke(app, ["run", str(sample), "-o", str(out), "--frames", "2"])
    assert r.exit_code == 0, r.output
    assert f"model {select.DEFAULT_MODEL} x4" in r.output and out.exists()


def test_cache_entries_are_verified_and_made_again_when_changed(tiny_ckpt, tmp_path, monkeypatch, caplog):
    """A cached ONNX truncated by a full disk, or swapped for another model's, is not run: its recorded
    SHA-256 no longer matches, so it is made again (with a note naming it)."""
    import logging

    from sr_deploy.models.checkpoint import save_checkpoint
    from sr_deploy.runtime.select import onnx_for, resolve_model
    from tests.conftest import tiny_model

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.pt"
    save_checkpoint(other, tiny_model(3))
    first = onnx_for(resolve_model(tiny_ckpt))
    good = first.read_bytes()
    swapped = onnx_for(resolve_model(other)).read_bytes()
    assert swapped != good
    for damage in (good[: len(good) // 2], swapped):
        first.write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = onnx_for(resolve_model(tiny_ckpt))
        assert again == first and again.read_bytes() == good
        assert f"the cache entry {first} is not what srdeploy wrote" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        onnx_for(resolve_model(tiny_ckpt))  # intact: used as it is, no note
    assert "cache entry" not in caplog.text


def test_a_full_disk_under_the_cache_names_the_path(tiny_ckpt, tmp_path, monkeypatch):
    import errno

    import onnx
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full)
    r = CliRunner().invoke(app, ["run", str(img), "-o", str(tmp_path / "o.png"), "--model", str(tiny_ckpt),
                                 "--backend", "onnxruntime"])
    assert r.exit_code != 0 and f"error: {tmp_path / 'cache' / 'onnx'}" in r.output, r.output
    assert "write failed (No space left on device)" in r.output
    assert not list((tmp_path / "cache" / "onnx").glob("*.onnx")) and not (tmp_path / "o.png").exists()


def test_the_cpu_is_named_with_its_family_and_model():
    """Two cloud EPYCs both called "AMD EPYC" (Zen 4, family 25; Zen 5, family 26) measure differently: the
    name every figure and every cached ranking carries says which. Only the first processor's block is read."""
    from sr_deploy.machine import cpu_name

    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
            "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9454\n")
    assert cpu_name(info) == "AMD EPYC (family 26, model 2)"
    assert cpu_name("model name\t: Some CPU\n") == "Some CPU"  # no family line: the name alone
