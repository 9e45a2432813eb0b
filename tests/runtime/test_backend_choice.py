"""`--backend auto`'s choice, rule by rule, on every kind of machine: a world of stand-ins (GPU, TensorRT,
OpenVINO, the CPU's instructions, a cached ranking, gated variants) in which no model is loaded, so each
rule and its order is checked in milliseconds (and mutation testing can run it: benchmarks/results/mutation.md).
The real runners behind each choice are tested in test_select.py, test_runners.py and the TensorRT stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sr_deploy.errors import BackendUnavailable, QualityGateError, SRDeployError
from sr_deploy.runtime import chain, select, tune
from sr_deploy.runtime.sources import ModelSource


class Chosen:
    """What a choice returns: the backend and precision it asked for, nothing loaded."""

    def __init__(self, backend: str, precision: str | None, path: Path | None = None) -> None:
        self.backend, self.precision, self.path, self.streams = backend, precision, path, 1


@dataclass
class World:
    tensorrt: bool = False
    gpu: bool = False
    engine_gate_fails: bool = False
    ort_cuda: bool = False
    dynamic_onnx: bool = True  # False: the architecture has no dynamic-shape ONNX
    given_precision: str = "fp32"  # the precision of an ONNX given by path
    tune: bool = False
    ranking: list | None = None  # the cached ranking (None: none cached, so measured)
    foreground: bool = False  # SRDEPLOY_RETIME=foreground: a missing ranking is measured before the run
    measured: list = field(default_factory=list)
    refuse: tuple = ()  # (backend, precision) pairs make_runner refuses here
    openvino: bool = True
    vnni: bool = False
    ov_bf16: bool = False  # OpenVINO sees native bf16
    torch_bf16: bool = False  # torch sees native bf16 (machine.cpu_has_bf16)
    int8_beside_model: bool = False  # a gated INT8 ONNX beside the given file
    int8_beside_onnx: bool = False  # ... beside the checkpoint's cached ONNX
    half_safe: bool = True


@pytest.fixture()
def choose(monkeypatch, capsys):
    """``choose(world, kind, precision, outscale)`` → (backend, precision, why, notes, asked, runner) with
    ``world`` in place; ``asked`` lists the (backend, precision) pairs the rules asked make_runner for, in
    order. Every stand-in checks that it was handed the model the choice is for (and what else it needs)."""
    from sr_deploy import machine
    from sr_deploy.export import onnx_export, onnx_file
    from sr_deploy.models import checkpoint
    from sr_deploy.runtime import openvino_runner, ort_runner, torch_runner, tune

    def run(w: World, kind: str = "checkpoint", precision: str | None = None, outscale: float | None = None,
            measure: bool = True):
        path = Path("/models/m.safetensors") if kind == "checkpoint" else Path(f"/models/m.{w.given_precision}.onnx")
        src = ModelSource(kind, path, "m")
        asked: list[tuple] = []
        loaded, desc = object(), type("Desc", (), {"half_safe": w.half_safe})

        def make_runner(source, backend, prec=None, **kw):
            assert source is src and not kw
            asked.append((backend, prec))
            if (backend, prec) in w.refuse:
                raise BackendUnavailable(f"{backend} {prec} refused here")
            return Chosen(backend, prec), "asked for"

        def engine(source, prec, *, say, outscale):
            assert source is src and say is select._note
            if w.engine_gate_fails:
                raise QualityGateError("the engine's output is 20.0 dB from the fp32 model's")
            return Chosen("tensorrt", f"{prec} x{outscale}"), "TensorRT engine from the cache"

        def onnx_for(source):
            assert source is src
            if source.kind == "checkpoint" and not w.dynamic_onnx:
                raise onnx_export.DynamicExportUnsupported("m: no dynamic-shape export (torch.export refused it)")
            return source.path if source.kind == "onnx" else Path("/cache/m.onnx")

        def sibling(at, prec):
            assert prec == "int8" and at in (path, Path("/cache/m.onnx"))
            if at == Path("/cache/m.onnx"):
                return Path("/cache/m.int8.onnx") if w.int8_beside_onnx else None
            return Path("/models/m.int8.onnx") if w.int8_beside_model else None

        def read_descriptor(at):
            assert at.name.endswith(".int8.onnx")
            return type("D", (), {"precision": "int8", "path": at})

        class OV(Chosen):
            available = staticmethod(lambda: w.openvino)

            def __init__(self, at, d):
                assert d.path == at
                super().__init__("openvino", d.precision, at)

        class Torch(Chosen):
            def __init__(self, model, d, precision):
                assert model is loaded and d is desc
                super().__init__("torch", precision)

        def providers(device):
            assert device == "auto"
            return ["CUDAExecutionProvider", "CPUExecutionProvider"] if w.ort_cuda else ["CPUExecutionProvider"]

        def ranking(source, *, background):
            assert source is src and background is (measure and not w.foreground)
            return (w.ranking, "cached, timed quiet") if w.ranking is not None else (None, "no ranking for this model")

        def timed(source, *, say):
            assert source is src and say is select._note and measure
            return w.measured

        def descriptor_for(model, *, name):
            assert model is loaded and name == "m"
            return desc

        monkeypatch.setattr(select, "make_runner", make_runner)
        monkeypatch.setattr(select, "cached_engine_runner", engine)
        monkeypatch.setattr(select, "tensorrt_ready", lambda: w.tensorrt)
        monkeypatch.setattr(select, "gpu_available", lambda: w.gpu)
        monkeypatch.setattr(chain, "onnx_for", onnx_for)
        monkeypatch.setattr(chain, "precision_sibling", sibling)
        monkeypatch.setattr(chain.ModelChain, "precision_of", lambda self, at: w.given_precision if at == path else "?")
        monkeypatch.setattr(ort_runner.OrtRunner, "providers", staticmethod(providers))
        monkeypatch.setattr(openvino_runner, "OpenVINORunner", OV)
        monkeypatch.setattr(openvino_runner, "cpu_supports_bf16", lambda: w.ov_bf16)
        monkeypatch.setattr(machine, "cpu_has_vnni", lambda: w.vnni)
        monkeypatch.setattr(machine, "cpu_has_bf16", lambda: w.torch_bf16)
        monkeypatch.setattr(onnx_file, "read_descriptor", read_descriptor)
        monkeypatch.setattr(onnx_export, "descriptor_for", descriptor_for)
        monkeypatch.setattr(checkpoint, "load_checkpoint", lambda at: (loaded, {}) if at == path else None)
        monkeypatch.setattr(torch_runner, "TorchRunner", Torch)
        monkeypatch.setattr(tune, "enabled", lambda: w.tune)
        monkeypatch.setattr(tune, "retime_in_background", lambda: not w.foreground)
        monkeypatch.setattr(tune, "time_after_exit", lambda source: (asked.append(("timed after", source is src)),
                                                                     (77, Path("t.log")))[1])
        monkeypatch.setattr(tune, "cached_ranking", ranking)
        monkeypatch.setattr(tune, "measure", timed)
        runner, why = select._auto(src, precision, outscale, measure)
        return runner.backend, runner.precision, why, capsys.readouterr().err, asked, runner

    return run


def _rank(*rows):
    return [{"backend": b, "precision": p, "streams": s, "ms": 10.0 + i} for i, (b, p, s) in enumerate(rows)]


TRT = "a GPU and TensorRT are present: TensorRT engine from the cache"
CUDA_TORCH = "a GPU without TensorRT: PyTorch on CUDA, {}, frames pipelined on CUDA streams"
ORT_CUDA = "a GPU is present and onnxruntime has its CUDA provider (build an engine for more speed)"
NO_DYNAMIC = "CPU only; PyTorch, because this architecture has no dynamic-shape ONNX (m: no dynamic-shape export)"
MEASURED = "CPU only; fastest here by measurement ({}): {}"
OV_INT8 = "CPU only; OpenVINO on the INT8 Q/DQ ONNX (it passed the gate, faithful to the fp32 output) is fastest"
OV_BF16 = ("CPU only; OpenVINO bf16 (this CPU has native bf16; no INT8 ONNX that passed the fidelity gate ships "
           "beside the model)")
OV = "CPU only; OpenVINO is the fastest CPU runner installed"
TORCH_BF16 = "CPU only; OpenVINO is not installed, so PyTorch bf16 (this CPU has native bf16)"
ORT = "CPU only; OpenVINO is not installed, so ONNX Runtime"
TWO = _rank(("openvino", "int8", 1), ("onnxruntime", "fp32", 1))

# (world, model kind, --precision) → (backend, precision, the reason said)
CASES = {
    "GPU and TensorRT: the engine, at the default precision": (
        World(tensorrt=True, gpu=True), "checkpoint", None, ("tensorrt", "None xNone", TRT)),
    "GPU and TensorRT, an ONNX given: the engine too": (
        World(tensorrt=True, gpu=True), "onnx", "fp16", ("tensorrt", "fp16 xNone", TRT)),
    "an engine that fails its gate is never run: torch on CUDA, fp16": (
        World(tensorrt=True, gpu=True, engine_gate_fails=True), "checkpoint", None,
        ("torch", "fp16", CUDA_TORCH.format("fp16"))),
    "GPU without TensorRT: torch fp16 on a model safe in half": (
        World(gpu=True), "checkpoint", None, ("torch", "fp16", CUDA_TORCH.format("fp16"))),
    "GPU, a model not safe in half: torch fp32": (
        World(gpu=True, half_safe=False), "checkpoint", None, ("torch", "fp32", CUDA_TORCH.format("fp32"))),
    "GPU, the asked precision wins": (
        World(gpu=True), "checkpoint", "bf16", ("torch", "bf16", CUDA_TORCH.format("bf16"))),
    "GPU, an ONNX, ONNX Runtime with CUDA": (
        World(gpu=True, ort_cuda=True), "onnx", "fp16", ("onnxruntime", "fp16", ORT_CUDA)),
    "GPU, an ONNX, ONNX Runtime without CUDA: the CPU rules": (
        World(gpu=True, ort_cuda=False), "onnx", None, ("openvino", None, OV)),
    "no dynamic-shape ONNX: PyTorch, at the asked precision": (
        World(dynamic_onnx=False), "checkpoint", "bf16", ("torch", "bf16", NO_DYNAMIC)),
    "a measured ranking: its fastest": (
        World(tune=True, ranking=TWO), "checkpoint", None,
        ("openvino", "int8", MEASURED.format("cached, timed quiet", tune.describe(TWO)))),
    "a measured ranking whose first is refused here: the next": (
        World(tune=True, ranking=TWO, refuse=(("openvino", "int8"),)), "checkpoint", None,
        ("onnxruntime", "fp32", MEASURED.format("cached, timed quiet", tune.describe(TWO)))),
    "no ranking cached, asked to measure before the run: measured now": (
        World(tune=True, measured=TWO[1:], foreground=True), "checkpoint", None,
        ("onnxruntime", "fp32", MEASURED.format("measured just now", tune.describe(TWO[1:])))),
    "no ranking cached: the fixed rules now, the timing after the run": (
        World(tune=True, measured=TWO[1:], ov_bf16=True), "checkpoint", None, ("openvino", "bf16", OV_BF16)),
    "a ranking every row of which is refused: the fixed rules": (
        World(tune=True, ranking=TWO[:1], refuse=(("openvino", "int8"),), ov_bf16=True),
        "checkpoint", None, ("openvino", "bf16", OV_BF16)),
    "an asked precision skips the ranking": (
        World(tune=True, ranking=TWO), "checkpoint", "fp32", ("openvino", "fp32", OV)),
    "an asked precision skips a gated INT8 too": (
        World(int8_beside_model=True, vnni=True, ov_bf16=True), "checkpoint", "fp32", ("openvino", "fp32", OV)),
    "a variant given by path runs as given, ranking or not": (
        World(tune=True, ranking=TWO, given_precision="fp16", ov_bf16=True, int8_beside_model=True, vnni=True),
        "onnx", None, ("openvino", None, OV)),
    "no ranking: a gated INT8 beside the model on a VNNI CPU": (
        World(int8_beside_model=True, vnni=True), "checkpoint", None, ("openvino", "int8", OV_INT8)),
    "no ranking: a gated INT8 beside the checkpoint's ONNX": (
        World(int8_beside_onnx=True, vnni=True), "checkpoint", None, ("openvino", "int8", OV_INT8)),
    "no ranking: a gated INT8 beside an fp32 ONNX given": (
        World(int8_beside_model=True, vnni=True, given_precision="fp32"), "onnx", None, ("openvino", "int8", OV_INT8)),
    "no ranking: INT8 without VNNI is not trusted, native bf16 is": (
        World(int8_beside_model=True, vnni=False, ov_bf16=True), "checkpoint", None, ("openvino", "bf16", OV_BF16)),
    "no ranking, no INT8, no bf16: OpenVINO fp32": (World(), "checkpoint", None, ("openvino", None, OV)),
    "no OpenVINO, native bf16, a checkpoint: torch bf16": (
        World(openvino=False, torch_bf16=True), "checkpoint", None, ("torch", "bf16", TORCH_BF16)),
    "no OpenVINO, native bf16, an asked precision: ONNX Runtime": (
        World(openvino=False, torch_bf16=True, ov_bf16=True), "checkpoint", "fp32", ("onnxruntime", "fp32", ORT)),
    "no OpenVINO, native bf16, an ONNX: ONNX Runtime": (
        World(openvino=False, torch_bf16=True), "onnx", None, ("onnxruntime", None, ORT)),
    "no OpenVINO, no bf16: ONNX Runtime": (World(openvino=False), "checkpoint", None, ("onnxruntime", None, ORT)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_auto_chooses_by_its_rules_in_their_order(choose, case):
    world, kind, precision, expected = CASES[case]
    backend, prec, why, *_ = choose(world, kind, precision)
    assert (backend, prec, why) == expected


def test_the_engine_is_asked_for_the_run_s_outscale(choose):
    assert choose(World(tensorrt=True, gpu=True), "checkpoint", None, 2)[1] == "None x2"


def test_a_failed_engine_gate_is_said_and_the_next_rule_runs(choose):
    *_, notes, asked, _ = choose(World(tensorrt=True, gpu=True, engine_gate_fails=True, ort_cuda=True), "onnx")
    assert notes.startswith("note: the engine's output is 20.0 dB"), notes
    assert asked == [("onnxruntime", None)]  # ONNX Runtime's CUDA provider, the next GPU rule


def test_the_ranking_is_tried_in_its_order_and_its_stream_count_kept(choose):
    ranking = _rank(("openvino", "int8", 3), ("openvino", "bf16", 2), ("onnxruntime", "fp32", 1))
    *_, notes, asked, runner = choose(World(tune=True, ranking=ranking, refuse=(("openvino", "int8"),)))
    assert asked == [("openvino", "int8"), ("openvino", "bf16")]
    assert runner.streams == 2 and notes == ""
    *_, runner = choose(World(tune=True, ranking=_rank(("onnxruntime", "fp32", 1))))
    assert runner.streams == 1
    old = [{"backend": "openvino", "precision": "int8", "ms": 9.0}]  # a ranking from before streams were timed
    *_, runner = choose(World(tune=True, ranking=old))
    assert runner.streams == 1


def test_without_measuring_a_cached_ranking_is_followed_and_none_means_the_fixed_rules(choose):
    """`srdeploy info` says what a run would pick without timing the candidates (a minute on this CPU)."""
    assert choose(World(tune=True, ranking=TWO), measure=False)[:3] == (
        "openvino", "int8", MEASURED.format("cached, timed quiet", tune.describe(TWO)))
    backend, prec, why, notes, *_ = choose(World(tune=True, measured=TWO, ov_bf16=True), measure=False)
    assert (backend, prec, why, notes) == ("openvino", "bf16", OV_BF16, "")


def test_a_missing_ranking_is_said_before_measuring(choose):
    *_, notes, _, _ = choose(World(tune=True, measured=_rank(("onnxruntime", "fp32", 1)), foreground=True))
    assert notes == "note: no ranking for this model\n"


def test_a_missing_ranking_is_timed_after_the_run_which_follows_the_fixed_rules(choose):
    """The first run of a model on a machine waits for no timing (16 s for light_x4 before its first image on
    a 2-core EPYC): the fixed rules choose, and one timing process is started for after the run."""
    *_, notes, asked, runner = choose(World(tune=True, measured=TWO, vnni=True, int8_beside_onnx=True))
    assert (runner.backend, runner.precision) == ("openvino", "int8") and ("timed after", True) in asked
    assert notes.startswith("note: no ranking for this model; this run follows the fixed rules") and "77" in notes
    *_, notes, asked, _ = choose(World(tune=True, ranking=TWO))  # a ranking: nothing timed after the run
    assert not any(a[0] == "timed after" for a in asked) and notes == ""


def test_the_int8_chosen_without_measuring_is_the_gated_file_found(choose):
    *_, runner = choose(World(int8_beside_onnx=True, vnni=True))
    assert runner.path == Path("/cache/m.int8.onnx")
    *_, runner = choose(World(int8_beside_model=True, int8_beside_onnx=True, vnni=True))
    assert runner.path == Path("/models/m.int8.onnx")  # the one beside the model comes first


@pytest.mark.parametrize("kind, backend, precision, says", [
    ("checkpoint", "cuda", None, "unknown backend 'cuda'; pick one of auto, torch, onnxruntime, openvino, tensorrt"),
    ("checkpoint", "torch", "int8", "the torch backend runs fp32, bf16 or fp16 (CUDA), not int8"),
    ("onnx", "torch", None, "the torch backend needs a checkpoint"),
    ("onnx", "onnxruntime", "bf16", "bf16 runs on the openvino (or torch) backend, not onnxruntime"),
])
def test_a_backend_or_precision_that_cannot_run_is_one_line(kind, backend, precision, says, tmp_path):
    src = ModelSource(kind, tmp_path / ("m.safetensors" if kind == "checkpoint" else "m.onnx"), "m")
    with pytest.raises(SRDeployError) as exc:
        select._make_runner(src, backend, precision)
    assert says in str(exc.value), exc.value


def test_an_engine_runs_only_on_tensorrt(tmp_path):
    src = ModelSource("engine", tmp_path / "m.engine", "m")
    with pytest.raises(SRDeployError, match="m.engine: a TensorRT engine runs only on the tensorrt backend"):
        select._make_runner(src, "openvino")


ONNX = "cache/m-0123.onnx"  # where a checkpoint's fp32 ONNX is exported


@pytest.fixture()
def named(monkeypatch, tmp_path):
    """``named(backend, precision, kind, files)``: a backend named by the user → (runner class, its arguments,
    its keywords, why), with ``files`` (``{path under tmp_path: precision}``, besides the fp32 ONNX) made in
    ``tmp_path``; nothing is loaded. ``named.dir`` is ``tmp_path``."""
    from sr_deploy.export import onnx_export, onnx_file
    from sr_deploy.models import checkpoint
    from sr_deploy.runtime import openvino_runner, ort_runner, tensorrt_runner, torch_runner

    state = {"ov": True, "gpu": False, "ov_fp16": False}
    precisions: dict = {}
    loaded = type("Loaded", (), {"name": "the loaded model"})()

    def built(name):
        class Built:
            def __init__(self, *args, **kw):
                self.made = (name, args, kw)

            available = staticmethod(lambda: state["ov"])
        return Built

    def read_descriptor(at):
        return type("D", (), {"precision": precisions[at], "name": at.relative_to(tmp_path).as_posix()})

    monkeypatch.setattr(select, "gpu_available", lambda: state["gpu"])
    monkeypatch.setattr(onnx_file, "read_descriptor", read_descriptor)
    monkeypatch.setattr(onnx_export, "descriptor_for", lambda model, *, name: ("desc", model is loaded, name))
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda at: (loaded, {}) if at == tmp_path / "m.safetensors" else None)
    monkeypatch.setattr(torch_runner, "TorchRunner", built("torch"))
    monkeypatch.setattr(ort_runner, "OrtRunner", built("onnxruntime"))
    monkeypatch.setattr(openvino_runner, "OpenVINORunner", built("openvino"))
    monkeypatch.setattr(openvino_runner, "cpu_supports_fp16", lambda: state["ov_fp16"])
    monkeypatch.setattr(tensorrt_runner, "TensorRTRunner", built("tensorrt"))
    monkeypatch.setattr(select, "cached_engine_runner",
                        lambda source, prec, *, outscale: (built("engine")(source.name, prec, outscale=outscale), "e"))
    monkeypatch.setattr(select, "_auto", lambda source, prec, outscale, measure: (
        built("auto")(source.name, prec, outscale, measure), "a"))

    def run(backend, precision=None, kind="checkpoint", files=None, outscale=None, measure=True, **world):
        state.update(world)
        (tmp_path / "cache").mkdir(exist_ok=True)
        for name, prec in {ONNX: "fp32", **(files or {})}.items():
            (tmp_path / name).write_bytes(b"")
            precisions[tmp_path / name] = prec
        path = tmp_path / {"checkpoint": "m.safetensors", "onnx": ONNX, "engine": "m.engine"}[kind]
        src = ModelSource(kind, path, "m")
        monkeypatch.setattr(chain, "onnx_for", lambda source: tmp_path / ONNX if source is src else None)
        runner, why = select._make_runner(src, backend, precision, outscale, measure)
        name, args, kw = runner.made
        return name, [a.relative_to(tmp_path).as_posix() if isinstance(a, Path) else getattr(a, "name", a)
                      for a in args], kw, why

    run.dir = tmp_path
    return run


def test_a_named_backend_builds_its_runner_from_the_right_file(named):
    assert named("torch") == ("torch", ["the loaded model", ("desc", True, "m")], {"precision": "fp32"}, "asked for")
    assert named("torch", "fp32")[2] == {"precision": "fp32"}
    assert named("torch", "bf16")[2] == {"precision": "bf16"}
    assert named("torch", "fp16", gpu=True)[2] == {"precision": "fp16"}
    assert named("onnxruntime") == ("onnxruntime", [ONNX, ONNX], {}, "asked for")
    assert named("openvino", "bf16") == ("openvino", [ONNX, ONNX], {"precision": "bf16"}, "asked for")
    assert named("openvino", "fp16", ov_fp16=True)[1:3] == ([ONNX, ONNX], {"precision": "fp16"})  # fp16 from fp32
    assert named("openvino")[2] == {"precision": None}
    assert named("tensorrt", "int8", outscale=2)[1:] == (["m", "int8"], {"outscale": 2}, "e")
    assert named("auto", "int8", outscale=3) == ("auto", ["m", "int8", 3, True], {}, "a")
    assert named("auto", measure=False)[1] == ["m", None, None, False]
    assert named("auto", kind="engine")[:2] == ("tensorrt", ["m.engine"])
    assert named("tensorrt", kind="engine")[3] == "a TensorRT engine was given"


def test_a_precision_variant_is_found_beside_the_onnx_then_beside_the_checkpoint(named):
    assert named("onnxruntime", "fp16", files={"m.fp16.onnx": "fp16"})[1][0] == "m.fp16.onnx"
    assert named("onnxruntime", "fp16", files={"cache/m-0123.fp16.onnx": "fp16"})[1][0] == "cache/m-0123.fp16.onnx"
    got = named("openvino", "int8", files={"m.int8.onnx": "int8", "cache/m-0123.int8.onnx": "int8"})  # both: the ONNX's
    assert got[1][0] == "cache/m-0123.int8.onnx" and got[2] == {"precision": None}  # INT8 runs as its Q/DQ
    got = named("openvino", "int8", kind="onnx", files={ONNX: "int8"})  # the ONNX itself is INT8: itself
    assert got[1][0] == ONNX


@pytest.mark.parametrize("backend, precision, world, says", [
    ("torch", "fp16", {"gpu": False}, "torch fp16 needs a CUDA GPU; on the CPU use --precision bf16"),
    ("onnxruntime", "fp16", {}, "no fp16 ONNX beside {d}/cache/m-0123.onnx: make one with `srdeploy build-engine "
                                "{d}/cache/m-0123.onnx --fp16 --onnx-only`"),
    ("openvino", "fp16", {"ov_fp16": False}, "no fp16 ONNX beside {d}/cache/m-0123.onnx, and OpenVINO reports no native fp16"),
    ("openvino", "int8", {"ov_fp16": True}, "no int8 ONNX beside"),
    ("openvino", None, {"ov": False}, "openvino is not installed: pip install 'srdeploy[openvino]'"),
])
def test_a_named_backend_that_cannot_run_it_says_why(named, backend, precision, world, says):
    with pytest.raises(SRDeployError) as exc:
        named(backend, precision, **world)
    assert str(exc.value).startswith(says.format(d=named.dir)), exc.value


def test_onnxruntime_runs_the_onnx_s_own_precision_only(named):
    with pytest.raises(SRDeployError, match=r"onnxruntime runs the ONNX's own precision \(int8\), not fp32"):
        named("onnxruntime", "fp32", kind="onnx", files={ONNX: "int8"})


def test_bf16_runs_only_where_it_is_computed(named):
    with pytest.raises(SRDeployError, match=r"bf16 runs on the openvino \(or torch\) backend, not onnxruntime"):
        named("onnxruntime", "bf16", kind="onnx")
