"""`pip install .` into a fresh venv, without any ROS package: ppd-infer runs on the bundled model.

What a pip user does: a venv, their torch (here the development venv's own build, pinned with its local label,
e.g. 2.13.0+cpu, so that no CUDA build is ever downloaded), then this package, non-editable, from a copy of the
sources (the build writes build/ and *.egg-info into the tree it builds, not into the working tree). About a
minute; `pytest -m pip_install` runs it alone, `-m "not pip_install"` leaves it out.
"""
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NOT_SOURCES = (".git", ".venv*", "build", "dist", "test", "docs", "__pycache__", "*.egg-info", ".pytest_cache",
               ".benchmarks", "checkpoints", "demo_out")
"""What a copy of the sources for the build leaves out (nothing setup.py packages)."""
ENVIRONMENT_DROPPED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH",
                       "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "PIP_REQUIRE_VIRTUALENV")
"""Variables of this (development, ROS-enabled) process that must not leak into the fresh venv."""


def clean_environment(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ENVIRONMENT_DROPPED and not k.startswith(("ROS_", "_ROS", "RMW_", "PIP_TARGET"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env


def run(command: list, env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (f"{what} failed (exit {result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.mark.pip_install
def test_pip_install_gives_a_working_ppd_infer_without_ros(tmp_path):
    timings = {}
    start = time.monotonic()
    venv = tmp_path / "venv"
    # The base interpreter (not this venv's, whose site-packages hold ROS): sys._base_executable.
    base_python = getattr(sys, "_base_executable", sys.executable)
    created = subprocess.run([base_python, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if created.returncode != 0 or not (venv / "bin" / "python").is_file():
        pytest.skip(f"cannot create a venv with {base_python} -m venv: {created.stderr.strip()[-500:]}")
    python = venv / "bin" / "python"
    env = clean_environment(venv)
    timings["venv"] = time.monotonic() - start

    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", "install", "--quiet"]
    torch = f"torch=={version('torch')}"  # the development venv's build, e.g. 2.13.0+cpu: never a CUDA download
    ok(run([*pip, torch], env, tmp_path), f"pip install {torch}")
    timings["torch"] = time.monotonic() - start - sum(timings.values())

    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    ok(run([*pip, source], env, tmp_path), "pip install . (non-editable)")
    timings["package"] = time.monotonic() - start - sum(timings.values())
    shutil.rmtree(source)  # the installed package must not need its sources

    # Really without ROS, and really the installed copy.
    probe = ("import importlib.util as u, pixel_perfect_ros, torch; "
             "print(pixel_perfect_ros.__file__); print(torch.__version__); "
             "print([m for m in ('rclpy', 'sensor_msgs', 'std_msgs', 'rosbags', 'yaml', 'ray', 'onnx') "
             "if u.find_spec(m)])")
    lines = ok(run([python, "-c", probe], env, tmp_path), "import probe").stdout.splitlines()
    assert Path(lines[0]).is_relative_to(venv), lines[0]
    assert lines[1] == version("torch"), f"pip replaced the torch build: {lines[1]}"
    assert lines[2] == "[]", f"the core pulled in ROS or an extra: {lines[2]}"
    rclpy = run([python, "-c", "import rclpy"], env, tmp_path)
    assert rclpy.returncode != 0 and "No module named 'rclpy'" in rclpy.stderr
    ok(run([python, "-m", "pip", "check"], env, tmp_path), "pip check")

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "room.png"), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    infer_start = time.monotonic()
    result = ok(run([venv / "bin" / "ppd-infer", images / "room.png", "--out", out], env, tmp_path, timeout=300),
                "ppd-infer on the bundled model")
    timings["ppd-infer"] = time.monotonic() - infer_start
    assert "wrote 1 of 1 depth maps" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["room_depth.npy", "room_depth16.png", "room_depth_color.png"]
    depth = np.load(out / "room_depth.npy")
    assert depth.shape == (48, 64) and np.isfinite(depth).all()
    print("pip install timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
