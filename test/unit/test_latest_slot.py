"""Latest-wins hand-off and the inference worker, synchronised with Events (timeouts only as safety nets)."""
import threading
import time
import weakref

import pytest

from pixel_perfect_ros.ros.latest_slot import InferenceWorker, LatestSlot

SAFETY_S = 10.0
"""Upper bound on any wait; reached only if the code under test is broken."""


class Frame:
    """A stand-in for a camera frame (weak-referenceable, to check that drops free memory)."""

    def __init__(self, index: int) -> None:
        self.index = index


def wait(event: threading.Event) -> None:
    assert event.wait(SAFETY_S), "timed out waiting for the worker"


def raise_unexpected(item, exc):
    raise AssertionError(f"unexpected failure on {item!r}: {exc!r}")


# ----------------------------------------------------------------------------------------------------
# LatestSlot


def test_slot_latest_wins():
    slot = LatestSlot()
    assert slot.put("a") is None
    assert slot.put("b") == "a"
    assert slot.occupied
    assert slot.get(timeout=0) == "b"
    assert not slot.occupied
    assert slot.get(timeout=0) is None


def test_slot_get_waits_for_a_put_from_another_thread():
    slot = LatestSlot()
    result = []
    getter = threading.Thread(target=lambda: result.append(slot.get(timeout=SAFETY_S)))
    getter.start()
    slot.put("frame")
    getter.join(SAFETY_S)
    assert result == ["frame"]


def test_slot_close_wakes_waiters_and_refuses_items():
    slot = LatestSlot()
    results = []
    getters = [threading.Thread(target=lambda: results.append(slot.get())) for _ in range(3)]
    for getter in getters:
        getter.start()
    assert slot.close() is None
    for getter in getters:
        getter.join(SAFETY_S)
        assert not getter.is_alive()
    assert results == [None, None, None]
    assert slot.put("late") == "late"  # refused: reported as its own drop
    assert slot.get(timeout=0) is None


def test_slot_close_returns_the_discarded_item():
    slot = LatestSlot()
    slot.put("pending")
    assert slot.close() == "pending"
    assert slot.get() is None


def test_slot_rejects_none():
    with pytest.raises(ValueError, match="must not be None"):
        LatestSlot().put(None)


# ----------------------------------------------------------------------------------------------------
# InferenceWorker


def test_worker_processes_submitted_items():
    seen, done = [], threading.Event()

    def process(item):
        seen.append(item)
        if item == 3:
            done.set()

    worker = InferenceWorker(process, raise_unexpected)
    assert worker.submit(1)
    worker.submit(2)
    worker.submit(3)
    wait(done)
    assert worker.stop(SAFETY_S)
    assert seen[-1] == 3  # the newest item is always processed
    assert worker.submitted == 3 and worker.processed + worker.dropped == 3 and worker.failed == 0


def test_burst_keeps_one_pending_item_and_counts_add_up():
    started, release, last_done = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def process(frame):
        seen.append(frame.index)
        started.set()
        wait(release)
        if frame.index == 499:
            last_done.set()

    worker = InferenceWorker(process, raise_unexpected)
    first = Frame(0)
    assert worker.submit(first)
    wait(started)  # the worker holds frame 0; the slot is empty
    refs = []
    for index in range(1, 500):
        frame = Frame(index)
        refs.append(weakref.ref(frame))
        assert worker.submit(frame) == (index == 1)
        assert worker.pending == 1
    del frame
    assert sum(ref() is not None for ref in refs) == 1  # dropped frames are freed: bounded memory
    assert (worker.submitted, worker.dropped, worker.pending) == (500, 498, 1)
    release.set()
    wait(last_done)
    assert worker.stop(SAFETY_S)
    assert seen == [0, 499]
    assert (worker.processed, worker.dropped, worker.failed, worker.pending) == (2, 498, 0, 0)
    assert worker.processed + worker.dropped + worker.pending == worker.submitted


def test_exception_is_reported_and_the_worker_continues():
    errors, failed, good_done = [], threading.Event(), threading.Event()

    def process(item):
        if item == "bad":
            raise RuntimeError("inference failed")
        good_done.set()

    def on_error(item, exc):
        errors.append((item, exc))
        failed.set()

    worker = InferenceWorker(process, on_error)
    worker.submit("bad")
    wait(failed)
    assert (worker.processed, worker.failed) == (1, 1)  # counted before on_error runs
    worker.submit("good")
    wait(good_done)
    assert worker.stop(SAFETY_S)
    assert [(item, str(exc)) for item, exc in errors] == [("bad", "inference failed")]
    assert isinstance(errors[0][1], RuntimeError)
    assert (worker.submitted, worker.processed, worker.failed, worker.dropped) == (2, 2, 1, 0)


def test_stop_is_prompt_when_idle():
    worker = InferenceWorker(raise_unexpected, raise_unexpected)
    start = time.monotonic()
    assert worker.stop(SAFETY_S)
    assert time.monotonic() - start < 1.0


def test_stop_is_prompt_after_work_while_blocked_in_get():
    done = threading.Event()
    worker = InferenceWorker(lambda item: done.set(), raise_unexpected)
    worker.submit("frame")
    wait(done)  # the worker now goes back to waiting in get
    start = time.monotonic()
    assert worker.stop(SAFETY_S)
    assert time.monotonic() - start < 1.0
    assert worker.submit("after stop") is False
    assert (worker.submitted, worker.processed, worker.dropped) == (2, 1, 1)


def test_stop_waits_for_the_current_item_and_discards_the_pending_one():
    started, release = threading.Event(), threading.Event()
    seen = []

    def process(item):
        seen.append(item)
        started.set()
        wait(release)

    worker = InferenceWorker(process, raise_unexpected)
    worker.submit("current")
    wait(started)
    worker.submit("pending")
    assert not worker.stop(timeout=0.05)  # closed, but "current" is still being processed
    assert worker.pending == 0 and worker.dropped == 1
    release.set()
    assert worker.stop(SAFETY_S)
    assert seen == ["current"]
    assert (worker.submitted, worker.processed, worker.dropped, worker.pending) == (2, 1, 1, 0)
