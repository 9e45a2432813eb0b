"""Stopping is a state: an interrupt waits for the runtime's current call, so no stage thread is left inside
a native runtime when the process exits (that aborted runs with exit 134), and the exit code names the signal."""

from __future__ import annotations

import _thread
import threading

import pytest

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.media.video import VideoOptions, upscale_video
from sr_deploy.runtime.base import Runner
from tests.conftest import make_clip

SLOW_S = 6.0  # longer than the old 5 s join timeout: the thread used to be abandoned mid-call


class Slow(Runner):
    """x2 nearest; each call blocks until released (or SLOW_S), as a heavy model's call on a CPU does."""

    backend = "test"

    def __init__(self):
        super().__init__(ModelDescriptor(name="slow", scale=2))
        self.entered, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()

    def _activate(self):
        pass

    def _infer(self, batch):
        self.entered.set()
        self.release.wait(SLOW_S)
        self.finished.set()
        return batch.repeat(2, axis=2).repeat(2, axis=3)


def test_an_interrupt_waits_for_the_runtimes_call_and_leaves_no_stage_thread(tmp_path, monkeypatch):
    import signal

    # Ctrl-C as a terminal delivers it, whatever handler an earlier test in this process left behind
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupted_mid_call(tmp_path)
    finally:
        signal.signal(signal.SIGINT, old)


def _interrupted_mid_call(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=12, audio=False)
    runner = Slow()
    before = set(threading.enumerate())

    def interrupt_when_inside():
        runner.entered.wait(60)
        _thread.interrupt_main()  # Ctrl-C, delivered while the call is in progress

    threading.Thread(target=interrupt_when_inside, daemon=True).start()
    with runner, pytest.raises(KeyboardInterrupt):
        upscale_video(runner, src, dst, options=VideoOptions(segment_seconds=10.0), quiet=True)
    assert runner.finished.is_set()  # the call ran to its end before the interrupt left upscale_video
    left = [t for t in set(threading.enumerate()) - before if t.is_alive() and t.daemon and "Thread-" in t.name]
    assert not left, left
    assert not dst.exists()


