"""Generators, discriminator, VGG19 features and checkpoints.

The names below load on first use (PEP 562), so that ``sr_deploy.models.zoo`` (model names, read by every
run) comes without PyTorch."""

_NAMES = {"Discriminator": "discriminator", "SRResNet": "srresnet", "SRResNetConfig": "srresnet",
          "build_generator": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
