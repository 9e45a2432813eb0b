#!/usr/bin/env bash
# The GPU suite, in one run on a machine with an NVIDIA GPU (TensorRT optional):
#   the needs_gpu / needs_tensorrt tests; model-only fps (latency and pipelined) for 270x480 → 1080x1920 and
#   540x960 → 2160x3840 per GPU backend and precision; end-to-end fps of `srdeploy run` (NVENC where the GPU
#   has it, else libx264), RGB against the YUV graph, and at --outscale 2 and 3 (the area resize on the GPU);
#   the host's share per frame (`bench --host-io`);
#   results in benchmarks/results/<model>-gpu.{json,md} (and $OUT when set, for a lent machine).
#
# What the GPU machine lacks travels as wheels in the git-ignored .whl/ (the list: benchmarks/gpu_wheels.txt;
# `--fetch` downloads them for Python 3.12) and is installed into a temporary folder first. The machine
# receives the working tree and the wheels, 64 MiB at most: `--check` holds them to 60.
#
# Usage (from anywhere; it runs in the repository root):
#   bash benchmarks/run_gpu_suite.sh [MODEL]          the suite (default srresnet_x4)
#   bash benchmarks/run_gpu_suite.sh --fetch          download the wheels into .whl/
#   bash benchmarks/run_gpu_suite.sh --check [MODEL]  on any CPU machine: the carry's size, the wheels installing
#       into a Python 3.12 target folder, the suite's imports with only the GPU machine's packages
#       (benchmarks/gpu_machine_packages.txt) and the wheels, then every step of the suite with CUDA stubbed
#       (CPU backends, tiny frames), in a minute or two
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=run
case "${1:-}" in --check) MODE=check; shift ;; --fetch) MODE=fetch; shift ;; esac
MODEL=${1:-srresnet_x4}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RES=benchmarks/results
LIMIT_MIB=60
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$RES"

