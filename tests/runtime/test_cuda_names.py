"""Every cuda-python runtime name the package calls exists in the real ``cuda.bindings.runtime``.

The wheel is downloaded by .ci/install (it needs a CUDA driver to import, so its Cython source is
read instead): a misspelled or removed function or constant fails here, not on a user's GPU.
"""

import re
import zipfile
from pathlib import Path

import pytest

from tests.engine.standin import WHEELS

ROOT = Path(__file__).resolve().parents[2]


def _runtime_names() -> set[str]:
    wheels = sorted(WHEELS.glob("cuda_bindings-*.whl"))
    if not wheels:
        pytest.skip("cuda-bindings wheel not downloaded (bash .ci/install fetches it)")
    with zipfile.ZipFile(wheels[-1]) as z:
        src = z.read("cuda/bindings/runtime.pyx").decode()
    names = set(re.findall(r"^def (cuda\w+)\(", src, re.M)) | set(re.findall(r"^(cuda\w+) = ", src, re.M))
    names |= set(re.findall(r"^class (cuda\w+)\(", src, re.M))
    names |= set(re.findall(r"^    (cuda\w+) = ", src, re.M))  # enum members (cudaMemcpyHostToDevice, ...)
    return names


def test_cuda_runtime_names_exist():
    names = _runtime_names()
    assert {"cudaMemcpyAsync", "cudaStreamCreateWithFlags", "cudaMemcpyHostToDevice"} <= names
    used = set()
    for f in (ROOT / "sr_deploy").rglob("*.py"):
        used |= set(re.findall(r"\b(?:rt|cudart|self\.rt)\.(cuda\w+)", f.read_text()))
        used |= set(re.findall(r"\.(cuda(?:Memcpy|StreamCapture)\w*)\b", f.read_text()))
    assert len(used) >= 15, sorted(used)
    missing = sorted(u for u in used if u not in names)
    assert not missing, f"not in cuda.bindings.runtime: {missing}"
