"""Procedural scenes and a vectorised ray caster with exact per-pixel depth.

Frames: the world is z-up (metres); the room is ``[-sx/2, sx/2] x [-sy/2, sy/2] x [0, sz]`` with the
floor at ``z = 0``. The camera is a pinhole in the OpenCV optical frame (x right, y down, z forward);
pixel ``(v, u)`` (row, column) looks through image point ``(u, v)``, the convention of
``geometry/projection.back_project``. Each pixel's ray is ``d_cam = ((u - cx)/fx, (v - cy)/fy, 1)``,
so the ray parameter of a hit *is* the depth along the optical axis: depth is exact up to float64
intersection arithmetic rounded to float32.

Rendering casts all rays against one primitive at a time (numpy, float64) and keeps the nearest hit
(a z-buffer); normals and texture coordinates are then evaluated only at each primitive's winning
pixels. Shading is Lambertian with one directional light plus ambient, no shadows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from ..geometry.camera import PinholeCamera

_EPS_T = 1e-9
"""Smallest accepted ray parameter (depth, metres): hits at or behind the camera centre are ignored."""
TEXTURE_KINDS = ("solid", "checker", "stripes", "noise")
"""Procedural texture kinds ``random_texture`` draws from."""
_LATTICE = 32
"""Side of the periodic value-noise lattice of a ``noise`` texture, cells."""


# ---------------------------------------------------------------------------------------- textures


@dataclass(frozen=True, eq=False)
class Texture:
    """A procedural texture over surface coordinates in metres.

    Attributes:
        kind: one of ``TEXTURE_KINDS``.
        color_a: (3,) float64 linear RGB in [0, 1], the base colour.
        color_b: (3,) float64 linear RGB in [0, 1], the second colour (unused by ``solid``).
        scale_m: checker square / stripe width / noise cell size, metres (> 0).
        lattice: (``_LATTICE``, ``_LATTICE``) float64 values in [0, 1] for ``noise``, else None.
    """

    kind: str
    color_a: np.ndarray
    color_b: np.ndarray
    scale_m: float = 0.25
    lattice: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in TEXTURE_KINDS:
            raise ValueError(f"texture kind must be one of {TEXTURE_KINDS}, got {self.kind!r}")
        if not self.scale_m > 0.0:
            raise ValueError(f"scale_m must be > 0, got {self.scale_m}")
        if self.kind == "noise" and (self.lattice is None or self.lattice.shape != (_LATTICE, _LATTICE)):
            raise ValueError(f"a noise texture needs a ({_LATTICE}, {_LATTICE}) lattice")

    def albedo(self, uv: np.ndarray) -> np.ndarray:
        """Colour at surface coordinates.

        Args:
            uv: (M, 2) float64 surface coordinates, metres.

        Returns:
            (M, 3) float64 RGB in [0, 1].
        """
        a, b = np.asarray(self.color_a), np.asarray(self.color_b)
        if self.kind == "solid":
            return np.broadcast_to(a, (uv.shape[0], 3))
        cells = uv / self.scale_m  # (M, 2)
        if self.kind == "checker":
            mix = (np.floor(cells).sum(axis=1) % 2.0)[:, None]  # (M, 1) 0 or 1
        elif self.kind == "stripes":
            mix = (np.floor(cells[:, 0]) % 2.0)[:, None]
        else:  # bilinear value noise on a periodic lattice
            i0 = np.floor(cells).astype(np.int64)  # (M, 2)
            f = cells - i0
            i0 %= _LATTICE
            i1 = (i0 + 1) % _LATTICE
            lat = self.lattice
            top = lat[i0[:, 1], i0[:, 0]] * (1 - f[:, 0]) + lat[i0[:, 1], i1[:, 0]] * f[:, 0]
            bottom = lat[i1[:, 1], i0[:, 0]] * (1 - f[:, 0]) + lat[i1[:, 1], i1[:, 0]] * f[:, 0]
            mix = (top * (1 - f[:, 1]) + bottom * f[:, 1])[:, None]
        return a + (b - a) * mix


def random_texture(rng: np.random.Generator) -> Texture:
    """A texture of a random kind, colours and scale.

    Args:
        rng: the random generator (advanced).

    Returns:
        The texture.
    """
    kind = TEXTURE_KINDS[rng.integers(len(TEXTURE_KINDS))]
    color_a = rng.uniform(0.1, 0.95, 3)
    color_b = np.clip(color_a + rng.uniform(-0.6, 0.6, 3), 0.0, 1.0)
    scale_m = float(rng.uniform(0.05, 0.5))
    lattice = rng.uniform(0.0, 1.0, (_LATTICE, _LATTICE)) if kind == "noise" else None
    return Texture(kind, color_a, color_b, scale_m, lattice)


# ---------------------------------------------------------------------------------------- primitives


class Primitive(Protocol):
    """A surface the ray caster can hit."""

    texture: Texture

    def hit_t(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Ray parameter of the nearest hit in front of the origin.

        Args:
            origin: (3,) float64 ray origin, world frame, metres.
            dirs: (N, 3) float64 ray directions, world frame (not normalised).

        Returns:
            (N,) float64 ``t`` with hit point ``origin + t * dirs``, ``inf`` where missed.
        """

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit normals and texture coordinates at points on the surface.

        Args:
            points: (M, 3) float64 world points on the surface, metres.

        Returns:
            ``(normals, uv)``: (M, 3) float64 unit outward normals (world) and (M, 2) float64 metres.
        """


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length (float64)."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _tangents(normal: np.ndarray) -> np.ndarray:
    """(2, 3) two unit vectors spanning the plane orthogonal to ``normal``."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t0 = _unit(np.cross(helper, normal))
    return np.stack([t0, np.cross(normal, t0)])


