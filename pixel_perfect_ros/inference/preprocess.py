"""Pre- and post-processing of the official PPD image path (PPD_SPEC 1.2 and 1.6).

The network runs at a *processing size*: the input scaled to a target area (1024x768 by default,
hard-coded in the official code), each side rounded to a multiple of 16. The depth comes back at the
processing size and is resized to the input resolution.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_TARGET_AREA = 1024 * 768
"""Official processing area in pixels (``resize_keep_aspect`` ignores ``--input_size``)."""

PATCH = 16
"""Both processing sides are multiples of the DiT's 16-px input patch."""


def _scale(height: int, width: int, target_area: int) -> float:
    return math.sqrt(target_area / (height * width))


def processing_size(height: int, width: int, target_area: int = DEFAULT_TARGET_AREA) -> tuple[int, int]:
    """Official network input size (H, W) for an input of ``height`` x ``width`` pixels.

    Scales the image to about ``target_area`` pixels and rounds each side independently to a multiple
    of 16 (Python ``round``, so halves go to even), at least 16. The aspect ratio is only approximately
    kept. Example: 480x640 -> (768, 1024); 1080x1920 -> (672, 1184).

    Raises:
        ValueError: for non-positive sizes or area.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if target_area < PATCH * PATCH:
        raise ValueError(f"target_area must be at least {PATCH * PATCH} pixels, got {target_area}")
    s = _scale(height, width, target_area)
    return (max(PATCH, PATCH * round(height * s / PATCH)), max(PATCH, PATCH * round(width * s / PATCH)))


def check_rgb8(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is a non-empty (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an RGB image as a (H, W, 3) uint8 array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: {image.shape}")


def resize_to_processing(image: np.ndarray, target_area: int = DEFAULT_TARGET_AREA) -> np.ndarray:
    """Resize an RGB uint8 image to its processing size as the official ``resize_keep_aspect`` does.

    OpenCV ``INTER_AREA`` when shrinking (scale < 1), ``INTER_CUBIC`` otherwise, on the uint8 image.

    Args:
        image: (H0, W0, 3) uint8 RGB.
        target_area: processing area in pixels.

    Returns:
        (H, W, 3) uint8 RGB with (H, W) = ``processing_size(H0, W0, target_area)``.
    """
    check_rgb8(image)
    height, width = image.shape[:2]
    out_h, out_w = processing_size(height, width, target_area)
    interp = cv2.INTER_AREA if _scale(height, width, target_area) < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (out_w, out_h), interpolation=interp)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 RGB in [0, 1] (divided in float64, as official)."""
    check_rgb8(image)
    return torch.from_numpy((image / 255.0).astype(np.float32).transpose(2, 0, 1).copy()).unsqueeze(0)


def image_to_device(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``image_to_tensor(image).to(device)``, bit for bit, uploading 1 byte per value instead of 4.

    The uint8 image is copied into (on CUDA: pinned) host memory, uploaded (CUDA: ``non_blocking``) and
    converted on ``device`` by looking each value up in the 256 float32 values of ``image_to_tensor``'s
    own float64 division. (Dividing on the device would not be exact: PyTorch's CUDA kernel divides by a
    host scalar as a multiplication by its float32 reciprocal, and ``v * float32(1/255)`` differs from
    the quotient for 126 of the 256 values, measured on CPU.)

    Args:
        image: (H, W, 3) uint8 RGB.
        device: where the tensor goes.

    Returns:
        (1, 3, H, W) float32 RGB in [0, 1] on ``device``, contiguous.
    """
    check_rgb8(image)
    device = torch.device(device)
    host = torch.empty(image.shape, dtype=torch.uint8, pin_memory=device.type == "cuda")  # (H, W, 3)
    host.numpy()[...] = image
    pixels = host.to(device, non_blocking=True).permute(2, 0, 1).long()  # (3, H, W)
    return _unit_values(device)[pixels].unsqueeze(0).contiguous()


@functools.lru_cache(maxsize=4)
def _unit_values(device: torch.device) -> torch.Tensor:
    """(256,) float32 on ``device``: value v -> v / 255 computed as ``image_to_tensor`` does."""
    with torch.inference_mode(False):
        return torch.from_numpy((np.arange(256) / 255.0).astype(np.float32)).to(device)


def resize_depth(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (N, 1, h, w) depth to (N, 1, height, width), as run.py."""
    if depth.shape[-2:] == (height, width):
        return depth
    return F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False)
