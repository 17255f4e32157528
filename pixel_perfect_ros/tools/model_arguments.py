"""The model-file arguments of the PPD image tools and the torch thread count of a tool's run."""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..inference.checkpoints import SEMANTICS_TYPES, CheckpointError
from ..inference.loader import ModelRequest


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--semantics`` and ``--semantics-type`` of the PPD image tools."""
    parser.add_argument("--checkpoint", type=Path,
                        help="official ppd.pth or ppd_moge.pth (default: the bundled synthetic-world model)")
    parser.add_argument("--semantics", type=Path,
                        help="depth_anything_v2_vitl.pth (da2) or MoGe-2 model.pt (moge2); given with --checkpoint")
    parser.add_argument("--semantics-type", choices=SEMANTICS_TYPES, default="da2",
                        help="which encoder --semantics is (default: da2)")


def requested_model(args: argparse.Namespace, **run) -> ModelRequest:
    """The model named by ``add_model_arguments``' arguments (none: the bundled model), with the run settings
    ``run`` (other ``ModelRequest`` fields).

    Raises:
        CheckpointError: for one of --checkpoint and --semantics without the other.
    """
    if (args.checkpoint is None) != (args.semantics is None):
        raise CheckpointError("give both --checkpoint and --semantics, or neither for the bundled model")
    return ModelRequest(checkpoint=str(args.checkpoint or ""), semantics=str(args.semantics or ""),
                        semantics_type=args.semantics_type, **run)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (0 or None: as it is) and restore the count after,
    so a tool called as a function leaves its caller's thread count (and so its float results) alone."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
