"""The Nav2 and MoveIt snippets in config/ point at depth_node's cloud, with the right data type."""
from pathlib import Path

import yaml
from sensor_msgs.msg import PointCloud2

from pixel_perfect_ros.ros.depth_node import DepthNode

CONFIG = Path(__file__).resolve().parents[2] / "config"
POINTS_TOPIC = "/depth/points"  # depth_node's depth/points in the root namespace


def test_node_publishes_the_cloud_the_snippets_name(ros, tiny_checkpoints):
    node: DepthNode = ros.depth_node(tiny_checkpoints)
    assert node._pub_points.topic_name == POINTS_TOPIC and node._pub_points.msg_type is PointCloud2


def test_nav2_voxel_layer_observes_depth_points():
    params = yaml.safe_load((CONFIG / "nav2_costmap_depth.yaml").read_text())
    layer = params["local_costmap"]["local_costmap"]["ros__parameters"]["voxel_layer"]
    assert "voxel_layer" in params["local_costmap"]["local_costmap"]["ros__parameters"]["plugins"]
    source = layer[layer["observation_sources"]]
    assert (source["topic"], source["data_type"]) == (POINTS_TOPIC, "PointCloud2")
    assert source["inf_is_valid"] is False and source["marking"] and source["clearing"]
    assert 0 < source["obstacle_min_range"] < source["obstacle_max_range"] <= source["raytrace_max_range"]


def test_moveit_octomap_updater_reads_depth_points():
    sensors = yaml.safe_load((CONFIG / "moveit_sensors_3d.yaml").read_text())
    (name,) = sensors["sensors"]
    sensor = sensors[name]
    assert sensor["sensor_plugin"] == "occupancy_map_monitor/PointCloudOctomapUpdater"
    assert sensor["point_cloud_topic"] == POINTS_TOPIC and sensor["max_range"] > 0