@dataclass(frozen=True, eq=False)
class Plane:
    """An infinite plane ``dot(normal, x) = dot(normal, point)``, seen from both sides."""

    point: np.ndarray
    normal: np.ndarray
    texture: Texture

    def hit_t(self, origin, dirs):
        n = _unit(self.normal)
        denom = dirs @ n  # (N,)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.dot(np.asarray(self.point) - origin, n)) / denom
        return np.where(t > _EPS_T, t, np.inf)

    def surface(self, points):
        n = _unit(self.normal)
        return np.broadcast_to(n, points.shape), (points - self.point) @ _tangents(n).T


@dataclass(frozen=True, eq=False)
class Box:
    """An oriented box: ``center + rotation @ p`` for local ``|p_i| <= half_size_i``."""

    center: np.ndarray
    half_size: np.ndarray
    texture: Texture
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def hit_t(self, origin, dirs):
        R = np.asarray(self.rotation, dtype=np.float64)
        o = R.T @ (origin - self.center)  # (3,) local
        d = dirs @ R  # (N, 3) local: R^T d per row
        h = np.asarray(self.half_size, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1 = (-h - o) * inv  # (N, 3)
            t2 = (h - o) * inv
        t_near = np.fmax.reduce(np.fmin(t1, t2), axis=1)  # fmin/fmax skip the NaN of 0 * inf
        t_far = np.fmin.reduce(np.fmax(t1, t2), axis=1)
        t = np.where(t_near > _EPS_T, t_near, t_far)  # from inside: the exit face
        return np.where((t_far >= t_near) & (t > _EPS_T), t, np.inf)

    def surface(self, points):
        R = np.asarray(self.rotation, dtype=np.float64)
        h = np.asarray(self.half_size, dtype=np.float64)
        local = (points - self.center) @ R  # (M, 3)
        axis = np.argmax(np.abs(local) / h, axis=1)  # (M,) face axis
        rows = np.arange(points.shape[0])
        normal_local = np.zeros_like(local)
        normal_local[rows, axis] = np.sign(local[rows, axis])
        # uv: the two local coordinates other than the face axis, offset so that faces differ.
        others = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # (M, 2)
        uv = local[rows[:, None], others] + h[others]
        return normal_local @ R.T, uv


@dataclass(frozen=True, eq=False)
class Sphere:
    """A sphere of ``radius`` metres around ``center``."""

    center: np.ndarray
    radius: float
    texture: Texture

    def hit_t(self, origin, dirs):
        oc = origin - self.center  # (3,)
        a = np.einsum("ij,ij->i", dirs, dirs)  # (N,)
        half_b = dirs @ oc
        c = oc @ oc - self.radius**2
        disc = half_b * half_b - a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t_near = (-half_b - root) / a
        t_far = (-half_b + root) / a
        t = np.where(t_near > _EPS_T, t_near, t_far)
        return np.where((disc >= 0.0) & (t > _EPS_T), t, np.inf)

    def surface(self, points):
        n = (points - self.center) / self.radius  # (M, 3)
        azimuth = np.arctan2(n[:, 1], n[:, 0])
        polar = np.arccos(np.clip(n[:, 2], -1.0, 1.0))
        return n, np.stack([azimuth * self.radius, polar * self.radius], axis=1)


@dataclass(frozen=True, eq=False)
class Cylinder:
    """A closed cylinder with a vertical (world z) axis, from ``base`` (bottom centre) up ``height``."""

    base: np.ndarray
    radius: float
    height: float
    texture: Texture

    def hit_t(self, origin, dirs):
        ox, oy = origin[0] - self.base[0], origin[1] - self.base[1]
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        z0, z1 = self.base[2], self.base[2] + self.height
        a = dx * dx + dy * dy
        half_b = dx * ox + dy * oy
        c = ox * ox + oy * oy - self.radius**2
        disc = half_b * half_b - a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t_best = np.full(dirs.shape[0], np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for sign in (-1.0, 1.0):  # side wall: both roots, inside the height range
                t = (-half_b + sign * root) / a
                z = origin[2] + t * dz
                ok = (disc >= 0.0) & (a > 0.0) & (t > _EPS_T) & (z >= z0) & (z <= z1)
                t_best = np.where(ok & (t < t_best), t, t_best)
            for zc in (z0, z1):  # caps
                t = (zc - origin[2]) / dz
                x, y = ox + t * dx, oy + t * dy
                ok = (t > _EPS_T) & (x * x + y * y <= self.radius**2)
                t_best = np.where(ok & (t < t_best), t, t_best)
        return t_best

    def surface(self, points):
        rel = points - self.base  # (M, 3)
        z0_dist, z1_dist = np.abs(rel[:, 2]), np.abs(rel[:, 2] - self.height)
        radial = np.hypot(rel[:, 0], rel[:, 1])
        side_dist = np.abs(radial - self.radius)
        on_cap = np.minimum(z0_dist, z1_dist) < side_dist
        normals = np.zeros_like(rel)
        with np.errstate(divide="ignore", invalid="ignore"):
            normals[:, :2] = rel[:, :2] / radial[:, None]
        normals[on_cap] = 0.0
        normals[on_cap, 2] = np.where(z1_dist[on_cap] < z0_dist[on_cap], 1.0, -1.0)
        uv = np.where(on_cap[:, None], rel[:, :2],
                      np.stack([np.arctan2(rel[:, 1], rel[:, 0]) * self.radius, rel[:, 2]], axis=1))
        return normals, uv


# ---------------------------------------------------------------------------------------- scene


@dataclass(frozen=True, eq=False)
class Scene:
    """Primitives plus lighting, and the free-space description camera paths need.

    Attributes:
        primitives: the surfaces, any order.
        light_dir: (3,) direction the light travels, world frame (normalised when shading).
        ambient: ambient fraction of the albedo in [0, 1]; the rest is scaled by ``max(0, n . -light)``.
        room_size: ``(sx, sy, sz)`` metres of the room centred on the origin above ``z = 0``; None for
            an open scene.
        footprints: (M, 3) float64 ``(x, y, r)`` metres, circles on the floor (world xy) that contain
            each object; cameras keep out of them.
    """

    primitives: tuple
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.2, -1.0]))
    ambient: float = 0.3
    room_size: tuple[float, float, float] | None = None
    footprints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


