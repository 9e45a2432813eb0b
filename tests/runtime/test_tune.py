"""`auto` on the CPU by measurement: candidates timed in child processes, the ranking cached and re-checked."""

import json
from pathlib import Path

import pytest

from sr_deploy.runtime import timing, tune
from sr_deploy.runtime.select import make_runner, resolve_model


class _QuietCPU:
    """Stands in for tune.OtherLoad: the tests not about load must not depend on what else runs on the
    machine (a busy CI host would make every ranking provisional and re-timed)."""

    share = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture
def measuring(monkeypatch):
    monkeypatch.setenv("SRDEPLOY_TUNE", "1")
    monkeypatch.setenv("SRDEPLOY_TUNE_SECONDS", "0.05")
    monkeypatch.setattr(tune, "OtherLoad", _QuietCPU)


@pytest.fixture
def two_candidates(monkeypatch):
    """Two runners to time, for the tests about a ranking's life rather than its rows: each candidate is
    timed in a child process of its own (seconds each), and these tests measure two to three times."""
    real = tune.candidates
    keep = {("onnxruntime", "fp32"), ("torch", "fp32")}
    monkeypatch.setattr(tune, "candidates", lambda s: [c for c in real(s) if (c.backend, c.precision) in keep])
    monkeypatch.setattr(tune, "streams_candidates", lambda ranking: [])


def test_auto_follows_the_measured_ranking(tiny_ckpt, measuring, monkeypatch):
    source = resolve_model(str(tiny_ckpt))
    notes = []
    ranking = tune.measure(source, say=notes.append)
    labels = {(r["backend"], r["precision"]) for r in ranking}
    assert {("onnxruntime", "fp32"), ("torch", "fp32")} <= labels and all(r["ms"] > 0 for r in ranking)
    n = len(tune.candidates(source))  # a line per candidate as it ends, not silence until the last
    m = len(tune.streams_candidates(ranking))  # then the stream count on the fastest OpenVINO row
    assert [line.split("]")[0].strip() for line in notes if line.lstrip().startswith("[")] == \
        [f"[{i}/{n}" for i in range(1, n + 1)] + [f"[{i}/{m}" for i in range(1, m + 1)], notes
    assert [r["ms"] for r in ranking] == sorted(r["ms"] for r in ranking)
    assert tune.cached_ranking(source)[0] == ranking
    # auto runs the first of the cached ranking, whatever it is: put torch first to see it obeyed
    forced = sorted(ranking, key=lambda r: r["backend"] != "torch")
    data = json.loads(tune.cache_path(source).read_text())
    tune.cache_path(source).write_text(json.dumps({**data, "ranking": forced}))
    runner, why = make_runner(source, "auto")
    assert runner.backend == "torch" and "by measurement" in why and "torch fp32" in why


def test_corrupt_or_foreign_cache_is_measured_again(tiny_ckpt, measuring, two_candidates, monkeypatch):
    source = resolve_model(str(tiny_ckpt))
    tune.measure(source)
    path = tune.cache_path(source)
    good = json.loads(path.read_text())
    path.write_text("{not json")
    assert tune.cached_ranking(source)[0] is None and "unreadable" in tune.cached_ranking(source)[1]
    path.write_text(json.dumps({**good, "key": {**good["key"], "cpu": "another CPU"}}))
    assert tune.cached_ranking(source)[0] is None and "another CPU" in tune.cached_ranking(source)[1]
    runner, why = make_runner(source, "auto")  # measured again, then cached with this machine's key
    assert "measured just now" in why and tune.cached_ranking(source)[0] is not None


def test_a_candidate_that_fails_or_hangs_is_skipped(tiny_ckpt, measuring, two_candidates, monkeypatch):
    source = resolve_model(str(tiny_ckpt))
    # an INT8 candidate with no INT8 ONNX: its child process fails; the others are still timed
    real = tune.candidates
    monkeypatch.setattr(tune, "candidates", lambda s: real(s) + [tune.Candidate("onnxruntime", "int8")])
    notes = []
    ranking = tune.measure(source, say=notes.append)
    assert ranking and ("onnxruntime", "int8") not in {(r["backend"], r["precision"]) for r in ranking}
    assert any(n.startswith("note: skipped onnxruntime int8") for n in notes)
    # nothing answers within the limit: nothing is cached, auto falls back to its fixed rule
    tune.cache_path(source).unlink()
    assert tune.measure(source, say=notes.append, timeout_s=0.01) == []
    assert any("no result within" in n for n in notes) and not tune.cache_path(source).exists()


