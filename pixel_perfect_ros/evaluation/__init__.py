"""ROS-free evaluation: sequence metrics and their aggregation, JSON/CSV/HTML reports, depth file I/O."""
