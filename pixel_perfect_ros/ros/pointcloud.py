"""Organized PointCloud2 from a depth image, packed like depth_image_proc's point_cloud_xyz(rgb).

Layout (little-endian): x, y, z float32 at offsets 0, 4, 8, plus ``rgb`` float32 at 12 when colour is
given (the uint32 ``0x00RRGGBB`` bit pattern read as float32, PCL/RViz's packing); height x width of
the (decimated) depth image, ``is_dense = False``, NaN x, y, z for invalid depth. The cloud is one
(h, w, 3 or 4) float32 array written in place into the message buffer (``msg_buffer``).
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from ..geometry.projection import back_project
from .conversions import msg_buffer

_XYZ = ("x", "y", "z")


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """RGB colours as PointCloud2 ``rgb`` floats: the little-endian uint32 ``0x00RRGGBB`` (bytes B, G,
    R, 0) read as float32.

    Args:
        rgb: (H, W, 3) uint8 RGB.

    Returns:
        (H, W) little-endian float32 (bit patterns, not colour values: compare with ``.view("<u4")``).

    Raises:
        ValueError: ``rgb`` not an (H, W, 3) uint8 array.
    """
    _check_rgb(rgb)
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA)  # (H, W, 4) bytes B, G, R, 255
    packed = bgra.view("<u4")[..., 0]  # (H, W) 0xFFRRGGBB
    packed &= np.uint32(0x00FFFFFF)
    return packed.view("<f4")


def cloud_array(depth: np.ndarray, P: np.ndarray, rgb: np.ndarray | None = None,
                decimation: int = 1) -> np.ndarray:
    """The packed points of an organized cloud: the array whose bytes ``point_cloud`` publishes.

    Args:
        depth: (H, W) float, metres (or relative units), z along the optical axis of the camera
            optical frame; non-finite = invalid.
        P: (3, 4) projection matrix (or (3, 3) K) of the depth image, pixels; only ``fx = P[0, 0]``,
            ``fy = P[1, 1]``, ``cx = P[0, 2]``, ``cy = P[1, 2]`` are used, as in depth_image_proc.
        rgb: optional (H, W, 3) uint8 RGB registered to ``depth`` (same size and frame).
        decimation: keep every ``decimation``-th pixel in both axes, starting at pixel (0, 0); the
            points are those of the full-resolution pixels they come from.

    Returns:
        (h, w, 3) float32 x, y, z, or (h, w, 4) with the ``pack_rgb`` float last; little-endian,
        C-contiguous; ``h = ceil(H / decimation)``, ``w = ceil(W / decimation)``; optical frame, the
        depth's unit; NaN x, y, z where depth is invalid (colour kept).

    Raises:
        ValueError: ``rgb`` of another size than ``depth`` or not uint8 RGB, a bad ``P`` or
            ``decimation``, or anything ``back_project`` rejects.
    """
    cloud = np.empty(_cloud_shape(depth, P, rgb, decimation), dtype="<f4")
    _fill_cloud(cloud, depth, P, rgb, decimation)
    return cloud


def point_cloud(depth: np.ndarray, P: np.ndarray, header: Header, rgb: np.ndarray | None = None,
                decimation: int = 1) -> PointCloud2:
    """An organized PointCloud2 (xyz, or xyzrgb when ``rgb`` is given) from a depth image.

    Args:
        depth: (H, W) float, metres (or relative units), NaN = invalid; see ``cloud_array``.
        P: (3, 4) projection matrix (or (3, 3) K) of the depth image, pixels.
        header: the depth image's header (its stamp and optical frame_id), used as is.
        rgb: optional (H, W, 3) uint8 RGB of the same size and frame as ``depth``.
        decimation: keep every ``decimation``-th pixel in both axes (see ``cloud_array``).

    Returns:
        PointCloud2 with height x width = the decimated depth's, point_step 12 (xyz) or 16 (xyzrgb),
        row_step = point_step * width, is_dense False, is_bigendian False; data = ``cloud_array``'s bytes.

    Raises:
        ValueError: as ``cloud_array``.
    """
    height, width, channels = _cloud_shape(depth, P, rgb, decimation)
    data, cloud = msg_buffer((height, width, channels), "<f4")
    _fill_cloud(cloud, depth, P, rgb, decimation)
    names = _XYZ + (("rgb",) if channels == 4 else ())
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, name in enumerate(names)]
    point_step = 4 * channels
    return PointCloud2(header=header, height=height, width=width, fields=fields, is_bigendian=False,
                       point_step=point_step, row_step=point_step * width, is_dense=False, data=data)


def _cloud_shape(depth: np.ndarray, P: np.ndarray, rgb: np.ndarray | None, decimation: int) -> tuple[int, int, int]:
    """Validate the arguments of ``cloud_array``; return its (h, w, 3 or 4) shape."""
    if np.shape(P) not in ((3, 3), (3, 4)):
        raise ValueError(f"P must be (3, 4) (or a (3, 3) K), got {np.shape(P)}")
    if not isinstance(decimation, (int, np.integer)) or decimation < 1:
        raise ValueError(f"decimation must be an integer >= 1, got {decimation}")
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    if rgb is not None:
        _check_rgb(rgb)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"rgb is {rgb.shape[1]}x{rgb.shape[0]} but depth is {depth.shape[1]}x{depth.shape[0]}")
    height, width = depth.shape
    return -(-height // decimation), -(-width // decimation), 3 if rgb is None else 4


def _fill_cloud(cloud: np.ndarray, depth: np.ndarray, P: np.ndarray, rgb: np.ndarray | None,
                decimation: int) -> None:
    """Write ``cloud_array``'s values into ``cloud`` ((h, w, 3 or 4) float32, from ``_cloud_shape``)."""
    P = np.asarray(P, dtype=np.float64)
    back_project(depth, P[0, 0], P[1, 1], P[0, 2], P[1, 2], stride=int(decimation), out=cloud)
    if rgb is not None:
        cloud[..., 3] = pack_rgb(rgb[::decimation, ::decimation])


def _check_rgb(rgb: np.ndarray) -> None:
    """Raise ValueError unless ``rgb`` is an (H, W, 3) uint8 array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
