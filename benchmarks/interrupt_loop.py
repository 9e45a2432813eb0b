"""Interrupt `srdeploy run` on a video N times at random moments (SIGINT and SIGTERM alternating) and count
clean exits: exit 130/143, one `interrupted`/`note:` line, no traceback, no `terminate called` (an abort in a
native runtime), no output under the final name.

    usage: python benchmarks/interrupt_loop.py OUT.md [--times 20] [--model light_x4] [--backend auto]

A clip of 240 frames at 128x96 is made in a temporary folder; each try starts a fresh run (the segments of
the previous try are removed first, so every try starts before the first frame too) and is signalled after
a uniformly random 0.5-12 s: while the model loads, while the backend is chosen, mid-segment, or between.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_clip(path: Path, frames: int = 240, size: tuple[int, int] = (128, 96)) -> None:
    import av
    import numpy as np

    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, i, axis=1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--times", type=int, default=20)
    ap.add_argument("--model", default="light_x4")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from sr_deploy.machine import machine_info

    rnd = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.mp4", Path(d) / "out.mp4"
        make_clip(src)
        for i in range(args.times):
            shutil.rmtree(Path(d) / "out.mp4.segments", ignore_errors=True)
            sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
            delay = rnd.uniform(0.5, 12.0)
            p = subprocess.Popen([sys.executable, "-m", "sr_deploy.cli", "run", str(src), "-o", str(dst),
                                  "--model", args.model, "--backend", args.backend, "--overwrite"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            time.sleep(delay)
            finished_first = p.poll() is not None
            if not finished_first:
                os.killpg(p.pid, sig)  # as a terminal's Ctrl-C reaches the whole process group
            try:
                _, err = p.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
                err += "\n(hung: killed after 300 s)"
            want = 0 if finished_first else (130 if sig == signal.SIGINT else 143)
            clean = (p.returncode == want and "Traceback" not in err and "terminate called" not in err
                     and (finished_first or not dst.exists()))
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or [""]
            rows.append((i + 1, sig.name, round(delay, 1), p.returncode, clean, last[0][:110]))
            print(rows[-1], flush=True)
            dst.unlink(missing_ok=True)
    m = machine_info()
    ok = sum(r[4] for r in rows)
    lines = [f"# Interrupting `srdeploy run` ({args.model}, --backend {args.backend}) {args.times} times",
             "", f"{m['cpu']}, {m['cores']} cores. `python benchmarks/interrupt_loop.py {args.out} --times "
             f"{args.times} --model {args.model} --backend {args.backend}`", "",
             f"**{ok} of {len(rows)} clean** (exit 130 for SIGINT, 143 for SIGTERM, no traceback, no abort, no "
             "output under the final name).", "", "| try | signal | after s | exit | clean | last line |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {'yes' if r[4] else '**no**'} | {r[5]} |" for r in rows]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
