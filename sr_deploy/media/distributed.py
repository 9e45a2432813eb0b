"""Runs spread over Ray workers: the segments of a video, or the files of a folder.

Ray does the scheduling, placement and failure detection; srdeploy adds only the unit of work. Each
worker is a Ray actor that loads the model once (a GPU per actor where the cluster has GPUs) and returns
what it made as bytes, so the driver alone writes the output, the manifest and the resumable segments
(media/segments.py) exactly as a run in one process does; workers need to read the input and the model
at the same path (a shared filesystem, or a shipped model name). A worker that dies has its work redone
on a new one.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections import deque
from pathlib import Path

from sr_deploy.errors import InputError, SRDeployError

MAX_ATTEMPTS = 3  # a segment whose worker died this many times ends the run
FILES_PER_TASK = 4


class _Worker:
    """One runner per Ray actor: the model is loaded once, then segments or files are sent to it."""

    def __init__(self, model, backend, precision, ensemble, cuda_graph, outscale=None) -> None:
        from sr_deploy.runtime.select import make_runner, resolve_model

        runner, _ = make_runner(resolve_model(model), backend, precision, cuda_graph=cuda_graph, outscale=outscale,
                                ensemble=ensemble)
        self.runner = runner.__enter__()

    def describe(self) -> tuple[str, str, bool, int]:
        return socket.gethostname(), self.runner.describe(), bool(self.runner.on_gpu), os.getpid()

    def model(self):
        """What the driver plans with: the runner's descriptor and precision (it loads no model itself)."""
        return self.runner.descriptor, self.runner.precision

    def segment(self, src: str, plan, seg, options) -> tuple[int, bytes]:
        from sr_deploy.media.video import encode_segment

        with tempfile.TemporaryDirectory(prefix="srdeploy-seg-") as d:
            tmp = Path(d) / "segment.mov"
            n = encode_segment(self.runner, Path(src), plan, seg, tmp, options)
            return n, tmp.read_bytes()

    def images(self, files: list[tuple[str, str]], kw: dict) -> list[tuple[str | None, bytes | None]]:
        from sr_deploy.media.images import upscale_one

        results = []
        with tempfile.TemporaryDirectory(prefix="srdeploy-img-") as d:
            for src, name in files:
                out = Path(d) / name
                why = upscale_one(self.runner, Path(src), out, overwrite=True, **kw)
                results.append((why, None if why else out.read_bytes()))
                out.unlink(missing_ok=True)
        return results


PLACEMENT_TIMEOUT_S = 300  # workers start and load the model: minutes on a slow machine, never forever


