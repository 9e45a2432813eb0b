"""BN folding and ONNX export."""

from sr_deploy.export.fold import fold_batchnorm
from sr_deploy.export.onnx_export import export_checkpoint, export_onnx, read_descriptor

__all__ = ["export_checkpoint", "export_onnx", "fold_batchnorm", "read_descriptor"]
