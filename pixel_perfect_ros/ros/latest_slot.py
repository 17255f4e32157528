"""The node's inference hand-off: a size-1 latest-wins slot and the worker thread that drains it.

Callbacks ``submit`` frames without blocking; the worker always processes the newest one, and a frame
replaced before the worker took it is a counted drop. Memory stays bounded at one pending frame.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Thread-safe single-item slot where a new item replaces an unconsumed one.

    Items must not be None (None means "nothing" in every return value).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> T | None:
        """Store ``item``; returns the item it replaced (a drop), or ``item`` itself if closed, else None.

        Raises:
            ValueError: if ``item`` is None.
        """
        if item is None:
            raise ValueError("LatestSlot items must not be None")
        with self._cond:
            if self._closed:
                return item
            dropped, self._item = self._item, item
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """Take the item, waiting up to ``timeout`` seconds (None: forever) for one.

        Returns:
            The item, or None on timeout or once the slot is closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> T | None:
        """Wake every waiter and refuse further items; returns the discarded unconsumed item, if any."""
        with self._cond:
            self._closed = True
            discarded, self._item = self._item, None
            self._cond.notify_all()
            return discarded

    @property
    def occupied(self) -> bool:
        """True while an item waits to be taken."""
        with self._cond:
            return self._item is not None


class InferenceWorker(Generic[T]):
    """A daemon thread that runs ``process`` on the latest submitted item, one at a time.

    An exception from ``process`` is passed to ``on_error`` and the worker goes on with the next item
    (``on_error`` itself must not raise: that would end the thread).

    Counters (each item submitted ends up in exactly one of processed, dropped, or still pending/in
    progress, so ``processed + dropped + pending + in progress == submitted``):
      - ``submitted``: calls to ``submit``.
      - ``processed``: items handed to ``process``, whether it returned or raised.
      - ``failed``: the subset of ``processed`` whose ``process`` raised.
      - ``dropped``: items replaced before the worker took them, submitted after ``stop``, or discarded
        by ``stop``.

    Args:
        process: called in the worker thread with each item (not None).
        on_error: called in the worker thread with the item and the exception ``process`` raised.
        name: thread name.
    """

    def __init__(
        self,
        process: Callable[[T], None],
        on_error: Callable[[T, Exception], None],
        name: str = "ppd-inference",
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._slot: LatestSlot[T] = LatestSlot()
        self._lock = threading.Lock()  # guards the counters
        self.submitted = 0
        self.processed = 0
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Hand ``item`` to the worker without blocking; False if that dropped an item (or this one).

        Raises:
            ValueError: if ``item`` is None.
        """
        dropped = self._slot.put(item)
        with self._lock:
            self.submitted += 1
            if dropped is not None:
                self.dropped += 1
        return dropped is None

    @property
    def pending(self) -> int:
        """1 if an item waits for the worker, else 0."""
        return int(self._slot.occupied)

    def stop(self, timeout: float | None = None) -> bool:
        """Discard the pending item, let the current ``process`` call finish, and join the thread.

        Args:
            timeout: seconds to wait for the thread (None: forever).

        Returns:
            True if the thread has ended.
        """
        if self._slot.close() is not None:
            with self._lock:
                self.dropped += 1
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._slot.get()) is not None:
            error = None
            try:
                self._process(item)
            except Exception as exc:  # the worker must survive any failure of one frame
                error = exc
            with self._lock:  # counted before on_error runs
                self.processed += 1
                self.failed += int(error is not None)
            if error is not None:
                self._on_error(item, error)
