"""Organized PointCloud2 packing, parsed back from msg.data with numpy."""
import numpy as np
import pytest
import sensor_msgs.msg._point_cloud2
import sensor_msgs.msg._point_field
import std_msgs.msg._header
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from pixel_perfect_ros.ros.pointcloud import cloud_array, pack_rgb, point_cloud

FX, FY, CX, CY = 200.0, 210.0, 31.5, 23.5
P = np.array([[FX, 0.0, CX, -10.0], [0.0, FY, CY, 0.0], [0.0, 0.0, 1.0, 0.0]])


def parse(msg: PointCloud2) -> np.ndarray:
    """(height, width, point_step / 4) little-endian float32 view of an organized cloud's data."""
    return np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width, msg.point_step // 4)


def decode_rgb(points: np.ndarray) -> np.ndarray:
    """(..., 4) parsed points -> (..., 3) uint8 RGB from the packed float's 0x00RRGGBB bits."""
    bits = points[..., 3].view("<u4")
    assert not (bits >> 24).any()  # top byte is zero
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


@pytest.fixture(params=[False, True], ids=["plain", "check_fields"])
def check_fields(request, monkeypatch):
    """Run the test also as with ROS_PYTHON_CHECK_FIELDS=1 (field type asserts on every assignment)."""
    if request.param:
        for module in (sensor_msgs.msg._point_cloud2, sensor_msgs.msg._point_field, std_msgs.msg._header):
            monkeypatch.setattr(module, "ros_python_check_fields", "1")
    return request.param


@pytest.fixture
def scene():
    """A 48x64 depth image (a 2 m plane with invalid pixels) and a random RGB image."""
    rng = np.random.default_rng(0)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[5, 7] = np.nan
    depth[6, 8] = np.inf
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return depth, rgb


@pytest.mark.parametrize("with_rgb", [False, True], ids=["xyz", "xyzrgb"])
def test_layout(scene, with_rgb, check_fields):
    depth, rgb = scene
    header = Header(frame_id="cam_optical")
    msg = point_cloud(depth, P, header, rgb if with_rgb else None)
    names = ["x", "y", "z", "rgb"] if with_rgb else ["x", "y", "z"]
    assert [f.name for f in msg.fields] == names
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12][:len(names)]
    assert all(f.datatype == PointField.FLOAT32 and f.count == 1 for f in msg.fields)
    point_step = 16 if with_rgb else 12
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (48, 64, point_step, point_step * 64)
    assert msg.is_dense is False and msg.is_bigendian is False
    assert len(msg.data) == msg.row_step * msg.height
    assert msg.header is header


def test_plane_back_projection(scene):
    depth, _ = scene
    points = parse(point_cloud(depth, P, Header()))
    v, u = np.mgrid[0:48, 0:64]
    valid = np.isfinite(depth)
    np.testing.assert_allclose(points[..., 0][valid], ((u - CX) * 2.0 / FX)[valid], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(points[..., 1][valid], ((v - CY) * 2.0 / FY)[valid], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(points[..., 2][valid], 2.0)


def test_invalid_depth_is_nan_and_keeps_colour(scene):
    depth, rgb = scene
    points = parse(point_cloud(depth, P, Header(), rgb))
    assert np.isnan(points[5, 7, :3]).all() and np.isnan(points[6, 8, :3]).all()
    assert np.isfinite(points[..., :3]).all(axis=2).sum() == 48 * 64 - 2
    np.testing.assert_array_equal(decode_rgb(points[5, 7]), rgb[5, 7])


def test_rgb_packing_decodes_to_0x00rrggbb(scene):
    depth, rgb = scene
    points = parse(point_cloud(depth, P, Header(), rgb))
    np.testing.assert_array_equal(decode_rgb(points), rgb)
    bits = points[..., 3].view("<u4")
    r, g, b = (rgb[1, 2].astype(np.uint32))
    assert bits[1, 2] == (r << 16) | (g << 8) | b
    # The xyz part is the same as without colour.
    np.testing.assert_array_equal(points[..., :3], parse(point_cloud(depth, P, Header()))[..., :3])


def test_pack_rgb_known_colour():
    packed = pack_rgb(np.array([[[0x12, 0x34, 0x56], [255, 0, 1]]], np.uint8))
    assert packed.shape == (1, 2) and packed.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(packed.view("<u4"), [[0x00123456, 0x00FF0001]])


@pytest.mark.parametrize("decimation", [2, 3, 5])
def test_decimation_gives_the_full_resolution_points(decimation):
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 8.0, (47, 61)).astype(np.float32)  # odd sizes: last row/column kept
    depth[rng.random(depth.shape) < 0.1] = np.nan
    rgb = rng.integers(0, 256, (47, 61, 3), dtype=np.uint8)
    full = parse(point_cloud(depth, P, Header(), rgb))
    msg = point_cloud(depth, P, Header(), rgb, decimation=decimation)
    h, w = -(-47 // decimation), -(-61 // decimation)
    assert (msg.height, msg.width, msg.row_step) == (h, w, 16 * w)
    decimated = parse(msg)
    np.testing.assert_array_equal(decimated[..., :3], full[::decimation, ::decimation, :3])  # NaN == NaN here
    np.testing.assert_array_equal(decode_rgb(decimated), rgb[::decimation, ::decimation])


def test_k_and_float64_depth_are_accepted(scene):
    depth, _ = scene
    from_p = cloud_array(depth, P)
    np.testing.assert_array_equal(cloud_array(depth, P[:, :3]), from_p)
    np.testing.assert_allclose(cloud_array(depth.astype(np.float64), P), from_p, rtol=1e-6)


def test_cloud_array_is_what_the_message_carries(scene):
    depth, rgb = scene
    cloud = cloud_array(depth, P, rgb, decimation=2)
    assert cloud.shape == (24, 32, 4) and cloud.dtype == np.dtype("<f4") and cloud.flags.c_contiguous
    assert bytes(point_cloud(depth, P, Header(), rgb, decimation=2).data) == cloud.tobytes()


@pytest.mark.parametrize("kwargs, match", [
    (dict(rgb=np.zeros((48, 63, 3), np.uint8)), "rgb is 63x48 but depth is 64x48"),
    (dict(rgb=np.zeros((24, 32, 3), np.uint8), decimation=2), "rgb is 32x24 but depth is 64x48"),
    (dict(rgb=np.zeros((48, 64, 3), np.float32)), "rgb must be an"),
    (dict(rgb=np.zeros((48, 64, 4), np.uint8)), "rgb must be an"),
    (dict(decimation=0), "decimation must be"),
    (dict(decimation=1.5), "decimation must be"),
    (dict(P=np.eye(4)), "P must be"),
    (dict(P=np.zeros((3, 4))), "fx must be finite and nonzero"),
])
def test_errors(scene, kwargs, match):
    depth, _ = scene
    args = dict(depth=depth, P=P, header=Header()) | kwargs
    with pytest.raises(ValueError, match=match):
        point_cloud(**args)
