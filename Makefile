# Two entry points for a new user (see README): `make demo` and `make test`.
# Both install what is missing first: Debian packages (as root, or with sudo), a virtualenv in
# .venv with PyTorch 2.14.1 / torchvision 0.29.1 and this project with its extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Open3D (headless rendering on the CPU through Mesa), Xvfb for window tests, ffmpeg for videos.
SYSTEM_PKGS := libusb-1.0-0 libgl1 libegl1 mesa-vulkan-drivers xvfb ffmpeg
EXTRAS := viewer,train,dev

.PHONY: setup system demo test test-slow test-gpu lint clean

system:
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$(echo $$missing)" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@# MediaPipe's wheel from the package registry into ~/.cache/multiroi: BlazePose's weights
	@# (pretrained backbone blazepose_full) and the pose detector (the live loop's offline person
	@# detector); optional: without them that backbone starts random and HOG detects alone.
	$(PY) -m multiroi.model.blazepose || echo "note: BlazePose weights not fetched (see above)"
	touch $(STAMP)

setup: system $(STAMP)

demo: setup
	$(PY) run_camera.py --source demo --headless --out out/

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

test-gpu: setup
	$(PY) -m pytest -q -m "gpu or trt"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) out .pytest_cache
