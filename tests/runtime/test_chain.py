"""The loader chain (runtime/chain.py): which file each step gives, that it is made once and kept, and that a
variant is used only when its gate report is faithful. The ONNX files here are placeholders whose precision a
stand-in descriptor reader tells, so every rule runs in milliseconds; the real exports, variants and engines
behind the steps are tested in tests/export, tests/precision and the TensorRT stand-in suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sr_deploy.errors import InputError, QualityGateError
from sr_deploy.runtime import chain as chain_mod
from sr_deploy.runtime.chain import ModelChain
from sr_deploy.runtime.sources import ModelSource

FAITHFUL = {"fp16": {"passed": True, "fidelity_db": 45.0, "p999_levels": 4.0},
            "int8": {"passed": True, "fidelity_db": 40.0, "p999_levels": 24.0}}


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """``world.file(name, precision, report)`` writes a placeholder ONNX (its gate report beside it when
    ``report`` is given); ``world.exports`` counts the checkpoint exports; ``world.reads`` the descriptor reads."""
    from sr_deploy.export import onnx_file

    class W:
        precisions: dict = {}
        exports: list = []
        reads: list = []
        dir = tmp_path

        @staticmethod
        def file(name: str, precision: str = "fp32", report: dict | None = None) -> Path:
            p = tmp_path / name
            p.write_bytes(precision.encode())
            W.precisions[p] = precision
            if report is not None:
                p.with_suffix(".quality.json").write_text(json.dumps(report))
            return p

    def read_descriptor(at):
        W.reads.append(Path(at))
        return type("D", (), {"precision": W.precisions[Path(at)]})

    def onnx_for(source):
        W.exports.append(source)
        return W.file("cache-m.onnx") if source.kind == "checkpoint" else source.path

    monkeypatch.setattr(onnx_file, "read_descriptor", read_descriptor)
    monkeypatch.setattr(chain_mod, "onnx_for", onnx_for)
    W.precisions, W.exports, W.reads = {}, [], []
    return W


def _checkpoint(world) -> ModelChain:
    ckpt = world.dir / "m.safetensors"
    ckpt.write_bytes(b"weights")
    return ModelChain(ModelSource("checkpoint", ckpt, "m"))


def _onnx(world, precision: str = "fp32") -> ModelChain:
    name = "m.onnx" if precision == "fp32" else f"m.{precision}.onnx"
    return ModelChain(ModelSource("onnx", world.file(name, precision), "m"))


def test_the_fp32_onnx_is_made_once_per_chain(world):
    c = _checkpoint(world)
    assert c.onnx() == world.dir / "cache-m.onnx"
    assert c.onnx() == world.dir / "cache-m.onnx"
    assert len(world.exports) == 1
    g = _onnx(world)
    assert g.onnx() == g.source.path


def test_a_descriptor_is_read_once_per_file(world):
    c = _onnx(world, "int8")
    assert c.precision_of(c.source.path) == "int8"
    assert c.given_variant() and c.given_variant()
    assert world.reads == [c.source.path]


def test_a_gated_variant_is_found_beside_the_model_then_beside_its_onnx(world):
    c = _checkpoint(world)
    assert c.gated("int8") is None
    beside_onnx = world.file("cache-m.int8.onnx", "int8", FAITHFUL["int8"])
    assert c.gated("int8") == beside_onnx
    beside_model = world.file("m.int8.onnx", "int8", FAITHFUL["int8"])
    assert c.gated("int8") == beside_model
    assert c.gated("fp16") is None


def test_a_variant_whose_report_is_not_faithful_is_not_used(world):
    c = _checkpoint(world)
    world.file("m.int8.onnx", "int8", {**FAITHFUL["int8"], "fidelity_db": 39.9})
    world.file("cache-m.int8.onnx", "int8", {**FAITHFUL["int8"], "p999_levels": 24.5})
    assert c.gated("int8") is None
    world.file("m.fp16.onnx", "fp16")  # no report at all
    assert c.gated("fp16") is None


def test_an_onnx_looks_beside_itself_and_a_given_variant_has_no_other(world):
    c = _onnx(world)
    found = world.file("m.int8.onnx", "int8", FAITHFUL["int8"])
    assert c.gated("int8") == found
    assert world.exports == []  # an ONNX is its own fp32 file: nothing asked of the export step
    v = ModelChain(ModelSource("onnx", found, "m"))
    assert v.gated("int8") is None and v.gated("fp16") is None


def test_the_engine_onnx_is_the_asked_variant_or_a_given_one(world):
    c = _checkpoint(world)
    int8 = world.file("m.int8.onnx", "int8")  # asked for by name: found beside the checkpoint, no report needed
    assert c.engine_onnx("int8") == int8
    with pytest.raises(InputError, match="no fp16 ONNX beside"):
        c.engine_onnx("fp16")
    v = _onnx(world, "fp16")
    assert v.engine_onnx() == v.source.path


def test_the_default_engine_onnx_is_a_faithful_fp16_beside_the_model(world, monkeypatch):
    from sr_deploy.precision import convert

    monkeypatch.setattr(convert, "make_precision_onnx", lambda *a, **kw: pytest.fail("made again"))
    c = _checkpoint(world)
    fp16 = world.file("m.fp16.onnx", "fp16", FAITHFUL["fp16"])
    assert c.engine_onnx() == fp16


def test_the_default_engine_onnx_is_made_once_into_the_cache_and_a_refusal_remembered(world, monkeypatch, tmp_path):
    from sr_deploy.fsutil import cache_root, sha256_file
    from sr_deploy.precision import convert

    c = _checkpoint(world)
    fp32 = c.onnx()
    made, said = [], []

    class Report:
        def line(self):
            return "fp16: passed"

    def make(src, precision, *, out):
        assert (src, precision) == (fp32, "fp16")
        made.append(out)
        out.write_bytes(b"fp16")
        out.with_suffix(".quality.json").write_text(json.dumps(FAITHFUL["fp16"]))
        return Report()

    monkeypatch.setattr(convert, "make_precision_onnx", make)
    out = c.engine_onnx(say=said.append)
    assert out == cache_root() / "onnx" / f"cache-m-{sha256_file(fp32)[:16]}.fp16.onnx"
    assert said == ["note: fp16: passed"]
    assert _checkpoint(world).engine_onnx() == out and len(made) == 1  # sealed and faithful: kept
    out.with_suffix(".quality.json").write_text(json.dumps({**FAITHFUL["fp16"], "fidelity_db": 44.0}))
    _checkpoint(world).engine_onnx()
    assert len(made) == 2  # a report no longer faithful: made again

    def refuse(src, precision, *, out):
        out.with_suffix(".refused.json").write_text("{}")
        raise QualityGateError("fp16: 30.0 dB from the fp32 output; refused")

    out.unlink()
    monkeypatch.setattr(convert, "make_precision_onnx", refuse)
    said.clear()
    assert _checkpoint(world).engine_onnx(say=said.append) == fp32
    assert said == ["note: the fp16 variant was refused, the engine is fp32 (fp16: 30.0 dB from the fp32 output)"]
    monkeypatch.setattr(convert, "make_precision_onnx", lambda *a, **kw: pytest.fail("refusal not remembered"))
    assert _checkpoint(world).engine_onnx() == fp32


def test_an_engine_is_compared_with_the_fp32_model_resampled_like_it(world, monkeypatch):
    from sr_deploy.export import pixels

    monkeypatch.setattr(pixels, "resampled_onnx", lambda at, to: Path(f"{at}.to{to}"))
    c = _checkpoint(world)
    assert c.reference() == c.onnx()
    assert c.reference(2) == Path(f"{c.onnx()}.to2")
    v = _onnx(world, "int8")
    assert v.reference() is None  # no fp32 sibling: nothing to compare with
    fp32 = world.file("m.onnx")
    assert v.reference() == fp32
    assert v.reference(3) == Path(f"{fp32}.to3")


def test_the_pixel_graph_is_the_deployed_form_of_the_asked_onnx(world, monkeypatch):
    from sr_deploy.export import pixels

    monkeypatch.setattr(pixels, "deployed_onnx", lambda at, *, outscale, pixels: (at, outscale, pixels))
    c = _checkpoint(world)
    assert c.pixel_graph() == (c.onnx(), None, True)
    other = world.file("m.int8.onnx", "int8")
    assert c.pixel_graph(other, outscale=2, pixels=False) == (other, 2, False)


def test_an_engine_at_bf16_is_refused_by_name(world):
    with pytest.raises(InputError, match="bf16 runs on the openvino .or torch. backend, not tensorrt"):
        _checkpoint(world).engine_onnx("bf16")


def test_an_fp32_onnx_with_dots_in_its_name_is_its_own_reference(world):
    c = ModelChain(ModelSource("onnx", world.file("m.x4.onnx"), "m"))
    assert c.reference() == c.source.path


def test_a_chain_is_made_from_what_model_names(world):
    path = world.file("m.onnx")
    c = ModelChain.of(str(path))
    assert (c.source.kind, c.source.path, c.source.name) == ("onnx", path, "m")
    with pytest.raises(InputError, match="model file not found"):
        ModelChain.of(str(world.dir / "gone.onnx"))


@pytest.fixture()
def engines(world, monkeypatch):
    """The engine step with TensorRT's side stood in: ``engines.built`` lists (onnx, profile, target) per build,
    the profile is (precision, GPU memory), an engine's name is its ONNX's and key's, the gate's verdict is
    ``engines.verdict`` (recorded with the reference it was asked for in ``engines.gated``)."""
    from sr_deploy.engine import build, key, profile
    from sr_deploy.export import onnx_file, pixels
    from sr_deploy.runtime import tensorrt_runner

    class E:
        built: list = []
        gated: list = []
        verdict = {"passed": True, "psnr_vs_fp32_db": 52.25, "min_psnr_db": 40.0}
        scale = 4

    def read_descriptor(at):
        world.reads.append(Path(at))
        prec = world.precisions[Path(at)]
        px, to = ".u8" in Path(at).name, Path(at).name.split(".to")[-1][0] if ".to" in Path(at).name else None
        return type("D", (), {"precision": prec.split("+")[0], "pixel_io": px, "scale": int(to or E.scale),
                              "resizes_output": to is not None})

    def deployed(at, *, outscale, pixels=True):
        name = Path(at).name[:-5] + (f".to{outscale}" if outscale else "") + ".u8.onnx"
        return world.file(name, world.precisions[Path(at)])

    class Engine:
        def __init__(self, path):
            self.path = path

    def build_engine(onnx, desc, prof, *, out):
        E.built.append((onnx.name, prof, out.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"engine")
        out.with_suffix(".json").write_text("{}")

    def gate(runner, reference):
        E.gated.append((runner.path.name, reference and reference.name))
        return E.verdict

    monkeypatch.setattr(onnx_file, "read_descriptor", read_descriptor)
    monkeypatch.setattr(pixels, "deployed_onnx", deployed)
    monkeypatch.setattr(pixels, "resampled_onnx", lambda at, to: Path(at).with_name(Path(at).name[:-5] + f".to{to}.onnx"))
    monkeypatch.setattr(build, "gpu_total_bytes", lambda: 80 << 30)
    monkeypatch.setattr(build, "current_key", lambda at, desc, prof: f"{desc.precision}-{Path(at).name}")
    monkeypatch.setattr(build, "build_engine", build_engine)
    monkeypatch.setattr(key, "engine_path", lambda at, k, desc: Path(at).with_name(f"{k}.engine"))
    monkeypatch.setattr(profile, "make_profile", lambda desc, *, memory_bytes: (desc.precision, memory_bytes))
    monkeypatch.setattr(tensorrt_runner, "TensorRTRunner", Engine)
    monkeypatch.setattr(chain_mod, "gate_engine", gate)
    E.built, E.gated = [], []
    return E


def test_an_engine_is_built_once_from_the_pixel_graph_then_taken_from_the_cache(world, engines):
    from sr_deploy.fsutil import cache_root

    world.file("m.fp16.onnx", "fp16", FAITHFUL["fp16"])  # the default engine is the passed fp16 variant
    said = []
    runner, why = _checkpoint(world).engine(say=said.append)
    assert engines.built == [("m.fp16.u8.onnx", ("fp16", 80 << 30), "fp16-m.fp16.u8.onnx.engine")]
    assert runner.path == cache_root() / "tensorrt" / "fp16-m.fp16.u8.onnx.engine"
    assert said == [f"building the TensorRT fp16 engine for m (first use on this GPU and TensorRT; cached in "
                    f"{cache_root() / 'tensorrt'})"]
    assert why == "TensorRT engine built on first use (fp16, 52.2 dB vs fp32 on its gate)"
    assert engines.gated == [("fp16-m.fp16.u8.onnx.engine", "cache-m.onnx")]
    runner, why = _checkpoint(world).engine(say=said.append)
    assert len(engines.built) == 1 and len(said) == 1 and why.startswith("TensorRT engine from the cache (fp16")
    assert len(engines.gated) == 2  # the gate's verdict is asked for every time (it is kept in the sidecar)


def test_an_engine_without_its_sidecar_is_built_again(world, engines):
    c = _checkpoint(world)
    world.file("m.int8.onnx", "int8")
    runner, _ = c.engine("int8")
    runner.path.with_suffix(".json").unlink()
    c.engine("int8")
    assert [b[0] for b in engines.built] == ["m.int8.u8.onnx", "m.int8.u8.onnx"]


def test_an_outscale_engine_is_its_own_and_gated_against_the_resampled_model(world, engines):
    c = _checkpoint(world)
    world.file("cache-m.fp16.onnx", "fp16", FAITHFUL["fp16"])
    runner, why = c.engine(outscale=2)
    assert engines.built[-1][0] == "cache-m.fp16.to2.u8.onnx"
    assert engines.gated[-1] == (runner.path.name, "cache-m.to2.onnx")
    c.engine(outscale=4)  # the model's own scale: no resampling
    assert engines.built[-1][0] == "cache-m.fp16.u8.onnx"


def test_a_pixel_graph_given_is_built_as_it_is(world, engines):
    c = ModelChain(ModelSource("onnx", world.file("m.u8.onnx"), "m"))
    c.engine("fp32")
    assert engines.built[-1][0] == "m.u8.onnx"


def test_an_engine_that_fails_its_gate_is_refused_in_one_line(world, engines):
    engines.verdict = {"passed": False, "psnr_vs_fp32_db": 21.04, "min_psnr_db": 40.0}
    world.file("m.fp16.onnx", "fp16", FAITHFUL["fp16"])
    with pytest.raises(QualityGateError, match=r"fp16-m.fp16.u8.onnx.engine: the fp16 engine's output is 21.0 dB "
                                               r"from the fp32 model's \(gate 40 dB\): not used; try --precision fp32"):
        _checkpoint(world).engine()


class _Model:
    """A runner that returns its image shifted by ``shift`` levels (clipped), as a context manager."""

    def __init__(self, shift: int = 0, path: Path | None = None, precision: str = "fp16") -> None:
        self.shift, self.path, self.precision, self.calls = shift, path, precision, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def infer_u8(self, batch):
        import numpy as np

        self.calls += 1
        assert batch.shape == (1, 64, 96, 3) and batch.dtype == np.uint8  # one generated picture at a time
        return np.clip(batch.astype(np.int16) + self.shift, 0, 255).astype(np.uint8)


@pytest.fixture()
def gate_world(tmp_path, monkeypatch):
    from sr_deploy.export import onnx_file
    from sr_deploy.runtime import ort_runner

    reference = _Model()
    monkeypatch.setattr(onnx_file, "read_descriptor", lambda at: "desc" if at == tmp_path / "m.onnx" else None)
    monkeypatch.setattr(ort_runner, "OrtRunner", lambda at, desc: reference if (at, desc) == (tmp_path / "m.onnx", "desc") else None)
    engine = tmp_path / "m.engine"
    engine.with_suffix(".json").write_text(json.dumps({"precision": "fp16"}))
    return engine, tmp_path / "m.onnx", reference


@pytest.mark.parametrize("precision, shift, least, passed", [
    ("fp16", 2, 40.0, True),    # 2 levels everywhere: 42.1 dB
    ("fp16", 3, 40.0, False),   # 3 levels: 38.6 dB
    ("int8", 6, 30.0, True),    # 6 levels: 32.6 dB
    ("fp32", 1, 50.0, False),   # 1 level: 48.1 dB
    ("bf16", 6, 30.0, True),    # a precision without a gate of its own: 30 dB
])
def test_the_engine_gate_compares_with_the_fp32_onnx_once(gate_world, precision, shift, least, passed):
    engine, ref_path, reference = gate_world
    runner = _Model(shift, engine, precision)
    verdict = chain_mod.gate_engine(runner, ref_path)
    assert (verdict["min_psnr_db"], verdict["passed"], verdict["images"]) == (least, passed, 3)
    assert verdict["psnr_vs_fp32_db"] == pytest.approx(20 * __import__("math").log10(255 / shift), abs=0.5)  # a little more where clipped
    assert (runner.calls, reference.calls) == (3, 3)
    data = json.loads(engine.with_suffix(".json").read_text())
    assert data == {"precision": "fp16", "gate": verdict}  # recorded beside what the sidecar held
    assert chain_mod.gate_engine(_Model(99, engine, precision), ref_path) == verdict  # reused, not run again


def test_an_engine_with_nothing_to_compare_with_passes_on_its_onnx_gate(gate_world):
    engine, _, reference = gate_world
    verdict = chain_mod.gate_engine(_Model(50, engine, "int8"), None)
    assert verdict == {"psnr_vs_fp32_db": float("inf"), "min_psnr_db": 30.0, "passed": True, "images": 0}
    assert reference.calls == 0
