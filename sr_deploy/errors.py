"""Error hierarchy: the CLI turns these into one clear line and a non-zero exit."""

from __future__ import annotations


class SRDeployError(Exception):
    """Base class for every error srdeploy reports to a user."""


class InputError(SRDeployError):
    """A file given by the user is missing, unreadable or of the wrong kind."""


class ModelError(SRDeployError):
    """A checkpoint, ONNX file or engine is not one srdeploy can use."""


class DynamicExportUnsupported(ModelError):
    """An architecture whose graph cannot take any height and width (export it with a fixed shape).
    Here, not in export/onnx_export.py, so that catching it needs no PyTorch."""


class BackendUnavailable(SRDeployError):
    """The requested backend (or its hardware) is not present here."""


class OutputError(SRDeployError):
    """An output cannot be written (exists, unwritable, same as input)."""


class QualityGateError(SRDeployError):
    """A converted model lost more quality than the budget allows."""


class EngineMismatch(ModelError):
    """An engine was built for another TensorRT version, GPU or profile."""
