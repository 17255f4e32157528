"""The allocator tuning depth_node applies at start."""
import ctypes
import ctypes.util

from pixel_perfect_ros.ros.allocator import keep_freed_memory


def test_applies_on_glibc():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    assert hasattr(libc, "gnu_get_libc_version")  # this machine (Debian) runs glibc
    assert keep_freed_memory() is True
