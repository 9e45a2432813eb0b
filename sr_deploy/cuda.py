"""cuda-python's runtime module and its error convention, shared by the engine builder and the runtime."""

from __future__ import annotations

from sr_deploy.errors import BackendUnavailable, SRDeployError


class CudaError(SRDeployError):
    """A CUDA runtime call failed."""


def cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.8)."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt
        except ImportError as exc:
            raise BackendUnavailable("cuda-python is not installed (pip install 'srdeploy[gpu]')") from exc
    return rt


def check_cuda(result, what: str = "CUDA call"):
    """cuda-python returns (error, *values): raise CudaError on an error, else return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise CudaError(f"{what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)
