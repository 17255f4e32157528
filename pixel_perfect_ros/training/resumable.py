"""A resumable optimisation loop: state file (step, weights, optimiser, RNG), JSON-lines log, validation.

``run_resumable`` saves ``<name>_state.pt`` every ``save_every`` steps and at the end, and keeps the
weights with the best validation number in ``<name>_best.pt``; run again with the same folder it goes
on from the saved step with the same random stream, so a killed run loses at most ``save_every`` steps.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

StepFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]
"""``step_fn(step) -> (loss, parts)``: the loss of one 1-based optimiser step (graph attached)."""


@dataclass(frozen=True)
class LoopConfig:
    """Bookkeeping intervals, in optimiser steps (validate / save: multiples of log_every)."""

    log_every: int = 25
    validate_every: int = 250
    save_every: int = 250

    def __post_init__(self):
        if self.validate_every % self.log_every or self.save_every % self.log_every:
            raise ValueError(f"validate_every {self.validate_every} and save_every {self.save_every} must be "
                             f"multiples of log_every {self.log_every}")


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_best(model: nn.Module, folder: Path, name: str) -> nn.Module:
    """Fill ``model`` with the best validated weights of run ``name`` in ``folder``; returns it."""
    model.load_state_dict(torch.load(Path(folder) / f"{name}_best.pt", weights_only=True)["model"])
    return model


def run_resumable(name: str, folder: Path, model: nn.Module, optimiser: torch.optim.Optimizer,
                  generator: torch.Generator, step_fn: StepFn, validate: Callable[[], float], steps: int,
                  config: LoopConfig) -> list[dict]:
    """Train ``model`` with ``step_fn`` up to step ``steps``, resuming from ``folder`` if possible.

    Args:
        name: run name (file prefix; the log is ``<name>_log.jsonl``).
        folder: where the state, best weights and log go (created).
        generator: the run's only source of randomness; its state is saved and restored.
        validate: the held-out number (lower is better), computed in eval mode without gradients.

    Returns:
        The log records written by this call (dicts: step, loss, parts, seconds; ``val`` when validated).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_path, best_path = folder / f"{name}_state.pt", folder / f"{name}_best.pt"
    start_step, best = 0, float("inf")
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        start_step, best = state["step"], state["best"]
    records, losses, clock = [], [], time.perf_counter()
    with open(folder / f"{name}_log.jsonl", "a") as log:
        for step in range(start_step + 1, steps + 1):
            model.train()
            loss, parts = step_fn(step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            last = step == steps
            if step % config.log_every and not last:
                continue
            record = {"step": step, "loss": sum(losses) / len(losses), "parts": parts,
                      "seconds": round(time.perf_counter() - clock, 2)}
            losses = []
            if step % config.validate_every == 0 or last:
                model.eval()
                with torch.no_grad():
                    record["val"] = validate()
                if record["val"] < best:
                    best = record["val"]
                    _save_atomic({"step": step, "val": best, "model": model.state_dict()}, best_path)
            log.write(json.dumps(record) + "\n")
            log.flush()
            records.append(record)
            if step % config.save_every == 0 or last:
                _save_atomic({"step": step, "best": best, "model": model.state_dict(),
                              "optimiser": optimiser.state_dict(), "generator": generator.get_state()},
                             state_path)
    return records