def _check_address(address: str) -> None:
    """A Ray address that does not answer is one line, at once (ray.init would wait and then trace back)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address}: expected local, or a cluster address HOST:PORT (or ray://HOST:PORT)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


class RayPool:
    def __init__(self, address: str, model: str | None, backend: str, precision: str | None, *,
                 ensemble: bool = False, cuda_graph: bool = False, workers: int | None = None,
                 tile: int | None = None, alpha: str = "bicubic", max_megapixels: float = 100.0,
                 outscale: float | None = None, quiet: bool = False) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--ray needs Ray: pip install 'srdeploy[ray]'") from None
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.ray = ray
        from sr_deploy.media.video import quiet_say

        self.say = quiet_say if quiet else (lambda line: print(line, file=sys.stderr))
        self.args = (model, backend, precision, ensemble, cuda_graph, outscale)
        self.image_kw = {"tile": tile, "alpha": alpha, "max_megapixels": max_megapixels, "outscale": outscale}
        self.started = address in ("", "local")
        if not self.started:
            _check_address(address)
        import logging

        try:
            ray.init(address="local" if self.started else address, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR, configure_logging=True,
                     num_cpus=os.cpu_count() if self.started else None)
        except Exception as exc:  # noqa: BLE001 - Ray's own errors: one line
            raise InputError(f"--ray {address}: Ray did not start ({exc.__class__.__name__}: "
                             f"{(str(exc).strip().splitlines() or [''])[0][:200]})") from None
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        self.on_gpu = gpus > 0
        self.n = workers or (gpus if gpus else max(1, cpus // 2))
        if not gpus and self.n > cpus:  # an actor takes a whole CPU: the rest could never be placed (a hang)
            self.close()
            raise InputError(f"--workers {self.n}: this Ray cluster has {cpus} CPU{'s' * (cpus > 1)} and a worker "
                             f"takes one; pass --workers {cpus} or fewer")
        self.resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": max(1, cpus // self.n)}
        if gpus and self.n > gpus:
            self.resources = {"num_gpus": gpus / self.n, "num_cpus": 1}
        # Each actor's ONNX Runtime / OpenVINO keeps its own thread count (all cores): capping it to the
        # actor's share (SRDEPLOY_THREADS) was measured slower on a 2-core machine with 2 actors, 5.75 vs
        # 8.24 frames/s (benchmarks/results/segments-ray-avx2-epyc.md): the encoder beside the model idles
        # cores that an uncapped model uses.
        self._actors: list = []
        self.failures = 0

    def planner(self):
        """The driver's runner: the workers' model as they describe it (scale, sizes, name), for naming outputs
        and planning segments. It runs nothing; the driver never loads the model or needs its backend."""
        from sr_deploy.runtime.base import Runner

        actors = self.actors()
        descriptor, precision = self.ray.get(actors[0].model.remote())
        described = self.ray.get(actors[0].describe.remote())[1]
        on_gpu = self.on_gpu

        class _Planner(Runner):
            backend = "ray"

            @property
            def on_gpu(self) -> bool:
                return on_gpu

            def describe(self) -> str:
                return f"{described} on Ray workers"

            def _activate(self) -> None:
                pass

            def _infer(self, batch):
                raise SRDeployError("the model runs on the Ray workers, not in the driver")

        return _Planner(descriptor, precision)

    def _new_actor(self):
        return self.ray.remote(**self.resources)(_Worker).remote(*self.args)

    def actors(self) -> list:
        if not self._actors:
            self._actors = [self._new_actor() for _ in range(self.n)]
            try:  # actors that cannot be placed (a cluster busy with other work) would be waited for forever
                where = self.ray.get([a.describe.remote() for a in self._actors], timeout=PLACEMENT_TIMEOUT_S)
            except self.ray.exceptions.GetTimeoutError:
                raise InputError(f"ray: {self.n} workers were not all started within {PLACEMENT_TIMEOUT_S} s "
                                 f"(the cluster's CPUs or GPUs are taken by other work?); pass fewer --workers") from None
            hosts = sorted({w[0] for w in where})
            self.say(f"ray: {self.n} workers on {len(hosts)} machine(s), {where[0][1]}")
        return self._actors

    def _drive(self, jobs: list, submit, finish, what) -> None:
        """Keep every actor busy with ``jobs``; a job whose actor died is redone on a new actor."""
        ray = self.ray
        queue, idle, inflight = deque(jobs), list(self.actors()), {}
        attempts: dict = {}
        try:
            while queue or inflight:
                while queue and idle:
                    actor, job = idle.pop(), queue.popleft()
                    inflight[submit(actor, job)] = (actor, job)
                ready, _ = ray.wait(list(inflight), num_returns=1)
                actor, job = inflight.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                    key = what(job)
                    attempts[key] = attempts.get(key, 0) + 1
                    self.failures += 1
                    if attempts[key] >= MAX_ATTEMPTS:
                        raise SRDeployError(f"{key}: its Ray worker died {MAX_ATTEMPTS} times; stopping") from None
                    self.say(f"note: a Ray worker died during {key}; it is redone on a new worker")
                    self._actors.remove(actor)
                    actor = self._new_actor()
                    self._actors.append(actor)
                    queue.appendleft(job)
                    idle.append(actor)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, (SRDeployError, KeyboardInterrupt)):
                        raise cause from None
                    first = (str(cause or exc).strip().splitlines() or [""])[0][:200]
                    raise SRDeployError(f"{what(job)}: failed on a Ray worker ({type(cause or exc).__name__}: "
                                        f"{first})") from None
                finish(job, result)
                idle.append(actor)
        finally:
            for ref in inflight:
                ray.cancel(ref, force=False)

    def run(self, src: Path, plan, segments: list, options, parts, bar) -> None:
        """Encode ``segments`` on the workers; each finished one is recorded in ``parts`` as it comes back."""
        path = str(Path(src).resolve())

        def finish(seg, result):
            n, data = result
            tmp = parts.tmp_path(seg.index)
            tmp.write_bytes(data)
            parts.record(seg.index, n, tmp)
            bar.update(n)

        self._drive(segments, lambda a, seg: a.segment.remote(path, plan, seg, options), finish,
                    lambda seg: f"segment {seg.index}")

    def run_files(self, todo: list[tuple[Path, Path, bool]], *, on_result) -> None:
        """Upscale files in shards of a few; each output is written by the driver, whole or not at all."""
        from sr_deploy.fsutil import atomic_path

        shards = [todo[i:i + FILES_PER_TASK] for i in range(0, len(todo), FILES_PER_TASK)]

        def submit(actor, shard):
            return actor.images.remote([(str(f.resolve()), out.name) for f, out, _ in shard], self.image_kw)

        def finish(shard, results):
            for (f, out, overwrite), (why, data) in zip(shard, results):
                if why is None:
                    try:
                        with atomic_path(out, overwrite=overwrite) as tmp:
                            tmp.write_bytes(data)
                    except SRDeployError as exc:
                        why = str(exc)
                    except OSError as exc:
                        why = f"{out}: {exc.strerror or exc}"
                on_result(f, out, why)

        self._drive(shards, submit, finish, lambda shard: f"{shard[0][0]} (+{len(shard) - 1} files)")

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()
