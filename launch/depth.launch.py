"""Pixel-Perfect Depth node with its parameters file, topic remaps, the shared-memory Fast DDS profile
and an optional RViz.

    ros2 launch pixel_perfect_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info checkpoint:=/path/ppd.pth \
        semantics:=/path/depth_anything_v2_vitl.pth rviz:=true

What starts, in which order, with which parameters and environment is decided by plain functions of
the launch arguments' strings (``node_specs`` and the functions it calls); ``launch`` and
``launch_ros`` are imported only where ``generate_launch_description`` needs them, so tests load this
file without a ROS 2 launch install.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pixel_perfect_ros.ros.fastdds import profile_variable

PACKAGE = "pixel_perfect_ros"
SHARE = Path(__file__).absolute().parent.parent
"""This package's share folder (installed) or the repository (source checkout): both hold config/."""
MODEL_PARAMETERS = ("mode", "checkpoint", "semantics", "semantics_type")
"""Node parameters that launch arguments of the same name override when given (non-empty)."""
FLAGS = ["true", "false"]
SIM_TIME_CHOICES = ["", "true", "false"]
"""use_sim_time's values: empty keeps the params file's value."""
def default_profile(environ: Mapping[str, str], shipped: str) -> str:
    """fastdds_profile's default: the profile file the environment already names (exported), else ``shipped``."""
    return environ.get(profile_variable(environ.get("ROS_DISTRO", ""))) or shipped


def profile_environment(profile: str, distro: str) -> dict[str, str]:
    """Environment added to the started processes: ``profile`` in ``distro``'s variable; none for ""."""
    return {profile_variable(distro): profile} if profile else {}


def sim_time_parameters(use_sim_time: str) -> list[dict[str, bool]]:
    """use_sim_time as given on the command line; none when empty (the params file's value holds)."""
    return [{"use_sim_time": use_sim_time == "true"}] if use_sim_time else []


def node_parameters(params_file: str, overrides: Mapping[str, str], use_sim_time: str) -> list:
    """depth_node's parameters, later entries winning: the params file, the non-empty ``overrides``
    (``MODEL_PARAMETERS``), use_sim_time when given."""
    given = {name: value for name, value in overrides.items() if value}
    return [params_file, *([given] if given else []), *sim_time_parameters(use_sim_time)]


def installed(package: str, context) -> bool:
    """Whether the ament index (the sourced ROS 2 install and workspaces) holds ``package``."""
    from launch_ros.substitutions import FindPackageShare

    try:
        FindPackageShare(package).perform(context)
    except KeyError:  # ament_index_python's PackageNotFoundError
        return False
    return True


def start_rviz(rviz: str, is_installed: Callable[[str], bool]) -> bool:
    """Whether RViz starts (rviz "true").

    Raises:
        RuntimeError: RViz asked for but the rviz2 package is not installed (the message says what to do).
    """
    if rviz == "true" and not is_installed("rviz2"):
        raise RuntimeError("rviz:=true, but the rviz2 package is not installed (not in the ament index): "
                           "sudo apt install ros-$ROS_DISTRO-rviz2, or launch with rviz:=false")
    return rviz == "true"


def node_specs(values: Mapping[str, str], distro: str, is_installed: Callable[[str], bool]) -> list[dict]:
    """Keyword arguments of launch_ros ``Node`` for each process, in start order: RViz (when ``rviz`` is
    true) then depth_node, both in ``namespace`` and with the Fast DDS profile's environment.

    Args:
        values: every launch argument's value (``context.launch_configurations``).
        distro: ROS_DISTRO (which profile variable Fast DDS reads).
        is_installed: whether a package is installed (``installed`` in this launch's context).

    Raises:
        RuntimeError: from ``start_rviz``, before any process is described.
    """
    rviz = start_rviz(values["rviz"], is_installed)
    environment = profile_environment(values["fastdds_profile"], distro)
    namespace, image = values["namespace"], values["image"]
    depth_node = dict(
        package=PACKAGE, executable="depth_node", namespace=namespace, additional_env=environment,
        parameters=node_parameters(values["params_file"], {name: values[name] for name in MODEL_PARAMETERS},
                                   values["use_sim_time"]),
        remappings=[("image", image), ("image/compressed", f"{image}/compressed"),
                    ("camera_info", values["camera_info"])],
        output="screen", emulate_tty=True)
    if not rviz:
        return [depth_node]
    # RViz reads use_sim_time from the same params file ("/**"); it declares none of the node's others.
    return [dict(package="rviz2", executable="rviz2", namespace=namespace, additional_env=environment,
                 arguments=["-d", str(SHARE / "config" / "depth.rviz")],
                 parameters=[values["params_file"], *sim_time_parameters(values["use_sim_time"])]),
            depth_node]


def _start(context) -> list:
    """The Node actions of ``node_specs`` for this launch's argument values."""
    from launch_ros.actions import Node

    return [Node(**spec) for spec in node_specs(context.launch_configurations, os.environ.get("ROS_DISTRO", ""),
                                                lambda package: installed(package, context))]


def generate_launch_description():
    """Declare the launch arguments (bad values end the launch here), then start the processes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="image", description="camera image topic (raw; its "
                              "'/compressed' sibling is used when the parameter use_compressed is true)"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="camera info topic"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and RViz "
                              "(outputs: <ns>/depth/...)"),
        DeclareLaunchArgument("params_file", default_value=str(SHARE / "config" / "depth.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("mode", default_value="", description="image | video (ppvd.pth + Pi3 "
                              "model.safetensors); empty: the params file's value"),
        DeclareLaunchArgument("checkpoint", default_value="", description="PPD checkpoint (ppd.pth / ppd_moge.pth; "
                              "video: ppvd.pth); empty: the params file's value"),
        DeclareLaunchArgument("semantics", default_value="", description="semantics checkpoint; empty: params file"),
        DeclareLaunchArgument("semantics_type", default_value="", description="da2 | moge2; empty: params file"),
        DeclareLaunchArgument("use_sim_time", default_value="", choices=SIM_TIME_CHOICES,
                              description="use /clock (bag replay); empty: the params file's value"),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=default_profile(os.environ, str(SHARE / "config" / "fastdds_shm.xml")),
            description="Fast DDS XML profile for the node and RViz (default: the one the environment names, "
                        "else the shipped shared-memory profile config/fastdds_shm.xml); empty: the environment "
                        "as it is. Fast DDS only (rmw_fastrtps_cpp, the default RMW); other RMWs ignore it"),
        DeclareLaunchArgument("rviz", default_value="false", choices=FLAGS,
                              description="start RViz (package rviz2) with config/depth.rviz before the node"),
        OpaqueFunction(function=_start),
    ])
