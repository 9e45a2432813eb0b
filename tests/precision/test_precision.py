from pathlib import Path
import json

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import InputError, QualityGateError
from sr_deploy.export import read_descriptor
from sr_deploy.precision.convert import make_precision_onnx, precision_path
from sr_deploy.precision.int8 import conv_names
from tests.conftest import pattern_image


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    for i in range(6):
        cv2.imwrite(str(d / f"c{i}.png"), pattern_image(64, 80, 3, seed=10 + i))
    return d


def _flat_calib(tmp_path):
    """A calibration folder of one flat grey image: its ranges damage the model (what the gate must see)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    cv2.imwrite(str(flat / "f.png"), np.full((64, 64, 3), 128, np.uint8))
    return flat


def _copy(tiny_onnx, tmp_path):
    dst = tmp_path / "m.onnx"
    dst.write_bytes(tiny_onnx.read_bytes())
    return dst


def test_fp16_keeps_fp32_io_and_passes(tiny_onnx, tmp_path):
    src = _copy(tiny_onnx, tmp_path)
    rep = make_precision_onnx(src, "fp16")
    assert rep.passed and abs(rep.delta_psnr_db) < 0.05
    m = onnx.load(rep.path)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    assert read_descriptor(rep.path).precision == "fp16"
    assert json.loads((tmp_path / "m.fp16.quality.json").read_text())["passed"] is True


def test_int8_qdq_around_convs_except_ends(tiny_onnx, tmp_path, calib_dir):
    src = _copy(tiny_onnx, tmp_path)
    rep = make_precision_onnx(src, "int8", calib=calib_dir, calib_count=8, calib_size=16, budget_db=5.0)
    g = onnx.load(rep.path).graph
    producers = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv"]
    first, last = conv_names(src)[0], conv_names(src)[-1]
    assert set(rep.excluded_nodes) == {first, last}
    for n in convs:
        feeds = [producers.get(i) for i in n.input[:2]]
        dq = all(f is not None and f.op_type == "DequantizeLinear" for f in feeds)
        if n.name in (first, last):
            assert not dq, n.name
        else:
            assert dq, n.name
    assert any(n.op_type == "QuantizeLinear" for n in g.node)
    # symmetric: every activation zero point is 0
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2:
            assert not onnx.numpy_helper.to_array(inits[n.input[2]]).any()
    assert read_descriptor(rep.path).precision == "int8"


def test_gate_refuses_broken_model(tiny_onnx, tmp_path):
    src = _copy(tiny_onnx, tmp_path)
    with pytest.raises(QualityGateError, match="REFUSED"):
        make_precision_onnx(src, "fp16", budget_db=-1.0)  # nothing can pass a negative budget
    assert not precision_path(src, "fp16").exists() and not (tmp_path / "m.fp16.quality.json").exists()
    report = json.loads((tmp_path / "m.fp16.refused.json").read_text())
    assert report["passed"] is False
    # a variant that passed earlier and a later refused attempt to replace it: the pair stays consistent
    good = make_precision_onnx(src, "fp16")
    before = Path(good.path).read_bytes()
    assert not (tmp_path / "m.fp16.refused.json").exists()
    with pytest.raises(QualityGateError, match="is kept"):
        make_precision_onnx(src, "fp16", budget_db=-1.0, overwrite=True)
    assert Path(good.path).read_bytes() == before
    assert json.loads((tmp_path / "m.fp16.quality.json").read_text())["passed"] is True
    assert json.loads((tmp_path / "m.fp16.refused.json").read_text())["passed"] is False


def test_gate_catches_damage(tiny_onnx, tmp_path, calib_dir):
    """Quantizing with a single calibration crop of a flat image damages the model: the gate must see it."""
    src = _copy(tiny_onnx, tmp_path)
    flat = _flat_calib(tmp_path)
    with pytest.raises(QualityGateError):
        make_precision_onnx(src, "int8", calib=flat, gate_data=calib_dir, calib_count=1, calib_size=16,
                            quantize_ends=True, budget_db=0.01, mixed_precision=False)
    assert not precision_path(src, "int8").exists()


def test_a_failing_int8_is_retried_with_its_most_sensitive_convs_in_float(tiny_onnx, tmp_path, calib_dir):
    """The same damaged calibration: before refusing, the convs that measured most sensitive stay float,
    the report names them, and the variant written is the mixed one that passed."""
    src = _copy(tiny_onnx, tmp_path)
    flat = _flat_calib(tmp_path)
    rep = make_precision_onnx(src, "int8", calib=flat, gate_data=calib_dir, calib_count=1, calib_size=16,
                              quantize_ends=True, budget_db=0.01)
    assert rep.passed and rep.mixed_precision
    assert set(rep.mixed_precision) <= set(conv_names(src)) and set(rep.mixed_precision) <= set(rep.excluded_nodes)
    g = onnx.load(rep.path).graph
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "Conv":
            quantized = producers.get(n.input[1]) is not None and producers[n.input[1]].op_type == "DequantizeLinear"
            assert quantized == (n.name not in rep.mixed_precision), n.name
    assert "convs kept in float" in rep.line()
    assert read_descriptor(rep.path).precision == "int8"  # the mixed graph, re-converted, still says so


def _count_calibrations(monkeypatch) -> list[int]:
    """Counts the calibrations ONNX Runtime runs (each one builds a calibrator)."""
    import importlib

    q = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not its same-named function
    made = []
    real = q.create_calibrator

    def counting(*a, **k):
        made.append(1)
        return real(*a, **k)

    monkeypatch.setattr(q, "create_calibrator", counting)
    return made


def test_ranges_file_calibrates_once_and_is_reused_whatever_the_exclusions(tiny_onnx, tmp_path, calib_dir,
                                                                             monkeypatch):
    """A second quantization from the same ranges file runs no calibration: its activation scales are the
    first's even when handed other crops, and it may exclude other convs."""
    from sr_deploy.precision.int8 import calibration_batches, convert_int8

    made = _count_calibrations(monkeypatch)
    batches = calibration_batches(calib_dir, count=4, lr_size=16, scale=2)
    ranges = tmp_path / "ranges.json"

    def act_scales(path):
        g = onnx.load(str(path)).graph
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        return sorted(float(inits[n.input[1]]) for n in g.node
                      if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1)

    first = conv_names(tiny_onnx)[:1]
    convert_int8(tiny_onnx, tmp_path / "a.onnx", batches, ranges=ranges)
    assert ranges.exists() and len(made) == 1
    louder = [b * 0.25 for b in batches]  # crops that calibrate to other scales
    convert_int8(tiny_onnx, tmp_path / "b.onnx", louder, ranges=ranges, exclude=first)
    assert len(made) == 1
    # no ranges file: each calibrates on what it is given
    convert_int8(tiny_onnx, tmp_path / "own.onnx", batches, exclude=first)
    convert_int8(tiny_onnx, tmp_path / "loud.onnx", louder, exclude=first)
    assert len(made) == 3
    assert act_scales(tmp_path / "b.onnx") == act_scales(tmp_path / "own.onnx")
    assert act_scales(tmp_path / "loud.onnx") != act_scales(tmp_path / "own.onnx")


