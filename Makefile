# Everything is installed here; nothing by hand.  `make demo` and `make test` work from a clean clone.
PYTHON ?= python3.11
VENV := .venv
MXVENV := .venv-mxnet
PIP_QUIET := --quiet --disable-pip-version-check
DEMO_DIR ?= demo

.PHONY: all install demo lint test test-fast bench bench-read clean

all: install

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) --upgrade "pip>=23" "setuptools>=64" wheel
	$(VENV)/bin/pip install $(PIP_QUIET) -e '.[test]'
	touch $@

# The test oracle and the benchmark's anchor: MXNet's last release, in its own Python 3.11 environment (it needs
# numpy<1.24), with the newest OpenCV that numpy 1.23.5 accepts (4.12 needs numpy 2), as pip gives a user today.
# One stamp per set of pins: changing a pin names a new stamp, so an existing $(MXVENV) is rebuilt from scratch.
MXPINS := mxnet==1.9.1 numpy==1.23.5 opencv-python-headless==4.11.0.86
empty :=
space := $(empty) $(empty)
# $(call stamp_of,VENV,PINS): the stamp of VENV built with exactly PINS.
stamp_of = $(1)/.installed-$(subst $(space),-,$(subst ==,,$(2)))
# $(call pinned_venv,VENV,PINS): the recipe of every stamp: VENV from scratch, with PINS only.
define pinned_venv
rm -rf $(1)
$(PYTHON) -m venv $(1)
$(1)/bin/pip install $(PIP_QUIET) $(2)
touch $@
endef
MXSTAMP := $(call stamp_of,$(MXVENV),$(MXPINS))

$(MXSTAMP):
	$(call pinned_venv,$(MXVENV),$(MXPINS))

# The readers training runs feed from our shards, for the suite's tests and the read benchmark: PyTorch (the CPU
# build; other versions pull CUDA builds of several GB) and NVIDIA DALI (fn.readers.mxnet in a CPU-only pipeline),
# with the oracle's OpenCV, in their own Python 3.11 environment; recordio_pack is imported from the checkout.
TRAINVENV := .venv-train
TRAINPINS := torch==2.13.0 nvidia-dali-cuda120==2.4.0 numpy==2.4.6 opencv-python-headless==4.11.0.86
TRAINSTAMP := $(call stamp_of,$(TRAINVENV),$(TRAINPINS))

$(TRAINSTAMP):
	$(call pinned_venv,$(TRAINVENV),$(TRAINPINS))

# The TFRecord oracle (issue 14): TensorFlow's own reader, parser and JPEG decoder, and TFDS's imagenet2012 builder,
# read what `pack --format tfrecord` wrote; imagenet_to_gcs.py's conversion loop runs here for the bench.
TFVENV := .venv-tf
TFPINS := tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10
TFSTAMP := $(call stamp_of,$(TFVENV),$(TFPINS))

$(TFSTAMP):
	$(call pinned_venv,$(TFVENV),$(TFPINS))

install: $(VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh "$(DEMO_DIR)"

# ruff (the rule set in pyproject.toml) and mypy on the package; `make test` runs it before the suite.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check recordio_pack aws userdata
	$(VENV)/bin/mypy

test: lint $(VENV)/.installed $(MXSTAMP) $(TRAINSTAMP) $(TFSTAMP)
	RECORDIO_PACK_MXNET_PYTHON="$(CURDIR)/$(MXVENV)/bin/python" RECORDIO_PACK_REQUIRE_ORACLE=1 \
	RECORDIO_PACK_TRAIN_PYTHON="$(CURDIR)/$(TRAINVENV)/bin/python" \
	RECORDIO_PACK_TF_PYTHON="$(CURDIR)/$(TFVENV)/bin/python" \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -n auto -q tests

# The edit-run loop: no oracle environment, no test marked slow (the demo, the fault matrices, the boot script).
test-fast: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -n auto -q -m "not oracle and not slow" tests

bench: $(VENV)/.installed $(MXSTAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python bench/pack_vs_im2rec.py --mxnet-python "$(CURDIR)/$(MXVENV)/bin/python"
	$(VENV)/bin/python bench/cost_breakdown.py

# Reading the shards for training (issue 13): mxnet's MXIndexedRecordIO, DALI's CPU reader and ours, and a DataLoader.
bench-read: $(VENV)/.installed $(MXSTAMP) $(TRAINSTAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python bench/read_speed.py \
		--mxnet-python "$(CURDIR)/$(MXVENV)/bin/python" --train-python "$(CURDIR)/$(TRAINVENV)/bin/python"

clean:
	rm -rf $(VENV) $(MXVENV) $(TRAINVENV) $(DEMO_DIR) bench/out .pytest_cache *.egg-info