wheels_missing() {  # names in gpu_wheels.txt without a wheel in .whl/
    local missing=""
    while read -r req; do
        [ -z "$req" ] || [ "${req#\#}" != "$req" ] && continue
        name=${req%%==*}; version=${req##*==}
        ls .whl/"${name}"-"${version}"-*.whl >/dev/null 2>&1 || missing="$missing $req"
    done < benchmarks/gpu_wheels.txt
    echo "$missing"
}

if [ "$MODE" = fetch ]; then
    grep -v '^#' benchmarks/gpu_wheels.txt | xargs python3 -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl
    ls -l .whl
    exit 0
fi

if [ "$MODE" = check ]; then
    echo "== the carry: tracked and untracked-not-ignored files, and .whl/"
    missing=$(wheels_missing)
    [ -z "$missing" ] || { echo "error: wheels missing from .whl/:$missing (bash $0 --fetch)"; exit 1; }
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
    whl=$(stat -c %s .whl/*.whl | awk '{s+=$1} END {print s+0}')
    awk -v t="$tree" -v w="$whl" -v l="$LIMIT_MIB" 'BEGIN {
        printf "tree %.1f MiB + wheels %.1f MiB = %.1f MiB (limit %d)\n", t/2^20, w/2^20, (t+w)/2^20, l;
        exit ((t + w) / 2^20 > l) }' || { echo "error: the carry is over ${LIMIT_MIB} MiB"; exit 1; }

    echo "== the wheels install into a Python 3.12 target folder"
    PY312=""  # a pyenv shim can exist and refuse to run: ask each candidate for its version
    for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
        if "$c" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null; then PY312=$c; break; fi
    done
    [ -n "$PY312" ] || { echo "error: no Python 3.12 here to install the wheels with"; exit 1; }
    "$PY312" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMP/site312" .whl/*.whl
    "$PY312" -c "import sys; sys.path.insert(0, '$TMP/site312'); import av; print('Python', sys.version.split()[0], 'imports av', av.__version__)"

    echo "== the suite with only the GPU machine's packages and the wheels (sitecustomize refuses the rest)"
    mkdir -p "$TMP/only"
    cat > "$TMP/only/sitecustomize.py" <<PYEOF
# Written by run_gpu_suite.sh --check: the distributions the GPU machine lacks cannot be imported. What is
# installed there brings its own needs, so what the listed packages require (as installed here) stays.
import importlib.metadata as md, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
listed = {norm(l.strip().split("==")[0]) for p in ("benchmarks/gpu_machine_packages.txt", "benchmarks/gpu_wheels.txt")
          for l in open("$PWD/" + p) if l.strip() and not l.startswith("#")}
have = {norm(d.metadata["Name"]): d for d in md.distributions()}
keep, todo = set(), [n for n in listed if n in have] + ["srdeploy"]
while todo:
    n = todo.pop()
    if n in keep or n not in have:
        continue
    keep.add(n)
    for r in have[n].requires or []:
        if "extra ==" not in r:
            todo.append(norm(re.split(r"[ ;<>=!~\[(]", r, 1)[0]))
for top, dists in md.packages_distributions().items():
    if not any(norm(d) in keep for d in dists) and top not in sys.modules:
        sys.modules[top] = None  # import fails (ModuleNotFoundError), importlib.util.find_spec says None
PYEOF
    export PYTHONPATH="$TMP/only${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import openvino" 2>/dev/null && { echo "error: the import guard is not active"; exit 1; }
    "$PY" -c "import sr_deploy.cli, sr_deploy.runtime.torch_runner, sr_deploy.runtime.tensorrt_runner, \
sr_deploy.media.video, sr_deploy.bench.run, sr_deploy.export.yuv, tests.runtime.test_gpu, tests.engine.test_engine_logic; \
print('the suite imports with the GPU machine packages')"
    export SRDEPLOY_SUITE_CHECK=1
fi

if [ "$MODE" = run ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
SRD="$PY -m sr_deploy.cli"

if [ -z "${SRDEPLOY_SUITE_CHECK:-}" ]; then
    $PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: this suite needs one')"
    SIZES="--size 270x480 --size 540x960"; MIN_TIME=5; FRAMES=120; CLIPS="270x480 540x960"
    BENCH_EXTRA=""
else  # CUDA stubbed: every step once on the CPU backends, tiny frames
    SIZES="--size 32x48"; MIN_TIME=0.2; FRAMES=6; CLIPS="32x48"
    BENCH_EXTRA="--backends onnxruntime --precisions fp32"
fi
$SRD info | tee "$TMP/info.txt"

echo "== GPU tests"
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $PY -m pytest -q -m "needs_gpu or needs_tensorrt" -p no:cacheprovider tests/runtime/test_gpu.py \
    tests/engine/test_engine_logic.py 2>&1 | tee "$TMP/tests.txt" || true

echo "== model-only speed (latency and pipelined), every GPU backend x precision"
# shellcheck disable=SC2086
$SRD bench --model "$MODEL" --no-quality $SIZES --min-time $MIN_TIME $BENCH_EXTRA \
    --json "$TMP/$MODEL-gpu.json" --markdown "$TMP/$MODEL-gpu.md"

echo "== the host's share of a frame"
$SRD bench --host-io $SIZES | tee "$TMP/hostio.md"

echo "== end to end: clips, RGB vs the YUV graph, NVENC (auto) vs libx264, --outscale 2 and 3"
$PY - "$TMP" "$FRAMES" $CLIPS <<'PYEOF'
import sys, numpy as np, av
tmp, frames = sys.argv[1], int(sys.argv[2])
for hw in sys.argv[3:]:
    h, w = map(int, hw.split("x"))
    c = av.open(f"{tmp}/clip{h}.mp4", "w"); s = c.add_stream("libx264", rate=24)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(frames):
        img = np.stack([(xx + 3 * i) % 256, (yy + i) % 256, ((xx ^ yy) + 5 * i) % 256], -1).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
PYEOF
{
  echo ""; echo "End to end (\`srdeploy run\`, $FRAMES frames, --batch 1):"; echo ""
  echo "| clip | settings | line |"; echo "|---|---|---|"
  for hw in $CLIPS; do
    h=${hw%x*}
    for codec in auto libx264; do
      for yuv in --yuv --no-yuv; do
        line=$($SRD run "$TMP/clip$h.mp4" -o "$TMP/out$h-$codec$yuv.mp4" --model "$MODEL" --codec "$codec" $yuv \
               --quiet 2>&1 | tail -1)
        echo "| ${h}p | --codec $codec $yuv | $line |"
      done
    done
    for f in 2 3; do  # x2 / x3 of a x4 model: area-resized on the GPU, 1/4 or 9/16 of the bytes come back
      line=$($SRD run "$TMP/clip$h.mp4" -o "$TMP/out$h-x$f.mp4" --model "$MODEL" --outscale $f --quiet 2>&1 | tail -1)
      echo "| ${h}p | --outscale $f | $line |"
    done
  done
  echo ""; echo "Host's share per frame (\`srdeploy bench --host-io\`):"; echo ""; cat "$TMP/hostio.md"
  echo ""; echo "GPU tests: $(tail -1 "$TMP/tests.txt")"
  echo ""; echo "\`srdeploy info\`:"; echo '```'; cat "$TMP/info.txt"; echo '```'
} >> "$TMP/$MODEL-gpu.md"
if [ -n "${SRDEPLOY_SUITE_CHECK:-}" ]; then
    tail -n +$(grep -n "^End to end" "$TMP/$MODEL-gpu.md" | cut -d: -f1) "$TMP/$MODEL-gpu.md" | head -12
    [ "$(grep -c "frames at" "$TMP/$MODEL-gpu.md")" -ge 6 ] || { echo "error: an end-to-end step wrote no result"; exit 1; }
    echo "== check passed: every step ran (results not kept: CUDA was stubbed)"
    exit 0
fi
cp "$TMP/$MODEL-gpu.json" "$TMP/$MODEL-gpu.md" "$RES/"
if [ -n "${OUT:-}" ]; then cp "$TMP/$MODEL-gpu.json" "$TMP/$MODEL-gpu.md" "$OUT/"; fi
cat "$RES/$MODEL-gpu.md"
