"""A started non-torch backend that keeps the node running: rebuilt for an input outside its shape range,
replaced by eager ``torch`` for the rest of the run when it fails on a frame.

``create_backend`` returns one for every non-torch backend that started. Before each call the wrapped
(primary) backend's ``shape_refusal`` is asked about the input: a compiled backend whose engines do not
cover it (a 16:9 camera at 1184x672 and engines built up to 1024x768) is rebuilt once, by the factory
given, with its range widened to the input in both orientations (``profiles.options_covering``). An
exception of the primary (or of its rebuild) switches to ``TorchBackend`` for good and redoes the call
there, so the frame is not lost. Each of those events gives one ``log`` line, never one per frame.
``Interrupted`` (a requested stop) is not a failure: it propagates.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from ..interrupt import Interrupted
from ..sampling import check_dtype
from .base import Backend, BackendOptions, BackendUnavailable, backend_class, check_backend_name, error_summary
from .profiles import options_covering
from .torch_backend import TorchBackend

_LOG = logging.getLogger(__name__)


class FallbackBackend(Backend):
    """``primary`` until it fails, then ``TorchBackend`` on the same modules, device and dtype.

    Args:
        primary: the started non-torch backend.
        rebuild: makes the primary again for other options (same model, device, dtype); may raise.
        log: receives one line per rebuild and for the fallback.

    Attributes:
        primary: the running non-torch backend; None once torch runs (or while it is rebuilt).
        primary_name: its ``name`` (the backend asked for).
        options: the primary's current options (widened by rebuilds).
        fallback: '' or why torch runs (set once, when it happens).
    """

    def __init__(self, primary: Backend, rebuild: Callable[[BackendOptions], Backend], log: Callable[[str], None]):
        super().__init__(primary.dit, primary.encoder, primary.device, primary.dtype, primary.options)
        self.primary: Backend | None = primary
        self.primary_name = primary.name
        self.rebuild = rebuild
        self.log = log
        self.fallback = ""
        self._torch: TorchBackend | None = None

    @property
    def name(self) -> str:
        """The backend running now: the primary's name, "torch" after the fallback."""
        return self._torch.name if self._torch is not None else self.primary_name

    @property
    def degraded(self) -> str:
        """The running backend's own note ('' for torch, and while the primary is being rebuilt)."""
        active = self._torch if self._torch is not None else self.primary
        return active.degraded if active is not None else ""

    @property
    def max_batch(self) -> int | None:
        """The running backend's batch limit: the primary's; None (any) once torch runs; 1 while the
        primary is being rebuilt (a batch of 1 is what every backend takes)."""
        if self._torch is not None:
            return self._torch.max_batch
        return self.primary.max_batch if self.primary is not None else 1

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self._call("encode", image)

    def sample(self, image, semantics, noise, timesteps):
        return self._call("sample", image, semantics, noise, timesteps)

    def _call(self, method: str, image: torch.Tensor, *rest):
        """``method`` of the primary (fitted to ``image`` (N, 3, H, W) first); on its failure, of torch."""
        if self._torch is None:
            n, _, height, width = image.shape
            self._fit(n, height, width)
        if self._torch is None:
            try:
                return getattr(self.primary, method)(image, *rest)
            except Interrupted:
                raise
            except Exception as error:  # any failure of the primary: the frame is redone on torch
                self._fall_back(f"backend {self.primary_name} failed on a frame ({error_summary(error)}); "
                                "running torch for the rest of the run")
        return getattr(self._torch, method)(image, *rest)

    def _fit(self, n: int, height: int, width: int) -> None:
        """Make the primary take an (n, 3, height, width) input: rebuild it with a range covering both
        orientations when it refuses, fall back to torch when that cannot help or fails."""
        if self.primary is not None:
            refusal = self.primary.shape_refusal(n, height, width)
            if refusal is None:
                return
            widened = options_covering(self.options, [(height, width), (width, height)])
            if (widened.max_height, widened.max_width) == (self.options.max_height, self.options.max_width):
                self._fall_back(f"backend {self.primary_name} refuses {width}x{height} within its shape range "
                                f"({refusal}); running torch for the rest of the run")
                return
            self.log(f"rebuilding {self.primary_name} for {width}x{height} (W x H), range up to "
                     f"{widened.max_width}x{widened.max_height}: {refusal}")
            self.options = widened
            self.primary = None  # the old engines are freed before the new ones are built (GPU memory)
        self._rebuild(n, height, width)

    def _rebuild(self, n: int, height: int, width: int) -> None:
        """The primary built again for ``self.options``; torch when that raises or it still refuses the input."""
        try:
            primary = self.rebuild(self.options)
        except Interrupted:
            raise  # primary stays None: the next call rebuilds again
        except Exception as error:
            self._fall_back(f"backend {self.primary_name} failed to rebuild for {width}x{height} "
                            f"({error_summary(error)}); running torch for the rest of the run")
            return
        refusal = primary.shape_refusal(n, height, width)
        if refusal is not None:
            self._fall_back(f"backend {self.primary_name} still refuses {width}x{height} after the rebuild "
                            f"({refusal}); running torch for the rest of the run")
            return
        self.primary = primary

    def _fall_back(self, reason: str) -> None:
        """Switch to torch for good, with ``reason`` kept and logged once."""
        self.primary = None
        self._torch = TorchBackend(self.dit, self.encoder, self.device, self.dtype, self.options)
        self.fallback = reason
        self.log(reason)


def create_backend(name: str, dit: nn.Module, encoder: nn.Module, device: torch.device, dtype: str,
                   options: BackendOptions = BackendOptions(),
                   log: Callable[[str], None] | None = None) -> tuple[Backend, str]:
    """Backend ``name`` for the model, or ``torch`` when it does not start here.

    Any exception of a non-torch backend's constructor (``Interrupted`` aside) falls back: a missing
    package, an engine folder that cannot be written, a failed export or engine build, a CUDA error.
    A backend that started comes wrapped in a ``fallback.FallbackBackend``, which later rebuilds it for
    inputs outside its shape range and replaces it by ``torch`` if it fails on a frame.

    Args:
        log: receives the wrapper's one-line notes (a rebuild, a run-time fallback); default: this
            module's logger at WARNING level.

    Returns:
        (backend, start-up fallback reason): the reason is '' when ``name`` started, else why it did not
        (log it).

    Raises:
        ValueError: for an unknown backend name or dtype.
        Interrupted: when a stop was requested while the backend started (exports run the modules).
    """
    check_backend_name(name)
    check_dtype(dtype)
    if name == "torch":
        return backend_class("torch")(dit, encoder, device, dtype, options), ""

    def build(build_options: BackendOptions) -> Backend:
        return backend_class(name)(dit, encoder, device, dtype, build_options)

    try:
        primary = build(options)
    except Interrupted:
        raise
    except BackendUnavailable as error:
        reason = f"backend {name} unavailable ({error}); running torch instead"
    except Exception as error:  # whatever stops it from starting: the parameter says it falls back
        reason = f"backend {name} failed to start ({error_summary(error)}); running torch instead"
    else:
        return FallbackBackend(primary, build, log or _LOG.warning), ""
    return backend_class("torch")(dit, encoder, device, dtype, options), reason
