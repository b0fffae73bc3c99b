# Everything is installed here; nothing by hand.  `make demo` and `make test` work from a clean clone.
PYTHON ?= python3.11
VENV := .venv
MXVENV := .venv-mxnet
PIP_QUIET := --quiet --disable-pip-version-check
DEMO_DIR ?= demo

.PHONY: all install demo lint test test-fast bench clean

all: install

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) --upgrade "pip>=23" "setuptools>=64" wheel
	$(VENV)/bin/pip install $(PIP_QUIET) -e '.[test]'
	touch $@

# The test oracle: MXNet's last release, in its own Python 3.11 environment (it needs numpy<1.24).
$(MXVENV)/.installed:
	$(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/pip install $(PIP_QUIET) mxnet==1.9.1 numpy==1.23.5 opencv-python-headless==4.8.1.78
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh "$(DEMO_DIR)"

# ruff (the rule set in pyproject.toml) and mypy on the package; `make test` runs it before the suite.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check recordio_pack aws userdata
	$(VENV)/bin/mypy

test: lint $(VENV)/.installed $(MXVENV)/.installed
	RECORDIO_PACK_MXNET_PYTHON="$(CURDIR)/$(MXVENV)/bin/python" RECORDIO_PACK_REQUIRE_ORACLE=1 \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -n auto -q tests

# The edit-run loop: no oracle environment, no test marked slow (the demo, the fault matrices, the boot script).
test-fast: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -n auto -q -m "not oracle and not slow" tests

bench: $(VENV)/.installed $(MXVENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python bench/pack_vs_im2rec.py --mxnet-python "$(CURDIR)/$(MXVENV)/bin/python"
	$(VENV)/bin/python bench/cost_breakdown.py

clean:
	rm -rf $(VENV) $(MXVENV) $(DEMO_DIR) bench/out .pytest_cache *.egg-info
