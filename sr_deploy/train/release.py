"""Ship a trained run: package weights, fp32 ONNX and model card, gated INT8 ONNX, training record.

    python -m sr_deploy.train.release runs/srresnet_x4 --name srresnet_x4 \\
        --val ../shared/datasets/set5 --calib ../shared/datasets/bsd200

Writes sr_deploy/weights/NAME.safetensors (+ NAME.json card, NAME.int8.onnx and its
quality report, so that `--backend auto` can pick it), export/NAME.onnx + NAME.json,
and train/records/NAME/ (log.csv, curves.png, record.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import torch

from sr_deploy.errors import ModelError
from sr_deploy.export.onnx_export import export_onnx
from sr_deploy.fsutil import atomic_path, sha256_file
from sr_deploy.models.checkpoint import load_checkpoint, save_checkpoint, read_checkpoint
from sr_deploy.quality import bicubic_upscale, evaluate, load_eval_set, torch_upscaler

REPO = Path(__file__).resolve().parents[2]


def training_hours(log_csv: Path) -> tuple[int, float]:
    """(last step, wall-clock hours) summed over the log's windows, so that resumed runs add up."""
    steps, hours, prev = 0, 0.0, 0
    with open(log_csv) as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            if row.get("steps_per_s"):
                hours += (step - prev) / float(row["steps_per_s"]) / 3600 if step > prev else 0.0
                prev = step
            steps = max(steps, step)
    return steps, hours


