"""The processing sizes a compiled backend's shape range must cover, and that range as engine profiles.

The processing size comes from the camera's size and ``target_area`` (``preprocess.processing_size``):
at the default area a 4:3 camera runs at 1024x768, a 16:9 one at 1184x672, and portrait cameras at the
transposes (all W x H). A range made for 4:3 landscape only refuses the others.

The range of ``BackendOptions`` becomes one ``ShapeProfile`` (``profile_shapes``), shared by the native
TensorRT engines and ONNX Runtime's TensorRT execution provider, so both tune for and accept the same
sizes; ``graph_input_shapes`` spells it out per graph input and ``profile_refusal`` says why a size is
outside it. Pure Python: no TensorRT or ONNX Runtime import.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Callable

from ...model.dit import SEMANTICS_DIM
from ..preprocess import processing_size
from .base import BackendOptions
from .engine_cache import ShapeProfile

COMMON_CAMERAS = ((480, 640), (720, 1280))
"""(height, width) of the usual camera shapes (4:3, 16:9), for when the camera is not known yet."""
GRAPHS = ("encoder", "dit_step")
"""The exported graphs, in the order ``onnx_export.exported_graphs`` returns their ONNX files."""
MIN_SIDE_PX = 32
"""Smallest height / width of a profile (``onnx_export.MIN_SIZE_PX``: the exported graphs' minimum)."""
BATCH = 1
"""Batch the profiles are built for (min = opt = max): the image pipeline runs one image at a time."""


def expected_processing_sizes(target_area: int, cameras: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Processing (H, W) of each camera (height, width) at ``target_area``, in both orientations; the
    ``COMMON_CAMERAS`` when none is given. The first camera's own orientation comes first (the size to
    tune for); no duplicates."""
    sizes: list[tuple[int, int]] = []
    for height, width in list(cameras) or COMMON_CAMERAS:
        run = processing_size(height, width, target_area)
        for size in (run, run[::-1]):
            if size not in sizes:
                sizes.append(size)
    return sizes


def options_covering(options: BackendOptions, sizes: Iterable[tuple[int, int]]) -> BackendOptions:
    """``options`` with the range widened to cover every (H, W) of ``sizes`` (never narrowed) and tuned
    for the first of them."""
    sizes = list(sizes)
    if not sizes:
        return options
    return replace(options, max_height=max(options.max_height, *(h for h, _ in sizes)),
                   max_width=max(options.max_width, *(w for _, w in sizes)),
                   opt_height=sizes[0][0], opt_width=sizes[0][1])


def derived_options(target_area: int, max_height: int = 0, max_width: int = 0, **options) -> BackendOptions:
    """The options the node and ``ppd-export`` build engines with: the range covers the processing sizes of
    4:3 and 16:9 cameras in both orientations at ``target_area`` (``expected_processing_sizes``), tuned
    for 4:3 landscape; a non-zero ``max_height`` / ``max_width`` replaces that side's bound (the tuned
    size then kept within it). Other keyword arguments are ``BackendOptions`` fields."""
    derived = options_covering(BackendOptions(max_height=0, max_width=0), expected_processing_sizes(target_area))
    height, width = max_height or derived.max_height, max_width or derived.max_width
    return replace(derived, max_height=height, max_width=width, opt_height=min(derived.opt_height, height),
                   opt_width=min(derived.opt_width, width), **options)


def profile_shapes(options: BackendOptions) -> ShapeProfile:
    """The (N, H, W) range of ``options``: min 32 x 32 px, opt (opt_height, opt_width) (each 0: the max),
    max (max_height, max_width); N is ``BATCH``.

    Raises:
        ValueError: when a max or opt side is not a multiple of 16, a max side is below ``MIN_SIDE_PX``,
            or an opt side lies outside ``MIN_SIDE_PX`` .. its max.
    """
    max_hw = options.max_height, options.max_width
    opt_hw = options.opt_height or options.max_height, options.opt_width or options.max_width
    if any(side % 16 or side < MIN_SIDE_PX for side in max_hw):
        raise ValueError(f"BackendOptions.max_height / max_width must be multiples of 16 and at least "
                         f"{MIN_SIDE_PX}, got {max_hw[0]} x {max_hw[1]}")
    if any(side % 16 or not MIN_SIDE_PX <= side <= top for side, top in zip(opt_hw, max_hw)):
        raise ValueError(f"BackendOptions.opt_height / opt_width must be multiples of 16 between {MIN_SIDE_PX} "
                         f"and max_height / max_width ({max_hw[0]} x {max_hw[1]}), got {opt_hw[0]} x {opt_hw[1]}")
    return ShapeProfile((BATCH, MIN_SIDE_PX, MIN_SIDE_PX), (BATCH, *opt_hw), (BATCH, *max_hw))


def graph_input_shapes(graph: str, profile: ShapeProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of each input of ``graph`` ("encoder" | "dit_step") for ``profile``.

    encoder: image (N, 3, H, W); dit_step: x (N, 4, H, W), semantics (N, (H/16)*(W/16), 1024),
    timestep (N,).
    """
    def per_input(shape: Callable[[int, int, int], tuple[int, ...]]):
        return tuple(shape(*nhw) for nhw in (profile.min, profile.opt, profile.max))

    if graph == "encoder":
        return {"image": per_input(lambda n, h, w: (n, 3, h, w))}
    if graph == "dit_step":
        return {"x": per_input(lambda n, h, w: (n, 4, h, w)),
                "semantics": per_input(lambda n, h, w: (n, (h // 16) * (w // 16), SEMANTICS_DIM)),
                "timestep": per_input(lambda n, h, w: (n,))}
    raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")


def profile_refusal(profile: ShapeProfile, n: int, height: int, width: int,
                    runtime: str = "TensorRT engines") -> str | None:
    """Why ``runtime`` (plural noun: "TensorRT engines", "exported ONNX graphs") built for ``profile``
    cannot take an (n, 3, height, width) input, or None when it can."""
    if height % 16 or width % 16:
        return f"the {runtime} take heights and widths that are multiples of 16, got {height} x {width}"
    if not profile.contains(n, height, width):
        return (f"input N,H,W {n}x{height}x{width} is outside the {runtime}' shape range ({profile}): the "
                f"{runtime} must be rebuilt for a range that covers it (BackendOptions.max_height / max_width)")
    return None
