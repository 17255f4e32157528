"""Synthetic world: exact depth of known geometry, occlusion, supersampling, determinism, paths, bags."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image

from pixel_perfect_ros.geometry.camera import PinholeCamera
from pixel_perfect_ros.geometry.poses import pose_to_position_quaternion, position_quaternion_to_pose
from pixel_perfect_ros.geometry.projection import back_project
from pixel_perfect_ros.ros.conversions import image_to_depth, image_to_rgb8
from pixel_perfect_ros.ros.synthetic_bag import synthetic_camera_bag
from pixel_perfect_ros.synthetic.dataset import make_dataset
from pixel_perfect_ros.synthetic.scene import Box, Cylinder, Plane, Scene, Sphere, Texture, random_scene, render
from pixel_perfect_ros.synthetic.trajectory import camera_path, clearance, look_at

GREY = Texture("solid", np.full(3, 0.5), np.full(3, 0.5))
FLOOR = Plane(np.zeros(3), np.array([0.0, 0.0, 1.0]), GREY)


def test_floor_depth_is_exact():
    """Camera 1.5 m above a floor, looking horizontally: depth(v) = h * fy / (v - cy) below the horizon."""
    camera = PinholeCamera(fx=50.0, fy=40.0, cx=31.5, cy=23.5)
    T = look_at(np.array([0.0, 0.0, 1.5]), np.array([1.0, 0.0, 1.5]))
    depth = render(Scene((FLOOR,)), camera, T, 48, 64).depth
    v = np.arange(48, dtype=np.float64)
    expected = np.where(v > camera.cy, 1.5 * camera.fy / (v - camera.cy), np.nan)[:, None].repeat(64, axis=1)
    np.testing.assert_allclose(depth, expected.astype(np.float32), rtol=1e-6)  # NaN above the horizon
    assert np.isnan(depth[:24]).all() and np.isfinite(depth[24:]).all()


def test_back_projected_plane_lies_on_plane():
    """A tilted camera: back_project(depth) with K, moved to the world by T, has z = 0 on the floor."""
    camera = PinholeCamera.from_fov(80, 60, 70.0)
    T = look_at(np.array([0.3, -0.2, 1.3]), np.array([2.0, 1.0, 0.0]))
    depth = render(Scene((FLOOR,)), camera, T, 60, 80).depth
    points = back_project(depth, camera.fx, camera.fy, camera.cx, camera.cy).reshape(-1, 3).astype(np.float64)
    valid = np.isfinite(points[:, 2])
    assert valid.mean() > 0.5
    world = points[valid] @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(world[:, 2], 0.0, atol=1e-5)


def test_sphere_silhouette_and_depth():
    """Sphere r = 1 at 5 m on the axis: centre depth 4, hits exactly where the ray passes within r."""
    camera = PinholeCamera(fx=30.0, fy=30.0, cx=32.0, cy=24.0)
    centre = np.array([0.0, 0.0, 5.0])
    scene = Scene((Sphere(centre, 1.0, GREY),))
    depth = render(scene, camera, np.eye(4), 49, 65).depth  # camera frame = world
    assert depth[24, 32] == 4.0
    u, v = np.meshgrid(np.arange(65.0), np.arange(49.0))
    rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1)
    miss_distance = np.linalg.norm(np.cross(rays, centre), axis=-1) / np.linalg.norm(rays, axis=-1)
    clear = np.abs(miss_distance - 1.0) > 1e-6
    np.testing.assert_array_equal(np.isfinite(depth)[clear], (miss_distance < 1.0)[clear])
    points = back_project(depth, camera.fx, camera.fy, camera.cx, camera.cy)[np.isfinite(depth)]
    np.testing.assert_allclose(np.linalg.norm(points - centre, axis=1), 1.0, atol=1e-5)
    assert (points[:, 2] <= centre[2]).all()  # the near side


def test_nearest_hit_wins_in_any_order():
    """A sphere in front of a box in front of a wall: each pixel shows the nearest, whatever the order."""
    camera = PinholeCamera(fx=30.0, fy=30.0, cx=32.0, cy=24.0)
    sphere = Sphere(np.array([0.0, 0.0, 5.0]), 1.0, GREY)
    box = Box(np.array([0.0, 0.0, 8.0]), np.array([3.0, 3.0, 0.5]), GREY)
    wall = Plane(np.array([0.0, 0.0, 12.0]), np.array([0.0, 0.0, -1.0]), GREY)
    cylinder = Cylinder(np.array([-1.5, 0.0, 3.0]), 0.2, 0.5, GREY)  # up is world z = optical z here
    forward = render(Scene((wall, box, sphere, cylinder)), camera, np.eye(4), 49, 65).depth
    backward = render(Scene((cylinder, sphere, box, wall)), camera, np.eye(4), 49, 65).depth
    np.testing.assert_array_equal(forward, backward)
    assert forward[24, 32] == 4.0  # sphere
    assert forward[24, 32 + 12] == 7.5  # box front face, outside the sphere (1.2 m off axis at 7.5 m)
    assert forward[24, 64] == 12.0  # wall, outside the box (3.7 m off axis at 12 m)
    assert forward[24, 17] == 3.0  # cylinder bottom cap, facing the camera, in front of the box


def test_supersampled_depth_mixes_exactly_at_edges():
    """Box face at 2 m, wall at 6 m, edge at u = 10.3.

    s = 3 (sub-pixels at u +- 1/3) mixes only column 10, as (2 + 2 + 6) / 3; s = 2 (u +- 1/4) mixes nothing.
    """
    camera = PinholeCamera(fx=10.0, fy=10.0, cx=9.5, cy=4.5)
    x_edge = (10.3 - camera.cx) / camera.fx * 2.0
    box = Box(np.array([x_edge - 5.0, 0.0, 2.5]), np.array([5.0, 10.0, 0.5]), GREY)
    wall = Plane(np.array([0.0, 0.0, 6.0]), np.array([0.0, 0.0, -1.0]), GREY)
    out = render(Scene((box, wall)), camera, np.eye(4), 10, 20, supersample=3)
    assert (out.depth[:, :11] == 2.0).all() and (out.depth[:, 11:] == 6.0).all()
    np.testing.assert_allclose(out.depth_mixed[:, 10], np.float32(10.0 / 3.0), rtol=1e-6)
    others = np.delete(np.arange(20), 10)
    np.testing.assert_allclose(out.depth_mixed[:, others], out.depth[:, others], rtol=1e-6)
    even = render(Scene((box, wall)), camera, np.eye(4), 10, 20, supersample=2)  # even s: centres recast
    np.testing.assert_array_equal(even.depth, out.depth)
    np.testing.assert_array_equal(even.depth_mixed, even.depth)


def test_dataset_is_deterministic_and_seed_dependent():
    first = make_dataset(3, 24, 32, seed=7)
    again = make_dataset(3, 24, 32, seed=7)
    other = make_dataset(3, 24, 32, seed=8)
    for key in ("rgb", "depth", "depth_mixed", "T_world_from_cam"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["rgb"], other["rgb"])
    assert first["rgb"].shape == (3, 24, 32, 3) and first["rgb"].dtype == np.uint8
    assert first["depth"].dtype == np.float32 and first["K"].shape == (3, 3)
    assert np.isfinite(first["depth"]).all() and (first["depth"] > 0).all()  # closed rooms
    assert len({first["rgb"][i].tobytes() for i in range(3)}) == 3  # each sample its own scene
    np.testing.assert_array_equal(make_dataset(2, 24, 32, seed=7)["rgb"], first["rgb"][:2])


def test_random_scenes_vary_with_the_seed():
    scenes = [random_scene(np.random.default_rng(seed)) for seed in range(20)]
    counts = {len(s.primitives) - 6 for s in scenes}
    assert counts <= set(range(3, 9)) and len(counts) > 2
    kinds = {type(p).__name__ for s in scenes for p in s.primitives[6:]}
    assert kinds == {"Box", "Sphere", "Cylinder"}
    textures = {p.texture.kind for s in scenes for p in s.primitives}
    assert textures == {"solid", "checker", "stripes", "noise"}


def test_camera_path_is_smooth_and_collision_free():
    rng = np.random.default_rng(3)
    scene = random_scene(rng)
    poses = camera_path(scene, 30, rng)
    positions = np.array([T[:3, 3] for T in poses])
    assert clearance(scene, positions[:, :2]).min() >= 0.4
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert steps.max() < 0.5 and steps.max() < 1.5 * steps.mean()  # nearly constant speed
    for T in poses:
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
        assert T[2, 1] < 0.0  # image down has a downward world component: upright camera
        position, q = pose_to_position_quaternion(T)
        np.testing.assert_allclose(position_quaternion_to_pose(position, q), T, atol=1e-12)


def test_quaternion_of_known_rotation():
    T = look_at(np.zeros(3), np.array([1.0, 0.0, 0.0]))  # optical z = world x, x = -y, y = -z
    _, q = pose_to_position_quaternion(T)
    np.testing.assert_allclose(q, [0.5, -0.5, 0.5, -0.5], atol=1e-12)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip(tmp_path, storage):
    path = synthetic_camera_bag(tmp_path / "bag", 3, 24, 32, seed=5, fps=20.0, start_ns=10**18, storage=storage)
    rng = np.random.default_rng(5)
    scene = random_scene(rng)
    poses = camera_path(scene, 3, rng)
    camera = PinholeCamera.from_fov(32, 24)
    expected = [render(scene, camera, T, 24, 32, 2) for T in poses]
    stamps = [10**18 + i * 50_000_000 for i in range(3)]
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {"/camera/image": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
                         "/camera/depth_gt": "sensor_msgs/msg/Image", "/camera/pose": "geometry_msgs/msg/PoseStamped"}
        messages = {}
        for connection, timestamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((timestamp, raw))
    assert {topic: [t for t, _ in items] for topic, items in messages.items()} == dict.fromkeys(types, stamps)
    for i, (_, raw) in enumerate(messages["/camera/image"]):
        image = deserialize_message(raw, Image)
        assert image.encoding == "rgb8" and image.header.frame_id == "camera_optical_frame"
        assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == stamps[i]
        np.testing.assert_array_equal(image_to_rgb8(image), expected[i].rgb)
    for i, (_, raw) in enumerate(messages["/camera/depth_gt"]):
        image = deserialize_message(raw, Image)
        assert image.encoding == "32FC1"
        np.testing.assert_array_equal(image_to_depth(image), expected[i].depth)
    info = deserialize_message(messages["/camera/camera_info"][0][1], CameraInfo)
    assert info.distortion_model == "plumb_bob" and (info.width, info.height) == (32, 24)
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), camera.K)
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], camera.K)
    assert not np.any(info.d)
    pose = get_typestore(Stores.ROS2_KILTED).deserialize_cdr(
        messages["/camera/pose"][2][1], "geometry_msgs/msg/PoseStamped")
    assert pose.header.frame_id == "world"
    o = pose.pose.orientation
    np.testing.assert_allclose(position_quaternion_to_pose(
        [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z], [o.w, o.x, o.y, o.z]), poses[2], atol=1e-12)
