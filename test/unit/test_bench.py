"""tools/bench.py (ppd-bench): the smoke run's table structure on the bundled model (no timing asserted)."""
import json

import pytest
import torch

from pixel_perfect_ros.inference.backends import create_backend, tensorrt_backend
from pixel_perfect_ros.inference.backends.torch_backend import TorchBackend
from pixel_perfect_ros.inference.benchmark import STAGES
from pixel_perfect_ros.inference.benchmark_report import COLUMNS
from pixel_perfect_ros.ros import benchmark
from pixel_perfect_ros.tools import bench


def _table(out: str) -> tuple[list[str], list[list[str]]]:
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    return rows[0], rows[1:]


@pytest.fixture
def missing_onnxruntime(monkeypatch):
    """create_backend raises for onnxruntime as it does while its module is absent; others run as is."""
    def fake(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ModuleNotFoundError("No module named 'onnxruntime_backend'")
        return create_backend(name, *args, **kwargs)
    monkeypatch.setattr(benchmark, "create_backend", fake)


def test_smoke_prints_the_table(capsys, tmp_path, missing_onnxruntime):
    json_path = tmp_path / "rows.json"
    threads = torch.get_num_threads()
    assert bench.main(["--smoke", "--steps", "1,2", "--backends", "torch,onnxruntime,tensorrt", "--dtypes", "fp32",
                       "--threads", "1", "--engine-dir", str(tmp_path), "--json", str(json_path)]) == 0
    assert torch.get_num_threads() == threads  # --threads applies to the run only (float results depend on it)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("ppd-bench ") and "torch " in first and "threads 1" in first and "architecture bundled" in first
    assert "measured fp32 matmul" in out and "### 64x48 (W x H)" in out
    header, body = _table(out)
    assert tuple(header) == COLUMNS
    assert all(len(row) == len(header) for row in body)
    col = {name: i for i, name in enumerate(header)}
    assert [(row[0], row[1], row[2]) for row in body] == [
        ("torch", "fp32", "1"), ("torch", "fp32", "2"), ("onnxruntime", "fp32", "-"), ("tensorrt", "fp32", "-")]
    for base in body[:2]:
        assert base[col["speed-up"]] == "1.00" and base[col["note"]] == "baseline"
        assert float(base[col["max diff"]]) == 0 and float(base[col["p99 diff"]]) == 0
        assert float(base[col["total ms"]]) > 0 and float(base[col["ideal ms"]]) > 0
        assert 0 < float(base[col["% of peak"]])
        dit_step = float(base[col["DiT step"]]) * int(base[col["steps"]])
        assert dit_step == pytest.approx(float(base[col["sampling"]]), rel=0.02, abs=0.002)
    assert body[2][col["note"]] == "unavailable: ModuleNotFoundError: No module named 'onnxruntime_backend'"
    assert body[3][col["note"]].startswith("unavailable: ")  # TensorRT cannot be installed here
    assert all(cell == "-" for cell in body[2][3:-1])
    assert "fastest at 64x48: 1 steps: torch fp32" in out
    assert "fastest CPU backend for the bundled model at fp32: torch" in out
    rows = json.loads(json_path.read_text())["rows"]
    assert [(r["backend"], r["steps"], r["status"][:11]) for r in rows] == [
        ("torch", 1, "ok"), ("torch", 2, "ok"), ("onnxruntime", None, "unavailable"), ("tensorrt", None, "unavailable")]
    assert set(rows[0]["stage_ms"]) == set(STAGES)


def test_a_failing_run_is_reported(capsys, monkeypatch):
    real = benchmark.run_stages

    def flaky(backend, frame, timesteps, device):
        if len(timesteps) == 2:
            raise RuntimeError("out of memory\nmore")
        return real(backend, frame, timesteps, device)
    monkeypatch.setattr(benchmark, "run_stages", flaky)
    assert bench.main(["--smoke", "--steps", "1,2", "--backends", "torch", "--dtypes", "fp32"]) == 0
    _, body = _table(capsys.readouterr().out)
    assert body[1][-1] == "failed: RuntimeError: out of memory"


def test_a_backend_falling_back_on_a_frame_is_reported_not_timed(capsys, monkeypatch):
    class FailingEngine(TorchBackend):
        name = "tensorrt"

        def sample(self, *args):
            raise RuntimeError("TensorRT execute_async_v3 failed")
    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", FailingEngine)
    assert bench.main(["--smoke", "--steps", "1,2", "--backends", "torch,tensorrt", "--dtypes", "fp32"]) == 0
    _, body = _table(capsys.readouterr().out)
    assert [(row[0], row[2]) for row in body] == [("torch", "1"), ("torch", "2"), ("tensorrt", "1")]
    assert body[2][-1].startswith("failed: backend tensorrt failed on a frame (RuntimeError: TensorRT execute_async_v3")
    assert all(cell == "-" for cell in body[2][3:-1])  # torch ran in its place: no figures under its name


@pytest.mark.parametrize("argv", [["--sizes", "64x40"], ["--sizes", ""], ["--steps", "0"], ["--backends", "tvm"],
                                  ["--dtypes", "int8"], ["--architecture", "huge"], ["--repeats", "0"],
                                  ["--device", "cuda:0"] if not bench.torch.cuda.is_available() else ["--device", "tpu"],
                                  ["--device", "nonsense"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert "ppd-bench: error:" in capsys.readouterr().err


def test_defaults_on_cpu():
    args = bench.parse_args(["--device", "cpu"])
    assert args.sizes == [(96, 128), (192, 256), (384, 512)] and args.steps == [1, 2, 4] and args.architecture == "bundled"
    assert args.dtypes[0] == "fp32" and set(args.dtypes) <= {"fp32", "bf16"}
    assert args.backends == list(bench.BACKENDS)
    smoke = bench.parse_args(["--smoke", "--device", "cpu", "--sizes", "512x384"])
    assert smoke.sizes == [(48, 64)] and smoke.repeats == 1 and smoke.warmup == 0
