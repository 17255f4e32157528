"""Fixtures for the tests over real rclpy and DDS."""
import pytest
from ros_harness import RosHarness


@pytest.fixture()
def ros():
    """A fresh rclpy context on a random domain id, with an executor spinning in the background."""
    harness = RosHarness()
    yield harness
    harness.close()
