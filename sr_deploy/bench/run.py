"""`srdeploy bench`: quality against bicubic and speed, every backend × precision side by side."""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sr_deploy.machine import cpu_has_bf16, machine_info, peak_rss_mb, reset_peak_rss
from sr_deploy.errors import InputError, SRDeployError
from sr_deploy.fsutil import atomic_path
from sr_deploy.metrics import quantize

CPU_PRECISIONS = {"torch": ("fp32", "bf16"), "onnxruntime": ("fp32", "fp16", "int8"),
                  "openvino": ("fp32", "bf16", "int8")}
# on an NVIDIA GPU: torch on CUDA, and TensorRT engines built on first use from the precision ONNX
GPU_PRECISIONS = {"torch": ("fp32", "fp16", "bf16"), "tensorrt": ("fp32", "fp16", "int8")}
STREAM_FRAMES = 48  # frames pushed through stream_u8 per row on a GPU (pipelined throughput)


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ((128, 128), (270, 480))
    batches: tuple[int, ...] = (1,)
    video: str | None = None
    calib: str | None = None
    min_time_s: float = 3.0
    min_runs: int = 5
    warmup: int = 2
    quality: bool = True
    speed: bool = True
    ensemble: bool = False  # also score the x8 self-ensemble (rows of their own, precision "P+x8")
    outscale: int | None = None  # score at this factor (LR downscaled by it; the model's output resized to it)
    degrade: str = "bicubic"  # the quality sets' LR: bicubic, real[:SEED] or degraded[:SEED] (quality.lr_maker)


@dataclass
class BenchResult:
    machine: dict
    quality: list[dict] = field(default_factory=list)
    speed: list[dict] = field(default_factory=list)
    video: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    auto: dict = field(default_factory=dict)  # model name → what `--backend auto` picks here, and why

    def to_json(self) -> dict:
        return {"machine": self.machine, "quality": self.quality, "speed": self.speed, "video": self.video,
                "auto": self.auto, "notes": self.notes}


def _combos(cfg: BenchConfig, say: Callable[[str], None]) -> list[tuple[str, str]]:
    from sr_deploy.runtime.select import available_backends

    from sr_deploy.runtime.select import gpu_available

    have = available_backends()
    gpu = gpu_available()
    backends = list(cfg.backends) or [b for b in ("tensorrt", "torch", "onnxruntime", "openvino") if b in have]
    out = []
    for b in backends:
        if b not in CPU_PRECISIONS and b != "tensorrt":
            say(f"skipped backend {b}: unknown (pick from torch, onnxruntime, openvino, tensorrt)")
            continue
        if b not in have:
            say(f"skipped backend {b}: not installed or no GPU here")
            continue
        table = GPU_PRECISIONS if gpu and b in GPU_PRECISIONS else CPU_PRECISIONS
        for p in cfg.precisions or table[b]:
            if p not in table[b]:
                say(f"skipped {b} {p}: {b} cannot run {p} on this machine")
                continue
            if p == "bf16" and not (gpu and b == "torch") and not cpu_has_bf16():
                say(f"skipped {b} bf16: this CPU has no native bf16 (AVX512-BF16/AMX)")
                continue
            out.append((b, p))
    return out


def _ensure_variants(onnx_path: Path, source_path: Path, precisions: set[str], calib: Path | None, say) -> None:
    """Make the fp16/int8 ONNX beside the fp32 one if missing (gate budget unlimited: the bench reports ΔPSNR).

    A variant that ships beside the model (a packaged NAME.int8.onnx) is used as is: it is what
    `--backend auto` runs.
    """
    import shutil

    from sr_deploy.precision.convert import make_precision_onnx, precision_path
    from sr_deploy.runtime.select import precision_sibling

    for p in sorted(precisions & {"fp16", "int8"}):
        target = precision_path(onnx_path, p)
        if target.exists():
            continue
        shipped = precision_sibling(source_path, p) if source_path != onnx_path else None
        if shipped is not None:
            shutil.copyfile(shipped, target)
            continue
        tmpdir = None
        c = calib
        if p == "int8" and c is None:
            import cv2

            from sr_deploy.synthetic import synthetic_images

            tmpdir = tempfile.TemporaryDirectory()
            for i, img in enumerate(synthetic_images(count=6, size=(320, 320), seed=7)):
                cv2.imwrite(f"{tmpdir.name}/{i}.png", img[..., ::-1])
            c = Path(tmpdir.name)
            say("int8 calibrated on generated images (pass --calib DIR for real ones)")
        try:
            make_precision_onnx(onnx_path, p, calib=c, budget_db=math.inf)
        finally:
            if tmpdir:
                tmpdir.cleanup()


