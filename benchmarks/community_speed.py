"""CPU speed of community architectures at their published sizes, through srdeploy's own runners.

Random weights (no community weights can be downloaded here): speed does not depend on the weights, so
these figures hold for the real models; quantization loss does, so it is not measured here. Each model is
saved as a user would (.pth), loaded through spandrel, and timed per 64x64 LR frame with PyTorch fp32 and,
where srdeploy exports a dynamic-shape ONNX, with ONNX Runtime fp32 and OpenVINO fp32.

    usage: python benchmarks/community_speed.py OUT.md   (pause other work first: timings)
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def published():
    from sr_deploy.models.community import import_spandrel

    import_spandrel()  # spandrel against srdeploy's torchvision stand-in (models/community.py)
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    return {  # the configurations of the released x4 weights
        "ESRGAN / Real-ESRGAN x4plus (RRDBNet, 23 blocks, 64 ch)":
            lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4),
        "Real-ESRGAN general-x4v3 (SRVGGNet, 32 convs, 64 ch)":
            lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4),
        "SPAN x4 (48 ch)": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
        "SwinIR-M classical x4 (180 dim, 6x6 blocks, window 8)":
            lambda: SwinIR(upscale=4, img_size=64, window_size=8, embed_dim=180, depths=[6] * 6,
                           num_heads=[6] * 6, mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv"),
        "OmniSR x4 (64 ch, window 8)":
            lambda: OmniSR(num_in_ch=3, num_out_ch=3, num_feat=64, res_num=5, up_scale=4, window_size=8),
        "HAT-S x4 (144 dim, 6x6 blocks, window 16)":
            lambda: HAT(upscale=4, img_size=64, window_size=16, embed_dim=144, depths=[6] * 6, num_heads=[6] * 6,
                        mlp_ratio=2, upsampler="pixelshuffle", compress_ratio=24, squeeze_factor=24,
                        conv_scale=0.01, overlap_ratio=0.5, resi_connection="1conv"),
    }


def time_runner(runner, x: np.ndarray, seconds: float = 3.0) -> float:
    with runner:
        runner.infer_u8(x)
        times, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 2:
            t0 = time.perf_counter()
            runner.infer_u8(x)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(out: Path) -> None:
    from sr_deploy.errors import SRDeployError
    from sr_deploy.export.onnx_export import DynamicExportUnsupported
    from sr_deploy.machine import machine_info
    from sr_deploy.runtime.select import make_runner, resolve_model

    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, make in published().items():
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = make().eval()
            params = sum(p.numel() for p in net.parameters())
            path = Path(d) / "model.pth"
            torch.save({"params_ema": net.state_dict()}, path)
            src = resolve_model(str(path))
            cells = []
            for backend in ("torch", "onnxruntime", "openvino"):
                try:
                    runner, _ = make_runner(src, backend, "fp32")
                    cells.append(f"{time_runner(runner, x):.0f}")
                except DynamicExportUnsupported:
                    cells.append("— (fixed shape only: `export --shape`)")
                except SRDeployError as exc:
                    cells.append("— (" + str(exc).split(":")[-1].strip()[:60] + ")")
            rows.append(f"| {label} | {params / 1e6:.2f}M | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
            path.unlink()
    info = machine_info()
    text = [f"# Community architectures: CPU speed at published sizes ({info['cpu']}, "
            f"{', '.join(info['isa']) or 'baseline x86-64'}, {torch.get_num_threads()} threads)", "",
            "`python benchmarks/community_speed.py` (random weights; speed does not depend on them). "
            "Milliseconds per 64x64 LR frame (256x256 output), median over >= 3 s, fp32.", "",
            "| architecture | parameters | PyTorch | ONNX Runtime | OpenVINO |", "|---|---|---|---|---|", *rows, ""]
    out.write_text("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
