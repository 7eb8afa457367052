# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv with the project installed (editable) if it is not there yet.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install demo test test-all lint clean
install: $(BIN)/.installed

# The CPU-scale reproduction: 5 schedules x 2 seeds on MNIST-1D (generated offline).
# Rerunning reuses finished runs; results in runs/mnist1d/{figure.png,report.md,summary.json}.
demo: install
	$(BIN)/python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=runs/mnist1d --jobs=2

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
