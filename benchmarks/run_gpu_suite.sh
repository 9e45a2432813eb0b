#!/usr/bin/env bash
# The GPU suite, for any machine with an NVIDIA GPU (TensorRT optional):
#   the needs_gpu / needs_tensorrt tests; model-only fps (latency and pipelined) for 270x480 → 1080x1920 and
#   540x960 → 2160x3840 per GPU backend and precision; end-to-end fps of `srdeploy run` with NVENC on and off,
#   and at --outscale 2 and 3 (the area resize on the GPU);
#   results in benchmarks/results/<model>-gpu.{json,md} (and $OUT when set, for a lent machine).
# Usage: bash benchmarks/run_gpu_suite.sh [MODEL]   (default srresnet_x4; run from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-srresnet_x4}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SRD="$PY -m sr_deploy.cli"
RES=benchmarks/results
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$RES"

$PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: this suite needs one')"
$SRD info | tee "$TMP/info.txt"

echo "== GPU tests"
$PY -m pytest -q -m "needs_gpu or needs_tensorrt" -p no:cacheprovider 2>&1 | tee "$TMP/tests.txt" || true

echo "== model-only speed (latency and pipelined), every GPU backend x precision"
$SRD bench --model "$MODEL" --no-quality --size 270x480 --size 540x960 --min-time 5 \
    --json "$TMP/$MODEL-gpu.json" --markdown "$TMP/$MODEL-gpu.md"

echo "== end to end: 270x480 and 540x960 clips, NVENC (auto) vs libx264"
$PY - "$TMP" <<'PYEOF'
import sys, numpy as np, av
tmp = sys.argv[1]
for h, w in ((270, 480), (540, 960)):
    c = av.open(f"{tmp}/clip{h}.mp4", "w"); s = c.add_stream("libx264", rate=24)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(120):
        img = np.stack([(xx + 3 * i) % 256, (yy + i) % 256, ((xx ^ yy) + 5 * i) % 256], -1).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
PYEOF
{
  echo ""; echo "End to end (\`srdeploy run\`, 120 frames, --batch 1):"; echo ""
  echo "| clip | codec | line |"; echo "|---|---|---|"
  for h in 270 540; do
    for codec in auto libx264; do
      line=$($SRD run "$TMP/clip$h.mp4" -o "$TMP/out$h-$codec.mp4" --model "$MODEL" --codec "$codec" --quiet 2>&1 | tail -1)
      echo "| ${h}p | $codec | $line |"
    done
  done
  for h in 270 540; do  # x2 / x3 of a x4 model: area-resized on the GPU, 1/4 or 9/16 of the bytes come back
    for f in 2 3; do
      line=$($SRD run "$TMP/clip$h.mp4" -o "$TMP/out$h-x$f.mp4" --model "$MODEL" --outscale $f --quiet 2>&1 | tail -1)
      echo "| ${h}p | auto, --outscale $f | $line |"
    done
  done
  echo ""; echo "GPU tests: $(tail -1 "$TMP/tests.txt")"
  echo ""; echo "\`srdeploy info\`:"; echo '```'; cat "$TMP/info.txt"; echo '```'
} >> "$TMP/$MODEL-gpu.md"
cp "$TMP/$MODEL-gpu.json" "$TMP/$MODEL-gpu.md" "$RES/"
if [ -n "${OUT:-}" ]; then cp "$TMP/$MODEL-gpu.json" "$TMP/$MODEL-gpu.md" "$OUT/"; fi
cat "$RES/$MODEL-gpu.md"
