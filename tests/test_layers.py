"""Imports go one way: models → export → precision → engine → runtime → media → bench / train → cli,
with the shared helpers (errors, descriptor, fsutil, metrics, machine, cuda, ...) at the bottom."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sr_deploy"
RANK = {"models": 1, "export": 2, "precision": 3, "engine": 4, "runtime": 5, "media": 6, "bench": 7, "train": 7,
        "cli": 8, "__init__": 8}  # the package root is the public facade (`from sr_deploy import spandrel`)
SHARED = 0


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    return (RANK[name], name) if name in RANK else (SHARED, "shared")


def _edges() -> list[tuple[str, str]]:
    """(importer, imported) for every sr_deploy import, function-level ones included."""
    edges = []
    for f in PKG.rglob("*.py"):
        mod = ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sr_deploy."):
                edges.append((mod, node.module))
            elif isinstance(node, ast.Import):
                edges += [(mod, a.name) for a in node.names if a.name.startswith("sr_deploy.")]
    return edges


def test_imports_never_go_up_or_sideways():
    edges = _edges()
    assert len(edges) > 50
    bad = []
    for src, dst in edges:
        (rs, ls), (rd, ld) = _layer(src), _layer(dst)
        if ls == ld:
            continue
        if rd > rs or (rd == rs and rd != SHARED):  # upward, or between siblings (bench ↔ train)
            bad.append(f"{src} imports {dst}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for src, dst in _edges():
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " → ".join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for n in list(graph):
        if n not in state:
            visit(n, [n])


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
