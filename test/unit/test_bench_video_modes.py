"""tools/bench_video_modes.py: the table's structure on the tiny models (no timing asserted)."""
import pytest

from pixel_perfect_ros.tools import bench_video_modes


def test_prints_one_row_per_mode_and_k(capsys):
    assert bench_video_modes.main(["--frames", "5", "--size", "32x32", "--steps", "1", "--k", "1", "2",
                                   "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "NOT quality measures" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert [cell.strip() for cell in header][:3] == ["mode", "K", "frames out"]
    assert [(row[0].strip(), int(row[1])) for row in body] == [
        ("window", 13), ("stream_exact", 1), ("stream_exact", 2), ("stream_cached", 1), ("stream_cached", 2)]
    assert all(len(row) == len(header) for row in body)
    cells = {(row[0].strip(), int(row[1])): [cell.strip() for cell in row] for row in body}
    # frames out: every frame (3 filling frames, then 2 new frames: one group of K = 2)
    assert [int(cells[key][2]) for key in cells] == [5, 5, 5, 5, 5]
    # DiT frame-passes per output frame after the cache is ready: exact (3 + K) / K; cached 1 + 3 / outputs
    assert float(cells["stream_exact", 1][3]) == 4.0 and float(cells["stream_exact", 2][3]) == 2.5
    assert float(cells["stream_cached", 1][3]) == 2.5 and float(cells["stream_cached", 2][3]) == 2.5
    assert cells["window", 13][4] == "1.00" and cells["window", 13][8] == "0.00000"
    # latency: window 0 runs when the clip's last frame (4) is in; streams wait K - 1 frames
    assert [int(cells[key][7]) for key in cells] == [4, 0, 1, 0, 1]
    assert cells["stream_exact", 1][11] == "-" and float(cells["stream_cached", 1][11]) >= 0


@pytest.mark.parametrize("argv", [["--k", "0"], ["--k", "14"], ["--size", "30x30"], ["--architecture", "huge"]])
def test_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        bench_video_modes.parse_args(argv)


def test_full_size_selects_the_official_architecture():
    assert bench_video_modes.parse_args(["--full-size"]).architecture == "official"
    assert bench_video_modes.parse_args([]).architecture == "tiny"
