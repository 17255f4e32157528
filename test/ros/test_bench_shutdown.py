"""bench_shutdown: a real depth_node process stopped like ros2 launch stops it exits 0 on SIGINT."""
from pixel_perfect_ros.tools import bench_shutdown


def test_the_node_stops_on_sigint_with_exit_code_0(capsys):
    assert bench_shutdown.main(["--target-area", "3072"]) == 0
    out = capsys.readouterr().out
    assert "exit code 0 after" in out and "(last signal sent: SIGINT)" in out, out
