"""The precision gate's arithmetic, on graphs small enough to score in milliseconds: fidelity to the fp32
model's own output (pooled PSNR and the 99.9th-percentile error in levels), ΔPSNR against HR on the pairs'
LR inputs only, a non-finite output refused, each threshold inclusive, and what `auto` trusts in a report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sr_deploy.precision.convert import (MAX_P999_LEVELS, MIN_FIDELITY_DB, NATIVE_CROP, Gate, GateScores, _center,
                                         _passes, fidelity_scores)
from sr_deploy.quality import EvalPair
from sr_deploy.runtime.sources import report_is_faithful
from tests.conftest import pattern_image


def _x2(path, *, add: float = 0.0, times: float = 1.0, clip: bool = False, nan_narrower_than: int = 0):
    """An x2 nearest-neighbour graph with srdeploy's input name, its output ``times`` itself plus ``add``
    (clipped to [0, 1] with ``clip``; NaN for inputs not wider than ``nan_narrower_than``)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Resize", ["input", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Mul", ["up", "times"], ["scaled"]),
             helper.make_node("Add", ["scaled", "add"], ["shifted"]),
             # log(relu(width - N)) * 0: 0 for wider inputs, NaN (-inf * 0) for the others
             helper.make_node("Shape", ["input"], ["shape"]),
             helper.make_node("Gather", ["shape", "three"], ["width"]),
             helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["width_f", "narrow"], ["over"]),
             helper.make_node("Relu", ["over"], ["over0"]),
             helper.make_node("Log", ["over0"], ["log"]),
             helper.make_node("Mul", ["log", "zero"], ["poison"]),
             helper.make_node("Add", ["shifted", "poison"], ["out" if clip else "output"])]
    if clip:
        nodes.append(helper.make_node("Clip", ["out", "lo", "hi"], ["output"]))
    inits = [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
             helper.make_tensor("times", TensorProto.FLOAT, [], [times]),
             helper.make_tensor("add", TensorProto.FLOAT, [], [add]),
             helper.make_tensor("three", TensorProto.INT64, [], [3]),
             helper.make_tensor("narrow", TensorProto.FLOAT, [], [float(nan_narrower_than)]),
             helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("hi", TensorProto.FLOAT, [], [1.0])]
    graph = helper.make_graph(nodes, "x2", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _pairs():
    """Two pairs of different content; values kept within 8..200 so a shift of a few levels is never clipped."""
    pairs = []
    for seed, (h, w) in enumerate([(80, 96), (72, 88)]):
        hr = (pattern_image(h, w, 3, seed=seed).astype(np.float64) * 192 / 255 + 8).round().astype(np.uint8)
        lr = hr[::2, ::2].copy()
        pairs.append(EvalPair(str(seed), hr, lr))
    return pairs


def _nearest_x2(img):
    return img.repeat(2, axis=0).repeat(2, axis=1)


def test_an_identical_candidate_is_faithful_and_loses_nothing(tmp_path):
    from sr_deploy.metrics import y_psnr_ssim

    pairs = _pairs()
    fp32 = _x2(tmp_path / "m.onnx")
    g = Gate(fp32, pairs, 2).score(_x2(tmp_path / "same.onnx"))
    expected = float(np.mean([y_psnr_ssim(_nearest_x2(p.lr), p.hr, 2)[0] for p in pairs]))  # every pair, once
    assert g.psnr_fp32 == pytest.approx(expected, abs=1e-9) and g.psnr_new == pytest.approx(expected, abs=1e-9)
    assert (g.fidelity_db, g.p999_levels, g.max_abs_diff) == (math.inf, 0.0, 0.0)


def test_a_shift_of_four_levels_scores_its_fidelity_and_its_loss(tmp_path):
    from sr_deploy.metrics import y_psnr_ssim

    pairs = _pairs()
    g = Gate(_x2(tmp_path / "m.onnx"), pairs, 2).score(_x2(tmp_path / "shifted.onnx", add=4 / 255))
    assert g.fidelity_db == pytest.approx(10 * math.log10(255 ** 2 / 16), abs=1e-6)  # every pixel 4 levels off
    assert g.p999_levels == pytest.approx(4.0)
    assert g.max_abs_diff == pytest.approx(4 / 255, abs=1e-6)  # float outputs, [0, 1]
    shifted = float(np.mean([y_psnr_ssim(_nearest_x2(p.lr) + 4, p.hr, 2)[0] for p in pairs]))
    assert g.psnr_new == pytest.approx(shifted, abs=1e-9) and g.psnr_new < g.psnr_fp32


def test_fidelity_is_scored_on_the_native_crops_too(tmp_path):
    """A candidate that differs only where the input is bright: the LR inputs stay dark, the native crops of
    the HR pictures (an input as a user's would come) do not, and fidelity sees it where ΔPSNR cannot."""
    pairs = []
    for seed in range(2):
        hr = np.full((96, 96, 3), 30, np.uint8)
        hr[16:80, 16:80] = 240  # bright only in the middle, which the native 64-pixel crop holds
        pairs.append(EvalPair(str(seed), hr, np.full((48, 48, 3), 100 - 70 * seed, np.uint8)))
    gate = Gate(_x2(tmp_path / "m.onnx"), pairs, 2)
    assert [im.shape for im in gate.inputs] == [(NATIVE_CROP, NATIVE_CROP, 3)] * 2 + [(48, 48, 3)] * 2
    g = gate.score(_x2(tmp_path / "dimmer.onnx", times=0.9))  # 240 → 216, 100 → 90, 30 → 27
    assert g.max_abs_diff == pytest.approx(10 / 255, abs=1e-6)  # on the LR inputs: 10 and 3 levels
    assert g.p999_levels == pytest.approx(24.0)  # on the native crops: 24 levels


def test_a_candidate_that_is_not_finite_is_refused_by_any_budget(tmp_path):
    g = Gate(_x2(tmp_path / "m.onnx"), _pairs(), 2).score(_x2(tmp_path / "inf.onnx", times=math.inf))
    assert (g.psnr_new, g.fidelity_db, g.max_abs_diff, g.p999_levels) == (-math.inf, -math.inf, math.inf, 255.0)
    assert math.isnan(g.psnr_fp32)  # stopped on the first input, a native crop: no pair scored yet
    assert not _passes(g, budget=100.0, min_fid=0.0, max_p999=255.0)


def test_a_candidate_not_finite_on_a_later_input_keeps_the_fp32_score_so_far(tmp_path):
    from sr_deploy.metrics import y_psnr_ssim

    pairs = _pairs()  # LR inputs 48 and 44 pixels wide, native crops 64: NaN on the second LR only
    g = Gate(_x2(tmp_path / "m.onnx"), pairs, 2).score(_x2(tmp_path / "nan.onnx", add=4 / 255, nan_narrower_than=46))
    # the fp32 model's score on the pairs scored before the NaN (the candidate's, shifted, is another figure)
    assert g.psnr_fp32 == pytest.approx(y_psnr_ssim(_nearest_x2(pairs[0].lr), pairs[0].hr, 2)[0], abs=1e-9)
    assert (g.psnr_new, g.fidelity_db, g.max_abs_diff, g.p999_levels) == (-math.inf, -math.inf, math.inf, 255.0)


@pytest.mark.parametrize("add", [0.5, -0.5])
@pytest.mark.parametrize("clipped", ["fp32", "candidate"])
def test_outputs_past_the_range_are_compared_as_pictures_clipped(tmp_path, add, clipped):
    """An fp32 model that overshoots [0, 1] and a candidate that clips (or the other way round) give the same
    picture: no difference counted, in float as in levels."""
    pairs = _pairs()  # 8..200: +0.5 puts most of the output above 1, -0.5 most below 0
    fp32 = _x2(tmp_path / "m.onnx", add=add, clip=clipped == "fp32")
    g = Gate(fp32, pairs, 2).score(_x2(tmp_path / "c.onnx", add=add, clip=clipped == "candidate"))
    assert (g.max_abs_diff, g.fidelity_db, g.p999_levels) == (0.0, math.inf, 0.0)
    assert g.psnr_new == g.psnr_fp32


def test_the_centre_crop():
    img = np.arange(100 * 80 * 3).reshape(100, 80, 3)
    assert np.array_equal(_center(img, 64), img[18:82, 8:72])
    small = img[:30, :50]
    assert np.array_equal(_center(small, 64), small)
    assert np.array_equal(_center(img[:50], 40), img[5:45, 20:60])


def test_fidelity_pools_every_pixel_and_never_wraps_uint8():
    a = np.zeros((2, 2, 1), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 8
    same = np.full((1, 1, 1), 250, np.uint8)
    # pooled over all 5 values (one off by 8), not averaged per image (one of which is identical: inf)
    psnr, p999 = fidelity_scores([a, same], [b, same])
    assert psnr == pytest.approx(10 * math.log10(255 ** 2 / (64 / 5)))
    assert p999 == pytest.approx(0.999 * 4 * 8 - 3 * 8)  # linear between the 4th and 5th of the sorted errors
    psnr, p999 = fidelity_scores([b], [a])  # 0 - 8 in uint8 would wrap to 248
    assert p999 == pytest.approx(0.999 * 3 * 8 - 2 * 8) and psnr == pytest.approx(10 * math.log10(255 ** 2 / 16))
    assert fidelity_scores([a], [a.copy()]) == (math.inf, 0.0)


def _scores(delta=0.25, fid=40.0, p999=24.0):
    return GateScores(psnr_fp32=30.0, psnr_new=30.0 - delta, max_abs_diff=0.0, fidelity_db=fid, p999_levels=p999)


def test_each_threshold_of_the_gate_is_inclusive():
    assert _passes(_scores(), budget=0.25, min_fid=40.0, max_p999=24.0)
    for worse in (_scores(delta=0.2500001), _scores(fid=39.99999), _scores(p999=24.00001)):
        assert not _passes(worse, budget=0.25, min_fid=40.0, max_p999=24.0), worse
    assert _passes(_scores(delta=-1.0), budget=0.0, min_fid=40.0, max_p999=24.0)  # a gain passes any budget


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_auto_trusts_a_report_only_passed_and_faithful(precision):
    fid, p999 = MIN_FIDELITY_DB[precision], MAX_P999_LEVELS[precision]
    ok = {"passed": True, "fidelity_db": fid, "p999_levels": p999}
    assert report_is_faithful(ok, precision)
    for bad in ({"passed": False}, {"fidelity_db": fid - 0.01}, {"p999_levels": p999 + 0.01},
                {"fidelity_db": None}, {"p999_levels": "4"}, {"fidelity_db": float("nan")}):
        assert not report_is_faithful({**ok, **bad}, precision), bad
    assert not report_is_faithful({k: v for k, v in ok.items() if k != "p999_levels"}, precision)
    assert not report_is_faithful(ok, "bf16")  # no gate of its own: never trusted


def _overflow_in_the_middle(path, peak: float):
    """input → times ``peak`` ("big") → identity ("big_again") → divided back: the output stays in [0, 1]
    while tensors inside the graph reach ``peak`` at an input of 255 levels."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Mul", ["input", "k"], ["big"]), helper.make_node("Identity", ["big"], ["big_again"]),
             helper.make_node("Div", ["big_again", "k"], ["output"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor("k", TensorProto.FLOAT, [], [peak])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("peak", [1e5, 0.25])
def test_fp16_headroom_finds_the_largest_activation_inside_the_graph_not_only_at_its_output(tmp_path, peak):
    from sr_deploy.precision.convert import fp16_headroom

    lr = np.zeros((4, 4, 3), np.uint8)
    lr[1, 2, 0] = 255  # one full-scale pixel: the peak is exactly peak x 1.0
    pairs = [EvalPair("dark", np.zeros((8, 8, 3), np.uint8), np.full((4, 4, 3), 3, np.uint8)),
             EvalPair("bright", np.zeros((8, 8, 3), np.uint8), lr)]
    worst, where = fp16_headroom(_overflow_in_the_middle(tmp_path / "g.onnx", peak), pairs)
    if peak > 1:  # inside the graph, past fp16's range; the first tensor to reach it named
        assert worst == pytest.approx(peak, rel=1e-6) and where == "big"
    else:  # the output (the input itself, at most 1.0) is the largest
        assert worst == pytest.approx(1.0, rel=1e-6) and where == "output"
