import json

import cv2
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


def test_auto_prefers_gated_int8_on_openvino(model_dir, tmp_path):
    if not OpenVINORunner.available():
        pytest.skip("openvino not installed")
    from sr_deploy.runtime.openvino_runner import cpu_supports_bf16

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
    # the policy, with the measured ΔPSNR set on each side of auto's 0.1 dB limit
    report.write_text(json.dumps({**data, "passed": True, "delta_psnr_db": 0.05}))
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert (runner.backend, runner.precision) == ("openvino", "int8") and "INT8" in why
    report.write_text(json.dumps({**data, "passed": True, "delta_psnr_db": 0.2}))
    assert make_runner(resolve_model(str(model_dir)), "auto")[0].precision == no_int8
    # a report that failed its gate is never picked
    report.write_text(json.dumps({**data, "passed": False, "delta_psnr_db": 0.0}))
    assert make_runner(resolve_model(str(model_dir)), "auto")[0].precision == no_int8


def test_auto_without_openvino_falls_back(model_dir, monkeypatch):
    monkeypatch.setattr(OpenVINORunner, "available", staticmethod(lambda: False))
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert runner.backend == "onnxruntime" and "not installed" in why


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_without_openvino_picks_torch_bf16_on_native_bf16_cpus(tiny_ckpt, monkeypatch, native_bf16):
    from sr_deploy.bench import machine

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


def test_info_reports_auto_choice():
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    r = CliRunner().invoke(app, ["info"])
    assert r.exit_code == 0, r.output
    assert "backends:" in r.output and "auto:" in r.output and "GPU:" in r.output
    assert select.available_backends()[0] == "torch"
