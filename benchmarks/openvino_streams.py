"""OpenVINO with several frames in flight (CPU streams) against one request at a time, model only.

    usage: SRDEPLOY_OV_STREAMS=2 python benchmarks/openvino_streams.py MODEL [MODEL ...]

Each model at fp32 on 270x480 uint8 frames: the outputs compared (max difference in levels), then frames/s
one at a time (infer_u8) and in flight (stream_u8), alternating, two rounds. Pause other work first.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def main() -> None:
    from sr_deploy.machine import machine_info
    from sr_deploy.runtime.select import make_runner, resolve_model

    os.environ.setdefault("SRDEPLOY_OV_STREAMS", "2")
    m = machine_info()
    print(f"{m['cpu']}, {m['cores']} cores; SRDEPLOY_OV_STREAMS={os.environ['SRDEPLOY_OV_STREAMS']}")
    frames = [np.random.default_rng(i).integers(0, 256, (1, 270, 480, 3), dtype=np.uint8) for i in range(12)]
    for name in sys.argv[1:]:
        runner, _ = make_runner(resolve_model(name), "openvino", "fp32")
        with runner:
            ref = [runner.infer_u8(f) for f in frames[:3]]
            got = list(runner.stream_u8(iter(frames[:3])))
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(ref, got))
            print(f"{name}: {len(runner._in_flight())} requests in flight, max difference {diff} levels")
            for _ in range(2):
                t = time.perf_counter()
                for f in frames:
                    runner.infer_u8(f)
                one = len(frames) / (time.perf_counter() - t)
                t = time.perf_counter()
                for _ in runner.stream_u8(iter(frames)):
                    pass
                many = len(frames) / (time.perf_counter() - t)
                print(f"  one at a time {one:.2f} frames/s, in flight {many:.2f} frames/s ({many / one:.2f}x)")


if __name__ == "__main__":
    main()
