"""Export a community model in a separate Python process.

Community architectures run code srdeploy does not control through torch.export, which can crash the
interpreter outright (SPAN under torch 2.13: a segmentation fault in the fake-tensor pass) where no
except clause can catch it. The export therefore runs in a fresh interpreter (``python -m
sr_deploy.export.isolated DIR``), started with subprocess rather than multiprocessing: a fork of a
process with OpenMP and ONNX Runtime threads can hang, and multiprocessing's spawn re-runs the caller's
main script. The parent writes the model's state dict and the export's arguments into DIR; the child
rebuilds the model and writes ``model.onnx`` or a one-line ``error.txt``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from sr_deploy.errors import ModelError


def export_isolated(model: torch.nn.Module, desc_json: str, opset: int, shape, exporter: str):
    """The ONNX proto of ``model`` (a CommunitySR) exported in a child process, or one ModelError line."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="srdeploy-export-") as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}  # type: ignore[union-attr]
        torch.save({"state": state, "desc": desc_json, "opset": opset, "shape": list(shape) if shape else None,
                    "exporter": exporter}, Path(tmp) / "args.pt")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run([sys.executable, "-m", "sr_deploy.export.isolated", tmp], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # torch prints guard dumps
        out, err = Path(tmp) / "model.onnx", Path(tmp) / "error.txt"
        if proc.returncode == 0 and out.is_file():
            return onnx.load(str(out))
        if err.is_file():
            raise ModelError(err.read_text().strip())
        raise ModelError(f"torch's exporter crashed (exit code {proc.returncode})")


def _main(folder: str) -> None:
    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.export.fold import inference_form
    from sr_deploy.export.trace import trace_dynamo, trace_torchscript
    from sr_deploy.models.community import from_state_dict

    tmp = Path(folder)
    try:
        args = torch.load(tmp / "args.pt", weights_only=True)
        desc = ModelDescriptor.from_json(args["desc"])
        folded = inference_form(from_state_dict(args["state"], desc.name))
        shape = tuple(args["shape"]) if args["shape"] else None
        proto = (trace_torchscript(folded, desc, args["opset"]) if args["exporter"] == "torchscript"
                 else trace_dynamo(folded, desc, args["opset"], shape))
        import onnx

        onnx.save(proto, str(tmp / "model.onnx"))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        text = str(exc).strip()
        summary = [ln for ln in text.splitlines() if ln.startswith("<class")]  # torch's "Exception summary"
        line = summary[0] if summary else (text.splitlines()[0] if text else "")
        (tmp / "error.txt").write_text(f"{exc.__class__.__name__}: {line[:200]}")
        sys.exit(1)


if __name__ == "__main__":
    _main(sys.argv[1])
