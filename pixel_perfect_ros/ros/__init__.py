"""ROS 2 layer: message conversions, point clouds and nodes (the only layer that imports rclpy)."""