def room_planes(size: tuple[float, float, float], textures: list[Texture]) -> list[Plane]:
    """Floor, ceiling and four walls of a room centred on the origin above ``z = 0``.

    Args:
        size: ``(sx, sy, sz)`` metres.
        textures: 6 textures: floor, ceiling, walls at -x, +x, -y, +y.

    Returns:
        The 6 planes, normals pointing into the room.
    """
    sx, sy, sz = size
    specs = [((0, 0, 0), (0, 0, 1)), ((0, 0, sz), (0, 0, -1)), ((-sx / 2, 0, 0), (1, 0, 0)),
             ((sx / 2, 0, 0), (-1, 0, 0)), ((0, -sy / 2, 0), (0, 1, 0)), ((0, sy / 2, 0), (0, -1, 0))]
    return [Plane(np.array(p, dtype=np.float64), np.array(n, dtype=np.float64), tex)
            for (p, n), tex in zip(specs, textures, strict=True)]


def random_scene(rng: np.random.Generator) -> Scene:
    """An indoor room of random size with 3-8 random objects resting on the floor.

    The room is 4-10 m x 4-10 m x 2.5-3.5 m, with floor, ceiling and walls. Objects (upright or
    yaw-rotated boxes, spheres, cylinders, 0.15-0.6 m in footprint radius, at most 1.6 m tall) stand at
    non-overlapping places at least 0.6 m from the walls, each with a random texture. Light direction and
    ambient level are random too.

    Args:
        rng: the random generator (advanced); the scene is a pure function of its state.

    Returns:
        The scene.
    """
    size = (float(rng.uniform(4.0, 10.0)), float(rng.uniform(4.0, 10.0)), float(rng.uniform(2.5, 3.5)))
    primitives: list = room_planes(size, [random_texture(rng) for _ in range(6)])
    footprints: list[tuple[float, float, float]] = []
    n_objects = int(rng.integers(3, 9))
    for _ in range(200):  # rejection sampling of places; 200 tries always suffice for <= 8 objects
        if len(footprints) == n_objects:
            break
        r = float(rng.uniform(0.15, 0.6))
        x = float(rng.uniform(-size[0] / 2 + 0.6 + r, size[0] / 2 - 0.6 - r))
        y = float(rng.uniform(-size[1] / 2 + 0.6 + r, size[1] / 2 - 0.6 - r))
        if any(math.hypot(x - fx, y - fy) < r + fr + 0.1 for fx, fy, fr in footprints):
            continue
        footprints.append((x, y, r))
        kind = rng.integers(4)
        texture = random_texture(rng)
        if kind == 0:  # sphere resting on the floor
            primitives.append(Sphere(np.array([x, y, r]), r, texture))
        elif kind == 1:
            primitives.append(Cylinder(np.array([x, y, 0.0]), r, float(rng.uniform(0.3, 1.6)), texture))
        else:  # box, axis-aligned (kind 2) or yaw-rotated (kind 3), fitting in the footprint circle
            half_xy = rng.uniform(0.4, 1.0, 2)
            half_xy *= r / np.linalg.norm(half_xy)
            half_z = float(rng.uniform(0.15, 0.8))
            yaw = float(rng.uniform(0.0, math.pi)) if kind == 3 else 0.0
            c, s = math.cos(yaw), math.sin(yaw)
            rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            primitives.append(Box(np.array([x, y, half_z]), np.array([*half_xy, half_z]), texture, rotation))
    return Scene(tuple(primitives), light_dir=np.array([*rng.uniform(-0.6, 0.6, 2), -1.0]),
                 ambient=float(rng.uniform(0.2, 0.45)), room_size=size, footprints=np.array(footprints))


