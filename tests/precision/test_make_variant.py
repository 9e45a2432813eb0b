"""`make_precision_onnx`'s own decisions, with its heavy steps stood in (conversion, calibration, the gate's
scoring, the percentile and mixed-precision searches): what it refuses before any work, which defaults and
which folder each step gets, what is written where when a variant passes or is refused, and that the variant
says its precision. Runs in milliseconds; the real conversions and gates are tested in test_precision.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sr_deploy.descriptor import METADATA_KEY, ModelDescriptor
from sr_deploy.errors import InputError, OutputError, QualityGateError
from sr_deploy.precision import convert
from sr_deploy.precision.convert import GateScores, make_precision_onnx

GOOD = GateScores(30.0, 29.99, 0.01, 50.0, 2.0)  # passes both precisions' default gates
FAR = GateScores(30.0, 29.0, 0.2, 30.0, 40.0)  # fails them all


def _onnx(path: Path, desc: ModelDescriptor) -> Path:
    """A one-node ONNX carrying ``desc`` in srdeploy's metadata entry."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "m",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, desc.to_json()
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def steps(tmp_path, monkeypatch):
    """The stood-in steps; ``steps.scores`` is what the gate's successive scorings return, ``steps.calls`` what
    each step was asked, ``steps.headroom`` the fp16 activation peak."""
    from sr_deploy.precision import fp16, int8

    class S:
        scores: list = []
        calls: dict = {}
        headroom = (1000.0, "conv_1")
        mixed = (["conv_9"], GOOD)
        src = _onnx(tmp_path / "m.onnx", ModelDescriptor(name="m", scale=2))

    def record(name, *args, **kw):
        S.calls.setdefault(name, []).append((args, kw))

    def convert_fp16(src, out):
        record("fp16", src)
        _onnx(Path(out), ModelDescriptor(name="m", scale=2))

    def convert_int8(src, out, batches, **kw):
        record("int8", src, batches, **{k: (v.name if isinstance(v, Path) else v) for k, v in kw.items()})
        _onnx(Path(out), ModelDescriptor(name="m", scale=2))
        return ["conv_0", "conv_last"]

    class Gate:
        def __init__(self, src, pairs, scale):
            record("gate", src, pairs, scale)

        def score(self, at):
            record("score", Path(at).parent == tmp_path)
            return S.scores.pop(0)

    def mixed(src, tmp, batches, calib, scale, gate, excluded, pct, quantize_ends, method, budget, min_fid,
              max_p999, ranges, degrade):
        assert src == S.src and Path(tmp).parent == tmp_path and isinstance(gate, Gate)
        record("mixed", batches, calib, scale, list(excluded), pct, quantize_ends, method, budget, min_fid, max_p999,
               ranges.name, **({"degrade": degrade} if degrade else {}))
        return S.mixed

    def search(src, tmp, batches, calib, scale, percentiles, quantize_ends, ranges, degrade):
        assert src == S.src and Path(tmp).parent == tmp_path
        record("search", batches, calib, scale, percentiles, quantize_ends, ranges(99.9).name,
               **({"degrade": degrade} if degrade else {}))
        return 99.99, {"99.9": 0.2, "99.99": 0.1}

    monkeypatch.setattr(fp16, "convert_fp16", convert_fp16)
    monkeypatch.setattr(int8, "convert_int8", convert_int8)
    # a degradation is recorded where one is asked for: the calls of a clean conversion read as before
    def batches(folder, *, degrade, **kw):
        return record("batches", folder, **kw, **({"degrade": degrade} if degrade else {})) or "batches"

    monkeypatch.setattr(int8, "calibration_batches", batches)
    monkeypatch.setattr(convert, "gate_pairs", lambda folder, scale, *, held_out, degrade: (
        record("pairs", folder, scale, held_out=held_out, **({"degrade": degrade} if degrade else {}))
        or ["p1", "p2", "p3"], f"pairs from {folder}"))
    monkeypatch.setattr(convert, "Gate", Gate)
    monkeypatch.setattr(convert, "_mixed_precision", mixed)
    monkeypatch.setattr(convert, "_search_percentile", search)
    monkeypatch.setattr(convert, "fp16_headroom", lambda src, pairs: record("headroom", src, pairs) or S.headroom)
    S.scores, S.calls = [GOOD], {}
    return S


