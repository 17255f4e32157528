#!/usr/bin/env bash
# The GPU check of the PPD image path on one CUDA GPU (no internet, no ROS needed): the full-size DiT and
# DA2 ViT-L with seeded random weights at 1024x768 x 4 steps, per backend and dtype in a process of its own;
# prints the ppd-bench table, PASS/FAIL per goal and the CUDA-graph parity tests, and writes
# $OUT/gpu_check.json when OUT is set (pixel_perfect_ros/inference/gpu_check.py).
#
#   scripts/gpu_check.sh [--dry-run] [other options of: python -m pixel_perfect_ros.tools.gpu_check --help]
#
# PYTHON: the interpreter (default: python3). Only when it cannot import the package from outside the source
# tree is it installed (pip install --no-deps --no-build-isolation -e .: no internet for a build
# environment); if that fails the check runs from the source tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi || echo "nvidia-smi failed (status $?)"
else
    echo "nvidia-smi: not found"
fi

if ! "$PYTHON" -c 'import os, sys; sys.path = [p for p in sys.path if p not in ("", ".", os.getcwd())]; import pixel_perfect_ros' 2>/dev/null; then
    echo "pixel_perfect_ros is not installed for $PYTHON: pip install --no-deps --no-build-isolation -e ."
    "$PYTHON" -m pip install --no-deps --no-build-isolation -e . || echo "pip install failed: running from the source tree"
fi

exec "$PYTHON" -m pixel_perfect_ros.tools.gpu_check "$@"
