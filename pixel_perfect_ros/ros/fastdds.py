"""Which environment variable names Fast DDS's XML profile file, per ROS 2 distribution (no rclpy)."""
from __future__ import annotations

FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
"""ROS 2 distributions whose Fast DDS 2.x reads its XML profile from FASTRTPS_DEFAULT_PROFILES_FILE;
Fast DDS 3 (Kilted and later) reads FASTDDS_DEFAULT_PROFILES_FILE, and Kilted's rmw_fastrtps warns
that the old name is deprecated, so only the distribution's own name is set."""
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def profile_variable(distro: str) -> str:
    """The environment variable naming the XML profile file for the Fast DDS of ``distro`` (ROS_DISTRO;
    empty or unknown: Fast DDS 3's)."""
    return PROFILE_VARIABLES[1] if distro in FAST_DDS_2_DISTROS else PROFILE_VARIABLES[0]