def merge_log(run_log: Path, record_log: Path) -> None:
    """Write the run's log into the record, keeping the record's rows from before the run's first step:
    a run warm-started from shipped weights (``--init --start-step``) continues the shipped model's
    history, and the record then covers every step behind the weights."""
    with open(run_log, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    first = int(rows[0]["step"]) if rows else 0
    earlier: list[dict] = []
    if record_log.exists() and first > 0:
        with open(record_log, newline="") as f:
            earlier = [r for r in csv.DictReader(f) if int(r["step"]) < first]
    with atomic_path(record_log) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(earlier + rows)


def _machine_line() -> str:
    from sr_deploy.machine import machine_info

    m = machine_info()
    return f"{m.get('cpu')} ({m.get('cores')} cores; {', '.join(m.get('isa', []))}), GPU: {m.get('gpu') or 'none'}"


def repo_relative_report(report: Path, root: Path = REPO, *, path: Path | None = None) -> None:
    """A precision report names its files by absolute path (right for a user's own run); a shipped one
    names them from the repository's root, so that the package holds no path of the release machine.
    ``path``: where the variant it reports on now lives (the packaged copy)."""
    data = json.loads(report.read_text())
    if path is not None:
        data["path"] = str(path.resolve())
    for key in ("path", "source"):
        data[key] = _from_repo(data.get(key), root) or data.get(key)
    _write_json(report, data)


def _from_repo(value: str | None, root: Path) -> str | None:
    """An absolute path inside the repository ``root``, written from the root; None for anything else."""
    if not isinstance(value, str) or not Path(value).is_absolute():
        return None
    p, root = Path(value).resolve(), root.resolve()
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else None


CONFIG_PATH_KEYS = ("data", "val", "out", "init", "resume", "vgg_weights")


def portable_config(config: dict, root: Path = REPO) -> dict:
    """The run's config as a card shows it: paths inside the repository from its root, paths outside it
    (the run folder, a checkpoint in it) by their last two parts, so that no card holds a path of the
    machine that trained or released it."""
    def portable(value):
        if isinstance(value, list):
            return [portable(v) for v in value]
        if not isinstance(value, str) or not Path(value).is_absolute():
            return value
        return _from_repo(value, root) or Path(*Path(value).parts[-2:]).as_posix()

    return {k: portable(v) if k in CONFIG_PATH_KEYS else v for k, v in config.items()}


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def release(run: Path, name: str, *, val: Path, calib: Path | None, checkpoint: str = "best.pt",
            notes: str = "", training_machines: str | None = None,
            data: str = "291 images (yang91 + bsd200), validation Set5", degrade: str | None = None,
            fp16_weights: bool = False) -> dict:
    """Ship ``run/checkpoint``: best.pt is the run's best validation (trainer.val_score: Y-PSNR, or for
    srgan the detail ratio closest to HR's).

    ``degrade`` (``real[:SEED]`` or ``degraded[:SEED]``): a model for real footage; its INT8 is calibrated and gated on degraded
    inputs too (make_precision_onnx). ``fp16_weights``: the safetensors stored in float16 (half the bytes);
    everything after (ONNX, scores, variants) is made from the weights as stored, so they all describe
    the file that ships. The variants must pass the gate on the bundled real photographs and on ``val``
    (_gated_variants)."""
    ckpt = run / checkpoint
    model, payload = load_checkpoint(ckpt)
    weights_dir = REPO / "sr_deploy" / "weights"
    weights = save_checkpoint(weights_dir / f"{name}.safetensors", model,
                              dtype=torch.float16 if fp16_weights else None)
    model, _ = load_checkpoint(weights)
    onnx_path = REPO / "export" / f"{name}.onnx"
    rep = export_onnx(model, onnx_path, name=name, source_sha256=sha256_file(weights))
    pairs = load_eval_set(val, model.scale)
    q = evaluate(pairs, model.scale, torch_upscaler(model))
    bic = evaluate(pairs, model.scale, lambda lr: bicubic_upscale(lr, model.scale))
    last = read_checkpoint(run / "last.pt") if (run / "last.pt").exists() else payload
    record = REPO / "train" / "records" / name
    record.mkdir(parents=True, exist_ok=True)
    merge_log(run / "log.csv", record / "log.csv")
    steps, hours = training_hours(record / "log.csv")
    here = _machine_line()
    card = {
        "name": name,
        "architecture": payload["arch"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "scale": model.scale,
        "recipe": last.get("recipe"),
        "config": portable_config(last.get("config", {})),
        "checkpoint_step": payload.get("step"),
        "trained_steps": steps,
        "train_hours_cpu_wall": round(hours, 2),
        "training_machines": training_machines or here,
        "release_machine": here,
        "data": data,
        f"{val.name}": {"psnr_y": round(q.psnr_y, 3), "ssim_y": round(q.ssim_y, 4), "detail_vs_hr": round(q.detail, 3),
                        "bicubic_psnr_y": round(bic.psnr_y, 3), "bicubic_ssim_y": round(bic.ssim_y, 4),
                        "bicubic_detail_vs_hr": round(bic.detail, 3),
                        "images": q.images, "protocol": "Y (BT.601), border = scale, PIL bicubic LR"},
        "weights_sha256": sha256_file(weights),
        "onnx": f"export/{name}.onnx",
        "onnx_sha256": sha256_file(onnx_path),
        "onnx_parity_max_abs": rep.max_abs_diff,
        "weights_dtype": "float16" if fp16_weights else "float32",
        "notes": notes,
    }
    if calib is not None:
        card.update(_gated_variants(onnx_path, name, model.scale, val=val, calib=calib, degrade=degrade))
        repo_relative_report(REPO / "export" / f"{name}.fp16.quality.json")  # the file build-engine makes there
        repo_relative_report(REPO / "export" / f"{name}.int8.quality.json", path=weights_dir / f"{name}.int8.onnx")
        for suffix in (".int8.onnx", ".int8.quality.json"):
            shutil.copyfile(REPO / "export" / f"{name}{suffix}", weights_dir / f"{name}{suffix}")
        (REPO / "export" / f"{name}.int8.onnx").unlink()  # one copy: the packaged one
        (REPO / "export" / f"{name}.fp16.onnx").unlink()  # made on demand by build-engine; its report stays
    _write_json(weights_dir / f"{name}.json", card)
    _write_json(REPO / "export" / f"{name}.json", card)
    from sr_deploy.train.trainer import plot_curves

    plot_curves(record / "log.csv", record / "curves.png")
    return card


def _gated_variants(onnx_path: Path, name: str, scale: int, *, val: Path, calib: Path, degrade: str | None) -> dict:
    """The card's ``fp16_gate`` and ``int8_gate``: each variant made against srdeploy's bundled real photographs
    (textured photos are where a variant strays from its model: srgan_x4's INT8 made against Set5 passed there
    at 45 dB and measured 38.9 dB, 27 levels at the 99.9th percentile, on the photographs), then scored on the
    validation set as well (``also_on``). A variant that fails either stops the release before any variant or
    card is written."""
    from sr_deploy.precision.convert import (BUDGETS_DB, GATE_IMAGES, MAX_P999_LEVELS, MIN_FIDELITY_DB, _passes,
                                             gate_pairs, make_precision_onnx, quality_gate)
    from sr_deploy.precision.int8 import PERCENTILE_CANDIDATES

    entries = {}
    pairs, label = gate_pairs(val, scale, degrade=degrade)  # read (and degraded) once for both variants
    for precision in ("fp16", "int8"):
        # the INT8 keeps the first and last conv in float (quantizing them cost >0.1 dB from step 7000 on)
        # and takes the calibration percentile that did best on held-out calibration crops
        r = make_precision_onnx(onnx_path, precision, calib=calib if precision == "int8" else None,
                                gate_data=GATE_IMAGES, percentiles=PERCENTILE_CANDIDATES, degrade=degrade)
        g = quality_gate(onnx_path, onnx_path.with_name(f"{name}.{precision}.onnx"), pairs, scale)
        also = {"gate_data": label, "delta_psnr_db": round(g.psnr_fp32 - g.psnr_new, 4),
                "fidelity_db": round(g.fidelity_db, 2), "p999_levels": g.p999_levels,
                "passed": _passes(g, BUDGETS_DB[precision], MIN_FIDELITY_DB[precision], MAX_P999_LEVELS[precision])}
        if not (r.passed and also["passed"]):
            raise ModelError(f"{name}: its {precision} variant fails the quality gate on "
                             f"{r.gate_data if not r.passed else label}; no variant or card written")
        entries[f"{precision}_gate"] = {"delta_psnr_db": round(r.delta_psnr_db, 4), "max_abs_diff": round(r.max_abs_diff, 4),
                                        "fidelity_db": round(r.fidelity_db, 2), "p999_levels": r.p999_levels,
                                        "passed": r.passed, "gate_data": r.gate_data,
                                        "excluded_nodes": list(r.excluded_nodes),
                                        "mixed_precision": list(r.mixed_precision), "also_on": also}
        if precision == "int8":
            entries["int8_gate"].update(calib_percentile=r.calib_percentile, percentile_search=r.percentile_search)
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--checkpoint", default="best.pt", help="file in the run folder")
    ap.add_argument("--notes", default="")
    ap.add_argument("--data", default="291 images (yang91 + bsd200), validation Set5", help="what it trained on")
    ap.add_argument("--training-machines", help="where the run trained, when not (only) this machine")
    ap.add_argument("--degrade", metavar="real|degraded[:SEED]",
                    help="a model for real footage: its INT8 calibrated and gated on degraded inputs too")
    ap.add_argument("--fp16-weights", action="store_true", help="store the safetensors in float16 (half the bytes)")
    args = ap.parse_args()
    card = release(args.run, args.name, val=args.val, calib=args.calib, checkpoint=args.checkpoint, notes=args.notes,
                   training_machines=args.training_machines, data=args.data, degrade=args.degrade,
                   fp16_weights=args.fp16_weights)
    print(json.dumps({k: card[k] for k in card if k not in ("config",)}, indent=2))


if __name__ == "__main__":
    main()
