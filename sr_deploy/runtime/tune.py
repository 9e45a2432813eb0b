"""`auto` on the CPU by measurement: time every installed candidate that passed its quality gate on
this machine, once per model, and keep the ranking in the cache.

A fixed rule (OpenVINO INT8 first) was tuned on AVX-512/AMX machines: there INT8 ran 10x ONNX Runtime
fp32, on a 2-core AVX2-only EPYC 1.5x. Which candidate wins depends on the ISA, the core count and the
library versions, so it is measured: each candidate runs in its own process (a candidate that crashes
or hangs is skipped with a note, within a time limit) for about a second on a representative input,
and the ranking is cached under a key of the model's hash, the CPU's model and flags and the library
versions. A cache that does not parse or has another key is measured again, never trusted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sr_deploy.fsutil import atomic_path, cache_root, model_digest

TUNE_INPUT = (128, 128)  # LR pixels of the timed input: the size the published CPU figures use
TUNE_SECONDS = float(os.environ.get("SRDEPLOY_TUNE_SECONDS", "1.0"))  # timed runs per candidate, after a warm-up
CANDIDATE_TIMEOUT_S = 120.0  # a candidate that takes longer (hung, or absurdly slow) is skipped
FORMAT = 2
# An INT8 variant's quality gate was measured in ONNX Runtime. Another runtime compiles the same Q/DQ graph
# into its own kernels, and on a CPU without VNNI they can lose far more: light_x4 in OpenVINO INT8 on a
# 2-core AVX2-only EPYC lost 1.15 dB on Set5 where ONNX Runtime INT8 lost 0.08. So each INT8 candidate's
# output is compared with fp32 on this machine (PSNR against ONNX Runtime fp32 on synthetic frames); one
# that drifts this much further than the gated ONNX Runtime INT8 is not a candidate here. Measured on that
# EPYC: light_x4 OpenVINO 32.5 dB vs ONNX Runtime 41.8 (dropped); srresnet_x4 40.3 vs 41.1 (kept).
FIDELITY_MARGIN_DB = 3.0
# Timings taken while other work holds the CPU rank the runners by how they share it, not by how they run:
# light_x4 timed beside a two-thread training run on a 2-core EPYC gave torch fp32 200 ms, 17x its 11.7 ms
# on the quiet machine (OpenMP threads that spin lose the most), and that ranking would have stood for
# good. So the CPU time other processes used during the timing is read from /proc/stat; from this share of
# the machine on, the ranking is kept as provisional and timed again on a later run that finds the CPU quiet.
BUSY_SHARE = 0.25
QUIET_PROBE_S = 0.3  # how long a later run looks at the CPU before trusting a provisional ranking
# Timing every candidate again took 16-31 s before a run's first frame (each candidate is a child process
# that imports its runtime and compiles the model). So a run that finds a provisional ranking and a quiet
# CPU follows the ranking at once and leaves the re-timing to a detached process that waits for the run to
# end, looks again whether the CPU is quiet, and only then times (at a lower priority, one at a time per
# model). SRDEPLOY_RETIME=foreground re-times before the run instead, as before.
RETIME_ENV = "SRDEPLOY_RETIME"


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    streams: int = 1  # OpenVINO: frames in flight, each CPU stream on its share of the cores

    def label(self) -> str:
        return f"{self.backend} {self.precision}" + (f" x{self.streams} streams" if self.streams > 1 else "")


def enabled() -> bool:
    """Measuring is on unless SRDEPLOY_TUNE=0 (the fixed rule is then used)."""
    return os.environ.get("SRDEPLOY_TUNE", "1") != "0"


def candidates(source) -> list[Candidate]:
    """Every CPU runner that can run ``source`` here at a precision whose gate passed within auto's budget."""
    from sr_deploy.machine import cpu_has_bf16
    from sr_deploy.runtime.openvino_runner import OpenVINORunner, compute_precisions
    from sr_deploy.runtime.chain import ModelChain

    out: list[Candidate] = []
    int8 = ModelChain(source).gated("int8")
    have_ov = OpenVINORunner.available()
    if have_ov:
        out.append(Candidate("openvino", "fp32"))
        if int8 is not None:
            out.append(Candidate("openvino", "int8"))
        native = compute_precisions()  # asked of OpenVINO, not looked up in a table
        for p in ("bf16", "fp16"):
            if p in native:
                out.append(Candidate("openvino", p))
    out.append(Candidate("onnxruntime", "fp32"))
    if int8 is not None:
        out.append(Candidate("onnxruntime", "int8"))
    if source.kind == "checkpoint":
        out.append(Candidate("torch", "fp32"))
        if cpu_has_bf16():
            out.append(Candidate("torch", "bf16"))
    return out


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    total = sum(fields)
    return total - fields[3] - (fields[4] if len(fields) > 4 else 0), total


