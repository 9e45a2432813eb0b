"""Runner on ONNX Runtime: CUDA provider when present, else the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.errors import BackendUnavailable
from sr_deploy.runtime.base import OnnxFileRunner
from sr_deploy.machine import default_threads


class OrtRunner(OnnxFileRunner):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, descriptor: ModelDescriptor, *,
                 device: str = "auto", threads: int = 0, pixels: bool = True) -> None:
        super().__init__(descriptor, descriptor.precision)
        self.path = Path(onnx_path)
        self.device, self.threads = device, threads or default_threads()
        # pixels: run infer_u8 on the uint8-I/O form of the graph (export/pixels.py), made once into the cache
        self.pixels = pixels

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

    work_factor = 1.3  # see Runner.work_factor

    @property
    def on_gpu(self) -> bool:
        return getattr(self, "active_provider", "").startswith("CUDA")

    def _activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self._opts, self._sessions = opts, {}
        self.session = self._session(self.descriptor.pixel_io)
        self.active_provider = self.session.get_providers()[0]

    def _session(self, u8: bool):
        """The session on the float graph (u8=False) or on the uint8-I/O graph (u8=True), made on first use."""
        if u8 not in self._sessions:
            import onnxruntime as ort

            path = self._u8_graph() if u8 else self.path
            self._sessions[u8] = ort.InferenceSession(str(path), sess_options=self._opts,
                                                      providers=self.providers(self.device))
        return self._sessions[u8]

    def _deactivate(self) -> None:
        del self.session
        self._sessions.clear()

    def _run(self, u8: bool, batch: np.ndarray) -> np.ndarray:
        sess = self._session(u8)
        return sess.run(None, {sess.get_inputs()[0].name: batch})[0]

    def _graph_runner(self, path: Path):
        import onnxruntime as ort

        if path not in self._sessions:
            self._sessions[path] = ort.InferenceSession(str(path), sess_options=self._opts,
                                                        providers=self.providers(self.device))
        sess = self._sessions[path]
        name = sess.get_inputs()[0].name
        return lambda batch: sess.run(None, {name: batch})[0]


    def describe(self) -> str:
        where = "cuda" if getattr(self, "active_provider", "").startswith("CUDA") else "cpu"
        return f"onnxruntime ({where}) {self.precision}"
