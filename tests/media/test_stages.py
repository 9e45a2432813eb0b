"""The three-stage pipeline (media/stages.py) that video segments and image folders both run on: order, how far
the source runs ahead, failures and stops reaching the caller, and no thread left behind. Every wait here is on
an event or a queue, never a sleep."""

from __future__ import annotations

import threading

import pytest

from sr_deploy.media.stages import ThreeStages, join_stages


def _stage_threads() -> set:
    return {t for t in threading.enumerate() if t.daemon and t.is_alive() and t.name.startswith("Thread-")}


def test_items_come_out_in_order_through_both_stages():
    threads = _stage_threads()
    seen = []

    def model(items, put):
        for x in items:
            seen.append(threading.current_thread())
            put(x * 10)

    with ThreeStages(lambda put: [put(i) for i in range(7)], model, ahead=2, behind=1) as stages:
        assert list(stages) == [0, 10, 20, 30, 40, 50, 60]
    assert threading.main_thread() not in seen and len(set(seen)) == 1  # the model runs in its own thread only
    assert seen[0].daemon  # a stage never keeps the interpreter from exiting
    assert _stage_threads() == threads


def _pause(seconds: float = 0.3) -> None:
    """A moment for a stage to run into its queue's bound. The tests pass with any pause (nothing waits on
    it); it only gives a broken bound time to show."""
    threading.Event().wait(seconds)


@pytest.mark.parametrize("ahead", [1, 2])
def test_the_source_runs_ahead_of_the_model_by_the_queue_only(ahead):
    """While the model holds its first item, the source has put that one and ``ahead`` more, no more; then all
    arrive in order."""
    put_count, first = [0], threading.Event()
    release = threading.Event()

    def source(put):
        for i in range(10):
            put(i)
            put_count[0] += 1

    def model(items, put):
        for x in items:
            first.set()
            assert release.wait(5)
            put(x)

    with ThreeStages(source, model, ahead=ahead, behind=1) as stages:
        stages.start()
        assert first.wait(5)
        _pause()
        assert put_count[0] <= 1 + ahead
        release.set()
        assert list(stages) == list(range(10))


@pytest.mark.parametrize("behind", [1, 2])
def test_the_model_runs_ahead_of_the_sink_by_the_queue_only(behind):
    """While the caller holds its first result, the model has put that one and ``behind`` more, no more; a model
    kept waiting on a full queue (many times its poll) still delivers everything."""
    put_count = [0]

    def model(items, put):
        for x in items:
            put(x)
            put_count[0] += 1

    with ThreeStages(lambda put: [put(i) for i in range(8)], model, ahead=2, behind=behind) as stages:
        out = iter(stages)
        assert next(out) == 0
        _pause()
        assert put_count[0] <= 1 + behind  # the one taken and ``behind`` queued; the next put waits
        assert list(out) == list(range(1, 8))


def test_a_stop_reaches_a_caller_waiting_for_an_item_that_does_not_come(monkeypatch):
    """The caller notices a stop while its queue stays empty (it does not wait on the queue for good), sees no
    item that was never sent, and no stage thread dies with an unhandled exception."""
    died = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    stop, inside, release, noticed = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    seen, waited = [], []

    def model(items, put):
        for x in items:
            inside.set()
            release.wait(5)
            put(x)

    def stopper():
        inside.wait(5)
        stop.set()
        waited.append(noticed.wait(5))
        release.set()

    threading.Thread(target=stopper, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        with ThreeStages(lambda put: put("only"), model, ahead=1, behind=1, stop=stop) as stages:
            try:
                for item in stages:
                    seen.append(item)
            except KeyboardInterrupt:
                noticed.set()
                raise
    assert waited == [True] and seen == []
    assert not died


@pytest.mark.parametrize("where", ["source", "model"])
def test_a_stage_s_failure_reaches_the_caller_and_stops_the_other(where):
    threads = _stage_threads()
    more = threading.Event()

    def source(put):
        put(1)
        if where == "source":
            raise ValueError("source failed")
        while not more.is_set():  # the model's failure must stop this stage too
            put(2)

    def model(items, put):
        for x in items:
            put(x)
            if where == "model":
                raise ValueError("model failed")

    with pytest.raises(ValueError, match=f"{where} failed"):
        with ThreeStages(source, model, ahead=1, behind=1) as stages:
            got = list(stages)
    assert _stage_threads() == threads  # both stages ended: the stop reached the one still working
    more.set()
    if where == "source":
        assert "got" not in locals()


def test_an_interrupt_in_the_caller_waits_for_the_model_s_call_and_leaves_no_thread():
    threads = _stage_threads()
    inside, finished = threading.Event(), threading.Event()
    release = threading.Event()

    def model(items, put):
        for x in items:
            inside.set()
            release.wait(5)  # a runtime's call in progress
            finished.set()
            put(x)

    abort = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with ThreeStages(lambda put: [put(i) for i in range(100)], model, ahead=2, behind=1, abort=abort) as stages:
            threading.Thread(target=lambda: (inside.wait(5), abort.set(), _pause(), release.set()), daemon=True).start()
            for _ in stages:
                pass
    assert finished.is_set()
    assert _stage_threads() == threads


def test_a_stop_set_elsewhere_ends_the_stages_between_items():
    stop = threading.Event()
    taken = []

    def model(items, put):
        for x in items:
            taken.append(x)
            if x == 3:
                stop.set()
            put(x)

    with pytest.raises(KeyboardInterrupt):
        with ThreeStages(lambda put: [put(i) for i in range(1000)], model, ahead=2, behind=1, stop=stop) as stages:
            list(stages)
    assert taken == [0, 1, 2, 3]  # the model stage took no item after the stop


def test_a_second_interrupt_while_joining_does_not_cut_the_wait_short(monkeypatch):
    class Slow(threading.Thread):
        def __init__(self):
            super().__init__(daemon=True)
            self.go = threading.Event()
            self.joins = 0

        def run(self):
            self.go.wait(5)

        def join(self, timeout=None):
            self.joins += 1
            if self.joins == 1:
                self.go.set()
                raise KeyboardInterrupt  # a second Ctrl-C arriving while waiting
            super().join(timeout)

    t = Slow()
    t.start()
    with pytest.raises(KeyboardInterrupt):
        join_stages(t)
    assert not t.is_alive() and t.joins >= 2


def test_a_stop_request_whose_interrupt_was_lost_ends_the_caller_at_its_next_item():
    """The command line's signal handler raises KeyboardInterrupt and sets stopping.REQUESTED; where that
    exception was swallowed (a SIGTERM was seen to let a video run go on to its end and exit 0), the caller's
    loop still stops at its next item."""
    from sr_deploy import stopping

    got = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with ThreeStages(lambda put: [put(i) for i in range(1000)], lambda items, put: [put(x) for x in items],
                             ahead=2, behind=1) as stages:
                for x in stages:
                    got.append(x)
                    if x == 2:
                        stopping.REQUESTED.set()  # as the handler does, its own exception lost
    finally:
        stopping.REQUESTED.clear()
    assert got == [0, 1, 2]
