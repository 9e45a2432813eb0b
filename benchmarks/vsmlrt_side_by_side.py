"""srdeploy and vs-mlrt side by side: the same ONNX, the same frames, alternating runs; model only and
end to end.

    usage: python benchmarks/vsmlrt_side_by_side.py VS_PYTHON OUT.md [MODEL ...] [--frames N] [--rounds R]
                                                    [--size HxW] [--images DIR] [--e2e-frames N]

VS_PYTHON is a Python (3.12 or later) with vs-mlrt installed from PyPI: ``pip install vapoursynth
vapoursynth-mlrt-ov vapoursynth-mlrt-ort numpy av`` (the wheels carry no ``vsmlrt.py``: ``core.ov.Model``
and ``core.ort.Model`` are called directly). For each model (default light_x4 and srresnet_x4) srdeploy's
fp32 ONNX is handed to both. The frames are HxW crops (default 270x480) of the photos in DIR (default
``../shared/datasets/bsd200``: natural content, because random noise is the worst case of any reduced
precision and says little about footage).

Model only, frames/s over N frames, best of R rounds, the two tools alternating within a round (frame 0 is
the warm-up, frames 1..N-1 are timed):

- vs-mlrt OpenVINO at its default precision (OpenVINO's own choice: bf16 on CPUs with native bf16) and
  at f32 (``INFERENCE_PRECISION_HINT`` through its ``config``), each at num_streams 1 and 2, and ONNX
  Runtime fp32; frames requested ahead by VapourSynth's own threads (``clip.frames()``), RGBS in and out;
- srdeploy as ``auto`` runs the model here (``make_runner(source, "auto")``), and OpenVINO fp32 and bf16
  (where native) with one request and with two streams, and ONNX Runtime fp32, ``stream_u8`` over uint8
  frames (what ``srdeploy run`` feeds).

Fidelity: each row's first output against ONNX Runtime fp32 run by srdeploy, as PSNR (dB) of the uint8
output. Each srdeploy row is set against the fastest vs-mlrt row and against the fastest vs-mlrt row at
equal or lower fidelity (``/ vs-mlrt at ≤ fidelity``; a 0.5 dB margin counts as equal).

End to end (``--e2e-frames``, default 48; 0 skips it): a clip of those frames (libx264, CRF 10), upscaled
to a libx264 file (veryfast, CRF 18, yuv420p, as ``srdeploy run`` writes by default) by ``srdeploy run``
(auto, and the fastest srdeploy row at vs-mlrt's best fidelity) and by a plain PyAV → vs-mlrt → PyAV
loop at vs-mlrt's fastest model-only setting; frames/s over the whole command (start-up and compilation
included for both). Pause other work first: the figures are only as good as the quiet of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EQUAL_DB = 0.5  # fidelity within this of a vs-mlrt row's counts as equal

# run by VS_PYTHON: reads the frames (.npy, uint8 NHWC), times the asked vs-mlrt plugin, writes its first
# output (uint8 HWC) and prints one JSON line
VS_SIDE = r"""
import json, sys, time
import numpy as np
import vapoursynth as vs
core = vs.core
onnx, frames_path, plugin, streams, hint, out_path = sys.argv[1:7]
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
if plugin == "ov":
    kw = {"device": "CPU"}
    if hint != "default":
        kw["config"] = lambda: {"INFERENCE_PRECISION_HINT": hint}
    out = core.ov.Model(clip, network_path=onnx, num_streams=int(streams), **kw)
else:
    out = core.ort.Model(clip, network_path=onnx, num_streams=int(streams), provider="CPU")
first = out.get_frame(0)  # warm-up: compilation
y = np.stack([np.asarray(first[p]) for p in range(3)], -1)
np.save(out_path, np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8))
t = time.perf_counter()
for _ in out[1:].frames():  # frame 0 is in VapourSynth's cache now: timing it would count it for free
    pass
print(json.dumps({"fps": (n - 1) / (time.perf_counter() - t)}))
"""

# run by VS_PYTHON: the plain loop a vs-mlrt user writes around it, PyAV decode → vs-mlrt → PyAV libx264
VS_E2E = r"""
import sys
import av, numpy as np
import vapoursynth as vs
core = vs.core
onnx, src, dst, streams, hint = sys.argv[1:6]
with av.open(src) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
n, (h, w) = len(frames), frames[0].shape[:2]
def fill(i, f):
    f = f.copy()
    for p in range(3):
        np.copyto(np.asarray(f[p]), frames[i][..., p].astype(np.float32) / 255.0)
    return f
clip = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=n)
clip = core.std.ModifyFrame(clip, clip, lambda n, f: fill(n, f))
kw = {"config": lambda: {"INFERENCE_PRECISION_HINT": hint}} if hint != "default" else {}
out = core.ov.Model(clip, network_path=onnx, num_streams=int(streams), device="CPU", **kw)
with av.open(dst, "w") as o:
    s = o.add_stream("libx264", rate=24)
    s.width, s.height, s.pix_fmt = out.width, out.height, "yuv420p"
    s.options = {"crf": "18", "preset": "veryfast"}
    for f in out.frames():
        rgb = np.stack([np.asarray(f[p]) for p in range(3)], -1)
        img = av.VideoFrame.from_ndarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8), format="rgb24")
        o.mux(s.encode(img))
    o.mux(s.encode())
