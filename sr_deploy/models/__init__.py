"""Generators, discriminator, VGG19 features and checkpoints."""

from sr_deploy.models.checkpoint import build_generator, load_checkpoint, save_checkpoint
from sr_deploy.models.discriminator import Discriminator
from sr_deploy.models.srresnet import SRResNet, SRResNetConfig

__all__ = ["Discriminator", "SRResNet", "SRResNetConfig", "build_generator", "load_checkpoint", "save_checkpoint"]
