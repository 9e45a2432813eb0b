"""The child process that times one candidate runner for runtime/tune.py:
``python -m sr_deploy.runtime.timing MODEL BACKEND PRECISION`` prints one JSON line.
``python -m sr_deploy.runtime.timing --retime-after PID MODEL``: the detached re-timing of a provisional
ranking, or the first timing of a model, once run PID has ended (``retime_after``).

A module of its own, above runtime/select.py (it makes runners): tune only starts it by name, so the
ranking that select reads never imports select back."""

from __future__ import annotations

import json
import os
import sys
import time

from sr_deploy.runtime.tune import TUNE_INPUT, TUNE_SECONDS


def _time_one(model: str, backend: str, precision: str, streams: int = 1) -> dict:
    """Median ms of ``infer_u8`` on a TUNE_INPUT frame (run in the child process); with ``streams`` (OpenVINO)
    ms per frame of a stream of frames with that many in flight. For reduced precisions also the output's
    PSNR against ONNX Runtime fp32 on the bundled photographs (``fidelity_db``)."""
    import numpy as np

    from sr_deploy.runtime.select import make_runner, resolve_model

    source = resolve_model(model)
    runner, _ = make_runner(source, backend, precision)
    if streams > 1:
        runner.streams = streams
    x = np.random.default_rng(0).integers(0, 256, (1, *TUNE_INPUT, 3), dtype=np.uint8)
    with runner:
        runner.infer_u8(x)  # warm-up: compilation, allocation
        if streams > 1:
            list(runner.stream_u8(x for _ in range(2 * streams)))  # the streams' own compilation
            t0 = time.perf_counter()
            t_end, sent = t0 + TUNE_SECONDS, [0]

            def feed():  # one stream of frames, as a video's, until the time is up
                while time.perf_counter() < t_end or sent[0] < 3 * streams:
                    sent[0] += 1
                    yield x

            n = sum(1 for _ in runner.stream_u8(feed()))
            # the requests that were in flight: the row says what was timed
            result = {"ms": 1000 * (time.perf_counter() - t0) / n, "streams": len(runner._in_flight())}
        else:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a process that ended but was not yet waited for is a zombie: it is done
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def retime_after(pid: int, model: str, *, poll_s: float = 0.5, say=print) -> str:
    """The detached re-timing of a provisional ranking (runtime/tune.py RETIME_ENV), or the first timing of a
    model that a run followed the fixed rules for: wait for run ``pid`` to end, then time the candidates
    (again only if the CPU is quiet and the ranking still provisional); one such process per model at a
    time (a lock beside the ranking). Returns what it did, in a few words."""
    import fcntl

    from sr_deploy.runtime import tune
    from sr_deploy.runtime.select import resolve_model

    while _alive(pid):
        time.sleep(poll_s)
    source = resolve_model(model)
    lock_path = tune.cache_path(source).with_suffix(".retime.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return "another re-timing of this model is under way"
        first = tune.needs_first_timing(source)  # a first run followed the fixed rules
        if not first and not tune.still_provisional(source):
            return "the ranking is no longer provisional"
        if not tune.quiet_now(1.0):
            # a first timing under load ranked ONNX Runtime INT8 first for srresnet_x4 (other work at 54%: the
            # user's next command), which the next run followed at 0.35x: the fixed rules stay until a run
            # ends on a quiet CPU
            return ("the CPU is busy: not timed, the fixed rules stay for a later run" if first
                    else "the CPU is busy again: left provisional for a later run")
        os.nice(10)  # a user's next run, started meanwhile, comes first (and makes this timing provisional)
        tune.measure(source, say=say)
        return "timed for the first time" if first else "timed again"


if __name__ == "__main__":
    if sys.argv[1] == "--retime-after":
        print(time.strftime("%Y-%m-%dT%H:%M:%S"), retime_after(int(sys.argv[2]), sys.argv[3]), flush=True)
    else:
        streams = int(sys.argv[sys.argv.index("--streams") + 1]) if "--streams" in sys.argv else 1
        print(json.dumps(_time_one(*sys.argv[1:4], streams=streams)))
