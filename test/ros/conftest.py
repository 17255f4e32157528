"""Fixtures for the tests over real rclpy and DDS."""
import pytest
import torch
from ros_harness import RosHarness


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """A node started in-process sets torch's (process-wide) thread count (its parameter torch_threads):
    restore it, so later tests compute with the count they started with."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def ros():
    """A fresh rclpy context on a random domain id, with an executor spinning in the background."""
    harness = RosHarness()
    yield harness
    harness.close()
