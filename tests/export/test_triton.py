"""`srdeploy triton`: a model repository whose config parses against Triton's own schema and whose model
answers the way the config says."""

import numpy as np
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import ModelError
from sr_deploy.export.triton import validate


def _triton(*args):
    r = CliRunner().invoke(app, ["triton", *map(str, args)])
    return r.exit_code, r.output


def test_repository_for_uint8_pixels(tiny_ckpt, tmp_path):
    import onnxruntime as ort

    repo = tmp_path / "repo"
    code, out = _triton(tiny_ckpt, "-o", repo, "--max-batch", "8", "--instances", "2", "--kind", "gpu",
                        "--trt-accelerator", "FP16")
    assert code == 0, out
    cfg = validate((repo / "tiny_x2" / "config.pbtxt").read_text())
    assert (cfg.platform, cfg.max_batch_size) == ("onnxruntime_onnx", 8)
    (inp,), (outp,) = cfg.input, cfg.output
    assert list(inp.dims) == [-1, -1, 3] and list(outp.dims) == [-1, -1, 3]
    assert cfg.instance_group[0].count == 2 and cfg.HasField("dynamic_batching")
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    # the served file takes what the config declares: a batch of uint8 NHWC frames under its input name
    sess = ort.InferenceSession(str(repo / "tiny_x2" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
    (y,) = sess.run([outp.name], {inp.name: x})
    assert y.dtype == np.uint8 and y.shape == (2, 20, 24, 3)
    # an existing model folder is kept without --overwrite
    code, out = _triton(tiny_ckpt, "-o", repo)
    assert code != 0 and out.startswith("error:") and "--overwrite" in out


def test_float_io_and_plan(tiny_ckpt, tmp_path):
    repo = tmp_path / "repo"
    code, out = _triton(tiny_ckpt, "-o", repo, "--float-io", "--name", "sr")
    assert code == 0, out
    cfg = validate((repo / "sr" / "config.pbtxt").read_text())
    from sr_deploy.export.triton import model_config_pb2

    pb2 = model_config_pb2()
    assert pb2.DataType.Name(cfg.input[0].data_type) == pb2.DataType.Name(cfg.output[0].data_type) == "TYPE_FP32"
    assert list(cfg.input[0].dims) == [3, -1, -1]
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"engine bytes")
    from sr_deploy.engine.key import make_key, write_sidecar
    from sr_deploy.engine.profile import make_profile
    from sr_deploy.export.onnx_export import read_descriptor
    from sr_deploy.runtime.select import onnx_for, resolve_model

    desc = read_descriptor(onnx_for(resolve_model(str(tiny_ckpt))))
    write_sidecar(plan, make_key("ab" * 32, "fp32", make_profile(desc), tensorrt="10.9.0", gpu="NVIDIA H100",
                                 compute_capability="9.0"), desc)  # what build-engine writes beside an engine
    code, out = _triton(tiny_ckpt, "-o", repo, "--plan", plan, "--name", "sr_trt")
    assert code == 0, out
    cfg = validate((repo / "sr_trt" / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and (repo / "sr_trt" / "1" / "model.plan").read_bytes() == b"engine bytes"


def test_bad_values_and_schema_errors(tiny_ckpt, tmp_path):
    code, out = _triton(tiny_ckpt, "-o", tmp_path / "r", "--kind", "tpu")
    assert code != 0 and out.startswith("error: instance kind") and not (tmp_path / "r").exists()
    code, out = _triton(tiny_ckpt, "-o", tmp_path / "r", "--trt-accelerator", "INT4")
    assert code != 0 and "FP32 or FP16" in out
    for name in ("a/b", "../up", ".hidden", "two words"):
        code, out = _triton(tiny_ckpt, "-o", tmp_path / "r", "--name", name)
        assert code != 0 and out.startswith(f"error: --name {name!r}: a Triton model name is one folder"), out
    assert not (tmp_path / "r").exists()
    with pytest.raises(ModelError, match="model_config.proto"):
        validate('name: "x" max_batch_size: "many"')
    with pytest.raises(ModelError, match="model_config.proto"):
        validate('name: "x" no_such_field: 1')


def test_outscale_serves_the_averaged_graph(tiny_ckpt, tmp_path):
    """--outscale 1 with a x2 model: the served graph answers at the input's size, the block mean of the
    x2 graph's clamped output rounded once; a factor the graph cannot make, or a plan beside it, is refused."""
    import onnxruntime as ort

    repo = tmp_path / "repo"
    code, out = _triton(tiny_ckpt, "-o", repo, "--name", "full")
    assert code == 0, out
    code, out = _triton(tiny_ckpt, "-o", repo, "--name", "half", "--outscale", "1")
    assert code == 0, out
    cfg = validate((repo / "half" / "config.pbtxt").read_text())
    x = np.random.default_rng(1).integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
    run = {}
    for name in ("full", "half"):
        sess = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        run[name] = sess.run(None, {cfg.input[0].name: x})[0]
    assert run["half"].shape == x.shape
    mean = run["full"].astype(np.float64).reshape(2, 10, 2, 12, 2, 3).mean(axis=(2, 4))
    assert np.abs(run["half"] - mean).max() <= 1.0  # each within a level of the mean of its 2x2 block
    for bad in ("3", "0"):
        code, out = _triton(tiny_ckpt, "-o", repo, "--name", "bad", "--outscale", bad)
        assert code != 0 and out.startswith("error: --outscale") and "x1 only" in out, out
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"engine bytes")
    code, out = _triton(tiny_ckpt, "-o", repo, "--name", "p", "--plan", plan, "--outscale", "1")
    assert code != 0 and "build-engine --outscale" in out, out
    assert not (repo / "bad").exists() and not (repo / "p").exists()


def test_a_plan_that_srdeploy_did_not_build_is_refused_and_nothing_is_written(tiny_ckpt, tmp_path):
    fake = tmp_path / "garbage.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0 not an engine")
    code, out = _triton(tiny_ckpt, "-o", tmp_path / "repo", "--plan", fake, "--name", "sr_trt")
    assert code != 0 and out.startswith("error: --plan") and "not a TensorRT engine built by srdeploy" in out, out
    assert not (tmp_path / "repo").exists()