def _own_cpu_s() -> float:
    t = os.times()  # children count once waited for, as every timed candidate is
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """``with OtherLoad() as load: ...``; then ``load.share``: the share of the machine's CPU time used by
    processes other than this one and its children during the block (None where /proc/stat is missing)."""

    share: float | None = None

    def __enter__(self) -> "OtherLoad":
        self._ticks, self._own = _cpu_ticks(), _own_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        end, own = _cpu_ticks(), _own_cpu_s()
        if self._ticks is None or end is None or end[1] <= self._ticks[1]:
            return
        busy, total = end[0] - self._ticks[0], end[1] - self._ticks[1]
        self.share = min(1.0, max(0.0, (busy - (own - self._own) * os.sysconf("SC_CLK_TCK")) / total))


def quiet_now(seconds: float = QUIET_PROBE_S) -> bool:
    """Whether other processes leave this CPU mostly idle (below BUSY_SHARE) over the next ``seconds``."""
    with OtherLoad() as load:
        time.sleep(seconds)
    return load.share is None or load.share < BUSY_SHARE


def cache_key(source, model_sha256: str | None = None) -> dict:
    import importlib.metadata as md

    from sr_deploy.machine import cpu_flags, machine_info

    versions = {}
    for pkg in ("srdeploy", "torch", "onnxruntime", "openvino"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"format": FORMAT, "model_sha256": model_sha256 or model_digest(source.path), "cpu": machine_info()["cpu"],
            "cores": os.cpu_count(), "flags_sha": _flags_digest(cpu_flags()), "versions": versions,
            "input": list(TUNE_INPUT)}


def _flags_digest(flags: set[str]) -> str:
    import hashlib

    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]


def cache_path(source, model_sha256: str | None = None) -> Path:
    sha = model_sha256 or model_digest(source.path)
    return cache_root() / "tune" / f"{Path(source.path).name}-{sha[:16]}.json"


def retime_in_background() -> bool:
    return os.environ.get(RETIME_ENV, "background") != "foreground"


def _stored(source) -> tuple[dict, dict | None, str]:
    """(this machine's key, the ranking file's content, why not): the content only when it is a ranking
    for this key, else None and why (missing, unreadable, or another CPU's, model's or versions'). The one
    reader of the file: the run, the first timing and the re-timing must agree on what counts as a ranking
    (a damaged file that the run rejected and the re-timing took for a final ranking was never timed)."""
    key = cache_key(source)
    path = cache_path(source, key["model_sha256"])
    if not path.is_file():
        return key, None, "not measured on this machine yet"
    try:
        data = json.loads(path.read_text())
        ranking = data["ranking"]
        if not isinstance(ranking, list) or not all(
                isinstance(r, dict) and {"backend", "precision", "ms"} <= set(r) for r in ranking):
            raise ValueError("bad ranking")
    except (OSError, ValueError, KeyError, TypeError):
        return key, None, f"the cached ranking {path} is unreadable: measuring again"
    if data.get("key") != key:
        return key, None, "the cached ranking is from another CPU, model or library version: measuring again"
    return key, data, ""


def _busy_share(data: dict) -> float | None:
    """The other load a stored ranking was timed under, when it made the ranking provisional."""
    busy = data.get("busy_share")
    return busy if isinstance(busy, (int, float)) and busy >= BUSY_SHARE else None


