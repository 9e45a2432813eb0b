import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import ModelError
from sr_deploy.export import read_descriptor
from sr_deploy.models import SRResNet, save_checkpoint
from tests.conftest import randomize_bn


def _check(onnx_path, model):
    proto = onnx.load(str(onnx_path))
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and dims[3].dim_param, "batch, height, width symbolic"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for h, w in [(19, 27), (33, 14)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.parametrize("blocks", [2, 16])
def test_cli_export(tmp_path, blocks):
    torch.manual_seed(1)
    m = randomize_bn(SRResNet(scale=4, num_blocks=blocks, channels=16 if blocks == 16 else 8))
    ckpt = save_checkpoint(tmp_path / f"b{blocks}.pt", m)
    res = CliRunner().invoke(app, ["export", str(ckpt)])
    assert res.exit_code == 0, res.output
    out = tmp_path / f"b{blocks}.onnx"
    _check(out, m)
    desc = read_descriptor(out)
    assert desc.scale == 4 and desc.in_channels == 3 and len(desc.source_sha256) == 64
    assert desc.value_range == (0.0, 1.0) and desc.name == f"b{blocks}"


def test_export_takes_a_shipped_model_by_name_and_writes_it_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["export", "light_x4"])
    assert res.exit_code == 0, res.output
    desc = read_descriptor(tmp_path / "light_x4.onnx")
    assert desc.scale == 4 and desc.name == "light_x4"
    res = CliRunner().invoke(app, ["export", "no_such_model"])
    assert res.exit_code != 0 and res.output.startswith("error: no shipped model named 'no_such_model'"), res.output


def test_export_refuses_existing_output(tiny_ckpt, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"keep")
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "-o", str(out)])
    assert res.exit_code != 0 and "exists" in res.output
    assert out.read_bytes() == b"keep"


def test_output_that_is_not_onnx_and_opsets_out_of_reach(tiny_ckpt, tmp_path, monkeypatch):
    import sr_deploy.export.onnx_export as ox

    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "x.txt")])
    assert res.exit_code != 0 and res.output.startswith(f"error: {tmp_path / 'x.txt'}: an ONNX output is named")
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "x.onnx"), "--opset", "99"])
    assert res.exit_code != 0 and res.output.startswith("error: opset 99 is newer than this onnx"), res.output
    # PyTorch's converter falling back to its own opset (as it does for opsets it cannot reach) is refused,
    # not reported as the opset asked for
    real = ox.trace_dynamo
    monkeypatch.setattr(ox, "trace_dynamo", lambda model, desc, opset, shape: real(model, desc, 18, shape))
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "x.onnx"), "--opset", "20"])
    assert res.exit_code != 0 and "could not convert to it and wrote opset 18" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_onnx_without_metadata(tmp_path):
    m = torch.nn.Conv2d(3, 3, 1)
    p = tmp_path / "plain.onnx"
    torch.onnx.export(m, (torch.rand(1, 3, 8, 8),), str(p), dynamo=True)
    with pytest.raises(ModelError, match="no srdeploy metadata"):
        read_descriptor(p)


def test_not_a_checkpoint_cli(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    res = CliRunner().invoke(app, ["export", str(bad)])
    assert res.exit_code != 0
    assert "bad.pt" in res.output and len(res.output.strip().splitlines()) == 1


def test_a_refused_dynamic_export_is_remembered_for_export_and_run_alike(tiny_ckpt, tmp_path, monkeypatch):
    """The attempt costs minutes for a transformer (two exporters in child processes): its refusal is
    remembered per weights, torch version and opset, and `export` and `run`'s cache share it."""
    import shutil

    import sr_deploy.export.onnx_export as ox
    from sr_deploy.runtime.sources import onnx_for, resolve_model

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "w.pt"
    shutil.copy(tiny_ckpt, ckpt)
    tries = []

    def refuse(model, out, **kw):
        tries.append(kw.get("opset"))
        if kw.get("shape") is None:
            raise ox.DynamicExportUnsupported(f"refused try {len(tries)}")
        return "fixed"

    monkeypatch.setattr(ox, "export_onnx", refuse)
    for _ in range(2):
        with pytest.raises(ox.DynamicExportUnsupported, match="refused try 1$"):
            ox.export_checkpoint(ckpt, tmp_path / "w.onnx")
    with pytest.raises(ox.DynamicExportUnsupported, match="refused try 1$"):
        onnx_for(resolve_model(str(ckpt)))  # `run`'s export into the cache: the same verdict, not a new try
    assert len(tries) == 1
    with pytest.raises(ox.DynamicExportUnsupported, match="refused try 2$"):  # another opset decides anew
        ox.export_checkpoint(ckpt, tmp_path / "w.onnx", opset=17)
    assert ox.export_checkpoint(ckpt, tmp_path / "w.onnx", shape=(16, 16)) == "fixed"  # a fixed size is tried
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # other weights: tried again (they may export)
    with pytest.raises(ox.DynamicExportUnsupported, match="refused try 4$"):
        ox.export_checkpoint(ckpt, tmp_path / "w.onnx")
    monkeypatch.setattr(ox.torch, "__version__", "99.0")  # another torch: its exporter may succeed
    with pytest.raises(ox.DynamicExportUnsupported, match="refused try 5$"):
        ox.export_checkpoint(ckpt, tmp_path / "w.onnx")
