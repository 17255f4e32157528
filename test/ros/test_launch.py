"""launch_testing: depth.launch.py starts the node and its outputs appear.

Runs where ROS 2 launch and launch_testing are installed (a ROS 2 install: `launch_test` or colcon
test) with PPD_TEST_CHECKPOINT and PPD_TEST_SEMANTICS naming a PPD and a DA2 checkpoint; launch is not
installable from PyPI, so on the CI machine this module is skipped.
"""
import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch/launch_testing are not installable from PyPI (needs a ROS 2 install)")

import os  # noqa: E402
import unittest  # noqa: E402

import launch  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    launch_file = PathJoinSubstitution([FindPackageShare("pixel_perfect_ros"), "launch", "depth.launch.py"])
    return launch.LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file), launch_arguments={
            "checkpoint": os.environ["PPD_TEST_CHECKPOINT"], "semantics": os.environ["PPD_TEST_SEMANTICS"],
        }.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestDepthLaunch(unittest.TestCase):
    def test_node_advertises_outputs(self):
        rclpy.init()
        node = rclpy.create_node("launch_probe")
        try:
            deadline = node.get_clock().now().nanoseconds + 20e9
            topics = set()
            while node.get_clock().now().nanoseconds < deadline and "/depth/status" not in topics:
                rclpy.spin_once(node, timeout_sec=0.2)
                topics = {name for name, _ in node.get_topic_names_and_types()}
            types = dict(node.get_topic_names_and_types())
            self.assertEqual(types.get("/depth/image"), ["sensor_msgs/msg/Image"])
            self.assertEqual(types.get("/depth/points"), ["sensor_msgs/msg/PointCloud2"])
            self.assertEqual(types.get("/depth/status"), ["pixel_perfect_ros/msg/DepthStatus"])
        finally:
            node.destroy_node()
            rclpy.shutdown()