def test_the_mixed_precision_search_calibrates_once_and_runs_the_fp32_model_once_per_crop_set(
        tiny_onnx, tmp_path, calib_dir, monkeypatch):
    """Every try of the sensitivity search and of the doubling quantizes from one calibration, and the fp32
    reference outputs are computed once for the gate's crops and once for the held-out crops."""
    import sr_deploy.precision.convert as convert

    made = _count_calibrations(monkeypatch)
    runs = []
    real_run = convert.Gate._run

    def counting_run(self, model):
        runs.append(Path(model).name)
        return real_run(self, model)

    monkeypatch.setattr(convert.Gate, "_run", counting_run)
    src = _copy(tiny_onnx, tmp_path)
    flat = _flat_calib(tmp_path)
    rep = make_precision_onnx(src, "int8", calib=flat, gate_data=calib_dir, calib_count=1, calib_size=16,
                              quantize_ends=True, budget_db=0.01)
    assert rep.mixed_precision and len(made) == 1
    assert runs.count(src.name) == 2 and len(runs) > 4


def test_bad_calibration_inputs(tiny_onnx, tmp_path):
    src = _copy(tiny_onnx, tmp_path)
    with pytest.raises(InputError, match="--calib"):
        make_precision_onnx(src, "int8")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no calibration images"):
        make_precision_onnx(src, "int8", calib=empty)
    small = tmp_path / "small"
    small.mkdir()
    cv2.imwrite(str(small / "s.png"), pattern_image(20, 20, 3))
    with pytest.raises(InputError, match="smaller than"):
        make_precision_onnx(src, "int8", calib=small)


