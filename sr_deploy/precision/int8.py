"""INT8 ONNX with explicit Q/DQ nodes, calibrated on real images.

ONNX Runtime's static quantizer writes the QDQ format that TensorRT's
explicit quantization consumes: int8, symmetric (zero point 0), weights per
output channel, biases left in float. Three convolutions stay in float by
default (`float_convs`): the first and the last, because the 3-channel input
and output layers carry most of the visible error when quantized, and the
conv that feeds the first pixel shuffle (at x4, the first upsampling step).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError
from sr_deploy.imagefiles import list_images, read_rgb


log = logging.getLogger(__name__)
HOLD_OUT_EVERY = 5  # every 5th file of a calibration folder is held out (gate / percentile search)


def split_holdout(files: list) -> tuple[list, list]:
    """(calibration files, held-out files) of a calibration folder, disjoint for any number of files:
    the 1st, 6th, 11th... are held out (so a folder of 2 to 5 files holds out its first); a folder of
    one file holds out none (the gate then scores generated images and says so)."""
    if len(files) < 2:
        return list(files), []
    return [f for i, f in enumerate(files) if i % HOLD_OUT_EVERY], list(files[::HOLD_OUT_EVERY])


CALIB_DRAWS = 1 << 20  # degraded calibration crops draw from [SEED, CALIB_DRAWS + i]: never a gate image's draw


def calibration_batches(folder: Path, *, count: int = 256, lr_size: int = 48, scale: int = 4,
                        seed: int = 0, degrade: str | None = None) -> list[np.ndarray]:
    """Random LR crops (bicubic-downscaled HR crops) from a folder of real images.

    The files ``split_holdout`` holds out are left out, so that crops scored after calibration
    come from images it never saw. ``degrade`` (``real[:SEED]`` or ``degraded[:SEED]``): every second crop is degraded
    instead (quality.lr_maker), with draws of its own, so the ranges cover noisy and blocky inputs too.
    """
    from sr_deploy.metrics import make_lr
    from sr_deploy.quality import lr_maker

    _label, degraded = lr_maker(degrade)

    files, _held_out = split_holdout(list_images([folder]))
    if not files:
        raise InputError(f"{folder}: no calibration images found (png/jpg/bmp/webp)")
    hr_size = lr_size * scale
    images, unreadable = [], 0
    for f in files:
        try:
            img = read_rgb(f)
        except InputError as exc:  # one bad file in a folder of real images should not end the calibration
            log.warning("warning: calibration skips %s", exc)
            unreadable += 1
            continue
        if min(img.shape[:2]) >= hr_size:
            images.append(img)
    if not images:
        if unreadable == len(files):
            raise InputError(f"{folder}: none of the {len(files)} calibration images could be read")
        raise InputError(f"{folder}: every readable calibration image is smaller than {hr_size}px "
                         f"({lr_size}px LR crops at x{scale}); give larger images or a smaller --calib-size")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        img = images[i % len(images)]
        y = int(rng.integers(0, img.shape[0] - hr_size + 1))
        x = int(rng.integers(0, img.shape[1] - hr_size + 1))
        hr = img[y:y + hr_size, x:x + hr_size]
        lr = degraded(hr, scale, CALIB_DRAWS + i) if degraded is not None and i % 2 else make_lr(hr, scale)
        out.append((lr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])
    return out


def conv_names(onnx_path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]


def float_convs(onnx_path: Path) -> list[str]:
    """The convolutions INT8 leaves in float: first, last, and the one feeding the first pixel shuffle.

    The last is measured, not guessed: on srresnet_x4 (step 10000, 99.99 percentile, Set5 centre
    crops, which is also the gate's data) ΔPSNR was 0.113 dB with the first and last conv in float
    and 0.073 dB with the first upsampling conv in float too, while OpenVINO's frame time moved
    136 → 138 ms (that conv is 2.4 of the model's 36 GMAC at 128x128). Quantizing the tail
    instead cost 0.108 dB.
    """
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    keep = [convs[0].name, convs[-1].name]
    producer = {o: n for n in graph.node for o in n.output}
    shuffle = next((n for n in graph.node if n.op_type == "DepthToSpace"), None)
    feeder = producer.get(shuffle.input[0]) if shuffle is not None else None
    if feeder is not None and feeder.op_type == "Conv" and feeder.name not in keep:
        keep.insert(1, feeder.name)
    return keep


CALIB_METHODS = ("percentile", "minmax", "entropy")
DEFAULT_PERCENTILE = 99.999
# what `release` searches (make_precision_onnx(percentiles=...), `build-engine --percentile` repeated)
PERCENTILE_CANDIDATES = (99.99, 99.995, 99.999, 99.9999)


PLACEMENTS = ("inputs", "outputs")


def convert_int8(src: Path, dst: Path, batches: list[np.ndarray], *, quantize_ends: bool = False,
                 method: str = "percentile", percentile: float = DEFAULT_PERCENTILE,
                 placement: str = "inputs", exclude: list[str] | None = None,
                 ranges: Path | None = None) -> list[str]:
    """Quantize ``src`` to a Q/DQ ONNX at ``dst``; returns the names of convolutions left unquantized.

    ``ranges``: a file for the calibrated activation ranges (ONNX Runtime's calibration cache, 1.27 on).
    The first call with it calibrates and writes it; later calls quantize from it without running the
    calibration again, whatever they exclude (the ranges cover the inputs of every Conv and Add). The
    file does not record the batches or the percentile: the caller keeps one per calibration. Without
    it, or on an older ONNX Runtime, every call calibrates.

    ``placement="inputs"`` (default) puts Q/DQ where TensorRT's explicit quantization wants them: on
    the inputs of convolutions (activations and per-channel weights) and of the residual adds, none
    on conv or add outputs, so TensorRT fuses conv + PReLU + add in int8 and no layer is pinned to
    fp32 by a stray Q/DQ pair under strong typing. ``"outputs"`` is ONNX Runtime's own QDQ layout
    (Conv → Q → DQ → PRelu), kept for comparison.

    Why ONNX Runtime's quantizer and not NVIDIA's (nvidia-modelopt 0.47 ``modelopt.onnx.quantization``,
    the tool TensorRT 11's docs point to), measured on srresnet_x4 with the same 64 BSD200 crops, the
    same three float convs, Set5 on OpenVINO (2-core AVX2 EPYC): ORT with this placement, ΔPSNR
    0.054 dB at 316 ms per 128x128 frame; ORT's own layout 0.066 dB / 350 ms; modelopt quantized no
    node at all by default (its partitioner does not take Conv → PRelu), and with the conv and add
    nodes forced it quantized only the convs after a PRelu (16 of 34 conv inputs): 0.076 dB / 566 ms
    with max calibration, 0.79 dB / 522 ms with entropy. It also pulls onnxruntime-gpu and ~2 GB.

    Percentile calibration (99.999) is the default: on srresnet_x4 (step 7000) its Set5-crop ΔPSNR was
    0.094 dB against 0.21 dB for min/max (a few outlier activations stretch min/max ranges) and 0.16 /
    0.43 dB for the 99.99 / 99.95 percentiles (they clip highlights).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        """One crop per `collect_data` call (ONNX Runtime's CalibStridedMinMax, which every method honours):
        the calibrator's histograms grow crop by crop, so memory holds one crop's activations, not all of
        them (Real-ESRGAN x4plus at 64 crops: 16.8 GB resident before, see the README's measure)."""

        def __init__(self) -> None:
            self.it = iter(batches)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(batches[start_index:end_index])

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    import logging

    # the quantizer logs advice to the root logger on every call; it is not actionable here
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    if placement not in PLACEMENTS:
        raise InputError(f"Q/DQ placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    excluded = list(exclude) if exclude is not None else ([] if quantize_ends else float_convs(src))
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "CalibPercentile": percentile, "CalibStridedMinMax": 1}
    op_types = ["Conv"]
    if placement == "inputs":
        op_types = ["Conv", "Add"]
        extra["OpTypesToExcludeOutputQuantization"] = ["Conv", "Add"]
    cache = {}
    if ranges is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        cache["calibration_cache_path"] = str(ranges)
    quantize_static(
        str(src), str(dst), Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=op_types,
        nodes_to_exclude=excluded,
        calibrate_method={"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
                          "entropy": CalibrationMethod.Entropy}[method],
        extra_options=extra,
        **cache,
    )
    return excluded


def qdq_layout(onnx_path: Path) -> dict[str, int]:
    """Where the Q/DQ pairs sit: inputs of convs and adds, and conv outputs quantized for anything but an add
    (what TensorRT does not want: Conv → Q → DQ → PRelu)."""
    import onnx

    g = onnx.load(str(onnx_path)).graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {"conv_outputs_quantized": 0, "conv_inputs_quantized": 0, "add_inputs_quantized": 0}
    for n in g.node:
        if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) is not None \
                and producer[n.input[0]].op_type == "Conv":
            # a Q/DQ pair on a conv output that only feeds residual adds is the add's input quantization
            users = [u for dq in consumers.get(n.output[0], []) for u in consumers.get(dq.output[0], [])]
            if any(u.op_type != "Add" for u in users):
                out["conv_outputs_quantized"] += 1
        if n.op_type in ("Conv", "Add") and producer.get(n.input[0]) is not None \
                and producer[n.input[0]].op_type == "DequantizeLinear":
            out[f"{n.op_type.lower()}_inputs_quantized"] += 1
    return out
