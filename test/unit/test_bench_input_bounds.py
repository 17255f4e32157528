"""bench_input_bounds: the bomb is refused with the limit and decoded without it."""
from pixel_perfect_ros.tools import bench_input_bounds


def test_the_bomb_is_refused_with_the_limit_and_decoded_without(capsys):
    assert bench_input_bounds.main(["--side", "4096"]) == 0  # 16.8 MP: above the 16 MP default
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PNG of 4096x4096 zeros")
    assert " refused " in lines[1] and "+0 MB" in lines[1]
    assert " decoded " in lines[2]