# ---------------------------------------------------------------------------------------- rendering


class Rendering(NamedTuple):
    """What ``render`` returns.

    Attributes:
        rgb: (H, W, 3) uint8 sRGB-ish colours, averaged over the ``s x s`` sub-pixels (antialiased).
        depth: (H, W) float32 metres along the optical axis at the pixel centres, exact; NaN = no hit.
        depth_mixed: (H, W) float32 metres, the mean depth over the sub-pixels that hit something (NaN
            where none did): at depth edges it is a mix of both sides ("flying pixels"), like a real
            sensor or a blurred depth map. Equals ``depth`` when ``supersample == 1``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    depth_mixed: np.ndarray


def _cast(scene: Scene, camera: PinholeCamera, T_world_from_cam: np.ndarray, u: np.ndarray,
          v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and shaded colour of rays through image points ``(u, v)`` (pixels, any shape (...))."""
    R, origin = T_world_from_cam[:3, :3], T_world_from_cam[:3, 3]
    dirs_cam = np.stack([(u.ravel() - camera.cx) / camera.fx, (v.ravel() - camera.cy) / camera.fy,
                         np.ones(u.size)], axis=1)  # (N, 3), z = 1: t is the depth
    dirs = dirs_cam @ R.T  # (N, 3) world
    depth = np.full(u.size, np.inf)
    winner = np.full(u.size, -1)
    for i, prim in enumerate(scene.primitives):  # z-buffer
        t = prim.hit_t(origin, dirs)
        closer = t < depth
        depth[closer] = t[closer]
        winner[closer] = i
    color = np.zeros((u.size, 3))
    light = -_unit(scene.light_dir)
    for i, prim in enumerate(scene.primitives):
        idx = np.flatnonzero(winner == i)
        if idx.size == 0:
            continue
        points = origin + depth[idx, None] * dirs[idx]  # (M, 3)
        normals, uv = prim.surface(points)
        facing = np.sign(np.einsum("ij,ij->i", normals, dirs[idx]))  # +1 when seen from behind
        lambert = np.maximum(0.0, -facing * (normals @ light))  # normals flipped towards the camera
        color[idx] = prim.texture.albedo(uv) * (scene.ambient + (1.0 - scene.ambient) * lambert)[:, None]
    depth[~np.isfinite(depth)] = np.nan
    return depth.reshape(u.shape), color.reshape(*u.shape, 3)


