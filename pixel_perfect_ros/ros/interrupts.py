"""Ctrl-C (SIGINT) and SIGTERM (what timeout, systemd, docker and Slurm send) stop the evaluation tools
alike: at a safe point, their output bags closed and their reports marked incomplete; the exit status is
128 + the signal's number (130, 143).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_recording: list[list[int]] = []
"""The lists of the open :func:`stop_signals` blocks: a signal is appended to each."""


def set_stop_handlers(handler) -> dict[int, object]:
    """Install ``handler`` (a ``signal.signal`` handler, or SIG_IGN) for SIGINT and SIGTERM; the previous
    handlers by signal."""
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


@contextmanager
def stop_signals(action: Callable[[int], None] | None) -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are appended to the yielded list (and to those of the blocks
    around it), then ``action(signum)`` runs; None ignores them (SIG_IGN, which processes started in the
    block inherit). The previous handlers come back after. Outside the main thread nothing changes."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum, frame) -> None:
        for signals in _recording:
            signals.append(signum)
        action(signum)

    _recording.append(received)
    previous = set_stop_handlers(signal.SIG_IGN if action is None else handle)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _recording.pop()


def interrupt(signum: int) -> None:
    """A :func:`stop_signals` action: stop as Ctrl-C does, with a KeyboardInterrupt naming the signal."""
    raise KeyboardInterrupt(signal_text(signum))


def signal_text(signum: int) -> str:
    """'Ctrl-C' for SIGINT, else the signal's name ('SIGTERM')."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def interrupted_by(error: KeyboardInterrupt) -> str:
    """What stopped the run: the text :func:`interrupt` gave ``error``; 'KeyboardInterrupt' for one raised
    elsewhere (Python's own Ctrl-C handler, a cancelled Ray task)."""
    return str(error) or "KeyboardInterrupt"


def exit_status(received: list[int]) -> int:
    """The exit status of a run stopped by the first of ``received``: 128 + its number; 130 (as Ctrl-C) when
    none came to this process (a pool worker's own signal, a KeyboardInterrupt raised in the code)."""
    return 128 + (received[0] if received else signal.SIGINT)
