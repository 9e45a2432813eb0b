"""srdeploy: train, export and deploy super-resolution models."""

__version__ = "0.1.0"