def render(scene: Scene, camera: PinholeCamera, T_world_from_cam: np.ndarray, height: int, width: int,
           supersample: int = 1) -> Rendering:
    """Ray-cast the scene: antialiased colours, exact pixel-centre depth and sub-pixel-mixed depth.

    Pixel ``(v, u)`` covers image points ``[u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]``; its ``s x s``
    sub-pixels sit at offsets ``(2k + 1 - s) / (2 s)``, k = 0..s-1. For odd ``s`` the middle sub-pixel is
    the pixel centre, for even ``s`` the centres are cast once more.

    Args:
        scene: the scene.
        camera: intrinsics, pixels of the ``width x height`` image.
        T_world_from_cam: (4, 4) float rigid transform, camera optical frame -> world, metres.
        height: image height, pixels (> 0).
        width: image width, pixels (> 0).
        supersample: sub-pixels per axis ``s`` (>= 1).

    Returns:
        The ``Rendering`` (rgb, depth, depth_mixed).

    Raises:
        ValueError: non-positive size or supersample, or a pose that is not a (4, 4) array.
    """
    if height <= 0 or width <= 0 or supersample < 1:
        raise ValueError(f"need height, width, supersample >= 1, got {height}, {width}, {supersample}")
    T = np.asarray(T_world_from_cam, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_world_from_cam must be (4, 4), got {T.shape}")
    s = supersample
    offsets = (2.0 * np.arange(s) + 1.0 - s) / (2.0 * s)  # (s,)
    u = np.arange(width)[None, :, None, None] + offsets[None, None, None, :]  # (1, W, 1, s)
    v = np.arange(height)[:, None, None, None] + offsets[None, None, :, None]  # (H, 1, s, 1)
    u, v = np.broadcast_arrays(u, v)  # (H, W, s, s)
    depth_sub, color_sub = _cast(scene, camera, T, u, v)  # (H, W, s, s), (H, W, s, s, 3)
    hits = np.isfinite(depth_sub)
    n_hits = hits.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        depth_mixed = np.where(hits, depth_sub, 0.0).sum(axis=(2, 3)) / n_hits  # NaN where no hit
    if s % 2:
        depth = depth_sub[:, :, s // 2, s // 2]
    else:
        u_c, v_c = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        depth = _cast(scene, camera, T, u_c, v_c)[0]
    linear = color_sub.mean(axis=(2, 3))  # (H, W, 3), misses are black
    rgb = np.rint(np.clip(linear, 0.0, 1.0) ** (1.0 / 2.2) * 255.0).astype(np.uint8)  # gamma-encode
    return Rendering(rgb, depth.astype(np.float32), depth_mixed.astype(np.float32))
