"""Make an fp16 or int8 ONNX beside the fp32 one, and refuse it if it damages the picture."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError, QualityGateError
from sr_deploy.fsutil import atomic_path
from sr_deploy.precision.int8 import DEFAULT_PERCENTILE

BUDGETS_DB = {"fp16": 0.05, "int8": 0.3}
# Fidelity to the fp32 model's own output, the gate that holds for any model: a model trained on other
# degradations than the gate's bicubic downscales can lose nothing against HR and still draw different
# lines (Real-ESRGAN x4plus INT8: ΔPSNR vs HR ~0 dB, 28 dB from its fp32 output, 236 levels off).
# PSNR over RGB between the two uint8 outputs, and the 99.9th percentile of the per-pixel error in levels.
MIN_FIDELITY_DB = {"fp16": 45.0, "int8": 40.0}
MAX_P999_LEVELS = {"fp16": 4.0, "int8": 24.0}
FIDELITY_PERCENTILE = 99.9
NATIVE_CROP = 64  # the unscaled crop of each gate image scored for fidelity (an LR input as it comes)


def _center(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    return np.ascontiguousarray(img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw])


@dataclass(frozen=True)
class PrecisionReport:
    precision: str
    path: str
    source: str
    psnr_fp32: float
    psnr_new: float
    delta_psnr_db: float
    max_abs_diff: float
    budget_db: float
    passed: bool
    images: int
    gate_data: str
    excluded_nodes: tuple[str, ...] = ()
    calib_percentile: float | None = None
    # percentile search: ΔPSNR (dB) of each candidate on held-out crops of the calibration folder
    percentile_search: dict[str, float] | None = None
    # fidelity to the fp32 model's own output (MIN_FIDELITY_DB, MAX_P999_LEVELS)
    fidelity_db: float = float("nan")
    p999_levels: float = float("nan")
    min_fidelity_db: float = 0.0
    max_p999_levels: float = 255.0
    # INT8 retried with mixed precision: the convolutions kept in float after measuring their sensitivity
    mixed_precision: tuple[str, ...] = ()

    def line(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        loss = f"lost {self.delta_psnr_db:.4f} dB" if self.delta_psnr_db >= 0 else f"gained {-self.delta_psnr_db:.4f} dB"
        mixed = f"; {len(self.mixed_precision)} convs kept in float after a sensitivity search" if self.mixed_precision else ""
        return (f"{self.precision}: {self.fidelity_db:.2f} dB from the fp32 output (at least {self.min_fidelity_db:g}), "
                f"99.9th-percentile error {self.p999_levels:.0f} levels (at most {self.max_p999_levels:g}); "
                f"vs HR {loss} (fp32 {self.psnr_fp32:.3f}, {self.precision} {self.psnr_new:.3f}; budget "
                f"{self.budget_db} dB) on {self.images} held-out images [{self.gate_data}]{mixed}: {verdict}")


def precision_path(src: Path, precision: str) -> Path:
    name = src.name[:-len(".onnx")] if src.name.endswith(".onnx") else src.stem
    return src.with_name(f"{name}.{precision}.onnx")


def gate_pairs(folder: Path | None, scale: int, *, crop: int = 192, count: int = 8, held_out: bool = False,
               degrade: str | None = None):
    """(HR, LR) pairs for the gate: center crops of real images, or the built-in generated set.

    ``degrade`` (``real[:SEED]`` or ``degraded[:SEED]``, quality.lr_maker): each crop also as a degraded LR (a second pair sharing
    the HR array), for a model made for real footage, whose variant must hold on the noise and JPEG it is
    for; a clean-only gate never feeds it any (bicubic downscales are smooth)."""
    from sr_deploy.metrics import make_lr, mod_crop
    from sr_deploy.quality import EvalPair, lr_maker

    dlabel, dmake = lr_maker(degrade)

    if folder is None or Path(folder).resolve() == GATE_IMAGES:  # named, not by this machine's path
        imgs, label = bundled_images(count), "srdeploy's bundled real photographs"
    else:
        from sr_deploy.imagefiles import list_images, read_rgb

        files = list_images([folder])
        label = str(folder)
        if held_out:  # the files calibration did not use (split_holdout), never one it did
            from sr_deploy.precision.int8 import split_holdout

            files = split_holdout(files)[1]
            label = f"{folder}, files held out of calibration"
        if not files and held_out:
            from sr_deploy.synthetic import synthetic_images

            imgs = synthetic_images(count=4)
            label = f"generated images ({folder} has one image, none to hold out of calibration)"
        else:
            imgs = [read_rgb(f) for f in files[:count]]
    pairs = []
    for i, img in enumerate(imgs):
        h, w = img.shape[:2]
        c = min(crop, h, w)
        y, x = (h - c) // 2, (w - c) // 2
        hr = mod_crop(img[y:y + c, x:x + c], scale)
        pairs.append(EvalPair(f"{i}", hr, make_lr(hr, scale)))
    if dmake is not None:
        pairs += [EvalPair(f"{p.name} ({dlabel})", p.hr, dmake(p.hr, scale, i)) for i, p in enumerate(pairs)]
        label = f"{label}; each also degraded ({dlabel})"
    if not pairs:
        raise InputError(f"{folder}: no images for the quality gate")
    return pairs, label


GATE_IMAGES = Path(__file__).resolve().parent.parent / "assets" / "gate"


def bundled_images(count: int) -> list[np.ndarray]:
    """Real photographs that ship with srdeploy (assets/gate, README there): the gate's data when no
    folder is given; generated images judge a model on what it never sees."""
    from sr_deploy.imagefiles import list_images, read_rgb

    return [read_rgb(f) for f in list_images([GATE_IMAGES])[:count]]


@dataclass(frozen=True)
class GateScores:
    psnr_fp32: float  # Y-PSNR vs HR
    psnr_new: float
    max_abs_diff: float  # float outputs, [0, 1]
    fidelity_db: float  # RGB PSNR of the candidate's uint8 output against the fp32 model's
    p999_levels: float  # 99.9th percentile of the per-pixel |difference| in levels


def fidelity_scores(ref: list[np.ndarray], new: list[np.ndarray]) -> tuple[float, float]:
    """(PSNR in dB, 99.9th-percentile |error| in levels) of uint8 images ``new`` against ``ref``, pooled."""
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)).ravel() for a, b in zip(ref, new)]
    allv = np.concatenate(diffs).astype(np.float64)
    mse = float(np.mean(allv ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    return float(psnr), float(np.percentile(allv, FIDELITY_PERCENTILE))


def quality_gate(fp32: Path, candidate: Path, pairs, scale: int) -> GateScores:
    """Scores of ``candidate`` against the fp32 graph with ONNX Runtime on the CPU (see ``Gate``)."""
    return Gate(fp32, pairs, scale).score(candidate)


class Gate:
    """Scores candidates of one fp32 graph on one set of pairs: vs HR and vs the fp32 model's own output.

    The fp32 outputs are computed once, on the first score, and kept: a search that scores many
    candidates (percentiles, mixed precision) runs the fp32 model once. A candidate whose output is not
    finite anywhere (fp16 overflow: inf, then NaN) scores -inf, so no budget passes it."""

    def __init__(self, fp32: Path, pairs, scale: int) -> None:
        self.fp32, self.pairs, self.scale = fp32, pairs, scale
        # fidelity also on a crop of each real picture as it is (no downscale: its own noise and JPEG
        # blocks), as a user's input would be; a model trained on other degradations shows it here.
        # One per picture: pairs that share an HR array (gate_pairs' degraded copies) share its crop.
        hrs = list({id(p.hr): p.hr for p in pairs}.values())
        self.native = len(hrs)
        self.inputs = [_center(hr, NATIVE_CROP) for hr in hrs] + [p.lr for p in pairs]
        self._ref: list[np.ndarray] | None = None  # the fp32 outputs, float, clipped to [0, 1]

    def _run(self, model: Path):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        for img in self.inputs:
            yield sess.run(None, {"input": (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]})[0][0]

    def score(self, candidate: Path) -> GateScores:
        from sr_deploy.metrics import quantize, y_psnr_ssim

        if self._ref is None:
            self._ref = [np.clip(r, 0, 1) for r in self._run(self.fp32)]
        n = self.native
        ps: list[list[float]] = [[], []]
        imgs: list[list[np.ndarray]] = [[], []]
        worst = 0.0
        for i, raw in enumerate(self._run(candidate)):
            if not np.isfinite(raw).all():
                p32 = float(np.mean(ps[0])) if ps[0] else float("nan")
                return GateScores(p32, float("-inf"), float("inf"), float("-inf"), 255.0)
            outs = [self._ref[i], np.clip(raw, 0, 1)]
            if i >= n:  # an LR of a pair: scored against its HR too
                worst = max(worst, float(np.abs(outs[0] - outs[1]).max()))
            for k, o in enumerate(outs):
                sr = quantize(o.transpose(1, 2, 0))
                imgs[k].append(sr)
                if i >= n:
                    ps[k].append(y_psnr_ssim(sr, self.pairs[i - n].hr, self.scale)[0])
        fid, p999 = fidelity_scores(imgs[0], imgs[1])
        return GateScores(float(np.mean(ps[0])), float(np.mean(ps[1])), worst, fid, p999)


FP16_MAX = 65504.0


def fp16_headroom(fp32: Path, pairs) -> tuple[float, str]:
    """The largest |activation| anywhere in the fp32 graph over the gate images, and its tensor.

    Why the gate needs it: ONNX Runtime on the CPU has no fp16 kernels for most operators and keeps the
    intermediates of an fp16 graph in fp32 (its cast insertion removes the round trips), so an fp16
    variant scored there never overflows, while TensorRT or CUDA would produce inf and NaN. Any
    activation beyond fp16's 65504 in the fp32 graph means the fp16 variant is unsafe on a GPU."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(fp32))
    have = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for name in node.output:
            if name and name not in have:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
                have.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    worst, where = 0.0, ""
    for pair in pairs:
        x = (pair.lr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        for name, value in zip(names, sess.run(None, {"input": x})):
            if isinstance(value, np.ndarray) and value.dtype == np.float32 and value.size:
                m = float(np.abs(value).max())
                if m > worst:
                    worst, where = m, name
    return worst, where


def make_precision_onnx(src: Path, precision: str, *, out: Path | None = None, calib: Path | None = None,
                        gate_data: Path | None = None, budget_db: float | None = None, calib_count: int | None = None,
                        calib_size: int = 48, quantize_ends: bool = False, calib_method: str = "percentile",
                        percentiles: tuple[float, ...] = (DEFAULT_PERCENTILE,),
                        min_fidelity_db: float | None = None, max_p999_levels: float | None = None,
                        mixed_precision: bool = True, overwrite: bool = True,
                        degrade: str | None = None) -> PrecisionReport:
    """Convert, gate, and write ``NAME.<precision>.onnx`` plus ``NAME.<precision>.quality.json``.

    With several ``percentiles`` (percentile calibration), each is quantized and scored on
    held-out crops of the *calibration* folder, never on the gate data, and the best is kept:
    which percentile clips least harmfully shifts as a model trains (on srresnet_x4, 99.999
    was best at step 7000 and 99.995 at step 10000).

    ``degrade`` (``real[:SEED]`` or ``degraded[:SEED]``): calibration crops and gate images (the percentile and mixed-precision
    searches' too) also come degraded, for a model made for real footage: its activations on noise and
    JPEG blocks are what its ranges must hold, and what its variant must reproduce.

    Raises QualityGateError (nothing written under the model's final name) when
    ΔPSNR exceeds the budget; the report is written either way.
    """
    import onnx

    from sr_deploy.descriptor import METADATA_KEY
    from sr_deploy.export.onnx_file import read_descriptor

    _check_settings(precision, calib_method, calib_count, calib_size, percentiles, degrade)
    desc = read_descriptor(src)
    if desc.precision != "fp32":
        raise InputError(f"{src}: is already {desc.precision}; convert from the fp32 ONNX")
    budget = BUDGETS_DB[precision] if budget_db is None else budget_db
    min_fid = MIN_FIDELITY_DB[precision] if min_fidelity_db is None else min_fidelity_db
    max_p999 = MAX_P999_LEVELS[precision] if max_p999_levels is None else max_p999_levels
    out = out or precision_path(src, precision)
    batches = None
    if precision == "int8":
        if calib is None:
            raise InputError("--int8 needs calibration images: pass --calib DIR (a folder of real images)")
        from sr_deploy.precision.int8 import calibration_batches

        if calib_count is None:
            # ONNX Runtime's histogram calibrators keep every crop's activations until the end
            # (about 65 MB per 48px crop for srresnet_x4): 64 crops stay near 4 GB; min/max streams
            calib_count = 256 if calib_method == "minmax" else 64
        batches = calibration_batches(calib, count=calib_count, lr_size=calib_size, scale=desc.scale, degrade=degrade)
    pairs, label = gate_pairs(gate_data or calib, desc.scale, held_out=gate_data is None and calib is not None,
                              degrade=degrade)
    excluded: list[str] = []
    chosen = search = None
    gate = Gate(src, pairs, desc.scale)
    with atomic_path(out, overwrite=overwrite) as tmp, tempfile.TemporaryDirectory(prefix="srdeploy-ranges-") as rdir:
        # one calibration per percentile, kept for every quantization that follows (search, mixed precision)
        def ranges(pct: float) -> Path:
            return Path(rdir) / f"{calib_method}-{pct:g}.json"

        if precision == "fp16":
            from sr_deploy.precision.fp16 import convert_fp16

            convert_fp16(src, tmp)
        else:
            from sr_deploy.precision.int8 import convert_int8

            chosen, search = None, None
            if calib_method == "percentile" and len(percentiles) > 1:
                chosen, search = _search_percentile(src, tmp, batches, calib, desc.scale, percentiles, quantize_ends,
                                                    ranges, degrade)
            elif calib_method == "percentile":
                chosen = percentiles[0]
            excluded = convert_int8(src, tmp, batches, quantize_ends=quantize_ends, method=calib_method,
                                    percentile=chosen or DEFAULT_PERCENTILE,
                                    ranges=ranges(chosen or DEFAULT_PERCENTILE))
        def stamp() -> None:  # the variant's descriptor says its precision (every conversion rewrites tmp)
            proto = onnx.load(str(tmp))
            for entry in proto.metadata_props:
                if entry.key == METADATA_KEY:
                    entry.value = desc.with_(precision=precision).to_json()
            onnx.save(proto, str(tmp))

        stamp()
        g = gate.score(tmp)
        mixed: list[str] = []
        if precision == "int8" and mixed_precision and not _passes(g, budget, min_fid, max_p999):
            # before refusing: keep the convolutions that measured most sensitive in float (mixed precision)
            pct = chosen or DEFAULT_PERCENTILE
            mixed, g = _mixed_precision(src, tmp, batches, calib, desc.scale, gate, excluded, pct, quantize_ends,
                                        calib_method, budget, min_fid, max_p999, ranges(pct), degrade)
            excluded = excluded + mixed
            stamp()
        if precision == "fp16":
            peak, where = fp16_headroom(src, pairs)
            if peak > FP16_MAX:  # would be inf on a GPU, whatever the CPU scored
                g = GateScores(g.psnr_fp32, float("-inf"), float("inf"), float("-inf"), 255.0)
                label = f"{label}; activation {where!r} reaches {peak:.3g} in fp32, beyond fp16's {FP16_MAX:g}"
        report = PrecisionReport(precision, str(out), str(src), g.psnr_fp32, g.psnr_new, g.psnr_fp32 - g.psnr_new,
                                 g.max_abs_diff, budget, _passes(g, budget, min_fid, max_p999),
                                 len(pairs), label, tuple(excluded),
                                 chosen if precision == "int8" else None, search if precision == "int8" else None,
                                 g.fidelity_db, g.p999_levels, min_fid, max_p999, tuple(mixed))
        # A refusal is reported beside, in NAME.<precision>.refused.json: an existing variant and its
        # passing report (from an earlier run) stay as they were, so no report contradicts its file.
        refused = out.with_suffix(".refused.json")
        with atomic_path(out.with_suffix(".quality.json") if report.passed else refused) as rtmp:
            rtmp.write_text(json.dumps(asdict(report), indent=2))
        if not report.passed:
            kept = f"; the existing {out.name} is kept" if out.exists() else ""
            raise QualityGateError(f"{report.line()}; not written (report: {refused.name}{kept}; "
                                   f"loosen with --max-delta-db / --min-fidelity-db)")
        refused.unlink(missing_ok=True)
    return report


def _check_settings(precision: str, calib_method: str, calib_count: int | None, calib_size: int,
                    percentiles: tuple[float, ...], degrade: str | None) -> None:
    """make_precision_onnx's settings, each refused in one line before any work."""
    from sr_deploy.precision.int8 import CALIB_METHODS
    from sr_deploy.quality import lr_maker

    if precision not in BUDGETS_DB:
        raise InputError(f"precision must be fp16 or int8, got {precision!r}")
    if calib_method not in CALIB_METHODS:
        raise InputError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {calib_method!r}")
    if calib_count is not None and calib_count < 1:
        raise InputError(f"--calib-count must be at least 1, got {calib_count}")
    if not 8 <= calib_size <= 4096:
        raise InputError(f"--calib-size must be from 8 to 4096 pixels, got {calib_size}")
    bad = [p for p in percentiles if not 50 < p < 100]
    if bad:
        raise InputError(f"--percentile must be above 50 and below 100 (for example 99.999), got {bad[0]:g}")
    lr_maker(degrade)  # a degradation that does not parse


def _search_percentile(src: Path, tmp: Path, batches, calib: Path, scale: int, candidates: tuple[float, ...],
                       quantize_ends: bool, ranges, degrade: str | None = None) -> tuple[float, dict[str, float]]:
    """The candidate percentile with the smallest ΔPSNR on calibration-folder crops not used to calibrate."""
    from sr_deploy.precision.int8 import convert_int8

    held_out = Gate(src, gate_pairs(calib, scale, held_out=True, count=8, degrade=degrade)[0], scale)
    scores: dict[str, float] = {}
    for pct in candidates:
        convert_int8(src, tmp, batches, quantize_ends=quantize_ends, method="percentile", percentile=pct,
                     ranges=ranges(pct))
        g = held_out.score(tmp)
        scores[f"{pct:g}"] = round(g.psnr_fp32 - g.psnr_new, 4)
    best = min(candidates, key=lambda p: scores[f"{p:g}"])
    return best, scores


def _passes(g: GateScores, budget: float, min_fid: float, max_p999: float) -> bool:
    return bool(g.psnr_fp32 - g.psnr_new <= budget and g.fidelity_db >= min_fid and g.p999_levels <= max_p999)


MAX_GROUPS = 24  # groups of convolutions the sensitivity search tries at most
MIXED_MAX_FLOAT_SHARE = 0.5  # past half the convolutions in float, INT8 is no longer worth running


def _mixed_precision(src: Path, tmp: Path, batches, calib: Path, scale: int, gate: Gate, excluded: list[str],
                     percentile: float, quantize_ends: bool, method: str, budget: float, min_fid: float,
                     max_p999: float, ranges: Path | None = None,
                     degrade: str | None = None) -> tuple[list[str], GateScores]:
    """Keep the most sensitive convolutions in float until the INT8 graph passes (or half are float).

    Sensitivity is measured: the fidelity of the graph with only one group of convolutions quantized (one
    conv per group up to MAX_GROUPS convs; contiguous runs of convs in deeper graphs, so that Real-ESRGAN
    x4plus's 351 convs cost 24 tries, not 351), on held-out crops of the calibration folder (never the
    gate's images). The worst groups are kept in float in doubling numbers (1, 2, 4, ...), each try scored
    by the gate. Every try quantizes from the one calibration in ``ranges`` (calibrating each of x4plus's
    tries again is what kept its search from finishing on a 2-core CPU) and the fp32 outputs are computed
    once per set of crops (``Gate``)."""
    from sr_deploy.precision.int8 import conv_names, convert_int8

    held_out = Gate(src, gate_pairs(calib, scale, held_out=True, count=4, crop=96, degrade=degrade)[0], scale)
    convs = [c for c in conv_names(src) if c not in excluded]
    size = -(-len(convs) // MAX_GROUPS)
    groups = [convs[i:i + size] for i in range(0, len(convs), size)]
    sensitivity = {}
    for gi, group in enumerate(groups):
        others = [c for c in convs if c not in group]
        convert_int8(src, tmp, batches, quantize_ends=quantize_ends, method=method, percentile=percentile,
                     exclude=excluded + others, ranges=ranges)
        sensitivity[gi] = held_out.score(tmp).fidelity_db
    ranked_groups = sorted(range(len(groups)), key=lambda gi: sensitivity[gi])
    limit = max(1, int(len(groups) * MIXED_MAX_FLOAT_SHARE))
    n, g = 1, None
    while True:
        keep = [c for gi in ranked_groups[:min(n, limit)] for c in groups[gi]]
        convert_int8(src, tmp, batches, quantize_ends=quantize_ends, method=method, percentile=percentile,
                     exclude=excluded + keep, ranges=ranges)
        g = gate.score(tmp)
        if _passes(g, budget, min_fid, max_p999) or n >= limit:
            return keep, g
        n *= 2


def regate(src: Path, variant: Path, *, gate_data: Path | None = None, degrade: str | None = None) -> PrecisionReport:
    """Score an existing variant of ``src`` again with today's gate (fidelity included) and rewrite its report
    beside it: ``python -m sr_deploy.precision.convert FP32.onnx VARIANT.onnx [GATE_DIR]``. The variant
    itself is not touched; calibration facts of the old report (percentile, search, excluded convs) are kept."""
    from sr_deploy.export.onnx_file import read_descriptor

    desc, vdesc = read_descriptor(src), read_descriptor(variant)
    precision = vdesc.precision
    if precision not in BUDGETS_DB or desc.precision != "fp32":
        raise InputError(f"{variant}: regate takes an fp32 ONNX and its fp16 or int8 variant")
    old_path = variant.with_suffix(".quality.json")
    old = json.loads(old_path.read_text()) if old_path.exists() else {}
    pairs, label = gate_pairs(gate_data, desc.scale, degrade=degrade)
    g = quality_gate(src, variant, pairs, desc.scale)
    budget, min_fid, max_p999 = BUDGETS_DB[precision], MIN_FIDELITY_DB[precision], MAX_P999_LEVELS[precision]
    delta = g.psnr_fp32 - g.psnr_new
    report = PrecisionReport(precision, old.get("path", str(variant)), old.get("source", str(src)), g.psnr_fp32,
                             g.psnr_new, delta, g.max_abs_diff, budget, _passes(g, budget, min_fid, max_p999),
                             len(pairs), label, tuple(old.get("excluded_nodes", ())), old.get("calib_percentile"),
                             old.get("percentile_search"), g.fidelity_db, g.p999_levels, min_fid, max_p999,
                             tuple(old.get("mixed_precision", ())))
    with atomic_path(old_path) as tmp:
        tmp.write_text(json.dumps(asdict(report), indent=2))
    return report


if __name__ == "__main__":
    import sys

    args = [Path(a) for a in sys.argv[1:]]
    print(regate(args[0], args[1], gate_data=args[2] if len(args) > 2 else None).line())
