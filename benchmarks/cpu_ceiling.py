"""How close each CPU runner comes to this CPU's dense float32 ceiling: the best of a few float32 matrix
products (NumPy's BLAS on every core) against each model's convolutions per frame (MACs from its ONNX) and the
runner's best time on one frame. A runner near the ceiling cannot be made much faster at the same precision by
scheduling (streams, threads, requests in flight); only fewer operations or a narrower type can.

    python benchmarks/cpu_ceiling.py OUT.md [--model light_x4 --model srresnet_x4] [--size 270x480]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def sgemm_gflops(n: int = 4096, reps: int = 3) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b  # warm-up: threads, pages
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    from sr_deploy.bench.run import conv_macs_per_pixel
    from sr_deploy.machine import machine_info
    from sr_deploy.runtime.chain import ModelChain
    from sr_deploy.runtime.select import make_runner

    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--backend", action="append", default=None)
    ap.add_argument("--size", default="270x480")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    models = args.model or ["light_x4", "srresnet_x4"]
    backends = args.backend or ["openvino", "onnxruntime"]
    ceiling = sgemm_gflops()
    info = machine_info()
    rows = [f"# Dense float32 ceiling and what each runner reaches ({info.get('cpu', 'CPU')}, {info.get('cores', '?')} cores)",
            "", f"Command: `python benchmarks/cpu_ceiling.py {args.out} " + " ".join(f"--model {m}" for m in models)
            + f" --size {args.size}` (fp32, one {w}x{h} frame, best of {args.reps} after a warm-up).", "",
            f"Ceiling: NumPy float32 4096x4096 matrix product, best of 3: **{ceiling:.1f} GFLOP/s**.", "",
            "| model | runner | GMAC per frame | ms per frame | GFLOP/s | of the ceiling |", "|---|---|---|---|---|---|"]
    for m in models:
        chain = ModelChain.of(m)
        macs = conv_macs_per_pixel(chain.onnx()) * h * w
        x = np.random.default_rng(2).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        for b in backends:
            runner, _ = make_runner(chain.source, b, "fp32")
            with runner:
                runner.infer_u8(x)
                best = min(_timed(lambda: runner.infer_u8(x)) for _ in range(args.reps))
            gflops = 2 * macs / best / 1e9
            rows.append(f"| {m} | {b} fp32 | {macs / 1e9:.1f} | {best * 1000:.0f} | {gflops:.1f} | {gflops / ceiling:.0%} |")
            print(rows[-1], flush=True)
    args.out.write_text("\n".join(rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
