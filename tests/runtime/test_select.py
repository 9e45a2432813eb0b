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
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.png"), pattern_image(64, 64, 3, seed=i))
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert (runner.backend, runner.precision) == ("openvino", "fp32") and "OpenVINO" in why
    make_precision_onnx(model_dir, "int8", calib=calib, calib_count=4, calib_size=16, budget_db=5.0)
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert (runner.backend, runner.precision) == ("openvino", "int8") and "quality gate" in why
    # a report that failed its gate is never picked
    report = model_dir.with_name("m.int8.quality.json")
    report.write_text(json.dumps({**json.loads(report.read_text()), "passed": False}))
    runner, _ = make_runner(resolve_model(str(model_dir)), "auto")
    assert runner.precision == "fp32"


def test_auto_without_openvino_falls_back(model_dir, monkeypatch):
    monkeypatch.setattr(OpenVINORunner, "available", staticmethod(lambda: False))
    runner, why = make_runner(resolve_model(str(model_dir)), "auto")
    assert runner.backend == "onnxruntime" and "not installed" in why


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