def _desc_precision(path: Path) -> str:
    from sr_deploy.export.onnx_export import read_descriptor

    return read_descriptor(path).precision


def test_an_fp16_variant_that_passes_is_written_with_its_report_and_says_fp16(steps, tmp_path):
    (tmp_path / "m.fp16.refused.json").write_text("{}")  # an earlier refusal: gone once this one passes
    rep = make_precision_onnx(steps.src, "fp16")
    out = tmp_path / "m.fp16.onnx"
    assert Path(rep.path) == out and _desc_precision(out) == "fp16"
    assert (rep.precision, rep.source, rep.passed, rep.images, rep.gate_data) == (
        "fp16", str(steps.src), True, 3, "pairs from None")
    assert (rep.budget_db, rep.min_fidelity_db, rep.max_p999_levels) == (0.05, 45.0, 4.0)
    assert (rep.psnr_fp32, rep.psnr_new, rep.max_abs_diff, rep.fidelity_db, rep.p999_levels) == (30.0, 29.99, 0.01, 50.0, 2.0)
    assert rep.delta_psnr_db == pytest.approx(0.01)
    assert (rep.excluded_nodes, rep.calib_percentile, rep.percentile_search, rep.mixed_precision) == ((), None, None, ())
    saved = json.loads((tmp_path / "m.fp16.quality.json").read_text())
    assert saved["passed"] is True and saved["path"] == str(out) and saved["fidelity_db"] == 50.0
    assert not (tmp_path / "m.fp16.refused.json").exists()
    assert steps.calls["pairs"] == [((None, 2), {"held_out": False})]
    assert steps.calls["gate"] == [((steps.src, ["p1", "p2", "p3"], 2), {})]
    assert steps.calls["score"] == [((True,), {})]  # the candidate scored where it is written: beside the model
    assert steps.calls["headroom"] == [((steps.src, ["p1", "p2", "p3"]), {})]
    assert steps.calls["fp16"] == [((steps.src,), {})]
    assert "int8" not in steps.calls and "batches" not in steps.calls
    assert rep.line().endswith("on 3 held-out images [pairs from None]: passed") and "lost 0.0100 dB" in rep.line()


def test_an_fp16_variant_whose_activations_overflow_fp16_is_refused_whatever_the_cpu_scored(steps, tmp_path):
    steps.headroom = (70000.0, "conv_7")
    _onnx(tmp_path / "m.fp16.onnx", ModelDescriptor(name="m", scale=2, precision="fp16"))  # an earlier variant
    with pytest.raises(QualityGateError) as err:
        make_precision_onnx(steps.src, "fp16")
    assert "activation 'conv_7' reaches 7e+04 in fp32, beyond fp16's 65504" in str(err.value)
    assert "not written (report: m.fp16.refused.json; the existing m.fp16.onnx is kept; loosen with" in str(err.value)
    refused = json.loads((tmp_path / "m.fp16.refused.json").read_text())
    assert refused["passed"] is False and refused["p999_levels"] == 255.0
    assert (refused["psnr_new"], refused["max_abs_diff"], refused["fidelity_db"]) == (-math.inf, math.inf, -math.inf)
    assert refused["psnr_fp32"] == 30.0
    assert not (tmp_path / "m.fp16.quality.json").exists()
    assert _desc_precision(tmp_path / "m.fp16.onnx") == "fp16"  # kept as it was


def test_an_fp16_at_exactly_fp16_s_largest_value_passes(steps):
    steps.headroom = (65504.0, "conv_7")
    assert make_precision_onnx(steps.src, "fp16").passed


def test_a_refused_variant_leaves_nothing_under_its_name(steps, tmp_path):
    steps.scores = [FAR]
    with pytest.raises(QualityGateError, match=r"^fp16: 30.00 dB from the fp32 output .*REFUSED; not written "
                                               r"\(report: m.fp16.refused.json; loosen with"):
        make_precision_onnx(steps.src, "fp16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fp16.refused.json", "m.onnx"]