def cached_ranking(source, *, background: bool = False) -> tuple[list[dict] | None, str]:
    """(ranking, why) from the cache; (None, why not) when missing, unreadable or for another machine.

    A provisional ranking (timed while the CPU was busy) on a CPU that is quiet now: (None, ...) so that the
    caller times it again, or with ``background`` the ranking itself, its re-timing left to a detached
    process that starts once this one has ended (``retime_after_exit``)."""
    key, data, why = _stored(source)
    if data is None:
        return None, why
    ranking, busy = data["ranking"], _busy_share(data)
    if busy is not None:
        if quiet_now():
            if background:
                pid, log = time_after_exit(source, key["model_sha256"])
                return ranking, (f"measured earlier while other work used {busy:.0%} of the CPU, so provisional; "
                                 f"timed again once this run ends, if the CPU is still quiet (process {pid}, "
                                 f"log {log})")
            return None, (f"the cached ranking was timed while other work used {busy:.0%} of the CPU, "
                          "and it is quiet now: measuring again")
        return ranking, (f"measured earlier while other work used {busy:.0%} of the CPU, so provisional: "
                         "timed again on a run that finds the CPU quiet")
    return ranking, "measured on this machine earlier; `srdeploy tune` redoes it"


_detached: list = []  # the re-timing processes started here: kept so that Python never warns they still run
_retiming: dict[str, tuple[int, Path]] = {}  # cached ranking's path -> (pid, log) of the re-timing started for it


def time_after_exit(source, sha: str | None = None) -> tuple[int, Path]:
    """The detached timing for after this run (``retime_after_exit``), started once per model and run however
    often auto asks: the first timing of a model never timed on this machine (a first run follows the fixed
    rules at once rather than wait for every runner to be timed), or the re-timing of a provisional ranking."""
    sha = sha or cache_key(source)["model_sha256"]
    path = str(cache_path(source, sha))
    if path not in _retiming:
        _retiming[path] = retime_after_exit(source, sha)
    return _retiming[path]


def needs_first_timing(source) -> bool:
    """No ranking of ``source`` for this machine (none, unreadable, or another CPU's or version's)."""
    return _stored(source)[1] is None


def retime_after_exit(source, sha: str) -> tuple[int, Path]:
    """Start ``python -m sr_deploy.runtime.timing --retime-after PID MODEL`` in a session of its own (a
    Ctrl-C on this run does not reach it); its output goes to a log beside the cached ranking."""
    log = cache_path(source, sha).with_suffix(".retime.log")
    log.parent.mkdir(parents=True, exist_ok=True)  # a model's first timing: no ranking, maybe no folder yet
    cmd = [sys.executable, "-m", "sr_deploy.runtime.timing", "--retime-after", str(os.getpid()), str(source.path)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "SRDEPLOY_TUNE": "1"})
    _detached.append(proc)
    return proc.pid, log


def still_provisional(source) -> bool:
    """Whether the cached ranking of ``source`` is for this machine and was timed on a busy CPU."""
    data = _stored(source)[1]
    return data is not None and _busy_share(data) is not None