def test_a_variant_given_by_path_is_not_tuned_away(tiny_onnx, tmp_path, measuring):
    import shutil

    from sr_deploy.precision.convert import make_precision_onnx

    src = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, src)
    fp16 = make_precision_onnx(src, "fp16").path
    runner, why = make_runner(resolve_model(str(fp16)), "auto")
    assert runner.path.name == "m.fp16.onnx" and "by measurement" not in why


def test_an_interrupted_tune_leaves_the_previous_ranking(tiny_ckpt, measuring, two_candidates, monkeypatch):
    import subprocess

    source = resolve_model(str(tiny_ckpt))
    tune.measure(source)
    before = tune.cache_path(source).read_text()
    real_run = subprocess.run
    calls = []

    def interrupted(*a, **kw):  # Ctrl-C arrives while the second candidate is being timed
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*a, **kw)

    monkeypatch.setattr(subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune.measure(source)
    assert tune.cache_path(source).read_text() == before
    assert [p.name for p in tune.cache_path(source).parent.iterdir()] == [tune.cache_path(source).name]


def test_an_int8_runner_that_drifts_on_this_cpu_is_not_a_candidate():
    rows = [{"backend": "openvino", "precision": "int8", "ms": 10.0, "fidelity_db": 32.5},
            {"backend": "onnxruntime", "precision": "int8", "ms": 20.0, "fidelity_db": 41.8},
            {"backend": "onnxruntime", "precision": "fp32", "ms": 30.0}]
    kept, dropped = tune.drop_drifting(rows)
    assert [r["backend"] + r["precision"] for r in kept] == ["onnxruntimeint8", "onnxruntimefp32"]
    assert len(dropped) == 1 and "openvino int8" in dropped[0] and "32.5" in dropped[0]
    rows[0]["fidelity_db"] = 40.3  # within the margin of the gated runner: kept, and fastest
    assert tune.drop_drifting(rows)[0][0]["backend"] == "openvino"
    # no gated ONNX Runtime INT8 row to compare with: an INT8 row without a gate of its own is dropped
    assert [r["precision"] for r in tune.drop_drifting(rows[:1] + rows[2:])[0]] == ["fp32"]


def test_fidelity_is_psnr_against_onnxruntime_fp32(tiny_ckpt):
    import numpy as np

    source = resolve_model(str(tiny_ckpt))
    same, _ = make_runner(source, "onnxruntime", "fp32")
    with same:
        assert timing._fidelity(source, same) > 90

    class Coarse:  # the same model with its output quantized to 16 levels: a lossy INT8-like runner
        def infer_u8(self, x):
            return (same.infer_u8(x) // 16 * 16).astype(np.uint8)

    with same:
        assert 20 < timing._fidelity(source, Coarse()) < 40


def test_other_load_counts_other_processes_not_this_one(monkeypatch):
    # /proc/stat ticks (busy, total) before and after; this process and its children used 1.0 s of CPU
    ticks = iter([(1000, 5000), (1300, 5400)])
    times = iter([0.0, 1.0])
    monkeypatch.setattr(tune, "_cpu_ticks", lambda: next(ticks))
    monkeypatch.setattr(tune, "_own_cpu_s", lambda: next(times))
    monkeypatch.setattr(tune.os, "sysconf", lambda name: 100)
    with tune.OtherLoad() as load:
        pass
    assert load.share == pytest.approx((300 - 100) / 400)
    monkeypatch.setattr(tune, "_cpu_ticks", lambda: None)  # no /proc/stat: unknown, never "busy"
    monkeypatch.setattr(tune, "_own_cpu_s", lambda: 0.0)
    with tune.OtherLoad() as load:
        pass
    assert load.share is None


@pytest.mark.skipif(tune._cpu_ticks() is None, reason="no /proc/stat here")
def test_other_load_sees_a_process_spinning_beside_it():
    import subprocess
    import sys
    import time

    with open("/proc/stat") as f:
        cpus = sum(1 for line in f if line.startswith("cpu") and line[3].isdigit())
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        with tune.OtherLoad() as load:
            time.sleep(0.6)
    finally:
        spinner.kill()
        spinner.wait()
    assert load.share is not None and load.share >= 0.5 / cpus


def test_a_ranking_timed_while_the_cpu_was_busy_is_provisional(tiny_ckpt, measuring, two_candidates, monkeypatch):
    class Busy(_QuietCPU):
        share = 0.6

    source = resolve_model(str(tiny_ckpt))
    monkeypatch.setattr(tune, "OtherLoad", Busy)
    notes = []
    ranking = tune.measure(source, say=notes.append)
    assert ranking and any("provisional" in n and "60%" in n for n in notes)
    assert json.loads(tune.cache_path(source).read_text())["busy_share"] == 0.6
    # still busy: the provisional ranking is followed, and said to be provisional
    monkeypatch.setattr(tune, "quiet_now", lambda: False)
    got, why = tune.cached_ranking(source)
    assert got == ranking and "provisional" in why
    # quiet now: timed again, and the quiet ranking is kept as final
    monkeypatch.setattr(tune, "quiet_now", lambda: True)
    assert tune.cached_ranking(source)[0] is None and "quiet now" in tune.cached_ranking(source)[1]

    class Quiet(Busy):
        share = 0.02

    monkeypatch.setattr(tune, "OtherLoad", Quiet)
    runner, why = make_runner(source, "auto")
    assert "measured just now" in why
    assert tune.cached_ranking(source)[1].startswith("measured on this machine earlier")


def _provisional(source, share=0.6):
    """Cache a ranking of ``source`` as if timed while other work held ``share`` of the CPU."""
    class Busy(_QuietCPU):
        pass

    Busy.share = share
    real = tune.OtherLoad
    tune.OtherLoad = Busy
    try:
        return tune.measure(source)
    finally:
        tune.OtherLoad = real


def test_a_provisional_ranking_on_a_quiet_cpu_is_followed_at_once_and_timed_again_after_the_run(
        tiny_ckpt, measuring, two_candidates, monkeypatch, tmp_path):
    """The run's first frame waits for no re-timing: auto follows the provisional ranking, and a detached
    re-timing is started for after the run."""
    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(tune.RETIME_ENV, "background")  # the default outside the tests
    source = resolve_model(str(tiny_ckpt))
    ranking = _provisional(source)
    started = []
    monkeypatch.setattr(tune, "_retiming", {})
    monkeypatch.setattr(tune, "retime_after_exit", lambda src, sha: started.append(src.path) or (4242, Path("x.log")))
    monkeypatch.setattr(tune, "quiet_now", lambda *a: True)

    def no_timing_now(*a, **k):
        raise AssertionError("timed before the run")

    monkeypatch.setattr(tune, "measure", no_timing_now)
    runner, why = make_runner(source, "auto")
    assert started == [source.path] and "timed again once this run ends" in why and "4242" in why
    assert (runner.backend, runner.precision) == (ranking[0]["backend"], ranking[0]["precision"])
    make_runner(source, "auto")  # asked again in the same run (bench asks per row): no second re-timing
    assert started == [source.path]
    # SRDEPLOY_RETIME=foreground: timed again before the run, as the caller asked
    monkeypatch.setenv(tune.RETIME_ENV, "foreground")
    with pytest.raises(AssertionError, match="timed before the run"):
        make_runner(source, "auto")
    assert len(started) == 1


def test_the_detached_re_timing_waits_for_the_run_then_times_once_and_only_if_still_provisional(
        tiny_ckpt, measuring, two_candidates, monkeypatch, tmp_path):
    import fcntl
    import subprocess
    import sys

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    source = resolve_model(str(tiny_ckpt))
    _provisional(source)
    monkeypatch.setattr(tune, "quiet_now", lambda *a: True)
    monkeypatch.setattr(timing.os, "nice", lambda n: 0)
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])  # the run, still going
    assert tune.still_provisional(source)
    assert timing.retime_after(run.pid, str(tiny_ckpt), poll_s=0.05, say=lambda line: None) == "timed again"
    assert run.poll() is not None  # it waited for the run to end (a zombie until waited for counts as ended)
    data = json.loads(tune.cache_path(source).read_text())
    assert data["busy_share"] == 0.0 and not tune.still_provisional(source)
    # final now: a second re-timing does nothing
    assert timing.retime_after(run.pid, str(tiny_ckpt), say=lambda line: None) == "the ranking is no longer provisional"
    # busy again when the run ends: left provisional
    _provisional(source)
    monkeypatch.setattr(tune, "quiet_now", lambda *a: False)
    assert "busy again" in timing.retime_after(run.pid, str(tiny_ckpt), say=lambda line: None)
    assert tune.still_provisional(source)
    # one re-timing per model at a time
    monkeypatch.setattr(tune, "quiet_now", lambda *a: True)
    with open(tune.cache_path(source).with_suffix(".retime.lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert "under way" in timing.retime_after(run.pid, str(tiny_ckpt), say=lambda line: None)
    assert tune.still_provisional(source)


def test_the_re_timing_process_runs_as_a_module_and_logs_what_it_did(tiny_ckpt, measuring, two_candidates, monkeypatch, tmp_path):
    """The command retime_after_exit starts, run for real: a ranking that is final is left alone."""
    import subprocess
    import sys

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    source = resolve_model(str(tiny_ckpt))
    _provisional(source, share=0.0)
    done = subprocess.run([sys.executable, "-c", "pass"])
    pid, log = None, None
    real_popen = subprocess.Popen

    class Waited(real_popen):  # the detached process, waited for here so that the test can read its log
        def __init__(self, cmd, **kw):
            nonlocal pid
            cmd = cmd[:3] + ["--retime-after", str(dead.pid)] + cmd[5:]
            super().__init__(cmd, **kw)
            pid = self.pid

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setattr(subprocess, "Popen", Waited)
    got_pid, log = tune.retime_after_exit(source, tune.cache_key(source)["model_sha256"])
    assert got_pid == pid and done.returncode == 0
    tune._detached[-1].wait(timeout=120)
    assert "the ranking is no longer provisional" in log.read_text()


def test_a_reduced_precision_row_below_the_gate_is_dropped():
    rows = [{"backend": "openvino", "precision": "bf16", "ms": 5.0, "fidelity_db": 38.0},
            {"backend": "openvino", "precision": "fp16", "ms": 6.0, "fidelity_db": 44.0},
            {"backend": "openvino", "precision": "fp32", "ms": 9.0}]
    kept, dropped = tune.drop_drifting(rows)
    assert [r["precision"] for r in kept] == ["fp32"]
    assert any("bf16" in d and "38.0" in d for d in dropped) and any("fp16" in d for d in dropped)
    rows[0]["fidelity_db"], rows[1]["fidelity_db"] = 40.5, 51.0
    assert [r["precision"] for r in tune.drop_drifting(rows)[0]] == ["bf16", "fp16", "fp32"]


def test_openvino_precisions_are_asked_of_the_runtime(tiny_ckpt, monkeypatch):
    """What OpenVINO reports in OPTIMIZATION_CAPABILITIES decides the candidates, not a table of CPU flags."""
    from sr_deploy.errors import BackendUnavailable, InputError
    from sr_deploy.runtime import openvino_runner

    if not openvino_runner.OpenVINORunner.available():
        pytest.skip("openvino not installed")
    import openvino as ov

    source = resolve_model(str(tiny_ckpt))
    for caps, want in ((["FP32", "INT8"], set()), (["FP32", "BF16", "FP16", "INT8"], {"bf16", "fp16"}),
                       (["FP32", "FP16"], {"fp16"})):
        monkeypatch.setattr(openvino_runner, "_CAPS", None)
        monkeypatch.setattr(ov.Core, "get_property", lambda self, dev, key, caps=caps: caps)
        got = {c.precision for c in tune.candidates(source) if c.backend == "openvino"} - {"fp32", "int8"}
        assert got == want, caps
    monkeypatch.setattr(openvino_runner, "_CAPS", {"fp32"})
    with pytest.raises(InputError, match="no native fp16"):
        make_runner(source, "openvino", "fp16")
    monkeypatch.setattr(openvino_runner, "_CAPS", {"fp32", "fp16"})
    runner, _ = make_runner(source, "openvino", "fp16")  # the fp32 ONNX, computed in fp16 by the hint
    assert runner.precision == "fp16" and not runner.path.name.endswith(".fp16.onnx")
    # an fp32 ONNX asked to run in fp16 on a CPU that OpenVINO says lacks it: refused when activated
    monkeypatch.setattr(openvino_runner, "_CAPS", {"fp32"})
    with pytest.raises(BackendUnavailable, match="no native fp16"):
        with runner:
            pass


def test_the_stream_count_is_timed_on_the_fastest_openvino_row_and_followed(tiny_ckpt, measuring, monkeypatch):
    """OpenVINO streams (frames in flight) help on some CPUs and cost on others: timed, not assumed."""
    from sr_deploy.runtime.openvino_runner import OpenVINORunner

    if not OpenVINORunner.available():
        pytest.skip("OpenVINO is not installed")
    monkeypatch.setattr(tune.os, "cpu_count", lambda: 2)
    source = resolve_model(str(tiny_ckpt))
    ranking = tune.measure(source)
    rows = [r for r in ranking if r.get("streams")]
    assert len(rows) == 1 and rows[0]["backend"] == "openvino" and rows[0]["streams"] == 2 and rows[0]["ms"] > 0
    ov = [r for r in ranking if r["backend"] == "openvino" and not r.get("streams")]
    assert rows[0]["precision"] == min(ov, key=lambda r: r["ms"])["precision"]
    assert "x2 streams" in tune.describe([rows[0]])
    # auto follows a ranking whose first row has streams: that many frames in flight
    forced = sorted(ranking, key=lambda r: not r.get("streams"))
    data = json.loads(tune.cache_path(source).read_text())
    tune.cache_path(source).write_text(json.dumps({**data, "ranking": forced}))
    runner, why = make_runner(source, "auto")
    assert runner.backend == "openvino" and runner.streams == 2 and "x2 streams" in why
    with runner:
        assert len(runner._in_flight()) == 2
    # one core: nothing to share
    monkeypatch.setattr(tune.os, "cpu_count", lambda: 1)
    assert tune.streams_candidates(ranking) == []


def test_a_first_run_follows_the_rules_at_once_and_the_runners_are_timed_after_it(
        tiny_ckpt, measuring, two_candidates, monkeypatch, tmp_path, capsys):
    """No ranking on this machine yet: the run waits for no timing (16 s for light_x4 on a 2-core EPYC before
    its first image); it follows the fixed rules, and one detached timing per model is started for after it,
    which times only on a quiet CPU (under load it ranked the wrong runner first, and the next run followed it)."""
    import subprocess
    import sys

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(tune.RETIME_ENV, "background")  # the default outside the tests
    source = resolve_model(str(tiny_ckpt))
    started = []
    monkeypatch.setattr(tune, "_retiming", {})
    monkeypatch.setattr(tune, "retime_after_exit", lambda src, sha: started.append(src.path) or (4343, Path("y.log")))

    def no_timing_now(*a, **k):
        raise AssertionError("timed before the run")

    real_measure = tune.measure
    monkeypatch.setattr(tune, "measure", no_timing_now)
    assert tune.needs_first_timing(source)
    runner, why = make_runner(source, "auto")
    assert "by measurement" not in why and started == [source.path]
    assert "timed once it ends (process 4343" in capsys.readouterr().err
    make_runner(source, "auto")  # asked again in the same run: no second timing process
    assert started == [source.path]
    # the detached process, once the run has ended: on a busy CPU (the user's next command) it times nothing,
    # the fixed rules stay; on a quiet one it times for the first time
    monkeypatch.setattr(tune, "measure", real_measure)
    monkeypatch.setattr(tune, "quiet_now", lambda *a: False)
    monkeypatch.setattr(timing.os, "nice", lambda n: 0)
    run = subprocess.Popen([sys.executable, "-c", "pass"])
    run.wait()
    assert "fixed rules stay" in timing.retime_after(run.pid, str(tiny_ckpt), say=lambda line: None)
    assert tune.needs_first_timing(source)
    monkeypatch.setattr(tune, "quiet_now", lambda *a: True)
    assert timing.retime_after(run.pid, str(tiny_ckpt), say=lambda line: None) == "timed for the first time"
    assert not tune.needs_first_timing(source) and tune.cached_ranking(source)[0]


@pytest.mark.parametrize("damage", ["rows", "list", "key"])
def test_a_damaged_ranking_for_this_machine_is_timed_again_by_the_detached_process(
        tiny_ckpt, measuring, two_candidates, monkeypatch, tmp_path, damage):
    """A ranking file whose rows are not rankings (a write cut short by another tool, an edit) reads as
    unreadable to the run, which follows the fixed rules; the detached process must then time it, not
    take it for a final ranking and leave every later run on the fixed rules. A file that is a JSON list
    or has no key is the same case, and no reader may fail on it."""
    import subprocess
    import sys

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))
    source = resolve_model(str(tiny_ckpt))
    tune.measure(source)
    path = tune.cache_path(source)
    good = json.loads(path.read_text())
    bad = {"rows": {**good, "ranking": [{"backend": "openvino"}]}, "list": [good],
           "key": {k: v for k, v in good.items() if k != "key"}}[damage]
    path.write_text(json.dumps(bad))
    ranking, why = tune.cached_ranking(source)
    assert ranking is None and ("unreadable" in why or "another CPU" in why)
    assert tune.needs_first_timing(source) and not tune.still_provisional(source)
    monkeypatch.setattr(tune, "quiet_now", lambda *a: True)
    monkeypatch.setattr(timing.os, "nice", lambda n: 0)
    run = subprocess.Popen([sys.executable, "-c", "pass"])
    run.wait()
    assert timing.retime_after(run.pid, str(tiny_ckpt), say=lambda line: None) == "timed for the first time"
    assert tune.cached_ranking(source)[0] and not tune.needs_first_timing(source)
