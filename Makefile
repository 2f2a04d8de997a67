# Everything runs from .venv; `make install` creates it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run serve test compile lint bench images push-images clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision first, exactly pinned: PyPI's builds (CUDA, with their nvidia-* wheels,
	# about 5.5 GB in the venv; they run on a CPU-only machine too). Where pip finds them on local
	# disk it takes them from there; torchvision's wheels import only beside this torch.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(VENV)/bin/kfp-torch local $(ARGS)

# Serve the bento that the last `make run` deployed and verified (http://127.0.0.1:3000); after a failed deploy,
# the one before it.
serve: install
	$(PY) -m components.deploy.local_target serve --state-dir $(CURDIR)/.local/deploy

# The ten slowest tests are listed at the end, so that growth shows when it happens (DEVELOPING.md).
# Test files run on TEST_WORKERS processes (pytest-xdist), each file whole on one worker, in the order
# tests/conftest.py gives (longest first); TEST_WORKERS=0 runs them in this process. Three on two cores: much
# of the suite waits (servers starting, polls, subprocesses importing), and a third worker fills that time.
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

compile: install
	$(PY) -m pipelines.compile

# Execute the notebooks and store them with their outputs, which the repository page shows
# (tests/test_notebooks.py fails when the stored outputs no longer match).
.PHONY: notebooks
notebooks: install
	$(PY) -m tests.support.notebooks

# The cluster images, tagged with the library's version (see images/README.md).
REGISTRY ?= $(or $(KFP_TORCH_LIFECYCLE_REGISTRY),ghcr.io/kfp-torch-lifecycle)
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' components/__init__.py)
BUILDAH ?= buildah
BUILDAH_FLAGS ?=
IMAGE_BUILD_ARGS ?=

images:
	@command -v $(BUILDAH) >/dev/null || { echo "make images needs buildah: apt-get install buildah"; exit 1; }
	$(BUILDAH) $(BUILDAH_FLAGS) bud --layers $(IMAGE_BUILD_ARGS) -f images/components/Containerfile -t $(REGISTRY)/components:$(VERSION) .
	$(BUILDAH) $(BUILDAH_FLAGS) bud --layers $(IMAGE_BUILD_ARGS) -f images/training/Containerfile -t $(REGISTRY)/training-cuda:$(VERSION) .

push-images:
	$(BUILDAH) $(BUILDAH_FLAGS) push $(REGISTRY)/components:$(VERSION)
	$(BUILDAH) $(BUILDAH_FLAGS) push $(REGISTRY)/training-cuda:$(VERSION)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Every section; `make bench BENCH=serving` (or several: BENCH="serving dvc_pull") runs sections alone, and
# `make bench BENCH=list` lists them. BENCH_TRAIN_IMAGES=10000: the input pipeline on 10,000 images.
BENCH ?=
bench: install
	$(PY) -m benchmarks.run $(BENCH)

clean:
	rm -rf build .local .pytest_cache