def test_cli_onnx_only_and_no_tensorrt(tiny_onnx, tiny_ckpt, tmp_path, calib_dir, monkeypatch):
    src = _copy(tiny_onnx, tmp_path)
    r = CliRunner().invoke(app, ["build-engine", str(src), "--fp16", "--onnx-only"])
    assert r.exit_code == 0, r.output
    assert precision_path(src, "fp16").exists()
    r = CliRunner().invoke(app, ["build-engine", str(src), "--fp16"])  # kept: no --overwrite
    assert r.exit_code != 0 and "output exists" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(src), "--fp16", "--overwrite"])
    # the variant asked for is made; without TensorRT that is all this machine can do: a note, exit 0
    assert r.exit_code == 0 and "note: no TensorRT engine" in r.output and "srdeploy run INPUT --model" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(src)])  # fp32 engine: no precision ONNX to make
    assert r.exit_code == 3 and "fp32 ONNX runs on this machine" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(src), "--fp16", "--int8"])
    assert r.exit_code != 0 and "choose one precision" in r.output
    plain = tmp_path / "plain.onnx"
    m = onnx.load(str(src))
    del m.metadata_props[:]
    onnx.save(m, str(plain))
    r = CliRunner().invoke(app, ["build-engine", str(plain), "--fp16", "--onnx-only"])
    assert r.exit_code != 0 and "no srdeploy metadata" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(src), "--onnx-only"])  # fp32: says so, writes nothing
    assert r.exit_code == 0 and r.output.startswith(f"fp32: {src} is the model itself"), r.output
    # a checkpoint (or a shipped model's name) as `run --model` takes it: exported into the cache first
    # (a cache of its own: an fp16 variant in the shared one would change what later tests' runners pick)
    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(app, ["build-engine", str(tiny_ckpt), "--fp16", "--onnx-only"])
    assert r.exit_code == 0 and "wrote " in r.output and ".fp16.onnx" in r.output, r.output


@pytest.mark.parametrize("args,says", [
    (["--min", "0x0"], "error: shape '0x0' is not HxW"),
    (["--min", "64x64", "--opt", "32x32", "--max", "16x16"], "error: profile must satisfy min <= opt <= max"),
    (["--max-batch", "0"], "error: --max-batch must be at least 1"),
])
def test_cli_bad_profile_is_refused_before_any_work(tiny_onnx, tmp_path, calib_dir, args, says):
    """A profile TensorRT would refuse is found before the calibration (minutes on a real model) and
    on machines without TensorRT too, where it was never checked."""
    src = _copy(tiny_onnx, tmp_path)
    r = CliRunner().invoke(app, ["build-engine", str(src), "--int8", "--calib", str(calib_dir), "--onnx-only", *args])
    assert r.exit_code != 0 and r.output.startswith(says), r.output
    assert not precision_path(src, "int8").exists()


