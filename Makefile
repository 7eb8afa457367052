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

demo: install
	$(BIN)/python -m noise_scale.schedule --config=configs/imagenet_resnet50.py:increase_batch --compare=goyal

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
