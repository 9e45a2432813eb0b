"""Make an fp16 or int8 ONNX beside the fp32 one, and refuse it if it damages the picture."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError, QualityGateError
from sr_deploy.fsutil import atomic_path
from sr_deploy.precision.int8 import DEFAULT_PERCENTILE

BUDGETS_DB = {"fp16": 0.05, "int8": 0.3}


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

    def line(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return (f"{self.precision}: ΔPSNR(Y) {self.delta_psnr_db:+.4f} dB (fp32 {self.psnr_fp32:.3f}, "
                f"{self.precision} {self.psnr_new:.3f}) on {self.images} held-out images [{self.gate_data}], "
                f"max |Δ| {self.max_abs_diff:.4f}; budget {self.budget_db} dB: {verdict}")


def precision_path(src: Path, precision: str) -> Path:
    name = src.name[:-len(".onnx")] if src.name.endswith(".onnx") else src.stem
    return src.with_name(f"{name}.{precision}.onnx")


def gate_pairs(folder: Path | None, scale: int, *, crop: int = 192, count: int = 8, held_out: bool = False):
    """(HR, LR) pairs for the gate: center crops of real images, or the built-in generated set."""
    from sr_deploy.metrics import make_lr, mod_crop
    from sr_deploy.quality import EvalPair

    if folder is None:
        from sr_deploy.synthetic import synthetic_images

        imgs, label = synthetic_images(count=4), "generated images"
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
    if not pairs:
        raise InputError(f"{folder}: no images for the quality gate")
    return pairs, label


def quality_gate(fp32: Path, candidate: Path, pairs, scale: int) -> tuple[float, float, float]:
    """(psnr fp32, psnr candidate, max abs diff) with ONNX Runtime on the CPU. A candidate whose output
    is not finite anywhere (fp16 overflow: inf, then NaN) scores -inf, so no budget passes it."""
    import onnxruntime as ort

    from sr_deploy.metrics import quantize
    from sr_deploy.metrics import y_psnr_ssim

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, candidate)]
    ps = [[], []]
    worst = 0.0
    for pair in pairs:
        x = (pair.lr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        raw = [s.run(None, {"input": x})[0][0] for s in sessions]
        if not np.isfinite(raw[1]).all():
            return float(np.mean(ps[0])) if ps[0] else float("nan"), float("-inf"), float("inf")
        outs = [np.clip(r, 0, 1) for r in raw]
        worst = max(worst, float(np.abs(outs[0] - outs[1]).max()))
        for k, o in enumerate(outs):
            sr = quantize(o.transpose(1, 2, 0))
            ps[k].append(y_psnr_ssim(sr, pair.hr, scale)[0])
    return float(np.mean(ps[0])), float(np.mean(ps[1])), worst


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
                        overwrite: bool = True) -> PrecisionReport:
    """Convert, gate, and write ``NAME.<precision>.onnx`` plus ``NAME.<precision>.quality.json``.

    With several ``percentiles`` (percentile calibration), each is quantized and scored on
    held-out crops of the *calibration* folder, never on the gate data, and the best is kept:
    which percentile clips least harmfully shifts as a model trains (on srresnet_x4, 99.999
    was best at step 7000 and 99.995 at step 10000).

    Raises QualityGateError (nothing written under the model's final name) when
    ΔPSNR exceeds the budget; the report is written either way.
    """
    import onnx

    from sr_deploy.descriptor import METADATA_KEY
    from sr_deploy.export.onnx_export import read_descriptor

    if precision not in BUDGETS_DB:
        raise InputError(f"precision must be fp16 or int8, got {precision!r}")
    from sr_deploy.precision.int8 import CALIB_METHODS

    if calib_method not in CALIB_METHODS:
        raise InputError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {calib_method!r}")
    desc = read_descriptor(src)
    if desc.precision != "fp32":
        raise InputError(f"{src}: is already {desc.precision}; convert from the fp32 ONNX")
    budget = BUDGETS_DB[precision] if budget_db is None else budget_db
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
        batches = calibration_batches(calib, count=calib_count, lr_size=calib_size, scale=desc.scale)
    pairs, label = gate_pairs(gate_data or calib, desc.scale, held_out=gate_data is None and calib is not None)
    excluded: list[str] = []
    chosen = search = None
    with atomic_path(out, overwrite=overwrite) as tmp:
        if precision == "fp16":
            from sr_deploy.precision.fp16 import convert_fp16

            convert_fp16(src, tmp)
        else:
            from sr_deploy.precision.int8 import convert_int8

            chosen, search = None, None
            if calib_method == "percentile" and len(percentiles) > 1:
                chosen, search = _search_percentile(src, tmp, batches, calib, desc.scale, percentiles, quantize_ends)
            elif calib_method == "percentile":
                chosen = percentiles[0]
            excluded = convert_int8(src, tmp, batches, quantize_ends=quantize_ends, method=calib_method,
                                    percentile=chosen or DEFAULT_PERCENTILE)
        proto = onnx.load(str(tmp))
        for entry in proto.metadata_props:
            if entry.key == METADATA_KEY:
                entry.value = desc.with_(precision=precision).to_json()
        onnx.save(proto, str(tmp))
        p32, pnew, worst = quality_gate(src, tmp, pairs, desc.scale)
        if precision == "fp16":
            peak, where = fp16_headroom(src, pairs)
            if peak > FP16_MAX:  # would be inf on a GPU, whatever the CPU scored
                pnew, worst = float("-inf"), float("inf")
                label = f"{label}; activation {where!r} reaches {peak:.3g} in fp32, beyond fp16's {FP16_MAX:g}"
        delta = p32 - pnew
        report = PrecisionReport(precision, str(out), str(src), p32, pnew, delta, worst, budget, delta <= budget,
                                 len(pairs), label, tuple(excluded),
                                 chosen if precision == "int8" else None, search if precision == "int8" else None)
        # A refusal is reported beside, in NAME.<precision>.refused.json: an existing variant and its
        # passing report (from an earlier run) stay as they were, so no report contradicts its file.
        refused = out.with_suffix(".refused.json")
        with atomic_path(out.with_suffix(".quality.json") if report.passed else refused) as rtmp:
            rtmp.write_text(json.dumps(asdict(report), indent=2))
        if not report.passed:
            kept = f"; the existing {out.name} is kept" if out.exists() else ""
            raise QualityGateError(f"{report.line()}; not written (report: {refused.name}{kept}; "
                                   f"raise the budget with --max-delta-db)")
        refused.unlink(missing_ok=True)
    return report


def _search_percentile(src: Path, tmp: Path, batches, calib: Path, scale: int, candidates: tuple[float, ...],
                       quantize_ends: bool) -> tuple[float, dict[str, float]]:
    """The candidate percentile with the smallest ΔPSNR on calibration-folder crops not used to calibrate."""
    from sr_deploy.precision.int8 import convert_int8

    held_out, _ = gate_pairs(calib, scale, held_out=True, count=8)
    scores: dict[str, float] = {}
    for pct in candidates:
        convert_int8(src, tmp, batches, quantize_ends=quantize_ends, method="percentile", percentile=pct)
        p32, pq, _ = quality_gate(src, tmp, held_out, scale)
        scores[f"{pct:g}"] = round(p32 - pq, 4)
    best = min(candidates, key=lambda p: scores[f"{p:g}"])
    return best, scores
