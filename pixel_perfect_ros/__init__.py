"""pixel_perfect_ros: Pixel-Perfect Depth for ROS 2.

Layers (imports point down only): model -> inference -> geometry -> ros -> tools. Nothing outside
``ros/`` imports rclpy.
"""
