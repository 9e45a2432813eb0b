"""The three-stage pipeline every media run goes through, for a video's frames and a folder's images alike:

    source (its own thread: decoding ahead) → model (its own thread: the runner) → sink (the caller's thread)

The stages meet in bounded queues, so decoding runs ahead of the model and the sink (encoding, writing) behind
it by at most the queues' sizes. The model is called from its stage only, and the caller's thread waits in
short sleeps, so Ctrl-C (raised in the main thread) is taken at once: the stop reaches every stage, the model's
call in progress is waited for (a thread left inside a runtime at exit aborts the process), and the interrupt
goes on from the caller. A stage's exception reaches the caller through the queues. Written by hand: the
standard library's executors neither bound what waits between stages nor stop a thread between items."""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterator

from sr_deploy.stopping import REQUESTED

END = object()  # what a stage sends after its last item
TIMED_OUT = object()  # what an attempt of ``wait_or_stop`` returns when its wait ended without a result
POLL_S = 0.1  # how often a waiting stage looks at the stop


class _Stage(threading.Thread):
    """A pipeline thread that forwards any exception to the consumer through its output queue."""

    def __init__(self, fn, out: queue.Queue, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.fn, self.out, self.stop = fn, out, stop

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._end(exc)
        else:
            self._end(END)

    def put(self, item) -> None:
        """Queue ``item`` for the next stage; once the run is stopped, KeyboardInterrupt (as ``get`` raises),
        so a stage's loop ends at its next item whatever it checks itself."""
        def attempt(timeout: float):
            try:
                self.out.put(item, timeout=timeout)
            except queue.Full:
                return TIMED_OUT
            return None

        wait_or_stop(attempt, self.stop)

    def _end(self, item) -> None:
        with contextlib.suppress(KeyboardInterrupt):  # stopped: nobody reads it
            self.put(item)


def wait_or_stop(attempt: Callable[[float], object], stop: threading.Event):
    """``attempt(POLL_S)`` again and again until it returns something other than TIMED_OUT, which is
    returned; KeyboardInterrupt once ``stop`` is set. Every wait between stages (a queue's get or put, a
    semaphore) goes through here, so each of them sees a stop within POLL_S."""
    while not stop.is_set():
        got = attempt(POLL_S)
        if got is not TIMED_OUT:
            return got
    raise KeyboardInterrupt


def get(q: queue.Queue, stop: threading.Event):
    """The next item, or KeyboardInterrupt once ``stop`` is set (items still queued are not worked on)."""
    def attempt(timeout: float):
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return TIMED_OUT

    return wait_or_stop(attempt, stop)


def drain(q: queue.Queue, stop: threading.Event) -> Iterator:
    """The items of a stage's queue up to its END; its exception raised here."""
    while True:
        item = get(q, stop)
        if item is END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def join_stages(*threads: threading.Thread) -> None:
    """Wait for stopped stage threads to end, however long the runtime's current call takes.

    A thread left inside ONNX Runtime or OpenVINO when the interpreter exits aborts the process
    ("terminate called without an active exception", exit 134) instead of the clean exit 130/143;
    a slow model's call can last seconds, so there is no time limit, and a second Ctrl-C while
    waiting does not cut the wait short (the stop is already under way)."""
    again = False
    for t in threads:
        while t.is_alive():
            try:
                t.join(timeout=0.2)
            except KeyboardInterrupt:
                again = True
    if again:
        raise KeyboardInterrupt


class ThreeStages:
    """``source(put)`` puts items; ``model(items, put)`` takes them (an iterator) and puts results; iterating
    the pipeline in the caller's thread gives the results, in the model's order. ``ahead`` and ``behind`` are
    the queues' sizes (items decoded ahead of the model, results waiting for the sink). ``stop`` (made here
    when None) is the one stop signal the stages check between items; setting ``abort`` from another thread
    stops the run as an interrupt does. Use it as a context manager: leaving it stops and joins the stages."""

    def __init__(self, source: Callable, model: Callable, *, ahead: int, behind: int,
                 stop: threading.Event | None = None, abort: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.abort = abort
        self._in: queue.Queue = queue.Queue(max(1, ahead))
        self._out: queue.Queue = queue.Queue(max(1, behind))
        self._source = _Stage(lambda: source(self._source.put), self._in, self.stop)
        self._model = _Stage(lambda: model(drain(self._in, self.stop), self._model.put), self._out, self.stop)

    def __enter__(self) -> "ThreeStages":
        return self

    def start(self) -> None:
        """Start the source and model stages (iterating starts them too); once only."""
        if self._source.ident is None:
            self._source.start()
            self._model.start()

    def __iter__(self) -> Iterator:
        self.start()
        results = drain(self._out, self.stop)
        while True:
            if (self.abort is not None and self.abort.is_set()) or REQUESTED.is_set():
                raise KeyboardInterrupt  # an abort, or a stop whose own KeyboardInterrupt was swallowed
            item = next(results, END)
            if item is END:
                return
            yield item

    def close(self) -> None:
        self.stop.set()
        join_stages(self._source, self._model)  # a stage never started is not alive

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
