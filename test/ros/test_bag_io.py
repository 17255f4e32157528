"""bag_io: matching camera frames by stamp in real rosbag2 files, errors, and the recorder."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pixel_perfect_ros.msg import DepthStatus
from pixel_perfect_ros.ros.bag_io import BagError, BagRecorder, CameraTopics, bag_extent, camera_frames
from pixel_perfect_ros.ros.conversions import depth_to_image, rgb8_to_image
from pixel_perfect_ros.ros.synthetic_bag import synthetic_camera_bag

MS = 1_000_000


def header(stamp_ns: int, frame_id: str = "cam") -> Header:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def info(stamp_ns: int) -> CameraInfo:
    return CameraInfo(header=header(stamp_ns), width=4, height=2, k=[2.0, 0, 2, 0, 2.0, 1, 0, 0, 1])


def image(stamp_ns: int) -> Image:
    return rgb8_to_image(np.full((2, 4, 3), stamp_ns // MS % 256, np.uint8), header(stamp_ns))


def write(path, messages) -> None:
    """Write (topic, rclpy message, bag time ns) in the given order."""
    with BagRecorder(path) as recorder:
        for topic, msg, time_ns in messages:
            recorder.write(topic, msg, time_ns)


def test_frames_match_by_stamp_within_tolerance_whatever_the_topic_order(tmp_path):
    # CameraInfo of image 2 arrives before the image, of image 1 after; image 3 has none within 5 ms;
    # depth comes as 16UC1 millimetres (0 = invalid) 2 ms off.
    mm = np.array([[1000, 0, 2500, 4000], [1, 2, 3, 4]], np.uint16)
    write(tmp_path / "bag", [
        ("/image", image(100 * MS), 100 * MS), ("/info", info(100 * MS), 101 * MS),
        ("/info", info(200 * MS), 199 * MS), ("/image", image(200 * MS), 200 * MS),
        ("/depth", depth_to_image(mm.astype(np.float32) / 1000, header(202 * MS), "16UC1"), 202 * MS),
        ("/image", image(300 * MS), 300 * MS), ("/info", info(310 * MS), 310 * MS),
    ])
    frames = list(camera_frames(tmp_path / "bag", CameraTopics("/image", "/info", "/depth"), tolerance_ns=5 * MS))
    assert [f.stamp_ns for f in frames] == [100 * MS, 200 * MS, 300 * MS]
    assert [f.camera_info.header.stamp.nanosec if f.camera_info else None for f in frames] == [100 * MS, 200 * MS, None]
    assert frames[0].gt_depth is None and frames[2].gt_depth is None
    np.testing.assert_allclose(frames[1].gt_depth, [[1.0, np.nan, 2.5, 4.0], [0.001, 0.002, 0.003, 0.004]], rtol=1e-6)


def test_start_end_and_stride_select_images_by_stamp(tmp_path):
    write(tmp_path / "bag", [("/image", image(t * MS), t * MS) for t in range(0, 100, 10)])
    frames = camera_frames(tmp_path / "bag", CameraTopics("/image"), start_ns=20 * MS, end_ns=80 * MS, stride=3)
    assert [f.stamp_ns // MS for f in frames] == [20, 50, 80]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_synthetic_bag_gives_every_frame_its_ground_truth_and_pose(tmp_path, storage):
    path = synthetic_camera_bag(tmp_path / "bag", 4, 24, 32, seed=2, storage=storage)
    topics = CameraTopics("/camera/image", "/camera/camera_info", "/camera/depth_gt", pose="/camera/pose")
    frames = list(camera_frames(path, topics))
    assert len(frames) == 4
    for frame in frames:
        assert frame.camera_info is not None and frame.gt_depth.shape == (24, 32) and frame.pose.shape == (4, 4)
        np.testing.assert_allclose(frame.pose[:3, :3] @ frame.pose[:3, :3].T, np.eye(3), atol=1e-9)


def test_poses_from_a_tf_topic_take_only_the_named_frame_pair(tmp_path):
    typestore = get_typestore(Stores.ROS2_KILTED)
    TF = typestore.types["tf2_msgs/msg/TFMessage"]
    TS, Tr = typestore.types["geometry_msgs/msg/TransformStamped"], typestore.types["geometry_msgs/msg/Transform"]
    V, Q = typestore.types["geometry_msgs/msg/Vector3"], typestore.types["geometry_msgs/msg/Quaternion"]
    H, T = typestore.types["std_msgs/msg/Header"], typestore.types["builtin_interfaces/msg/Time"]

    def transform(parent, child, x):
        return TS(header=H(stamp=T(sec=0, nanosec=50 * MS), frame_id=parent), child_frame_id=child,
                  transform=Tr(translation=V(x=x, y=0.0, z=0.0), rotation=Q(x=0.0, y=0.0, z=0.0, w=1.0)))

    with Writer(tmp_path / "bag", version=9) as writer:
        image_conn = writer.add_connection("/image", "sensor_msgs/msg/Image", typestore=typestore)
        tf_conn = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=typestore)
        tf = TF(transforms=[transform("map", "base", 9.0), transform("odom", "camera", 1.5)])
        writer.write(tf_conn, 50 * MS, typestore.serialize_cdr(tf, "tf2_msgs/msg/TFMessage"))
        writer.write(image_conn, 50 * MS, serialize_message(image(50 * MS)))
    with pytest.raises(BagError, match="tf topic"):
        list(camera_frames(tmp_path / "bag", CameraTopics("/image", pose="/tf")))
    (frame,) = camera_frames(tmp_path / "bag", CameraTopics("/image", pose="/tf", pose_frames=("odom", "camera")))
    np.testing.assert_allclose(frame.pose[:3, 3], [1.5, 0.0, 0.0])


def test_bag_extent_reads_start_and_count_from_the_metadata(tmp_path):
    write(tmp_path / "bag", [("/image", image(t * MS), t * MS) for t in (30, 40, 50)])
    assert bag_extent(tmp_path / "bag", "/image") == (30 * MS, 3)
    assert bag_extent(tmp_path / "bag", "/other") == (30 * MS, 0)
    with pytest.raises(BagError, match="cannot read the bag"):
        bag_extent(tmp_path / "absent", "/image")


def test_missing_and_mistyped_topics_and_corrupt_bags_are_clear_errors(tmp_path):
    path = synthetic_camera_bag(tmp_path / "bag", 2, 16, 16, seed=0)
    with pytest.raises(BagError, match=r"(?s)no topic '/color' \(image\); the bag has:\n.*/camera/image"):
        list(camera_frames(path, CameraTopics("/color")))
    with pytest.raises(BagError, match="'/camera/camera_info' .* is sensor_msgs/msg/CameraInfo, expected"):
        list(camera_frames(path, CameraTopics("/camera/image", depth="/camera/camera_info")))
    with pytest.raises(BagError, match="cannot read the bag"):
        list(camera_frames(tmp_path / "absent", CameraTopics("/camera/image")))
    (db,) = path.glob("*.db3")
    db.write_bytes(db.read_bytes()[:2000])  # truncated
    with pytest.raises(BagError, match="cannot read the bag"):
        list(camera_frames(path, CameraTopics("/camera/image")))


def test_recorder_writes_rclpy_and_package_messages_that_read_back(tmp_path):
    status = DepthStatus(header=header(7 * MS), model_id="m", steps=4, is_metric=True)
    with BagRecorder(tmp_path / "out", storage="mcap") as recorder:
        recorder.write("/depth/status", status, 7 * MS)
        recorder.write("/depth/camera_info", info(7 * MS), 7 * MS)
    assert recorder.counts == {"/depth/status": 1, "/depth/camera_info": 1}
    with Reader(tmp_path / "out") as reader:
        read = {c.topic: (c.msgtype, t, raw) for c, t, raw in reader.messages()}
    assert read["/depth/status"][0] == "pixel_perfect_ros/msg/DepthStatus" and read["/depth/status"][1] == 7 * MS
    assert deserialize_message(read["/depth/status"][2], DepthStatus) == status
    with pytest.raises(BagError, match="cannot create"):
        with BagRecorder(tmp_path / "out"):
            pass
