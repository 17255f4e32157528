"""Stopping inference mid-frame: a flag that every module call of a model checks.

A node shutting down while a frame is in flight (full-size PPD on a CPU takes seconds per Euler step)
sets the flag; the next forward call of any attached module (a DiT or encoder block, each a small
fraction of a step) raises ``Interrupted``, so the frame ends within a fraction of a step. Exported
ONNX Runtime / TensorRT graphs run without module calls and finish their current step.
"""
from __future__ import annotations

import threading

from torch import nn


class Interrupted(RuntimeError):
    """Inference stopped on request before the frame was finished."""


class StopFlag:
    """A stop request checked by forward pre-hooks on the attached models' modules."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Request the stop: the next module call of an attached model raises ``Interrupted``."""
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, model) -> None:
        """Check the flag before every module call of ``model``'s torch modules (its ``nn.Module``
        attributes and all their submodules; ``model`` itself when it is a module)."""
        roots = [model] if isinstance(model, nn.Module) else [v for v in vars(model).values() if isinstance(v, nn.Module)]
        for root in roots:
            for module in root.modules():
                module.register_forward_pre_hook(self._check)

    def _check(self, module: nn.Module, args) -> None:
        if self._event.is_set():
            raise Interrupted(f"inference stopped on request (in {type(module).__name__})")
