#!/usr/bin/env bash
# The standard benchmark suite: quality on Set5 (x4, Y channel), speed of every CPU
# backend x precision at 128x128 and 480x270 LR, and video ratios on the sample clip.
# Results (JSON, Markdown, PNG), with the machine they ran on, go to benchmarks/results/.
#   usage: bash benchmarks/run_suite.sh [MODEL] [SET5_DIR] [CALIB_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-srresnet_x4}
SET5=${2:-../shared/datasets/set5}
CALIB=${3:-../shared/datasets/bsd200}
OUT=benchmarks/results/$(basename "${MODEL%%.*}")-cpu
mkdir -p benchmarks/results
.venv/bin/srdeploy bench --model "$MODEL" --data "$SET5" --calib "$CALIB" \
    --size 128x128 --size 270x480 --video sr_deploy/assets/sample.mp4 \
    --json "$OUT.json" --markdown "$OUT.md" --plot "$OUT.png" --montage "$OUT-montage.webp"