def test_run_int8_onnx_on_cpu(tiny_onnx, tmp_path, calib_dir):
    src = _copy(tiny_onnx, tmp_path)
    rep = make_precision_onnx(src, "int8", calib=calib_dir, calib_count=8, calib_size=16, budget_db=5.0)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), pattern_image(12, 12, 3))
    r = CliRunner().invoke(app, ["run", str(img), "--model", rep.path, "--backend", "onnxruntime"])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(tmp_path / "a_x2.png")).shape == (24, 24, 3)


def test_percentile_search_keeps_the_best_on_held_out_calibration_images(tiny_onnx, tmp_path, calib_dir):
    src = _copy(tiny_onnx, tmp_path)
    rep = make_precision_onnx(src, "int8", calib=calib_dir, calib_count=6, calib_size=16, budget_db=5.0,
                              percentiles=(90.0, 99.999))
    assert set(rep.percentile_search) == {"90", "99.999"}
    assert rep.percentile_search[f"{rep.calib_percentile:g}"] == min(rep.percentile_search.values())
    saved = json.loads((tmp_path / "m.int8.quality.json").read_text())
    assert saved["calib_percentile"] == rep.calib_percentile and saved["percentile_search"] == rep.percentile_search
    r = CliRunner().invoke(app, ["build-engine", str(src), "--int8", "--calib", str(calib_dir), "--calib-count", "4",
                                 "--calib-size", "16", "--max-delta-db", "5", "--onnx-only",
                                 "--percentile", "99.9", "--percentile", "99.99", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "percentile search" in r.output


def test_calibration_crops_never_come_from_held_out_files(tmp_path):
    from sr_deploy.precision.int8 import HOLD_OUT_EVERY, calibration_batches

    for i in range(2 * HOLD_OUT_EVERY):  # flat images: a crop's value names its file
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), np.full((64, 64, 3), 10 * i + 5, np.uint8))
    crops = calibration_batches(tmp_path, count=40, lr_size=8, scale=4)
    seen = {round(float(c.mean()) * 255 - 5) // 10 for c in crops}
    assert seen == {i for i in range(2 * HOLD_OUT_EVERY) if i % HOLD_OUT_EVERY}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 9, 10, 12])
