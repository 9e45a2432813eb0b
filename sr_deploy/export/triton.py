"""A Triton Inference Server model repository for an srdeploy ONNX (and, where built, its TensorRT plan).

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (or ``model.plan``): the platform,
``max_batch_size``, the I/O tensors as exported (uint8 NHWC/NCHW pixels or float NCHW, with -1 for
height and width), ``instance_group``, ``dynamic_batching`` and, when asked, ONNX Runtime's TensorRT
execution accelerator. The config is parsed back with Triton's own protobuf schema
(``model_config_pb2`` from the ``tritonclient`` package) before anything is published.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

from sr_deploy.errors import InputError, ModelError, OutputError
from sr_deploy.fsutil import atomic_path

KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}


def _io(onnx_path: Path) -> tuple[tuple[str, str, list[int]], tuple[str, str, list[int]]]:
    """((input name, Triton dtype, dims without batch), (output ...)) read from the graph and its descriptor."""
    import onnx

    from sr_deploy.export.onnx_file import read_descriptor

    desc = read_descriptor(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelError(f"{onnx_path}: expected one input and one output")
    dtype = "TYPE_UINT8" if desc.pixel_io else "TYPE_FP32"
    c_in, c_out = desc.in_channels, desc.out_channels
    if desc.io == "uint8-nhwc":
        dims_in, dims_out = [-1, -1, c_in], [-1, -1, c_out]
    else:  # NCHW: float, or uint8-nchw
        dims_in, dims_out = [c_in, -1, -1], [c_out, -1, -1]
    return (graph.input[0].name, dtype, dims_in), (graph.output[0].name, dtype, dims_out)


def config_text(name: str, onnx_path: Path, *, plan: bool = False, max_batch: int = 4, instances: int = 1,
                kind: str = "auto", queue_delay_us: int = 2000, trt_accelerator: str | None = None) -> str:
    """The config.pbtxt text for ``onnx_path`` (its I/O also describes a plan built from it)."""
    if kind not in KINDS:
        raise InputError(f"instance kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if max_batch < 1 or instances < 1:
        raise InputError("max batch and instance count must be at least 1")
    (iname, idt, idims), (oname, odt, odims) = _io(onnx_path)
    lines = [
        f'name: "{name}"',
        f'platform: "{"tensorrt_plan" if plan else "onnxruntime_onnx"}"',
        f"max_batch_size: {max_batch}",
        f'input [{{ name: "{iname}" data_type: {idt} dims: [{", ".join(map(str, idims))}] }}]',
        f'output [{{ name: "{oname}" data_type: {odt} dims: [{", ".join(map(str, odims))}] }}]',
        f"instance_group [{{ count: {instances} kind: {KINDS[kind]} }}]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
    ]
    if trt_accelerator and not plan:
        if trt_accelerator not in ("FP32", "FP16"):
            raise InputError(f"TensorRT accelerator precision must be FP32 or FP16, got {trt_accelerator!r}")
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [{ name: \"tensorrt\" "
            f"parameters {{ key: \"precision_mode\" value: \"{trt_accelerator}\" }} "
            "parameters { key: \"max_workspace_size_bytes\" value: \"1073741824\" } }] } }")
    return "\n".join(lines) + "\n"


def model_config_pb2():
    """Triton's ModelConfig protobuf module from the installed ``tritonclient`` (loaded by file: its
    package ``__init__`` wants grpcio, which parsing a config does not need)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("validating a Triton config needs tritonclient: pip install 'srdeploy[triton]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    mspec = importlib.util.spec_from_file_location("_srdeploy_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def validate(text: str):
    """Parse ``text`` as a Triton ModelConfig; a schema error is a ModelError naming it."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelError(f"the Triton config does not parse against model_config.proto: {exc}") from exc


def write_repository(onnx_path: str | Path, repo: str | Path, *, name: str | None = None, plan: str | Path | None = None,
                     overwrite: bool = False, **config) -> Path:
    """Write (validated) ``repo/NAME/config.pbtxt`` and ``repo/NAME/1/model.onnx|model.plan``."""
    onnx_path = Path(onnx_path)
    name = name or onnx_path.name.split(".")[0]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        # Triton takes the model's folder name as its name: one folder, no separators or hidden names
        raise InputError(f"--name {name!r}: a Triton model name is one folder name of letters, digits, "
                         "'_', '.' and '-'")
    model_dir = Path(repo) / name
    if model_dir.exists() and not overwrite:
        raise OutputError(f"{model_dir}: exists; pass --overwrite to replace it")
    text = config_text(name, onnx_path, plan=plan is not None, **config)
    validate(text)
    src = Path(plan) if plan is not None else onnx_path
    if not src.is_file():
        raise InputError(f"{src}: not found")
    with atomic_path(model_dir / "1" / ("model.plan" if plan is not None else "model.onnx")) as tmp:
        shutil.copyfile(src, tmp)
    with atomic_path(model_dir / "config.pbtxt") as tmp:
        tmp.write_text(text)
    return model_dir
