"""Wall time per stage of a computation, in milliseconds, with CUDA work waited for at each lap."""
from __future__ import annotations

import time

import torch


class StageTimer:
    """Adds the wall time since the previous lap (or the start) to ``ms[stage]``.

    Args:
        device: the torch device whose queued work each lap waits for (CUDA only).
        stages: stages present from the start with 0 ms (others appear at their first lap).
    """

    def __init__(self, device: torch.device | str = "cpu", stages: tuple[str, ...] = ()):
        self.device = torch.device(device)
        self.ms: dict[str, float] = dict.fromkeys(stages, 0.0)
        self._clock = time.perf_counter()

    def restart(self) -> None:
        """Start timing afresh (``ms`` keeps its stages at 0)."""
        self.ms = dict.fromkeys(self.ms, 0.0)
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Add the time since the previous lap to ``ms[stage]``."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._clock) * 1e3
        self._clock = now
