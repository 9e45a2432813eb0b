"""srdeploy and vs-mlrt side by side, model only: the same ONNX, the same frames, alternating runs.

    usage: python benchmarks/vsmlrt_side_by_side.py VS_PYTHON OUT.md [MODEL ...] [--frames N] [--rounds R]
                                                    [--size HxW]

VS_PYTHON is a Python (3.12 or later) with vs-mlrt installed from PyPI: ``pip install vapoursynth
vapoursynth-mlrt-ov vapoursynth-mlrt-ort numpy`` (the wheels carry no ``vsmlrt.py``: ``core.ov.Model`` and
``core.ort.Model`` are called directly). For each model (default light_x4 and srresnet_x4) srdeploy's fp32
ONNX is handed to both; each row is frames/s over N frames of HxW (default 270x480), best of R rounds,
the two tools alternating within a round (frame 0 is the warm-up, frames 1..N-1 are timed):

- vs-mlrt OpenVINO at num_streams 1 and 2 and ONNX Runtime at num_streams 1 (frames requested ahead by
  VapourSynth's own threads, ``clip.frames()``), RGBS in and out;
- srdeploy as ``auto`` would run the model here (``make_runner(source, "auto")``), and OpenVINO fp32 and
  ONNX Runtime fp32 as given, ``stream_u8`` over uint8 frames (what ``srdeploy run`` feeds).

Fidelity: each row's first output against ONNX Runtime fp32 run by srdeploy, as PSNR (dB) of the uint8
output. Pause other work first: the figures are only as good as the quiet of the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# run by VS_PYTHON: reads the frames (.npy, uint8 NHWC), times the asked vs-mlrt plugin, writes its first
# output (uint8 HWC) and prints one JSON line
VS_SIDE = r"""
import json, sys, time
import numpy as np
import vapoursynth as vs
core = vs.core
onnx, frames_path, plugin, streams, out_path = sys.argv[1:6]
frames = np.load(frames_path)
n, h, w, _ = frames.shape
planar = np.ascontiguousarray(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
def fill(i, f):
    f = f.copy()
    for p in range(3):
        np.copyto(np.asarray(f[p]), planar[i % n, p])
    return f
clip = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=n)
clip = core.std.ModifyFrame(clip, clip, lambda n, f: fill(n, f))
model = core.ov.Model if plugin == "ov" else core.ort.Model
kw = {"device": "CPU"} if plugin == "ov" else {"provider": "CPU"}
out = model(clip, network_path=onnx, num_streams=int(streams), **kw)
first = out.get_frame(0)  # warm-up: compilation
y = np.stack([np.asarray(first[p]) for p in range(3)], -1)
np.save(out_path, np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8))
t = time.perf_counter()
for _ in out[1:].frames():  # frame 0 is in VapourSynth's cache now: timing it would count it for free
    pass
print(json.dumps({"fps": (n - 1) / (time.perf_counter() - t)}))
"""


def _vs_row(vs_python: str, onnx: Path, frames_path: Path, plugin: str, streams: int, work: Path) -> tuple[float, np.ndarray]:
    out = work / f"vs-{plugin}-{streams}.npy"
    proc = subprocess.run([vs_python, "-c", VS_SIDE, str(onnx), str(frames_path), plugin, str(streams), str(out)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"vs-mlrt {plugin}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["fps"], np.load(out)


def _srdeploy_row(runner, frames: np.ndarray) -> tuple[float, np.ndarray]:
    with runner:
        first = runner.infer_u8(frames[:1])[0]  # warm-up
        t = time.perf_counter()
        for _ in runner.stream_u8(iter([f[None] for f in frames[1:]])):  # the same frames as vs-mlrt's
            pass
        return (len(frames) - 1) / (time.perf_counter() - t), first


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    from sr_deploy.machine import machine_info
    from sr_deploy.runtime.select import make_runner, resolve_model
    from sr_deploy.runtime.sources import onnx_for

    ap = argparse.ArgumentParser()
    ap.add_argument("vs_python")
    ap.add_argument("out", type=Path)
    ap.add_argument("models", nargs="*", default=["light_x4", "srresnet_x4"])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", default="270x480")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    m = machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (args.frames, h, w, 3), dtype=np.uint8)
        frames_path = work / "frames.npy"
        np.save(frames_path, frames)
        for name in args.models:
            source = resolve_model(name)
            onnx = onnx_for(source)
            ref_runner, _ = make_runner(source, "onnxruntime", "fp32")
            with ref_runner:
                ref = ref_runner.infer_u8(frames[:1])[0]
            sides = {
                "vs-mlrt OpenVINO fp32, 1 stream": lambda: _vs_row(args.vs_python, onnx, frames_path, "ov", 1, work),
                "vs-mlrt OpenVINO fp32, 2 streams": lambda: _vs_row(args.vs_python, onnx, frames_path, "ov", 2, work),
                "vs-mlrt ONNX Runtime fp32": lambda: _vs_row(args.vs_python, onnx, frames_path, "ort", 1, work),
                "srdeploy auto": lambda: _srdeploy_row(make_runner(source, "auto")[0], frames),
                "srdeploy OpenVINO fp32": lambda: _srdeploy_row(make_runner(source, "openvino", "fp32")[0], frames),
                "srdeploy ONNX Runtime fp32": lambda: _srdeploy_row(make_runner(source, "onnxruntime", "fp32")[0], frames),
            }
            best: dict[str, float] = {}
            fid: dict[str, float] = {}
            for r in range(args.rounds):
                for label, run in sides.items():
                    fps, first = run()
                    best[label] = max(best.get(label, 0.0), fps)
                    fid[label] = _psnr(first, ref)
                    print(f"{name} round {r + 1}: {label}: {fps:.2f} frames/s, {fid[label]:.1f} dB from ORT fp32",
                          flush=True)
            auto = make_runner(source, "auto")
            peer = max(v for k, v in best.items() if k.startswith("vs-mlrt"))
            for label in sides:
                rows.append({"model": name, "row": label, "fps": round(best[label], 3),
                             "fidelity_db": round(fid[label], 2),
                             "vs_best_vsmlrt": round(best[label] / peer, 3) if label.startswith("srdeploy") else None})
            rows.append({"model": name, "row": "auto ran", "why": auto[1]})
    lines = [f"# srdeploy vs vs-mlrt, model only ({args.size}, {args.frames} frames, best of {args.rounds} rounds)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores. Command: `python benchmarks/vsmlrt_side_by_side.py "
             f"VS_PYTHON {args.out} {' '.join(args.models)} --frames {args.frames} --rounds {args.rounds}`", "",
             "| model | row | frames/s | PSNR vs ORT fp32 (dB) | / best vs-mlrt |", "|---|---|---|---|---|"]
    for r in rows:
        if "fps" in r:
            ratio = f"{r['vs_best_vsmlrt']:.2f}x" if r["vs_best_vsmlrt"] is not None else ""
            lines.append(f"| {r['model']} | {r['row']} | {r['fps']:.2f} | {r['fidelity_db']:.1f} | {ratio} |")
    lines += [""] + [f"- {r['model']}: auto ran {r['why']}" for r in rows if "why" in r]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"machine": m, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
