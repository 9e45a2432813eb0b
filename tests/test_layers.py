"""Imports go one way: models → export → precision → engine → runtime → media → bench / train → cli,
with the shared helpers (errors, descriptor, fsutil, metrics, machine, cuda, ...) at the bottom."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports() -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: the layers go one way, and no package's modules import each
    other in a cycle. grimp reads every import, those inside functions too (where most of ours are)."""
    r = _lint_imports()
    assert r.returncode == 0 and "Contracts: 2 kept, 0 broken." in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.parametrize("module,forbidden", [
    ("sr_deploy.precision.convert", ("sr_deploy.train", "sr_deploy.bench", "sr_deploy.media", "sr_deploy.runtime")),
    ("sr_deploy.runtime.select", ("sr_deploy.bench", "sr_deploy.train", "sr_deploy.media")),
    ("sr_deploy.train.data", ("sr_deploy.media", "sr_deploy.runtime", "sr_deploy.bench")),
])
def test_a_layer_loads_nothing_above_it(module, forbidden):
    """In a fresh interpreter, importing a layer (and using its entry points' imports) loads no higher layer."""
    code = (f"import sys, {module}; bad = [m for m in sys.modules if m.startswith({forbidden!r})]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{module} loaded {r.stdout.strip()} {r.stderr[-500:]}"


MAX_FUNCTION_LINES = 120


def test_no_function_is_longer_than_a_screenful_or_two():
    """Every function of the package, nested ones and their docstrings counted, within MAX_FUNCTION_LINES."""
    import ast

    long = []
    for f in sorted((REPO / "sr_deploy").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_a_cpu_video_run_on_an_onnx_never_imports_torch(tiny_onnx, tmp_path):
    """`srdeploy run` on an ONNX, on a machine without an NVIDIA driver, loads no PyTorch: importing it took
    1 s of a 5 s light_x4 run (48 frames at 270x480, AVX512-BF16 EPYC). Decode, the frame plan, the model,
    the encoders and the container all stay clear of it."""
    from sr_deploy.machine import nvidia_driver_present
    from tests.conftest import make_clip

    if nvidia_driver_present():
        pytest.skip("an NVIDIA driver is here: `auto` asks PyTorch for the GPU")
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=4)
    out = tmp_path / "out.mp4"
    code = ("import sys; from sr_deploy.cli import main\n"
            f"sys.argv = ['srdeploy', 'run', {str(clip)!r}, '-o', {str(out)!r}, '--model', {str(tiny_onnx)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "no torch", r.stdout[-500:]