"""


def _vs_row(vs_python: str, onnx: Path, frames_path: Path, plugin: str, streams: int, hint: str,
            work: Path) -> tuple[float, np.ndarray]:
    out = work / f"vs-{plugin}-{streams}-{hint}.npy"
    proc = subprocess.run([vs_python, "-c", VS_SIDE, str(onnx), str(frames_path), plugin, str(streams), hint,
                           str(out)], capture_output=True, text=True, timeout=1800)
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


def _photo_frames(folder: Path, n: int, h: int, w: int) -> np.ndarray:
    """n HxW centre crops of the photos in ``folder`` (portrait ones turned on their side), repeated in
    order when there are fewer photos than frames."""
    from sr_deploy.imagefiles import list_images, read_rgb

    crops = []
    for path in list_images([folder]):
        img = read_rgb(path)
        if img.shape[0] > img.shape[1]:
            img = np.rot90(img)
        if img.shape[0] >= h and img.shape[1] >= w:
            y, x = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
            crops.append(np.ascontiguousarray(img[y:y + h, x:x + w, :3]))
        if len(crops) == n:
            break
    if not crops:
        raise SystemExit(f"error: no photo in {folder} is at least {h}x{w}")
    return np.stack([crops[i % len(crops)] for i in range(n)])


def _write_clip(frames: np.ndarray, path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "10", "preset": "veryfast"}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())


def _timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t


def _model_rows(vs_python, source, onnx, frames, frames_path, work, rounds, ref, name):
    from sr_deploy.runtime.openvino_runner import cpu_supports_bf16
    from sr_deploy.runtime.select import make_runner

    def vs(plugin, streams, hint):
        return lambda: _vs_row(vs_python, onnx, frames_path, plugin, streams, hint, work)

    def ours(backend, precision, streams):
        def run():
            runner = make_runner(source, backend, precision)[0]
            if streams:
                runner.streams = streams
            return _srdeploy_row(runner, frames)
        return run

    # label → (how to run it, its settings: vs-mlrt (plugin, streams, hint); srdeploy (backend, precision, streams))
    sides = {
        "vs-mlrt OpenVINO default precision, 1 stream": (vs("ov", 1, "default"), ("ov", 1, "default")),
        "vs-mlrt OpenVINO default precision, 2 streams": (vs("ov", 2, "default"), ("ov", 2, "default")),
        "vs-mlrt OpenVINO f32, 1 stream": (vs("ov", 1, "f32"), ("ov", 1, "f32")),
        "vs-mlrt OpenVINO f32, 2 streams": (vs("ov", 2, "f32"), ("ov", 2, "f32")),
        "vs-mlrt ONNX Runtime fp32": (vs("ort", 1, "default"), ("ort", 1, "default")),
        "srdeploy auto": (lambda: _srdeploy_row(make_runner(source, "auto")[0], frames), ("auto", None, 0)),
        "srdeploy ONNX Runtime fp32": (ours("onnxruntime", "fp32", 0), ("onnxruntime", "fp32", 0)),
    }
    for prec in ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",):
        sides[f"srdeploy OpenVINO {prec}, 1 request"] = (ours("openvino", prec, 1), ("openvino", prec, 1))
        sides[f"srdeploy OpenVINO {prec}, 2 streams"] = (ours("openvino", prec, 2), ("openvino", prec, 2))
    best: dict[str, float] = {}
    fid: dict[str, float] = {}
    for r in range(rounds):
        for label, (run, _) in sides.items():
            fps, first = run()
            best[label] = max(best.get(label, 0.0), fps)
            fid[label] = _psnr(first, ref)
            print(f"{name} round {r + 1}: {label}: {fps:.2f} frames/s, {fid[label]:.1f} dB from ORT fp32", flush=True)
    rows = [{"model": name, "row": label, "fps": round(best[label], 3), "fidelity_db": round(fid[label], 2),
             "settings": sides[label][1]} for label in sides]
    _ratios(rows)
    return rows


def _ratios(rows: list[dict]) -> None:
    """Each srdeploy row against the fastest vs-mlrt row, and against the fastest vs-mlrt row whose
    fidelity is at most its own (+ EQUAL_DB)."""
    peers = [r for r in rows if r["row"].startswith("vs-mlrt")]
    for r in rows:
        if r["row"].startswith("vs-mlrt"):
            r["vs_best_vsmlrt"] = r["vs_vsmlrt_at_fidelity"] = None
            continue
        r["vs_best_vsmlrt"] = round(r["fps"] / max(p["fps"] for p in peers), 3)
        fair = [p["fps"] for p in peers if p["fidelity_db"] <= r["fidelity_db"] + EQUAL_DB]
        r["vs_vsmlrt_at_fidelity"] = round(r["fps"] / max(fair), 3) if fair else None


def _e2e_rows(vs_python, name, onnx, frames, work, rounds, model_rows) -> list[dict]:
    """``srdeploy run`` (auto, and its fastest row at the peer's fidelity) against the PyAV → vs-mlrt →
    PyAV loop at vs-mlrt's fastest OpenVINO setting, the whole command timed."""
    clip = work / "clip.mp4"
    _write_clip(frames, clip)
    peer = max((r for r in model_rows if r["row"].startswith("vs-mlrt OpenVINO")), key=lambda r: r["fps"])
    _, streams, hint = peer["settings"]
    ours = [r for r in model_rows if r["row"].startswith("srdeploy OpenVINO")
            and r["fidelity_db"] + EQUAL_DB >= peer["fidelity_db"]]
    srdeploy = str(Path(sys.executable).with_name("srdeploy"))
    cmds = {f"vs-mlrt loop ({peer['row'][8:]})": ([vs_python, "-c", VS_E2E, str(onnx), str(clip),
                                                   str(work / "vs.mp4"), str(streams), hint], None, peer)}
    auto = next(r for r in model_rows if r["row"] == "srdeploy auto")
    cmds["srdeploy run, auto"] = ([srdeploy, "run", str(clip), "-o", str(work / "sd.mp4"), "--model", name,
                                   "--overwrite"], None, auto)
    if ours:
        best = max(ours, key=lambda r: r["fps"])
        backend, precision, n = best["settings"]
        env = dict(os.environ, SRDEPLOY_OV_STREAMS=str(n))
        cmds[f"srdeploy run, {best['row'][9:]}"] = (
            [srdeploy, "run", str(clip), "-o", str(work / "sd.mp4"), "--model", name, "--backend", backend,
             "--precision", precision, "--overwrite"], env, best)
    fps: dict[str, float] = {}
    for r in range(rounds):
        for label, (cmd, env, _) in cmds.items():
            got = len(frames) / _timed(cmd, env)
            fps[label] = max(fps.get(label, 0.0), got)
            print(f"{name} end to end, round {r + 1}: {label}: {got:.2f} frames/s", flush=True)
    base = next(v for k, v in fps.items() if k.startswith("vs-mlrt"))
    return [{"model": name, "row": label, "fps": round(fps[label], 3), "fidelity_db": row["fidelity_db"],
             "vs_vsmlrt_loop": None if label.startswith("vs-mlrt") else round(fps[label] / base, 3)}
            for label, (_, _, row) in cmds.items()]


def _ratio(v) -> str:
    return f"{v:.2f}x" if v is not None else ""


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
    ap.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/bsd200")
    ap.add_argument("--e2e-frames", type=int, default=48)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    m = machine_info()
    rows, e2e, notes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        frames = _photo_frames(args.images, max(args.frames, args.e2e_frames), h, w)
        frames_path = work / "frames.npy"
        np.save(frames_path, frames[:args.frames])
        for name in args.models:
            source = resolve_model(name)
            onnx = onnx_for(source)
            ref_runner, _ = make_runner(source, "onnxruntime", "fp32")
            with ref_runner:
                ref = ref_runner.infer_u8(frames[:1])[0]
            got = _model_rows(args.vs_python, source, onnx, frames[:args.frames], frames_path, work,
                              args.rounds, ref, name)
            rows += got
            notes.append(f"{name}: auto ran {make_runner(source, 'auto')[1]}")
            if args.e2e_frames:
                e2e += _e2e_rows(args.vs_python, name, onnx, frames[:args.e2e_frames], work, args.rounds, got)
    cmd = (f"python benchmarks/vsmlrt_side_by_side.py VS_PYTHON {args.out} {' '.join(args.models)} --frames "
           f"{args.frames} --rounds {args.rounds} --e2e-frames {args.e2e_frames}")
    lines = [f"# srdeploy vs vs-mlrt ({args.size}, photos from {args.images.name}, best of {args.rounds} rounds)",
             "", f"Machine: {m['cpu']}, {m['cores']} cores, ISA: {', '.join(m.get('isa', []))}. Command: `{cmd}`",
             "", f"## Model only ({args.frames} frames)", "",
             "| model | row | frames/s | PSNR vs ORT fp32 (dB) | / best vs-mlrt | / vs-mlrt at ≤ fidelity |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['row']} | {r['fps']:.2f} | {r['fidelity_db']:.1f} | "
              f"{_ratio(r['vs_best_vsmlrt'])} | {_ratio(r['vs_vsmlrt_at_fidelity'])} |" for r in rows]
    if e2e:
        lines += ["", f"## End to end ({args.e2e_frames}-frame clip → libx264 file, whole command)", "",
                  "| model | row | frames/s | PSNR vs ORT fp32 (dB), model only | / vs-mlrt loop |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['row']} | {r['fps']:.2f} | {r['fidelity_db']:.1f} | "
                  f"{_ratio(r['vs_vsmlrt_loop'])} |" for r in e2e]
    lines += [""] + [f"- {n}" for n in notes]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"machine": m, "rows": rows, "end_to_end": e2e},
                                                        indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
