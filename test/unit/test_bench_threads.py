"""The thread-count benchmark behind the tools' --threads default (tools/bench_threads.py), on the bundled model."""
import pytest
import torch

from pixel_perfect_ros.tools import bench_threads


def test_a_row_per_load_and_thread_count(capsys):
    threads = torch.get_num_threads()
    assert bench_threads.main(["--threads", "1,2", "--load", "0,1", "--repeats", "1", "--size", "64x48"]) == 0
    assert torch.get_num_threads() == threads
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("one 64x48 image, processing area 12288 px, median of 1")
    assert [line.split()[:2] for line in lines[2:]] == [["0", "1"], ["0", "2"], ["1", "1"], ["1", "2"]]
    assert all(float(line.split()[2]) > 0 for line in lines[2:])


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--load", "-1"], ["--threads", ""], ["--target-area", "5"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        bench_threads.main(argv)
    assert exit_info.value.code == 2
