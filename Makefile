# Two entry points: `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment .venv and installs what it needs from this repository's files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ABS_VENV = $(abspath $(VENV))
STAMP := $(VENV)/.installed
INTERFACES_STAMP := $(VENV)/.interfaces
CHECKPOINTS ?= checkpoints
DEMO_OUT ?= demo_out
PIP := $(PY) -m pip --quiet
QUIET_PIP := 2>&1 | grep -v 'is ignored' || true
# The generated Python interfaces go to their own folder, put on sys.path by a .pth that sorts after
# the editable install's, so that the source package stays `pixel_perfect_ros` and its __init__
# extends its path to the generated `pixel_perfect_ros.msg` (see README, "Building").
INTERFACES_PYDIR := lib/pixel_perfect_ros_interfaces

.PHONY: venv test demo clean

venv: $(STAMP) $(INTERFACES_STAMP)

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip $(QUIET_PIP)
	$(PIP) install --progress-bar off -r requirements.txt $(QUIET_PIP)
	$(PIP) install --no-deps --no-build-isolation --config-settings editable_mode=compat -e . $(QUIET_PIP)
	$(PY) -c "import torch, cv2, rclpy, pixel_perfect_ros; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# The ROS 2 interfaces (msg/) built with rosidl from the PyPI wheels, installed into the venv.
$(INTERFACES_STAMP): $(STAMP) CMakeLists.txt package.xml msg/*.msg
	@# Packaging bug in the wheels: their generator-py CMake exports name the wheel builder's include dirs.
	sed -i "s#/opt/python/cp311-cp311/include/python3.11#$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')#g; \
		s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$$($(PY) -c 'import numpy; print(numpy.get_include())')#g" \
		$(VENV)/share/*/cmake/export_*__rosidl_generator_pyExport.cmake
	mkdir -p build
	PATH=$(ABS_VENV)/bin:$$PATH AMENT_PREFIX_PATH=$(ABS_VENV) cmake -S . -B build/ros -DCMAKE_INSTALL_PREFIX=$(ABS_VENV) \
		-DPython3_EXECUTABLE=$(ABS_VENV)/bin/python -DBUILD_TESTING=OFF -DPYTHON_PACKAGE_FROM_PIP=ON \
		-DPYTHON_INSTALL_DIR=$(INTERFACES_PYDIR) > build/cmake.log 2>&1 || (cat build/cmake.log; false)
	cmake --build build/ros -j2 >> build/cmake.log 2>&1 || (tail -50 build/cmake.log; false)
	cmake --install build/ros >> build/cmake.log 2>&1 || (tail -50 build/cmake.log; false)
	echo $(ABS_VENV)/$(INTERFACES_PYDIR) > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_pixel_perfect_ros_interfaces.pth
	$(PY) -c "from pixel_perfect_ros.msg import DepthStatus; DepthStatus()"
	touch $@

test: venv
	$(PY) -m pytest -q test

# A synthetic camera bag through depth_node over DDS, recorded and scored: $(DEMO_OUT)/report/.
# The official checkpoints when they are in $(CHECKPOINTS)/ (8 frames at 256x192 processing size: about
# 12 s a frame on 2 CPU cores), else the bundled synthetic-world model.
demo: venv
	@if [ -f $(CHECKPOINTS)/ppd.pth ] && [ -f $(CHECKPOINTS)/depth_anything_v2_vitl.pth ]; then \
		set -x; $(VENV)/bin/ppd-demo --out $(DEMO_OUT) --checkpoint $(CHECKPOINTS)/ppd.pth \
			--semantics $(CHECKPOINTS)/depth_anything_v2_vitl.pth --semantics-type da2 \
			--frames 8 --target-area 49152; \
	else \
		set -x; $(VENV)/bin/ppd-demo --out $(DEMO_OUT); \
	fi

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
