"""The child process that times one candidate runner for runtime/tune.py:
``python -m sr_deploy.runtime.timing MODEL BACKEND PRECISION`` prints one JSON line.

A module of its own, above runtime/select.py (it makes runners): tune only starts it by name, so the
ranking that select reads never imports select back."""

from __future__ import annotations

import json
import sys
import time

from sr_deploy.runtime.tune import TUNE_INPUT, TUNE_SECONDS


def _time_one(model: str, backend: str, precision: str) -> dict:
    """Median ms of ``infer_u8`` on a TUNE_INPUT frame (run in the child process); for INT8 also the
    output's PSNR against ONNX Runtime fp32 on synthetic frames (``fidelity_db``)."""
    import numpy as np

    from sr_deploy.runtime.select import make_runner, resolve_model

    source = resolve_model(model)
    runner, _ = make_runner(source, backend, precision)
    x = np.random.default_rng(0).integers(0, 256, (1, *TUNE_INPUT, 3), dtype=np.uint8)
    with runner:
        runner.infer_u8(x)  # warm-up: compilation, allocation
        times, t_end = [], time.perf_counter() + TUNE_SECONDS
        while time.perf_counter() < t_end or len(times) < 3:
            t0 = time.perf_counter()
            runner.infer_u8(x)
            times.append(time.perf_counter() - t0)
        result = {"ms": 1000 * float(np.median(times))}
        if precision != "fp32":
            result["fidelity_db"] = _fidelity(source, runner)
    return result


def _fidelity(source, runner) -> float:
    """Mean PSNR (dB) of ``runner``'s output against ONNX Runtime fp32's, on 64x64 crops of the bundled
    real photographs (precision/convert.py's gate images)."""
    import numpy as np

    from sr_deploy.precision.convert import bundled_images, _center
    from sr_deploy.runtime.select import make_runner

    frames = [_center(img, 64) for img in bundled_images(2)]
    ref, _ = make_runner(source, "onnxruntime", "fp32")
    with ref:
        want = [ref.infer_u8(f[None])[0] for f in frames]
    got = [runner.infer_u8(f[None])[0] for f in frames]
    mse = [float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) for a, b in zip(got, want)]
    return float(np.mean([10 * np.log10(255.0 ** 2 / max(m, 1e-10)) for m in mse]))


if __name__ == "__main__":
    print(json.dumps(_time_one(*sys.argv[1:4])))