def test_gate_images_and_calibration_images_are_disjoint_for_any_folder_size(tmp_path, n):
    from sr_deploy.precision.convert import gate_pairs
    from sr_deploy.precision.int8 import calibration_batches

    for i in range(n):  # flat images: a crop's value names its file
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), np.full((64, 64, 3), 10 * i + 5, np.uint8))
    crops = calibration_batches(tmp_path, count=40, lr_size=8, scale=4)
    calibrated = {round(float(c.mean()) * 255 - 5) // 10 for c in crops}
    pairs, label = gate_pairs(tmp_path, 4, crop=32, held_out=True)
    gated = {round(float(p.hr.mean()) - 5) // 10 for p in pairs}
    assert calibrated and not calibrated & gated, (calibrated, gated)
    if n == 1:  # nothing to hold out: the gate scores generated images and says so
        assert "generated images" in label and "none to hold out" in label
    else:
        assert gated and "held out of calibration" in label


def test_float_convs_at_x4_keep_the_first_upsampling_conv(tmp_path):
    from sr_deploy.export import export_onnx
    from sr_deploy.models import SRResNet
    from sr_deploy.precision.int8 import float_convs

    path = export_onnx(SRResNet(scale=4, num_blocks=1, channels=8), tmp_path / "x4.onnx", name="x4").path
    names = conv_names(path)
    # head, 2 trunk convs, trunk tail, upsampling convs 1 and 2, polyphase tail
    assert len(names) == 7
    assert float_convs(path) == [names[0], names[4], names[6]]
    g = onnx.load(str(path)).graph
    first_shuffle = next(n for n in g.node if n.op_type == "DepthToSpace")
    assert next(n for n in g.node if n.output[0] == first_shuffle.input[0]).name == names[4]


def test_int8_qdq_placed_for_tensorrt(tiny_onnx, tmp_path, calib_dir):
    """Default placement: Q/DQ on conv and residual-add inputs, never Conv → Q → DQ → PRelu; ONNX Runtime's
    own layout (placement='outputs') does quantize those conv outputs."""
    from sr_deploy.precision.int8 import calibration_batches, convert_int8, qdq_layout

    batches = calibration_batches(calib_dir, count=4, lr_size=16, scale=2)
    placed = {}
    for placement in ("inputs", "outputs"):
        dst = tmp_path / f"{placement}.onnx"
        convert_int8(tiny_onnx, dst, batches, placement=placement)
        placed[placement] = qdq_layout(dst)
    assert placed["inputs"]["conv_outputs_quantized"] == 0
    assert placed["inputs"]["conv_inputs_quantized"] > 0 and placed["inputs"]["add_inputs_quantized"] > 0
    assert placed["outputs"]["conv_outputs_quantized"] > 0
    with pytest.raises(InputError, match="placement"):
        convert_int8(tiny_onnx, tmp_path / "x.onnx", batches, placement="everywhere")


def test_an_unreadable_calibration_image_is_skipped_with_a_warning_and_none_readable_is_an_error(tmp_path, caplog):
    from sr_deploy.errors import InputError
    from sr_deploy.precision.int8 import calibration_batches

    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), np.full((64, 64, 3), 10 * i + 5, np.uint8))
    (tmp_path / "f01.png").write_text("not an image")  # a calibration file (f00 is held out)
    with caplog.at_level("WARNING"):
        crops = calibration_batches(tmp_path, count=8, lr_size=8, scale=4)
    assert {round(float(c.mean()) * 255 - 5) // 10 for c in crops} == {2, 3}
    assert any("f01.png" in r.getMessage() and r.getMessage().startswith("warning:") for r in caplog.records)
    for i in range(4):
        (tmp_path / f"f{i:02d}.png").write_text("not an image")
    with pytest.raises(InputError, match="none of the 3 calibration images could be read"):
        calibration_batches(tmp_path, count=8, lr_size=8, scale=4)


@pytest.mark.parametrize("kw, says", [({"calib_count": 0}, "--calib-count"), ({"calib_size": 0}, "--calib-size"),
                                      ({"percentiles": (150.0,)}, "--percentile"), ({"percentiles": (99.9, 100.0)}, "--percentile")])
def test_calibration_settings_out_of_range_are_one_line_before_any_work(tiny_onnx, tmp_path, calib_dir, kw, says):
    src = _copy(tiny_onnx, tmp_path)
    with pytest.raises(InputError, match=says):
        make_precision_onnx(src, "int8", calib=calib_dir, **kw)
    assert not precision_path(src, "int8").exists()


def test_a_degraded_gate_scores_each_image_clean_and_degraded_with_one_native_crop_each(tmp_path, calib_dir):
    from sr_deploy.metrics import make_lr
    from sr_deploy.precision.convert import Gate, gate_pairs

    clean, _ = gate_pairs(calib_dir, 2, crop=48)
    pairs, label = gate_pairs(calib_dir, 2, crop=48, degrade="real:5")
    n = len(clean)
    assert len(pairs) == 2 * n and label == f"{calib_dir}; each also degraded (real:5)"
    for c, p, d in zip(clean, pairs, pairs[n:]):
        assert np.array_equal(p.lr, c.lr) and d.hr is p.hr  # the clean pairs as before; the copies share the HR
        assert d.lr.shape == make_lr(d.hr, 2).shape and not np.array_equal(d.lr, p.lr)
    again, _ = gate_pairs(calib_dir, 2, crop=48, degrade="real:5")
    other, _ = gate_pairs(calib_dir, 2, crop=48, degrade="real:6")
    assert all(np.array_equal(a.lr, b.lr) for a, b in zip(pairs, again))  # one draw per (seed, image)
    assert not all(np.array_equal(a.lr, b.lr) for a, b in zip(pairs[n:], other[n:]))
    gate = Gate(tmp_path / "unused.onnx", pairs, 2)
    assert gate.native == n and len(gate.inputs) == 3 * n  # one native crop per picture, then every LR


def test_degraded_calibration_degrades_every_second_crop_with_draws_of_its_own(calib_dir):
    from sr_deploy.precision.int8 import calibration_batches

    clean = calibration_batches(calib_dir, count=6, lr_size=16, scale=2)
    mixed = calibration_batches(calib_dir, count=6, lr_size=16, scale=2, degrade="real:5")
    assert [np.array_equal(a, b) for a, b in zip(clean, mixed)] == [True, False] * 3
    assert all(np.array_equal(a, b) for a, b in
               zip(mixed, calibration_batches(calib_dir, count=6, lr_size=16, scale=2, degrade="real:5")))


def test_build_engine_degrade_gates_an_int8_on_degraded_inputs_too(tiny_onnx, tmp_path, calib_dir):
    src = _copy(tiny_onnx, tmp_path)
    r = CliRunner().invoke(app, ["build-engine", str(src), "--int8", "--calib", str(calib_dir), "--calib-count", "4",
                                 "--calib-size", "16", "--max-delta-db", "5", "--onnx-only", "--degrade", "real:3"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "m.int8.quality.json").read_text())
    assert saved["gate_data"].endswith("each also degraded (real:3)") and saved["images"] == 2 * 2  # 2 held out
    r = CliRunner().invoke(app, ["build-engine", str(src), "--int8", "--calib", str(calib_dir), "--onnx-only",
                                 "--overwrite", "--degrade", "jpeg"])
    assert r.exit_code != 0 and r.output.startswith("error: --degrade must be bicubic, real[:SEED] or degraded[:SEED]"), r.output


def test_degraded_calibration_never_draws_a_gate_image_s_degradation(calib_dir, monkeypatch):
    from sr_deploy import degradations
    from sr_deploy.precision.convert import gate_pairs
    from sr_deploy.precision.int8 import calibration_batches

    draws: dict[str, set] = {"calib": set(), "gate": set()}
    real = degradations.degraded_eval_lr
    for who in draws:
        monkeypatch.setattr(degradations, "degraded_eval_lr",
                            lambda hr, scale, index, seed, kind, who=who: draws[who].add((seed, index))
                            or real(hr, scale, index, seed, kind))
        if who == "calib":
            calibration_batches(calib_dir, count=64, lr_size=16, scale=2, degrade="real:5")
        else:
            gate_pairs(calib_dir, 2, crop=48, count=64, degrade="real:5")
    assert len(draws["calib"]) == 32 and draws["gate"] and not draws["calib"] & draws["gate"]


def test_gate_pairs_are_centre_crops_named_in_order_and_an_empty_folder_is_one_line(tmp_path):
    from sr_deploy.metrics import make_lr
    from sr_deploy.precision.convert import gate_pairs

    d = tmp_path / "photos"
    d.mkdir()
    img = pattern_image(70, 100, 3, seed=4)  # wider than tall: each axis centred on its own
    cv2.imwrite(str(d / "a.png"), img[..., ::-1])
    pairs, label = gate_pairs(d, 2, crop=32, degrade="real:1")
    assert [p.name for p in pairs] == ["0", "0 (real:1)"] and label == f"{d}; each also degraded (real:1)"
    assert np.array_equal(pairs[0].hr, img[19:51, 34:66]) and np.array_equal(pairs[0].lr, make_lr(pairs[0].hr, 2))
    small, _ = gate_pairs(d, 2, crop=200)  # a crop larger than the image: the image's shorter side, centred
    assert np.array_equal(small[0].hr, img[:70, 15:85])
    bundled, label = gate_pairs(None, 2)
    assert label == "srdeploy's bundled real photographs" and len(bundled) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as err:
        gate_pairs(tmp_path / "empty", 2)
    assert str(err.value) == f"{tmp_path / 'empty'}: no images for the quality gate"
