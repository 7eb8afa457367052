# The two set-up commands of the README: `make demo` and `make test`; the longer reproductions
# `make demo-optimizers` and `make demo-imagenet`; `make publish` copies their evidence into docs/.
# Each creates .venv with the project installed (editable) if it is not there yet.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install demo demo-optimizers demo-imagenet publish test test-all lint clean
install: $(BIN)/.installed

REPRODUCE := $(BIN)/python -m noise_scale.reproduce --jobs=2
OPTIMIZERS := sgd momentum nesterov adam

# The CPU-scale reproduction: 5 schedules + 2 controls x 2 seeds on MNIST-1D (generated offline).
# Rerunning reuses finished runs; results in runs/mnist1d/{figure.png,report.md,summary.json}.
demo: install
	$(REPRODUCE) --config=configs/mnist1d.py --workdir=runs/mnist1d

# The same comparison with every optimizer the paper tried (momentum is the config's own: the
# runs of `make demo`); the others go to runs/mnist1d/<optimizer>/.
demo-optimizers: install
	for opt in $(OPTIMIZERS); do \
	  $(REPRODUCE) --config=configs/mnist1d.py --workdir=runs/mnist1d --optimizer=$$opt || exit 1; done

# The ImageNet schedules (Goyal's and the momentum family) at CPU scale, with the controls.
demo-imagenet: install
	$(REPRODUCE) --config=configs/mnist1d_imagenet.py --workdir=runs/mnist1d_imagenet

# Copy each finished set's report, summary, figure and metrics.jsonl files into docs/.
publish: install
	$(BIN)/python -m noise_scale.experiments.publish runs/mnist1d docs/mnist1d
	for opt in sgd nesterov adam; do [ ! -f runs/mnist1d/$$opt/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d/$$opt docs/mnist1d_$$opt; done
	[ ! -f runs/mnist1d_imagenet/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d_imagenet docs/mnist1d_imagenet

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