def test_an_int8_variant_is_calibrated_on_its_folder_and_gated_on_its_held_out_files(steps, tmp_path):
    calib = tmp_path / "photos"
    rep = make_precision_onnx(steps.src, "int8", calib=calib)
    assert steps.calls["batches"] == [((calib,), {"count": 64, "lr_size": 48, "scale": 2})]
    assert steps.calls["pairs"] == [((calib, 2), {"held_out": True})]
    assert steps.calls["int8"] == [((steps.src, "batches"), {"quantize_ends": False, "method": "percentile",
                                                             "percentile": 99.999, "ranges": "percentile-99.999.json"})]
    assert (rep.calib_percentile, rep.percentile_search, rep.excluded_nodes) == (99.999, None, ("conv_0", "conv_last"))
    assert (rep.budget_db, rep.min_fidelity_db, rep.max_p999_levels) == (0.3, 40.0, 24.0)
    assert _desc_precision(tmp_path / "m.int8.onnx") == "int8"
    assert "mixed" not in steps.calls and "search" not in steps.calls and "headroom" not in steps.calls


def test_int8_settings_reach_calibration_and_quantization(steps, tmp_path):
    calib, gate = tmp_path / "photos", tmp_path / "held"
    make_precision_onnx(steps.src, "int8", calib=calib, gate_data=gate, calib_method="minmax", calib_size=32,
                        quantize_ends=True, out=tmp_path / "v.onnx")
    assert steps.calls["batches"] == [((calib,), {"count": 256, "lr_size": 32, "scale": 2})]  # min/max streams: more
    assert steps.calls["pairs"] == [((gate, 2), {"held_out": False})]  # a gate folder of its own is used whole
    assert steps.calls["int8"][0][1] == {"quantize_ends": True, "method": "minmax", "percentile": 99.999,
                                         "ranges": "minmax-99.999.json"}
    assert (tmp_path / "v.onnx").exists() and (tmp_path / "v.quality.json").exists()
    steps.scores = [GOOD]
    rep = make_precision_onnx(steps.src, "int8", calib=calib, calib_count=7, calib_method="entropy")
    assert steps.calls["batches"][-1] == ((calib,), {"count": 7, "lr_size": 48, "scale": 2})
    assert rep.calib_percentile is None  # not a percentile calibration


def test_several_percentiles_are_searched_and_the_best_quantizes(steps, tmp_path):
    calib = tmp_path / "photos"
    rep = make_precision_onnx(steps.src, "int8", calib=calib, percentiles=(99.9, 99.99), quantize_ends=True)
    assert steps.calls["search"] == [(("batches", calib, 2, (99.9, 99.99), True, "percentile-99.9.json"), {})]
    assert steps.calls["int8"][0][1]["percentile"] == 99.99
    assert steps.calls["int8"][0][1]["ranges"] == "percentile-99.99.json"
    assert (rep.calib_percentile, rep.percentile_search) == (99.99, {"99.9": 0.2, "99.99": 0.1})


def test_an_int8_that_fails_is_retried_in_mixed_precision_before_a_refusal(steps, tmp_path):
    calib = tmp_path / "photos"
    steps.scores = [FAR]
    rep = make_precision_onnx(steps.src, "int8", calib=calib, budget_db=0.5, min_fidelity_db=35.0, max_p999_levels=30.0)
    assert steps.calls["mixed"] == [(("batches", calib, 2, ["conv_0", "conv_last"], 99.999, False, "percentile", 0.5,
                                      35.0, 30.0, "percentile-99.999.json"), {})]
    assert rep.passed and rep.mixed_precision == ("conv_9",) and rep.excluded_nodes == ("conv_0", "conv_last", "conv_9")
    assert (rep.budget_db, rep.min_fidelity_db, rep.max_p999_levels) == (0.5, 35.0, 30.0)
    assert _desc_precision(tmp_path / "m.int8.onnx") == "int8"  # stamped again after the retry rewrote it
    assert "convs kept in float after a sensitivity search" in rep.line()
    steps.scores, steps.mixed = [FAR], ([], FAR)
    with pytest.raises(QualityGateError):
        make_precision_onnx(steps.src, "int8", calib=calib)


def test_the_mixed_precision_retry_keeps_the_searched_percentile(steps, tmp_path):
    steps.scores = [FAR]
    make_precision_onnx(steps.src, "int8", calib=tmp_path, percentiles=(99.9, 99.99))
    assert steps.calls["mixed"][0][0][4] == 99.99 and steps.calls["mixed"][0][0][-1] == "percentile-99.99.json"


