"""Pixel-Perfect Depth node with its parameters file, topic remaps and an optional RViz.

    ros2 launch pixel_perfect_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info checkpoint:=/path/ppd.pth \
        semantics:=/path/depth_anything_v2_vitl.pth rviz:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "pixel_perfect_ros"
MODEL_PARAMETERS = ("mode", "checkpoint", "semantics", "semantics_type")
"""Node parameters that launch arguments of the same name override when given (non-empty)."""


def _depth_node(context):
    overrides = {name: LaunchConfiguration(name).perform(context) for name in MODEL_PARAMETERS}
    overrides = {name: value for name, value in overrides.items() if value}
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    image = LaunchConfiguration("image").perform(context)
    return [Node(
        package=PACKAGE,
        executable="depth_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides, {"use_sim_time": use_sim_time}],
        remappings=[
            ("image", image),
            ("image/compressed", f"{image}/compressed"),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="image", description="camera image topic (raw; its "
                              "'/compressed' sibling is used when the parameter use_compressed is true)"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="camera info topic"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace (outputs: <ns>/depth/...)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "depth.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("mode", default_value="", description="image | video (ppvd.pth + Pi3 "
                              "model.safetensors); empty: the params file's value"),
        DeclareLaunchArgument("checkpoint", default_value="", description="PPD checkpoint (ppd.pth / ppd_moge.pth; "
                              "video: ppvd.pth); empty: the params file's value"),
        DeclareLaunchArgument("semantics", default_value="", description="semantics checkpoint; empty: params file"),
        DeclareLaunchArgument("semantics_type", default_value="", description="da2 | moge2; empty: params file"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="open RViz with config/depth.rviz"),
        OpaqueFunction(function=_depth_node),
        Node(
            package="rviz2",
            executable="rviz2",
            arguments=["-d", PathJoinSubstitution([share, "config", "depth.rviz"])],
            parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