def measure(source, *, say=None, timeout_s: float = CANDIDATE_TIMEOUT_S) -> list[dict]:
    """Time each candidate in a child process; return the ranking (fastest first) and cache it."""
    say = say or (lambda line: None)
    ranking, skipped = [], []
    cands = candidates(source)
    say(f"note: timing {len(cands)} CPU runners for {source.name} on this machine once "
        f"({', '.join(c.label() for c in cands)}); `srdeploy tune` redoes it")
    with OtherLoad() as load:
        _time_candidates(cands, source, ranking, skipped, timeout_s, say)
        more = streams_candidates(ranking)
        if more:  # frames in flight on the fastest OpenVINO precision: a per-machine question, timed
            _time_candidates(more, source, ranking, skipped, timeout_s, say)
    ranking, drifted = drop_drifting(ranking)
    skipped += drifted
    for s in skipped:
        say(f"note: skipped {s}")
    if load.share is not None and load.share >= BUSY_SHARE:
        say(f"note: other work used {load.share:.0%} of this CPU while timing: the ranking is provisional "
            "and is timed again on a run that finds the CPU quiet")
    ranking.sort(key=lambda r: r["ms"])
    if ranking:
        key = cache_key(source)
        with atomic_path(cache_path(source, key["model_sha256"])) as tmp:
            tmp.write_text(json.dumps({"key": key, "ranking": ranking, "skipped": skipped,
                                       "busy_share": None if load.share is None else round(load.share, 3),
                                       "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    return ranking


def _time_candidates(cands: list[Candidate], source, ranking: list[dict], skipped: list[str], timeout_s: float,
                     say=lambda line: None) -> None:
    """Time each candidate in a child process of its own; rows go to ``ranking``, failures to ``skipped``;
    one line per candidate as it ends (a candidate takes from seconds to minutes)."""
    t0 = time.perf_counter()
    for i, c in enumerate(cands, 1):
        row = _time_candidate(c, source, timeout_s)
        timed = isinstance(row, dict)
        (ranking if timed else skipped).append(row)
        got = f"{row['ms']:.1f} ms" if timed else "skipped"
        say(f"  [{i}/{len(cands)}] {c.label()}: {got} ({time.perf_counter() - t0:.0f} s so far)")


def streams_candidates(ranking: list[dict]) -> list[Candidate]:
    """Two OpenVINO streams on the fastest OpenVINO row, where there are cores to share. Two streams ran
    3-6% slower than one request on both cores of a 2-core AVX2 EPYC, and 20% faster on a 2-core AMX
    Xeon (vs-mlrt's measure, issue 40): only timing on the machine tells."""
    ov = [r for r in ranking if r["backend"] == "openvino" and r.get("streams", 1) == 1]
    if not ov or (os.cpu_count() or 1) < 2:
        return []
    best = min(ov, key=lambda r: r["ms"])
    return [Candidate("openvino", best["precision"], streams=2)]


def _time_candidate(c: Candidate, source, timeout_s: float) -> dict | str:
    """Time one candidate in a child process: its ranking row, or why it was skipped."""
    cmd = [sys.executable, "-m", "sr_deploy.runtime.timing", str(source.path), c.backend, c.precision]
    if c.streams > 1:
        cmd += ["--streams", str(c.streams)]
    env = {**os.environ, "SRDEPLOY_TUNE": "0"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return f"{c.label()} (no result within {timeout_s:.0f} s)"
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        got = json.loads(line) if proc.returncode == 0 else None
        ms = float(got["ms"]) if got else None
        fidelity = got.get("fidelity_db") if got else None
        in_flight = int(got.get("streams", 1)) if got else 1
    except (ValueError, KeyError, TypeError, AttributeError):
        ms = None
    if ms is None:
        err = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:160]
        return f"{c.label()} ({err})"
    row = {"backend": c.backend, "precision": c.precision, "ms": round(ms, 2)}
    if c.streams > 1:
        if in_flight != c.streams:  # the runtime did not keep them in flight: not what was asked
            return f"{c.label()} (ran with {in_flight} in flight)"
        row["streams"] = c.streams
    if fidelity is not None:
        row["fidelity_db"] = round(float(fidelity), 2)
    return row


def drop_drifting(ranking: list[dict]) -> tuple[list[dict], list[str]]:
    """Drop rows not faithful to the fp32 model here: a reduced-precision row whose output is further from
    ONNX Runtime fp32's than the gate allows (precision/convert.MIN_FIDELITY_DB; bf16 held to int8's), or an
    INT8 row FIDELITY_MARGIN_DB further than the gated ONNX Runtime INT8 on this machine."""
    from sr_deploy.precision.convert import MIN_FIDELITY_DB

    ref = next((r.get("fidelity_db") for r in ranking if r["backend"] == "onnxruntime" and r["precision"] == "int8"),
               None)
    kept, dropped = [], []
    for r in ranking:
        f = r.get("fidelity_db")
        least = MIN_FIDELITY_DB.get(r["precision"], MIN_FIDELITY_DB["int8"])
        if r["precision"] != "fp32" and f is not None and f < least:
            dropped.append(f"{r['backend']} {r['precision']} (its output is {f} dB PSNR from fp32 here, "
                           f"under the gate's {least:g} dB)")
            continue
        if r["precision"] == "int8" and r["backend"] != "onnxruntime":
            if ref is None or f is None or f < ref - FIDELITY_MARGIN_DB:
                dropped.append(f"{r['backend']} int8 (its output is {f} dB PSNR from fp32 here, against "
                               f"{ref} dB for the gated ONNX Runtime INT8: its INT8 kernels lose accuracy on this CPU)")
                continue
        kept.append(r)
    return kept, dropped


def describe(ranking: list[dict], n: int = 4) -> str:
    return " < ".join(f"{Candidate(r['backend'], r['precision'], r.get('streams', 1)).label()} {r['ms']:.1f} ms"
                      for r in ranking[:n])
