"""MoGe-2 ``infer()``: metric depth, validity mask and normalised intrinsics from one image (MOGE2_SPEC 4).

Pipeline (as PPD's copy of MoGe-2, which ``run_point_cloud.py`` uses for the metric scale):

1. forward (or :meth:`MoGe2Model.decode` on a shared encoder pass) -> affine points, normals, mask, scale
2. focal and z shift of the affine point map by scipy's Levenberg-Marquardt (:func:`recover_focal_shift`)
3. normalised intrinsics, shifted depth, mask AND depth > 0
4. points re-projected from depth and K (``force_projection``), metric scale, +inf outside the mask

Differences from upstream, on purpose:

* ``use_fp16`` defaults to False (float32); upstream defaults to True, which runs the network under
  ``torch.autocast(float16)`` (on CPU that changed focal by 0.35 % and depth by ~0.4 % in fixture E).
  Pass ``use_fp16=True`` for upstream behaviour on a GPU.
* Returns a :class:`MoGe2Result` (numpy, batch axis dropped) instead of a tuple / dict.
* A model without a mask head is treated as predicting "valid" everywhere (upstream's PPD copy
  crashes on return); pixels with non-positive shifted depth are still masked.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares

from pixel_perfect_ros.model.moge2 import MoGe2Model, uv_map

__all__ = [
    "MoGe2Result", "infer", "intrinsics_from_focal", "postprocess", "recover_focal_shift", "solve_focal_shift",
    "solver_inputs", "uv_map",
]

MASK_THRESHOLD = 0.5
"""``mask > 0.5`` (strict) marks a valid pixel."""

LM_FTOL = 1e-3
"""Upstream's ``ftol``: it stops LM early (fixture A: s = 12.947 vs the optimum 12.276), so it is kept."""


@dataclass
class MoGe2Result:
    """Output of :func:`infer` for one image of H x W pixels (numpy, no batch axis).

    Attributes:
        depth: (H, W) float32, metres along the optical axis (relative units if the model has no scale
            head); +inf outside ``mask`` when ``apply_mask``.
        mask: (H, W) bool, ``sigmoid(mask logit) > 0.5`` and shifted depth > 0.
        intrinsics: (3, 3) float32, normalised: ``[[fx, 0, 0.5], [0, fy, 0.5], [0, 0, 1]]`` with fx in
            units of the image width and fy of the height; ``diag(W, H, 1) @ K`` gives pixels with
            pixel (i, j) centred at (j + 0.5, i + 0.5).
        points: (H, W, 3) float32, metres, camera frame with OpenCV axes (x right, y down, z forward);
            +inf outside ``mask`` when ``apply_mask``.
        normal: (H, W, 3) float32 unit normals (0 outside ``mask`` when ``apply_mask``), or None when
            the model has no normal head.
        focal: focal length relative to half the image diagonal
            (``fov_x = 2 atan(a / sqrt(1 + a^2) / focal)``, a = W / H).
        shift: z offset added to the network's affine point map (before the metric scale).
        metric_scale: factor from the affine map to metres, or None without a scale head.
    """

    depth: np.ndarray
    mask: np.ndarray
    intrinsics: np.ndarray
    points: np.ndarray
    normal: np.ndarray | None
    focal: float
    shift: float
    metric_scale: float | None


# ---------------------------------------------------------------------------------------------------
# Focal length and shift (spec 4.1)
# ---------------------------------------------------------------------------------------------------


def _residuals(uv: np.ndarray, xy: np.ndarray, z: np.ndarray, focal: float | None):
    """Residual function of the shift s (float64 (1,) array) for scipy, ordered x0, y0, x1, y1, ...

    With ``focal`` None the focal is the closed-form best one for each s.
    """

    def fn(shift: np.ndarray) -> np.ndarray:
        q = xy / (z + shift)[:, None]  # (N, 2) float64: data float32, shift float64
        f = (q * uv).sum() / np.square(q).sum() if focal is None else focal
        return (f * q - uv).ravel()

    return fn


