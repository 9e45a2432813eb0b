"""Precision variants as ONNX transformations: fp16 (I/O fp32) and int8 Q/DQ, with a quality gate."""
