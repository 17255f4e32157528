"""Pure-numpy geometry: back-projection, intrinsics scaling and depth decoding (no ROS imports)."""