def _runner(source, backend: str, precision: str, outscale: int | None = None):
    from sr_deploy.runtime.select import make_runner

    return make_runner(source, backend, precision, outscale=outscale)[0]


def _uint8_upscaler(runner, outscale: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """LR RGB uint8 → the runner's output as uint8; with ``outscale``, resized as ``run --outscale`` does
    (a no-op where the runner resized its output to that size in its graph)."""
    from sr_deploy.media.resize import resize_to

    def run(lr: np.ndarray) -> np.ndarray:
        x = (lr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        y = quantize(runner.infer(x)[0].transpose(1, 2, 0))
        return resize_to(y, (lr.shape[1] * outscale, lr.shape[0] * outscale)) if outscale else y

    return run


def _datasets(cfg: BenchConfig, scale: int, say) -> list[tuple[str, list]]:
    from sr_deploy.quality import load_eval_set, lr_maker

    label, make = lr_maker(cfg.degrade)
    suffix = "" if make is None else f" ({label})"
    out = []
    if not cfg.data:
        from sr_deploy.synthetic import synthetic_images
        from sr_deploy.metrics import make_lr, mod_crop
        from sr_deploy.quality import EvalPair

        hrs = [mod_crop(im, scale) for im in synthetic_images()]
        pairs = [EvalPair(f"gen{i}", hr, make(hr, scale, i) if make else make_lr(hr, scale))
                 for i, hr in enumerate(hrs)]
        say("quality on built-in generated images; published-comparable numbers need --data (e.g. Set5)")
        return [("generated" + suffix, pairs)]
    for d in cfg.data:
        try:
            out.append((Path(d).name + suffix, load_eval_set(d, scale, say=say, make_lr=make)))
        except SRDeployError as exc:
            say(f"skipped dataset {d}: {exc}")
    return out


def conv_macs_per_pixel(onnx_path, size: int = 64) -> float:
    """Multiply-adds per input pixel of an ONNX graph: Conv, ConvTranspose, MatMul and Gemm, counted
    from the shapes ONNX's shape inference gives at a ``size`` x ``size`` input (the graphs are
    convolutional, so the count scales with the pixels). Written here because neither onnx nor
    onnxruntime reports FLOPs; 0 where shapes cannot be inferred."""
    import onnx
    from onnx import shape_inference

    proto = onnx.load(str(onnx_path))
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    for i, v in enumerate((1, None, size, size)):
        if v is not None:
            inp[i].ClearField("dim_param")
            inp[i].dim_value = v
    try:
        proto = shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - a graph onnx cannot infer: no count
        return 0.0
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)}
    inits = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    total = 0
    for n in proto.graph.node:
        out = shapes.get(n.output[0])
        if not out or not all(out):
            continue
        numel = int(np.prod(out))
        if n.op_type == "Conv" and n.input[1] in inits:
            w = inits[n.input[1]]  # (Cout, Cin/groups, kh, kw): each output element takes Cin/g*kh*kw
            total += numel * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose" and n.input[1] in inits:
            w = inits[n.input[1]]  # (Cin, Cout/groups, kh, kw)
            total += int(np.prod(shapes.get(n.input[0]) or [0])) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            a = shapes.get(n.input[0]) or (list(inits.get(n.input[0], ())) or None)
            if a and all(a):
                total += numel * a[-1]
    return total / (size * size)


def _time(runner, x: np.ndarray, cfg: BenchConfig) -> list[float]:
    for _ in range(cfg.warmup):
        runner.infer(x)
    times: list[float] = []
    t_end = time.perf_counter() + cfg.min_time_s
    while len(times) < cfg.min_runs or time.perf_counter() < t_end:
        t = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return times


