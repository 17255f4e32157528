# Two entry points: `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment .venv and installs what it needs from this repository's files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHECKPOINTS ?= checkpoints
DEMO_OUT ?= demo_out

.PHONY: venv test demo clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v 'is ignored' || true
	$(PY) -m pip install --quiet --progress-bar off -r requirements.txt 2>&1 | grep -v 'is ignored' || true
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import torch, cv2, rclpy, pixel_perfect_ros; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q test

demo: $(STAMP)
	$(VENV)/bin/ppd-infer examples \
		--checkpoint $(CHECKPOINTS)/ppd.pth \
		--semantics $(CHECKPOINTS)/depth_anything_v2_vitl.pth --semantics-type da2 \
		--out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
