"""Runner on ONNX Runtime: CUDA provider when present, else the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.errors import BackendUnavailable
from sr_deploy.runtime.base import Runner


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, descriptor: ModelDescriptor, *,
                 device: str = "auto", threads: int = 0) -> None:
        super().__init__(descriptor, descriptor.precision)
        self.path = Path(onnx_path)
        self.device, self.threads = device, threads

    @staticmethod
    def providers(device: str = "auto") -> list[str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
        have = ort.get_available_providers()
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in have:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda":
            raise BackendUnavailable("onnxruntime has no CUDA provider here: install onnxruntime-gpu (not beside onnxruntime)")
        return ["CPUExecutionProvider"]

    def _activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers(self.device))
        self.input_name = self.session.get_inputs()[0].name
        self.active_provider = self.session.get_providers()[0]

    def _deactivate(self) -> None:
        del self.session

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0].astype(np.float32, copy=False)

    def describe(self) -> str:
        where = "cuda" if getattr(self, "active_provider", "").startswith("CUDA") else "cpu"
        return f"onnxruntime ({where}) {self.precision}"