def test_a_variant_better_than_fp32_says_it_gained(steps):
    steps.scores = [GateScores(30.0, 30.25, 0.01, 50.0, 2.0)]
    assert "vs HR gained 0.2500 dB (fp32 30.000, fp16 30.250; budget 0.05 dB)" in make_precision_onnx(steps.src, "fp16").line()
    steps.scores = [GateScores(30.0, 30.0, 0.0, 80.0, 0.0)]  # no change: never "gained -0.0000 dB"
    assert "vs HR lost 0.0000 dB" in make_precision_onnx(steps.src, "fp16").line()


def test_without_mixed_precision_a_failing_int8_is_refused_at_once(steps, tmp_path):
    steps.scores = [FAR]
    with pytest.raises(QualityGateError):
        make_precision_onnx(steps.src, "int8", calib=tmp_path / "photos", mixed_precision=False)
    assert "mixed" not in steps.calls


def test_a_gate_at_exactly_its_thresholds_passes(steps):
    steps.scores = [GateScores(30.0, 29.75, 0.1, 40.0, 24.0)]  # 0.25 dB: exact in binary
    assert make_precision_onnx(steps.src, "int8", calib=steps.src.parent, mixed_precision=False, budget_db=0.25).passed


def test_a_degradation_reaches_calibration_the_gate_and_both_searches(steps, tmp_path):
    calib = tmp_path / "photos"
    steps.scores = [FAR]
    make_precision_onnx(steps.src, "int8", calib=calib, percentiles=(99.9, 99.99), degrade="real:5")
    assert steps.calls["batches"] == [((calib,), {"count": 64, "lr_size": 48, "scale": 2, "degrade": "real:5"})]
    assert steps.calls["pairs"] == [((calib, 2), {"held_out": True, "degrade": "real:5"})]
    assert steps.calls["search"][0][1] == {"degrade": "real:5"}
    assert steps.calls["mixed"][0][1] == {"degrade": "real:5"}
    steps.scores = [GOOD]
    make_precision_onnx(steps.src, "fp16", degrade="real")  # fp16: no calibration, its gate degraded too
    assert steps.calls["pairs"][-1] == ((None, 2), {"held_out": False, "degrade": "real"})


@pytest.mark.parametrize("kw, says", [
    ({"degrade": "real:x"}, "--degrade must be bicubic, real[:SEED] or degraded[:SEED] (SEED a whole number), got 'real:x'"),
    ({"precision": "bf16"}, "precision must be fp16 or int8, got 'bf16'"),
    ({"calib_method": "mean"}, "calibration method must be one of percentile, minmax, entropy, got 'mean'"),
    ({"calib_count": 0}, "--calib-count must be at least 1, got 0"),
    ({"calib_size": 7}, "--calib-size must be from 8 to 4096 pixels, got 7"),
    ({"calib_size": 4097}, "--calib-size must be from 8 to 4096 pixels, got 4097"),
    ({"percentiles": (99.9, 50.0)}, "--percentile must be above 50 and below 100 (for example 99.999), got 50"),
    ({"percentiles": (100.0,)}, "--percentile must be above 50 and below 100 (for example 99.999), got 100"),
    ({"calib": None}, "--int8 needs calibration images: pass --calib DIR (a folder of real images)"),
])
def test_settings_out_of_range_are_refused_before_any_work(steps, tmp_path, kw, says):
    args = {"precision": "int8", "calib": tmp_path, **kw}
    with pytest.raises(InputError) as err:
        make_precision_onnx(steps.src, args.pop("precision"), **args)
    assert str(err.value) == says
    assert steps.calls == {}


def test_edge_settings_are_taken(steps, tmp_path):
    for kw in ({"calib_size": 8}, {"calib_size": 4096}, {"calib_count": 1}, {"percentiles": (50.001, 99.999)}):
        steps.scores = [GOOD]
        assert make_precision_onnx(steps.src, "int8", calib=tmp_path, **kw).passed


def test_a_variant_is_made_from_the_fp32_onnx_only(steps, tmp_path):
    v = _onnx(tmp_path / "v.onnx", ModelDescriptor(name="m", scale=2, precision="fp16"))
    with pytest.raises(InputError, match=f"^{v}: is already fp16; convert from the fp32 ONNX$"):
        make_precision_onnx(v, "int8", calib=tmp_path)


def test_an_existing_variant_is_replaced_only_when_asked(steps, tmp_path):
    make_precision_onnx(steps.src, "fp16")
    steps.scores = [GOOD]
    with pytest.raises(OutputError):
        make_precision_onnx(steps.src, "fp16", overwrite=False)
