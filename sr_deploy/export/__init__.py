"""BN folding and ONNX export.

The names below load on first use (PEP 562): ``sr_deploy.export.pixels`` and ``.yuv`` serve every run
without PyTorch, and importing torch cost a light_x4 video run 1 s of a 5 s command."""

_NAMES = {"fold_batchnorm": "fold", "export_checkpoint": "onnx_export", "export_onnx": "onnx_export",
          "read_descriptor": "onnx_file"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
