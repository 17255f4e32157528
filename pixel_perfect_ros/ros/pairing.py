"""Pairing camera images with their CameraInfo, latest-frame-wins (no message_filters, no rclpy).

Stamps are integer nanoseconds (``Time.nanoseconds``), frame ids plain strings; images and infos are
opaque objects carried through unchanged.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, NamedTuple, TypeVar

ImageT = TypeVar("ImageT")
InfoT = TypeVar("InfoT")

PAIRING_MODES = ("stamp", "latest")
"""``stamp``: the info closest in stamp within the tolerance; ``latest``: the last info received."""


class Pair(NamedTuple):
    """An image and the CameraInfo it was paired with (a generic NamedTuple needs Python 3.11)."""

    image: Any
    info: Any


@dataclass(frozen=True)
class _Stamped(Generic[InfoT]):
    stamp_ns: int
    frame_id: str
    msg: InfoT


class CameraInfoPairer(Generic[ImageT, InfoT]):
    """Pairs each image with a CameraInfo of the same ``frame_id``, keeping one pending image.

    An image is paired on arrival if a stored info matches. Otherwise it waits as the *pending* image,
    and a later matching info completes it (``add_info`` returns the pair). A newer image always
    supersedes the pending one (latest-frame-wins); the superseded image is counted in
    ``dropped_unpaired``. So every image added is exactly one of: paired, dropped, or pending.

    Matching, always on equal ``frame_id``:
      - ``stamp``: ``|info stamp - image stamp| <= tolerance_ns``; the closest stored info wins (ties: the
        later stamp). A pending image is completed by the first arriving info within tolerance.
      - ``latest``: the most recently received info, whatever its stamp (cameras that publish one
        static or differently stamped CameraInfo).

    Calls are serialised with an internal lock, so image and info callbacks may run in any threads.

    Args:
        tolerance_ns: stamp tolerance in nanoseconds, >= 0 (0 = identical stamps; ignored in ``latest``).
        mode: ``"stamp"`` or ``"latest"``.
        history: infos kept (the most recent ones), >= 1.
        clock_ns: monotonic clock in nanoseconds for ``pending_age_ns`` (receipt time, so the age is
            meaningful whatever the stamps' time base, e.g. a replayed bag without sim time).

    Attributes:
        paired: pairs produced.
        dropped_unpaired: images superseded while still waiting for their info.

    Raises:
        ValueError: for an unknown mode, a negative tolerance or a history below 1.
    """

    def __init__(
        self,
        tolerance_ns: int,
        mode: str,
        history: int = 30,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self._lock = threading.Lock()
        self.reconfigure(mode, tolerance_ns)
        self._clock_ns = clock_ns
        self._infos: deque[_Stamped[InfoT]] = deque(maxlen=history)  # oldest first
        self._pending: _Stamped[ImageT] | None = None
        self._pending_since_ns = 0
        self.paired = 0
        self.dropped_unpaired = 0

    def reconfigure(self, mode: str, tolerance_ns: int) -> None:
        """Change the matching rule; stored infos, the pending image and the counters are kept.

        Raises:
            ValueError: for an unknown mode or a negative tolerance.
        """
        if mode not in PAIRING_MODES:
            raise ValueError(f"unknown pairing mode {mode!r}; expected one of {list(PAIRING_MODES)}")
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        with self._lock:
            self.mode, self.tolerance_ns = mode, tolerance_ns

    def add_info(self, stamp_ns: int, frame_id: str, info: InfoT) -> Pair | None:
        """Store a CameraInfo; returns the pending image's pair if this info completes it."""
        with self._lock:
            stamped = _Stamped(stamp_ns, frame_id, info)
            self._infos.append(stamped)
            pending = self._pending
            if pending is None or not self._matches(pending, stamped):
                return None
            self._pending = None
            self.paired += 1
            return Pair(pending.msg, info)

    def add_image(self, stamp_ns: int, frame_id: str, image: ImageT) -> Pair | None:
        """Pair an image with a stored info, or keep it pending (superseding any older pending image)."""
        with self._lock:
            if self._pending is not None:
                self.dropped_unpaired += 1
                self._pending = None
            stamped = _Stamped(stamp_ns, frame_id, image)
            info = self._best_info(stamped)
            if info is None:
                self._pending = stamped
                self._pending_since_ns = self._clock_ns()
                return None
            self.paired += 1
            return Pair(image, info.msg)

    def drop_pending(self) -> None:
        """Give up the image waiting for its info (counted in ``dropped_unpaired``), e.g. when the
        intrinsics stop coming from CameraInfo."""
        with self._lock:
            if self._pending is not None:
                self.dropped_unpaired += 1
                self._pending = None

    @property
    def pending(self) -> tuple[int, str] | None:
        """``(stamp_ns, frame_id)`` of the image waiting for its info, or None."""
        with self._lock:
            return None if self._pending is None else (self._pending.stamp_ns, self._pending.frame_id)

    def pending_age_ns(self) -> int | None:
        """Nanoseconds (of ``clock_ns``) the pending image has waited for its info, or None if none."""
        with self._lock:
            return None if self._pending is None else self._clock_ns() - self._pending_since_ns

    def _matches(self, image: _Stamped[ImageT], info: _Stamped[InfoT]) -> bool:
        if info.frame_id != image.frame_id:
            return False
        return self.mode == "latest" or abs(info.stamp_ns - image.stamp_ns) <= self.tolerance_ns

    def _best_info(self, image: _Stamped[ImageT]) -> _Stamped[InfoT] | None:
        candidates = [info for info in self._infos if self._matches(image, info)]
        if not candidates:
            return None
        if self.mode == "latest":
            return candidates[-1]
        return min(candidates, key=lambda info: (abs(info.stamp_ns - image.stamp_ns), -info.stamp_ns))