def _gpu_stream(runner, x_u8: np.ndarray) -> dict:
    """Pipelined throughput on a GPU: STREAM_FRAMES batches through ``stream_u8`` (uint8 in and out, several
    in flight), and the GPU memory in use at the end (device-wide, via torch where it is installed)."""
    import itertools

    for _ in runner.stream_u8(itertools.repeat(x_u8, 2)):
        pass
    t = time.perf_counter()
    n = sum(1 for _ in runner.stream_u8(itertools.repeat(x_u8, STREAM_FRAMES)))
    dt = time.perf_counter() - t
    row = {"stream_fps": n * x_u8.shape[0] / dt}
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
        row["gpu_mem_used_mb"] = (total - free) / 2**20
        row["torch_peak_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - memory figures are optional
        pass
    return row


def run_bench(cfg: BenchConfig, *, say: Callable[[str], None] = print) -> BenchResult:
    from sr_deploy.export.onnx_file import read_descriptor
    from sr_deploy.quality import bicubic_upscale, evaluate
    from sr_deploy.runtime.chain import ModelChain
    from sr_deploy.runtime.select import ModelSource, make_runner, resolve_model

    res = BenchResult(machine=machine_info())

    def note(line: str) -> None:
        res.notes.append(line)
        say(line)

    combos = _combos(cfg, note)
    if cfg.outscale and cfg.quality:
        note(f"quality at x{cfg.outscale}: LR images downscaled by {cfg.outscale}; each model ran at its own scale and "
             f"its output was resized to x{cfg.outscale} (in the graph where {cfg.outscale} is a whole number below the scale), "
             f"as `run --outscale {cfg.outscale}` does")
    sources = []
    for spec in cfg.models or (None,):
        try:
            sources.append(resolve_model(spec))
        except SRDeployError as exc:
            note(f"skipped model {spec}: {exc}")
    rng = np.random.default_rng(0)
    rows_total, rows_done, t_start = len(sources) * len(combos), 0, time.perf_counter()

    def row_done() -> None:
        """One backend/precision row of one model done: the run's place and time left (a bench is minutes)."""
        nonlocal rows_done
        rows_done += 1
        spent = time.perf_counter() - t_start
        left = spent / rows_done * (rows_total - rows_done)
        say(f"[{rows_done}/{rows_total} rows, {_minutes(spent)} so far"
            + (f", about {_minutes(left)} left]" if rows_done < rows_total else "]"))

    bicubic_done: set[tuple[str, int]] = set()
    loaded: dict[int, list] = {}  # evaluation sets per scale, read once
    for source in sources:
        try:
            base = ModelChain(source).onnx()
            macs_px = conv_macs_per_pixel(base)
            desc = read_descriptor(base)
            scale = cfg.outscale or desc.scale  # the factor scored (the model runs at desc.scale)
            if cfg.quality and scale not in loaded:
                loaded[scale] = _datasets(cfg, scale, note)
            datasets = loaded.get(scale, [])
            if cfg.quality and not datasets and not cfg.speed and not cfg.video:
                # before any precision conversion: a quality-only bench with nothing to score has no use for it
                note(f"skipped model {source.name}: no dataset can be scored at x{scale}")
                rows_total -= len(combos)
                continue
            _ensure_variants(base, source.path, {p for _, p in combos}, Path(cfg.calib) if cfg.calib else None, note)
        except SRDeployError as exc:
            note(f"skipped model {source.name}: {exc}")
            rows_total -= len(combos)
            continue
        try:
            auto_runner, why = make_runner(source, "auto")
            res.auto[source.name] = {"backend": auto_runner.backend, "precision": auto_runner.precision, "why": why}
        except SRDeployError as exc:
            note(f"{source.name}: no auto choice ({exc})")
        for name, pairs in datasets:
            if (name, scale) not in bicubic_done:
                q = evaluate(pairs, scale, lambda lr: bicubic_upscale(lr, scale))
                res.quality.append({"dataset": name, "method": "bicubic", "model": None, "backend": None,
                                    "precision": None, "scale": scale, "psnr_y": q.psnr_y, "ssim_y": q.ssim_y,
                                    "detail": q.detail, "images": q.images})
                bicubic_done.add((name, scale))
                say(f"{name} x{scale} bicubic: {q.psnr_y:.3f} dB / {q.ssim_y:.4f}")
        for backend, precision in combos:
            try:
                src = source if backend == "torch" else ModelSource("onnx", base, source.name)
                runner = _runner(src, backend, precision, cfg.outscale)  # as `run --outscale` makes it
                runner.activate()
            except SRDeployError as exc:
                note(f"skipped {source.name} {backend} {precision}: {exc}")
                row_done()
                continue
            except Exception as exc:  # noqa: BLE001 - a backend that cannot load this model is reported, not fatal
                note(f"skipped {source.name} {backend} {precision}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")
                row_done()
                continue
            try:
                for name, pairs in datasets:
                    q = evaluate(pairs, scale, _uint8_upscaler(runner, cfg.outscale))
                    res.quality.append({"dataset": name, "method": "model", "model": source.name, "backend": backend,
                                        "precision": precision, "scale": scale, "psnr_y": q.psnr_y,
                                        "ssim_y": q.ssim_y, "detail": q.detail, "images": q.images})
                    say(f"{name} x{scale} {source.name} {backend} {precision}: {q.psnr_y:.3f} dB / {q.ssim_y:.4f}")
                    if cfg.ensemble:
                        from sr_deploy.runtime.ensemble import EnsembleRunner

                        q = evaluate(pairs, scale, _uint8_upscaler(EnsembleRunner(runner), cfg.outscale))
                        res.quality.append({"dataset": name, "method": "model", "model": source.name,
                                            "backend": backend, "precision": f"{precision}+x8", "scale": scale,
                                            "psnr_y": q.psnr_y, "ssim_y": q.ssim_y, "detail": q.detail,
                                            "images": q.images})
                        say(f"{name} x{scale} {source.name} {backend} {precision} x8 self-ensemble: "
                            f"{q.psnr_y:.3f} dB / {q.ssim_y:.4f}")
                if cfg.speed:
                    _speed_rows(res, runner, source, backend, precision, desc, macs_px, cfg, rng, say)
            except Exception as exc:  # noqa: BLE001 - one failing backend must not end the benchmark
                note(f"{source.name} {backend} {precision} failed: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")
            finally:
                runner.deactivate()
                row_done()
    if cfg.video and sources and combos:
        try:
            res.video = video_ratios(Path(cfg.video), sources[0], say)
        except SRDeployError as exc:
            note(f"skipped video: {exc}")
    return res


def _speed_rows(res: "BenchResult", runner, source, backend: str, precision: str, desc, macs_px: float,
                cfg: "BenchConfig", rng, say) -> None:
    """Latency and throughput of one runner at every --size and --batch (and, on a GPU, the pipelined rate)."""
    for (h, w) in cfg.sizes:
        for b in cfg.batches:
            x = rng.random((b, desc.in_channels, h, w), dtype=np.float32)
            reset_peak_rss()
            times = _time(runner, x, cfg)
            p50 = float(np.percentile(times, 50))
            fps = b / p50
            row = {"model": source.name, "backend": backend, "precision": precision,
                   "input": f"{h}x{w}", "batch": b, "latency_ms_p50": 1000 * p50,
                   "latency_ms_p95": 1000 * float(np.percentile(times, 95)), "fps": fps,
                   "mpix_per_s": fps * h * w * desc.scale * desc.scale / 1e6, "peak_mem_mb": peak_rss_mb(),
                   "runs": len(times), "gflops": 2 * macs_px * h * w * fps / 1e9}
            if runner.on_gpu:
                row.update(_gpu_stream(runner, rng.integers(0, 256, (b, h, w, desc.in_channels),
                                                            dtype=np.uint8)))
            res.speed.append(row)
            say(f"speed {source.name} {backend} {precision} {h}x{w} b{b}: p50 {row['latency_ms_p50']:.1f} ms, "
                f"{fps:.2f} fps, {row['mpix_per_s']:.2f} Mpix/s")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def video_ratios(path: Path, source, say, max_frames: int = 48, rounds: int = 3) -> dict:
    """Decode-only, model-only and end-to-end frames/s on the same frames, with the runner `srdeploy run` picks.

    Model-only and end-to-end alternate for ``rounds`` rounds and the ratio is the median of the rounds'
    ratios: on a shared or throttling CPU the model's own speed moves by 10-20% from one run to the
    next, and one model-only run against one end-to-end run measured that drift more than the pipeline."""
    import statistics

    from sr_deploy.media.container import main_video
    from sr_deploy.media.video import VideoOptions, open_input, upscale_video
    from sr_deploy.runtime.select import make_runner

    runner, _ = make_runner(source, "auto")
    backend, precision = runner.backend, runner.precision
    inp = open_input(path)
    t = time.perf_counter()
    frames = []
    for f in inp.decode(main_video(inp)):
        frames.append(f.to_ndarray(format="rgb24"))
        if len(frames) >= max_frames:
            break
    decode_fps = len(frames) / (time.perf_counter() - t)
    inp.close()
    model, e2e = [], []
    with runner:
        runner.infer_u8(frames[0][None])  # warm-up
        for _ in range(max(1, rounds)):
            # model-only is what `run` asks of the runner: uint8 frames in, uint8 frames out
            t = time.perf_counter()
            for fr in frames:
                runner.infer_u8(fr[None])
            model.append(len(frames) / (time.perf_counter() - t))
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                upscale_video(runner, path, Path(d) / f"out{path.suffix}", options=VideoOptions(max_frames=len(frames)),
                              quiet=True)
                e2e.append(len(frames) / (time.perf_counter() - t))
    ratios = [e / m for e, m in zip(e2e, model)]
    model_fps, e2e_fps = statistics.median(model), statistics.median(e2e)
    out = {"file": str(path), "frames": len(frames), "backend": backend, "precision": precision,
           "decode_fps": decode_fps, "model_fps": model_fps, "end_to_end_fps": e2e_fps,
           "end_to_end_over_model": statistics.median(ratios), "ratios": ratios, "rounds": len(ratios),
           "decode_over_model": decode_fps / model_fps}
    say(f"video {path.name} ({backend} {precision}): decode {decode_fps:.1f} fps, model {model_fps:.2f} fps, "
        f"end-to-end {e2e_fps:.2f} fps (medians of {len(ratios)} rounds), end-to-end/model "
        f"{out['end_to_end_over_model']:.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    return out


# ------------------------------------------------------------------ outputs
def write_json(res: BenchResult, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(res.to_json(), indent=2, default=str))


def markdown(res: BenchResult) -> str:
    m = res.machine
    lines = [f"Machine: {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_gb')} GiB), GPU: {m.get('gpu') or 'none'}, "
             f"ISA: {', '.join(m.get('isa', []))}", ""]
    if res.quality:
        lines += ["| dataset | method | backend | precision | scale | PSNR-Y (dB) | SSIM-Y | detail vs HR | images |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for q in res.quality:
            method = q["model"] or q["method"]
            lines.append(f"| {q['dataset']} | {method} | {q['backend'] or '-'} | {q['precision'] or '-'} | x{q['scale']} "
                         f"| {q['psnr_y']:.3f} | {q['ssim_y']:.4f} | {q['detail']:.3f} | {q['images']} |")
        lines += ["", "detail vs HR: mean |Laplacian| of the result's Y over the ground truth's (1.0 = as much fine "
                  "detail as HR; a sharpness proxy, not fidelity).", ""]
    if res.speed:
        ds = res.quality[0]["dataset"] if res.quality else None
        psnr = {(q["model"], q["backend"], q["precision"]): q["psnr_y"] for q in res.quality if q["dataset"] == ds}
        ref = {(s["model"], s["input"], s["batch"]): s["latency_ms_p50"] for s in res.speed
               if (s["backend"], s["precision"]) == ("onnxruntime", "fp32")}
        # without quality (--no-quality) the PSNR columns would be empty: left out
        q_head, q_rule = (f" PSNR-Y {ds} | ΔPSNR vs fp32 |", "---|---|") if ds else ("", "")
        lines += [(f"Speed per backend x precision; PSNR-Y on {ds} beside each row" if ds else "Speed per backend x precision")
                  + "; x ORT fp32 = speed-up over ONNX Runtime fp32 on the same model and input; **auto** marks what "
                  "`--backend auto` runs here.", "",
                  f"| model | backend | precision | input | batch | p50 ms | p95 ms | fps | Mpix/s | GFLOP/s | peak MB "
                  f"|{q_head} x ORT fp32 |",
                  f"|---|---|---|---|---|---|---|---|---|---|---|{q_rule}---|"]
        for s in res.speed:
            key = (s["model"], s["backend"], s["precision"])
            p, p32 = psnr.get(key), psnr.get((s["model"], "onnxruntime", "fp32"))
            r = ref.get((s["model"], s["input"], s["batch"]))
            auto = res.auto.get(s["model"], {})
            mark = " **auto**" if (auto.get("backend"), auto.get("precision")) == key[1:] else ""
            p_cell = f"{p:.3f}" if p is not None else "-"
            delta_cell = f"{p32 - p:.3f}" if p is not None and p32 is not None else "-"
            ratio_cell = f"{r / s['latency_ms_p50']:.2f}" if r else "-"
            lines.append(f"| {s['model']} | {s['backend']}{mark} | {s['precision']} | {s['input']} | {s['batch']} | "
                         f"{s['latency_ms_p50']:.1f} | {s['latency_ms_p95']:.1f} | {s['fps']:.2f} | {s['mpix_per_s']:.2f} | "
                         f"{s.get('gflops', float('nan')):.1f} | {s['peak_mem_mb']:.0f} | "
                         + (f"{p_cell} | {delta_cell} | " if ds else "") + f"{ratio_cell} |")
        lines.append("")
        from sr_deploy.machine import fp32_peak_gflops

        peak = fp32_peak_gflops()
        lines += ["GFLOP/s: the graph's convolution and matrix multiply-adds (x2) per second at the row's input, "
                  "as if run in fp32" + (f"; this CPU's nominal fp32 peak is {peak[0]:.0f} GFLOP/s ({peak[1]})."
                                         if peak else "."), ""]
        gpu_rows = [s for s in res.speed if "stream_fps" in s]
        if gpu_rows:
            lines += ["GPU pipelined throughput: uint8 frames through `stream_u8`, several in flight (copies overlapped "
                      "with compute).", "", "| model | backend | precision | input | batch | pipelined fps | GPU MB in use |",
                      "|---|---|---|---|---|---|---|"]
            for s in gpu_rows:
                lines.append(f"| {s['model']} | {s['backend']} | {s['precision']} | {s['input']} | {s['batch']} | "
                             f"{s['stream_fps']:.1f} | {s.get('gpu_mem_used_mb', float('nan')):.0f} |")
            lines.append("")
        for model, a in res.auto.items():
            lines += [f"auto for {model}: {a['backend']} {a['precision']} ({a['why']})", ""]
    if res.video:
        v = res.video
        lines += [f"Video {Path(v['file']).name} ({v['frames']} frames, {v['backend']} {v['precision']}): decode "
                  f"{v['decode_fps']:.1f} fps, model {v['model_fps']:.2f} fps, end-to-end {v['end_to_end_fps']:.2f} fps, "
                  f"end-to-end/model **{v['end_to_end_over_model']:.3f}** (medians of {v.get('rounds', 1)} alternating "
                  f"rounds; each round's ratio: {', '.join(f'{r:.3f}' for r in v.get('ratios', []))})", ""]
    if res.notes:
        lines += ["Notes:", *[f"- {n}" for n in res.notes], ""]
    return "\n".join(lines)


def write_markdown(res: BenchResult, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(markdown(res))


def write_plot(res: BenchResult, path: Path) -> None:
    """Quality (first dataset) against speed (first input size), one point per backend × precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not res.quality or not res.speed:
        raise SRDeployError("a plot needs both quality and speed rows")
    ds = res.quality[0]["dataset"]
    size = res.speed[0]["input"]
    fig, ax = plt.subplots(figsize=(9, 5))
    xs = []
    markers = "osD^v<>PX*h"
    for i, s in enumerate(r for r in res.speed if r["input"] == size and r["batch"] == res.speed[0]["batch"]):
        q = next((q for q in res.quality if q["dataset"] == ds and q["backend"] == s["backend"]
                  and q["precision"] == s["precision"] and q["model"] == s["model"]), None)
        if q:
            # one legend entry per point instead of text beside it: labels of close points never overlap
            ax.scatter(s["fps"], q["psnr_y"], marker=markers[i % len(markers)], s=60,
                       label=f"{s['model']} {s['backend']} {s['precision']}: {s['fps']:.2f} fps, {q['psnr_y']:.2f} dB")
            xs.append(s["fps"])
    bic = next((q for q in res.quality if q["dataset"] == ds and q["method"] == "bicubic"), None)
    if bic:
        ax.axhline(bic["psnr_y"], color="gray", linestyle="--", label=f"bicubic {bic['psnr_y']:.2f} dB")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    if xs and max(xs) / max(min(xs), 1e-9) > 10:  # a log axis only when the points span a decade
        from matplotlib.ticker import LogLocator, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(f"frames/s at {size} input")
    ax.set_ylabel(f"Y-PSNR on {ds} (dB)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_montage(models: list, data: str | None, path: Path, *, crop: int = 64, zoom: int = 4,
                  max_images: int = 5, degrade: str = "bicubic") -> None:
    """One row per image (up to ``max_images``): bicubic | each model | HR, zoomed (nearest) on that
    image's most detailed crop, so that textures (hair, feathers, fabric) are compared side by side.
    Models run at fp32; the LR is made as the quality rows make it (``degrade``: quality.lr_maker)."""
    import cv2

    from sr_deploy.quality import bicubic_upscale, load_eval_set, lr_maker
    from sr_deploy.runtime.select import make_runner, resolve_model

    sources = [resolve_model(m) for m in (models or [None])]
    # fp32 for every model: the montage compares the models themselves, not their INT8 variants
    runners = [make_runner(s, "auto", "fp32")[0] for s in sources]
    scale = runners[0].scale
    make = lr_maker(degrade)[1]
    if data:
        pairs = load_eval_set(data, scale, make_lr=make)[:max_images]
    else:
        from sr_deploy.synthetic import synthetic_images
        from sr_deploy.metrics import make_lr, mod_crop
        from sr_deploy.quality import EvalPair

        hr = mod_crop(synthetic_images(1)[0], scale)
        pairs = [EvalPair("gen", hr, make(hr, scale, 0) if make else make_lr(hr, scale))]
    outputs = [[bicubic_upscale(p.lr, scale) for p in pairs]]
    for r in runners:
        with r:
            up = _uint8_upscaler(r)
            outputs.append([up(p.lr) for p in pairs])
    labels = ["bicubic", *[s.name for s in sources], "HR"]
    rows = []
    for i, pair in enumerate(pairs):
        by, bx, c = _most_detailed_crop(pair.hr, crop)
        tiles = []
        for label, img in zip(labels, [o[i] for o in outputs] + [pair.hr]):
            t = cv2.resize(img[by:by + c, bx:bx + c], (c * zoom, c * zoom), interpolation=cv2.INTER_NEAREST)
            t = np.ascontiguousarray(t[..., ::-1])
            cv2.rectangle(t, (0, 0), (c * zoom, 22), (0, 0, 0), -1)
            cv2.putText(t, f"{label} ({pair.name})" if label == "HR" else label, (4, 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(t)
        sep = np.full((c * zoom, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, sep)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    ext, params = montage_format(path)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(ext, np.concatenate(rows, axis=0)[:-4], params)
        buf.tofile(tmp)


def montage_format(path: Path) -> tuple[str, list[int]]:
    """(extension, OpenCV parameters) of a montage file: PNG, or WebP lossless (quality above 100), about a
    sixth of PNG's bytes on these nearest-zoomed crops (976 KB → 168 KB), pixel for pixel the same. Both are
    lossless: a lossy codec would add its own artifacts to a comparison of textures."""
    import cv2

    ext = Path(path).suffix.lower()
    if ext == ".png":
        return ".png", []
    if ext == ".webp":
        return ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]
    raise InputError(f"--montage {path}: name a .png or .webp file (both lossless)")


def _most_detailed_crop(hr: np.ndarray, crop: int) -> tuple[int, int, int]:
    """(y, x, size) of the square crop with the most Laplacian energy."""
    import cv2

    gray = cv2.cvtColor(hr, cv2.COLOR_RGB2GRAY).astype(np.float32)
    integral = cv2.integral(np.abs(cv2.Laplacian(gray, cv2.CV_32F)))
    h, w = gray.shape
    c = min(crop, h, w)
    best, by, bx = -1.0, 0, 0
    for y in range(0, h - c + 1, max(1, c // 4)):
        for x in range(0, w - c + 1, max(1, c // 4)):
            e = integral[y + c, x + c] - integral[y, x + c] - integral[y + c, x] + integral[y, x]
            if e > best:
                best, by, bx = e, y, x
    return by, bx, c