def solve_focal_shift(uv: np.ndarray, xyz: np.ndarray, focal: float | None = None) -> tuple[np.float32, np.float32]:
    """Least-squares shift (and focal) so that ``focal * xy / (z + shift)`` matches ``uv``.

    Exactly upstream's call: ``least_squares(residuals, x0=0, method='lm', ftol=1e-3)`` on the float64
    shift, then the shift rounded to float32 and (when unknown) the focal re-derived in float32.

    Args:
        uv: (N, 2) float32 view-plane coordinates of the samples (:func:`uv_map`).
        xyz: (N, 3) float32 affine points of the same samples.
        focal: known focal (relative to half the diagonal), or None to solve it too.

    Returns:
        ``(focal, shift)`` as float32 scalars; ``focal`` is the given one when known.
    """
    uv = uv.reshape(-1, 2)
    xy, z = xyz[..., :2].reshape(-1, 2), xyz[..., 2].reshape(-1)
    solution = least_squares(_residuals(uv, xy, z, focal), x0=0, ftol=LM_FTOL, method="lm")
    shift = solution.x.squeeze().astype(np.float32)
    if focal is not None:
        return np.float32(focal), shift
    q = xy / (z + shift)[:, None]  # float32 now
    return (q * uv).sum() / np.square(q).sum(), shift


