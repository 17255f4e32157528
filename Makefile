# Two entry points: `make demo` (the main job; `make demo MODE=both`: image and video mode side by side) and
# `make test` (the test suite).
# Each creates the virtual environment $(VENV) with $(PYTHON) and installs what it needs from this
# repository's files. Other Pythons (3.10 to 3.12): `make test PYTHON=python3.12` (venv .venv-python3.12).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
ABS_VENV = $(abspath $(VENV))
BUILD := build/$(notdir $(VENV))
STAMP := $(VENV)/.installed
INTERFACES_STAMP := $(VENV)/.interfaces
CHECKPOINTS ?= checkpoints
DEMO_OUT ?= demo_out
MODE ?= image
PIP := $(PY) -m pip --disable-pip-version-check
# The generated Python interfaces go to their own folder, put on sys.path by a .pth that sorts after
# the editable install's, so that the source package stays `pixel_perfect_ros` and its __init__
# extends its path to the generated `pixel_perfect_ros.msg` (see docs/building.md).
INTERFACES_PYDIR := lib/pixel_perfect_ros_interfaces
# Tests for a second Python (CI): the node over DDS, ppd-infer and the demo on the bundled model.
SMOKE_TESTS := test/unit/test_layers.py test/unit/test_infer_cli.py \
	test/ros/test_depth_node.py::test_every_output_carries_the_source_header_and_the_model_depth \
	test/ros/test_depth_node.py::test_without_checkpoint_parameters_the_node_runs_the_bundled_model \
	test/ros/test_demo.py::test_demo_end_to_end

START := $(shell date +%s)
# A progress line: `$(call stage,what)` prints "[make +12s] what".
stage = @echo "[make +$$(( $$(date +%s) - $(START) ))s] $(1)"

.PHONY: venv test smoke demo clean

venv: $(STAMP) $(INTERFACES_STAMP)

$(STAMP): requirements.txt constraints.txt setup.py
	$(call stage,venv: $(VENV) with $$($(PYTHON) --version))
	$(PYTHON) -m venv $(VENV)
	$(call stage,packages: requirements.txt with the pins of constraints.txt)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt -r requirements.txt
	$(PIP) install --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	$(PY) -c "import torch, cv2, rclpy, pixel_perfect_ros; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	$(call stage,packages installed)
	touch $@

# The ROS 2 interfaces (msg/) built with rosidl from the PyPI wheels, installed into the venv.
$(INTERFACES_STAMP): $(STAMP) CMakeLists.txt package.xml msg/*.msg
	$(call stage,message build: msg/ with rosidl (log: $(BUILD)/cmake.log))
	@# Packaging bug in the wheels: their generator-py CMake exports name the wheel builder's Python and
	@# numpy include folders (/opt/python/cpXY-cpXY/...); point them at this venv's, for any Python.
	sed -i -E "s#/opt/python/[^/;\"]+/include/python3\.[0-9]+#$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')#g; \
		s#/opt/python/[^/;\"]+/lib/python3\.[0-9]+/site-packages/numpy/_?core/include#$$($(PY) -c 'import numpy; print(numpy.get_include())')#g" \
		$(VENV)/share/*/cmake/export_*__rosidl_generator_pyExport.cmake
	mkdir -p $(BUILD)
	PATH=$(ABS_VENV)/bin:$$PATH AMENT_PREFIX_PATH=$(ABS_VENV) cmake -S . -B $(BUILD)/ros -DCMAKE_INSTALL_PREFIX=$(ABS_VENV) \
		-DPython3_EXECUTABLE=$(ABS_VENV)/bin/python -DBUILD_TESTING=OFF -DPYTHON_PACKAGE_FROM_PIP=ON \
		-DPYTHON_INSTALL_DIR=$(INTERFACES_PYDIR) > $(BUILD)/cmake.log 2>&1 || (cat $(BUILD)/cmake.log; false)
	cmake --build $(BUILD)/ros -j2 >> $(BUILD)/cmake.log 2>&1 || (tail -50 $(BUILD)/cmake.log; false)
	cmake --install $(BUILD)/ros >> $(BUILD)/cmake.log 2>&1 || (tail -50 $(BUILD)/cmake.log; false)
	echo $(ABS_VENV)/$(INTERFACES_PYDIR) > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_pixel_perfect_ros_interfaces.pth
	$(PY) -c "from pixel_perfect_ros.msg import DepthStatus; DepthStatus()"
	$(call stage,message build done)
	touch $@

test: venv
	$(call stage,tests: pytest test)
	$(PY) -m pytest -q test
	$(call stage,tests done)

smoke: venv
	$(call stage,smoke tests)
	$(PY) -m pytest -q $(SMOKE_TESTS)
	$(call stage,smoke tests done)

# A synthetic camera bag through depth_node over DDS, recorded and scored: $(DEMO_OUT)/report/.
# MODE=image (default): the official checkpoints when they are in $(CHECKPOINTS)/ (8 frames at 256x192
# processing size: about 12 s a frame on 2 CPU cores), else the bundled synthetic-world model.
# MODE=video: the node in video mode; MODE=both: image, then video mode on the same bag, side by side in
# one report; both on the bundled models (the official PPVD at 512x512 is too slow for a CPU demo).
demo: venv
	$(call stage,demo ($(MODE) mode))
	@if [ "$(MODE)" = image ] && [ -f $(CHECKPOINTS)/ppd.pth ] && [ -f $(CHECKPOINTS)/depth_anything_v2_vitl.pth ]; then \
		set -x; $(VENV)/bin/ppd-demo --out $(DEMO_OUT) --checkpoint $(CHECKPOINTS)/ppd.pth \
			--semantics $(CHECKPOINTS)/depth_anything_v2_vitl.pth --semantics-type da2 \
			--frames 8 --target-area 49152; \
	else \
		set -x; $(VENV)/bin/ppd-demo --out $(DEMO_OUT) --mode $(MODE); \
	fi
	$(call stage,demo done: $(DEMO_OUT)/report/report.html)

clean:
	rm -rf .venv .venv-* $(DEMO_OUT) build *.egg-info
