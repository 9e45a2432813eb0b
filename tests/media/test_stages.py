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
    assert _stage_threads() == threads


def test_the_source_runs_ahead_of_the_model_by_the_queue_only():
    """With the model holding its first item, the source puts ``ahead`` more and then waits."""
    put_count, hold, first = [0], threading.Event(), threading.Event()
    blocked = threading.Event()

    def source(put):
        for i in range(10):
            if put_count[0] == 3:  # item 0 taken by the model + 2 queued: this put would wait
                blocked.set()
            put(i)
            put_count[0] += 1

    def model(items, put):
        for x in items:
            first.set()
            assert hold.wait(5)
            put(x)

    with ThreeStages(source, model, ahead=2, behind=1) as stages:
        out = iter(stages)
        release = threading.Thread(target=lambda: (first.wait(5), blocked.wait(5), hold.set()), daemon=True)
        release.start()
        assert next(out) == 0
        assert put_count[0] <= 4  # at most: the model's one, two queued, one being put when it was released
        assert list(out) == list(range(1, 10))


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
            threading.Thread(target=lambda: (inside.wait(5), abort.set(), release.set()), daemon=True).start()
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