def solver_inputs(
    points: torch.Tensor, mask: torch.Tensor | None, downsample_size: tuple[int, int] = (64, 64)
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The solver grid: points, UV map and mask down-sampled with PyTorch's legacy ``'nearest'``
    (row r takes input row ``min(floor(r * H / rows), H - 1)``; columns alike).

    Args:
        points: (B, H, W, 3) float32 affine points.
        mask: (B, H, W) bool, or None.
        downsample_size: (rows, cols).

    Returns:
        ``points_lr`` (B, rows, cols, 3) float32, ``uv_lr`` (rows, cols, 2) float32 (:func:`uv_map` of
        the full image), ``mask_lr`` (B, rows, cols) bool or None; numpy on the CPU.
    """
    if points.ndim != 4 or points.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) points, got {tuple(points.shape)}")
    height, width = points.shape[1:3]
    uv = uv_map(width, height, dtype=points.dtype, device=points.device)  # (H, W, 2)
    points_lr = F.interpolate(points.permute(0, 3, 1, 2), downsample_size, mode="nearest").permute(0, 2, 3, 1)
    uv_lr = F.interpolate(uv.permute(2, 0, 1)[None], downsample_size, mode="nearest")[0].permute(1, 2, 0)
    mask_lr = None
    if mask is not None:
        mask_lr = (F.interpolate(mask.float()[:, None], downsample_size, mode="nearest")[:, 0] > 0).cpu().numpy()
    return points_lr.cpu().numpy(), uv_lr.cpu().numpy(), mask_lr


def recover_focal_shift(
    points: torch.Tensor,
    mask: torch.Tensor | None,
    focal: torch.Tensor | None = None,
    downsample_size: tuple[int, int] = (64, 64),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal and z shift of affine point maps, solved on a nearest-neighbour down-sampled grid.

    Args:
        points: (B, H, W, 3) float32 affine points (before the shift).
        mask: (B, H, W) bool valid pixels, or None for all.
        focal: (B,) known focal relative to half the image diagonal, or None to solve it.
        downsample_size: (rows, cols) of the solver grid (:func:`solver_inputs`).

    Returns:
        ``focal`` (B,) and ``shift`` (B,) float32 on ``points.device``. Fewer than 2 valid samples
        give focal 1 and shift 0.
    """
    batch = points.shape[0]
    points_lr, uv_lr, mask_lr = solver_inputs(points, mask, downsample_size)
    focal_np = None if focal is None else focal.reshape(batch).cpu().numpy()
    focals, shifts = [], []
    for i in range(batch):
        # Valid samples in row-major order: xyz (N, 3), uv (N, 2).
        xyz_i = points_lr[i].reshape(-1, 3) if mask_lr is None else points_lr[i][mask_lr[i]]
        uv_i = uv_lr.reshape(-1, 2) if mask_lr is None else uv_lr[mask_lr[i]]
        if len(uv_i) < 2:
            focals.append(1.0)
            shifts.append(0.0)
            continue
        focal_i, shift_i = solve_focal_shift(uv_i, xyz_i, None if focal_np is None else focal_np[i])
        focals.append(float(focal_i))
        shifts.append(float(shift_i))
    shift = torch.tensor(shifts, dtype=points.dtype, device=points.device)
    if focal is not None:
        return focal.reshape(batch), shift
    return torch.tensor(focals, dtype=points.dtype, device=points.device), shift


def intrinsics_from_focal(focal: torch.Tensor, aspect: float) -> torch.Tensor:
    """Normalised intrinsics from the focal relative to half the diagonal.

    Args:
        focal: (B,) float32.
        aspect: image width / height.

    Returns:
        (B, 3, 3): ``fx = focal/2 * sqrt(1+a^2) / a`` (image widths), ``fy = focal/2 * sqrt(1+a^2)``
        (image heights), principal point (0.5, 0.5).
    """
    diagonal = math.sqrt(1 + aspect**2)
    fx = focal / 2 * diagonal / aspect  # left to right in float32, as upstream
    fy = focal / 2 * diagonal
    zeros, ones = torch.zeros_like(focal), torch.ones_like(focal)
    half = torch.full_like(focal, 0.5)
    return torch.stack([fx, zeros, half, zeros, fy, half, zeros, zeros, ones], dim=-1).unflatten(-1, (3, 3))


def _depth_to_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Back-project (B, H, W) depth with (B, 3, 3) normalised K -> (B, H, W, 3) (utils3d route:
    pixel-centre uv, ``[u, v, 1] @ inverse(K)^T * depth``, kept for bit-exact parity)."""
    height, width = depth.shape[-2:]
    u = torch.linspace(0.5 / width, (width - 0.5) / width, width, dtype=depth.dtype, device=depth.device)
    v = torch.linspace(0.5 / height, (height - 0.5) / height, height, dtype=depth.dtype, device=depth.device)
    u, v = torch.meshgrid(u, v, indexing="xy")  # (H, W)
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)
    rays = pixels @ torch.inverse(intrinsics[:, None]).transpose(-2, -1)  # (B, H, W, 3)
    return rays * depth[..., None]


def _focal_from_fov_x(fov_x, aspect: float, batch: int, device: torch.device) -> torch.Tensor:
    """Focal relative to half the diagonal for a horizontal FoV in degrees -> (B,) float32."""
    fov = torch.as_tensor(fov_x, dtype=torch.float32, device=device)
    focal = aspect / math.sqrt(1 + aspect**2) / torch.tan(torch.deg2rad(fov / 2))
    return focal[None].expand(batch) if focal.ndim == 0 else focal.reshape(batch)


# ---------------------------------------------------------------------------------------------------
# infer
# ---------------------------------------------------------------------------------------------------


@torch.inference_mode()
def infer(
    model: MoGe2Model,
    image: torch.Tensor | np.ndarray,
    num_tokens: int | None = None,
    resolution_level: int = 9,
    force_projection: bool = True,
    apply_mask: bool = True,
    fov_x: float | None = None,
    use_fp16: bool = False,
    encoder_output: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> MoGe2Result:
    """Metric depth, mask and intrinsics of one image (upstream ``MoGeModel.infer``, spec 4).

    Args:
        model: a loaded :class:`MoGe2Model` (with a points head).
        image: (3, H, W) float32 RGB in [0, 1].
        num_tokens: token budget; None = from ``resolution_level`` (9 -> ``num_tokens_range[1]``, 3600).
        resolution_level: 0..9, used when ``num_tokens`` is None.
        force_projection: re-project the points from depth and K (else keep the network's x, y).
        apply_mask: +inf depth / points and zero normals outside the mask.
        fov_x: known horizontal field of view in degrees (then only the shift is solved), or None.
        use_fp16: run the network under ``torch.autocast(float16)`` (upstream's default is True; here
            False = float32, the reproducible reference). Post-processing is always float32.
        encoder_output: ``(features (1, dim_out, rows, cols), cls (1, D))`` from
            ``model.encoder(image[None], rows, cols)`` to skip the encoder (one pass shared with PPD's
            semantics); the token grid is then the features' and ``num_tokens`` must be None.

    Returns:
        :class:`MoGe2Result`.

    Raises:
        ValueError: for a bad image, a model without points head, or conflicting arguments.
    """
    # 1. Input: one (3, H, W) image -> (1, 3, H, W) in the model's dtype and device.
    image = torch.as_tensor(image)
    if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"expected one (3, H, W) floating RGB image, got {tuple(image.shape)} {image.dtype}")
    if model.points_head is None:
        raise ValueError("this MoGe-2 model has no points head, so it cannot give depth")
    param = next(model.parameters())
    image = image.to(dtype=param.dtype, device=param.device)[None]
    height, width = image.shape[-2:]

    # 2. Network, optionally under fp16 autocast.
    autocast = torch.autocast(param.device.type, dtype=torch.float16,
                              enabled=use_fp16 and param.dtype != torch.float16)
    if encoder_output is None:
        if num_tokens is None:
            num_tokens = model.num_tokens_for_level(resolution_level)
        with autocast:
            output = model(image, num_tokens)
    else:
        if num_tokens is not None:
            raise ValueError("num_tokens and encoder_output are mutually exclusive (the grid is the features')")
        features, cls_token = encoder_output
        if features.ndim != 4 or features.shape[0] != 1:
            raise ValueError(f"encoder_output features must be (1, dim_out, rows, cols), got {tuple(features.shape)}")
        with autocast:
            output = model.decode(features, cls_token, height, width)

    # 3. Focal, shift, intrinsics, metric depth (float32).
    return postprocess(output, fov_x=fov_x, force_projection=force_projection, apply_mask=apply_mask)


@torch.inference_mode()
def postprocess(
    output: Mapping[str, torch.Tensor],
    fov_x: float | None = None,
    force_projection: bool = True,
    apply_mask: bool = True,
) -> MoGe2Result:
    """The float32 part of :func:`infer`: network outputs of one image -> :class:`MoGe2Result`.

    Args:
        output: :meth:`MoGe2Model.forward` outputs with batch 1: ``points`` (1, H, W, 3) (required),
            optional ``normal`` (1, H, W, 3), ``mask`` (1, H, W) probability, ``metric_scale`` (1,).
            Not modified.
        fov_x, force_projection, apply_mask: as in :func:`infer`.
    """
    points = output["points"].float().clone()  # (1, H, W, 3)
    if points.ndim != 4 or points.shape[0] != 1 or points.shape[-1] != 3:
        raise ValueError(f"expected (1, H, W, 3) points, got {tuple(points.shape)}")
    height, width = points.shape[1:3]
    aspect = width / height
    normal = output["normal"].float() if "normal" in output else None
    metric_scale = output["metric_scale"].float() if "metric_scale" in output else None
    if "mask" in output:
        mask = output["mask"].float() > MASK_THRESHOLD  # (1, H, W)
    else:
        mask = torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)

    # 1. Focal and shift; normalised intrinsics.
    if fov_x is None:
        focal, shift = recover_focal_shift(points, mask)
    else:
        focal = _focal_from_fov_x(fov_x, aspect, 1, points.device)
        _, shift = recover_focal_shift(points, mask, focal=focal)
    intrinsics = intrinsics_from_focal(focal, aspect)  # (1, 3, 3)

    # 2. Shift z, drop non-positive depth (decided before projection and scaling), optionally re-project.
    points[..., 2] += shift[:, None, None]
    mask &= points[..., 2] > 0
    depth = points[..., 2].clone()  # (1, H, W)
    if force_projection:
        points = _depth_to_points(depth, intrinsics)

    # 3. Metric scale, then +inf / 0 outside the mask.
    if metric_scale is not None:
        points *= metric_scale[:, None, None, None]
        depth *= metric_scale[:, None, None]
    if apply_mask:
        points = torch.where(mask[..., None], points, torch.inf)
        depth = torch.where(mask, depth, torch.inf)
        if normal is not None:
            normal = torch.where(mask[..., None], normal, torch.zeros_like(normal))

    return MoGe2Result(
        depth=depth[0].cpu().numpy(),
        mask=mask[0].cpu().numpy(),
        intrinsics=intrinsics[0].cpu().numpy(),
        points=points[0].cpu().numpy(),
        normal=None if normal is None else normal[0].cpu().numpy(),
        focal=float(focal[0]),
        shift=float(shift[0]),
        metric_scale=None if metric_scale is None else float(metric_scale[0]),
    )
