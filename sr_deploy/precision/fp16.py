"""FP16 ONNX: weights and compute in half precision, inputs and outputs kept fp32.

onnxconverter-common's converter is used: it is pure ONNX (no GPU or NVIDIA
packages needed to convert), long maintained by the ONNX/ORT team, and its
``keep_io_types`` puts the fp32↔fp16 casts at the graph boundary only.
"""

from __future__ import annotations

from pathlib import Path


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    import warnings

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        # it warns once per tiny weight clamped to fp16's range; the quality gate measures the effect
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.checker.check_model(half)
    onnx.save(half, str(dst))