def _interrupted_run(tmp_path, signal_it) -> tuple[int, str]:
    """Start `srdeploy run` on a long clip in a session of its own (Ctrl-C's default handling restored, as a
    terminal's job has it), wait until it is under way (its segments folder exists, made before the first
    frame), call ``signal_it(process)``, and return the exit code and stderr."""
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in.mp4"
    make_clip(src, frames=720, size=(64, 48), audio=False)
    p = subprocess.Popen([sys.executable, "-m", "sr_deploy.cli", "run", str(src), "-o", str(tmp_path / "o.mp4"),
                          "--model", "light_x4", "--backend", "onnxruntime"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    try:
        while p.poll() is None and time.monotonic() < deadline and not (tmp_path / "o.mp4.segments").exists():
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        signal_it(p)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return p.returncode, err


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_the_exit_code_names_the_signal(tmp_path, sig, code):
    import os
    import signal

    rc, err = _interrupted_run(tmp_path, lambda p: os.kill(p.pid, getattr(signal, sig)))
    assert rc == code, err
    assert "Traceback" not in err and "terminate called" not in err


@pytest.mark.parametrize("again", ["SIGINT", "SIGTERM"])
def test_signals_after_the_first_neither_cut_the_stop_short_nor_change_the_exit(tmp_path, again):
    """The first signal names the exit; more of them (a second Ctrl-C, a scheduler's repeated SIGTERM),
    sent until the process is gone, reach it during its cleanup and during the interpreter's exit, where
    Python has put the default handlers back (they used to end it by that signal: exit -2 or -15)."""
    import os
    import signal
    import time

    def term_then_again(p):
        os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            try:
                os.kill(p.pid, getattr(signal, again))
            except ProcessLookupError:
                break
            time.sleep(0.02)

    rc, err = _interrupted_run(tmp_path, term_then_again)
    # 143, the first signal's code; SIGINT's 130 where both were pending together (Python then handles the
    # lower number first): never killed by the signal (negative), never a traceback
    assert (rc == 143 if again == "SIGTERM" else rc in (130, 143)), (rc, err)
    assert "Traceback" not in err and "terminate called" not in err
    assert "interrupted: no partial output left" in err
    assert not (tmp_path / "o.mp4").exists()


def test_a_stop_is_entered_once_unless_no_command_took_it_up(monkeypatch):
    """The handler itself: the first signal raises and names the code; a later one raises again only when
    no command has taken the stop up for LOST_STOP_S (its KeyboardInterrupt was swallowed somewhere)."""
    import signal

    from sr_deploy import cli

    monkeypatch.setattr(cli, "STOPPED_BY", {"code": None, "at": 0.0, "taken": False})
    with pytest.raises(KeyboardInterrupt):
        cli._on_stop_signal(signal.SIGTERM, None)
    cli._on_stop_signal(signal.SIGINT, None)  # within LOST_STOP_S of the first: waits, does not raise
    monkeypatch.setattr(cli, "LOST_STOP_S", -1.0)  # as if the first had been lost long ago
    with pytest.raises(KeyboardInterrupt):
        cli._on_stop_signal(signal.SIGINT, None)
    assert cli._stopped() == 143  # the first signal's code, whatever came after
    cli._on_stop_signal(signal.SIGINT, None)  # taken up: never raised again


def test_a_stop_landing_inside_an_exec_of_a_string_still_exits_with_its_code(tmp_path):
    """A signal during a lazy import can land inside the exec() of a string that namedtuple and dataclass
    creation run. CPython then marks the KeyboardInterrupt unhandled although a command handled it, and under
    `python -m` ended the process by SIGINT at exit (-2 in place of 143: the flake of the signal tests)."""
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "stopped_inside_exec.py").write_text(
        "import sys\n"
        "from sr_deploy import cli\n"
        "def command(args):\n"
        "    try:\n"
        "        exec('import os, signal; os.kill(os.getpid(), signal.SIGTERM); sum(range(1000))')\n"
        "    except KeyboardInterrupt:\n"
        "        sys.exit(cli._stopped())\n"
        "    sys.exit(0)\n"
        "cli.app = command\n"
        "cli.main()\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", "stopped_inside_exec"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == 143, (p.returncode, p.stderr)


_WAITING_FOR_ROOM = '''
import json, os, signal, sys, threading, time
from pathlib import Path

import cv2
import numpy as np

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.media import images
from sr_deploy.runtime.base import Runner


class Nearest(Runner):
    backend = "test"

    def __init__(self):
        super().__init__(ModelDescriptor(name="n", scale=2))

    def _activate(self):
        pass

    def _infer(self, batch):
        return batch.repeat(2, axis=2).repeat(2, axis=3)


src, dst = Path(sys.argv[1]), Path(sys.argv[2])
src.mkdir()
for i in range(8):
    cv2.imwrite(str(src / f"{i}.png"), np.full((16, 16, 3), 20 * i, np.uint8))
writing, release, started = threading.Event(), threading.Event(), []
real = images.write_image


def slow_write(*a, **k):  # the encoders stay busy until after the stop
    started.append(1)
    if len(started) == 2:  # both encoders writing
        writing.set()
    release.wait(30)
    return real(*a, **k)


images.write_image = slow_write


def stop_while_the_model_waits():
    writing.wait(30)
    time.sleep(0.5)  # one output waiting for the encoders, the model waiting for room
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    release.set()


threading.Thread(target=stop_while_the_model_waits, daemon=True).start()
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    with Nearest() as runner:
        images.upscale_folder(runner, src, dst, quiet=True)
except KeyboardInterrupt:
    print(json.dumps(sorted(p.name for p in dst.glob("*.png"))))
'''


def test_a_stop_while_the_model_waits_for_the_encoders_ends_the_folder_run(tmp_path):
    """In a folder run the model makes its next output only once the last one is handed to the encoders;
    a Ctrl-C while it waits for that room (both encoders busy) must reach the wait too: the run ends once
    the files being written are finished, where a wait that ignored the stop left the run hanging for room
    that the stopped main thread never gives back."""
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", _WAITING_FOR_ROOM, str(tmp_path / "in"), str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the folder run did not end after the stop")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert json.loads(done.stdout) == ["0.png", "1.png"]  # the two the encoders were writing, finished
