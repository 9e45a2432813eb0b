"""srdeploy: train, export and deploy super-resolution models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from sr_deploy import spandrel`: spandrel for the user's own code in a CPU install, where PyPI's
    # torchvision does not load against the CPU torch and a plain `import spandrel` fails
    # (models/community.py explains the stand-in). Imported on first use only: `import sr_deploy` stays light.
    if name == "spandrel":
        from sr_deploy.models.community import import_spandrel

        return import_spandrel()
    raise AttributeError(f"module 'sr_deploy' has no attribute {name!r}")
