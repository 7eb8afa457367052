# The two set-up commands of the README: `make demo` and `make test`; the longer reproductions
# `make demo-optimizers`, `make demo-imagenet` and `make demo-cosine`; `make publish` copies
# their evidence into docs/. Each creates .venv with the project installed (editable) if it is
# not there yet, at the versions in constraints.txt (what CI tested; `make constraints`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

.PHONY: install demo demo-optimizers demo-adam demo-imagenet demo-cap demo-cosine publish test test-all lint \
	test-notebooks-slow test-slow \
	notebooks constraints clean accelerator accelerator-wheels
install: $(BIN)/.installed

REPRODUCE := $(BIN)/python -m noise_scale.reproduce --jobs=2
OPTIMIZERS := sgd momentum nesterov

# The CPU-scale reproduction: 6 schedules + 2 controls x 5 seeds on MNIST-1D (generated offline).
# Rerunning reuses finished runs; results in runs/mnist1d/{figure.png,report.md,summary.json}.
demo: install
	$(REPRODUCE) --config=configs/mnist1d.py --workdir=runs/mnist1d

# The same comparison with every optimizer the paper tried (momentum is the config's own: the
# runs of `make demo`); the others go to runs/mnist1d/<optimizer>/.
demo-optimizers: install
	for opt in $(OPTIMIZERS); do \
	  $(REPRODUCE) --config=configs/mnist1d.py --workdir=runs/mnist1d --optimizer=$$opt || exit 1; done

# Adam and AdamW by their own noise scale (noise_scale.adaptive): the square-root rule, the
# paper's linear rule and the square-root rule with b2 per update, against LR decay.
demo-adam: install
	$(REPRODUCE) --config=configs/mnist1d_adam.py --workdir=runs/mnist1d_adam
	$(REPRODUCE) --config=configs/mnist1d_adamw.py --workdir=runs/mnist1d_adamw

# The ImageNet schedules (Goyal's and the momentum family) at CPU scale, with the controls.
demo-imagenet: install
	$(REPRODUCE) --config=configs/mnist1d_imagenet.py --workdir=runs/mnist1d_imagenet

# The measured cap where the uncapped rule meets the data set's size (N = 4,000: B = N in
# the last stage): capped (c = 0.2) predicted equivalent to decay_lr, uncapped not.
demo-cap: install
	$(REPRODUCE) --config=configs/mnist1d_cap.py --workdir=runs/mnist1d_cap

# Any learning-rate shape as a staged batch schedule: the cosine family against its reference.
demo-cosine: install
	$(REPRODUCE) --config=configs/mnist1d_cosine.py --workdir=runs/mnist1d_cosine

# Copy each finished set's report, summary, figure and metrics.jsonl files into docs/.
publish: install
	$(BIN)/python -m noise_scale.experiments.publish runs/mnist1d docs/mnist1d
	for opt in sgd nesterov; do [ ! -f runs/mnist1d/$$opt/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d/$$opt docs/mnist1d_$$opt; done
	for opt in adam adamw; do [ ! -f runs/mnist1d_$$opt/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d_$$opt docs/mnist1d_$$opt; done
	[ ! -f runs/mnist1d_imagenet/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d_imagenet docs/mnist1d_imagenet
	[ ! -f runs/mnist1d_cap/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d_cap docs/mnist1d_cap
	[ ! -f runs/mnist1d_cosine/summary.json ] || \
	  $(BIN)/python -m noise_scale.experiments.publish runs/mnist1d_cosine docs/mnist1d_cosine
	$(BIN)/python -m noise_scale.experiments.results

test: install
	$(BIN)/python -m pytest -q -m "not slow"

# The slow notebook runs (ResNet-50 on the CPU, MNIST-1D's default path at a reduced size).
test-notebooks-slow: install
	$(BIN)/python -m pytest -q -m slow tests/test_notebooks.py

# What `make test` leaves to CI: every test marked slow (notebooks, the wheel, multi-host).
test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

# benchmarks/accelerator.py here (ARGS='--tiny' for CPU sizes); results in benchmarks/results/.
accelerator: install
	$(BIN)/python benchmarks/accelerator.py $(ARGS)

# What benchmarks/accelerator.py imports that a bare GPU host (JAX, flax, optax, orbax,
# etils, absl, chex, OpenCV, matplotlib, pillow, protobuf, numpy) lacks: wheels for the host's
# Python (ACCELERATOR_PYTHON; grain's and array_record's are binary, the others pure
# Python; grain imports array_record), found by running the
# command in a venv without them. Copied along with the repository, installed there with:
# pip install --no-index --no-deps --target DIR .whl/*.whl
ACCELERATOR_WHEELS := ml-collections==1.1.0 tensorboardX==2.6.5 grain==0.2.18 cloudpickle==3.1.3 \
	portpicker==1.6.0 array_record==0.8.6 simplejpeg==1.9.0
ACCELERATOR_PYTHON ?= 3.12
WHEELS_DIR ?= .whl
accelerator-wheels:
	rm -rf $(WHEELS_DIR)
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(ACCELERATOR_PYTHON) \
	    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
	    --platform any -d $(WHEELS_DIR) $(ACCELERATOR_WHEELS)

# Execute the Colab notebooks (colab/NAME.py) and write colab/NAME.ipynb with their outputs.
# The MNIST-1D one runs the full comparison (40 runs) in colab/runs/mnist1d, reusing the runs
# there: after `make demo`, `cp -r runs/mnist1d colab/runs/` makes it minutes, not an hour.
notebooks: install
	$(BIN)/python colab/run_notebooks.py

# Pin what the venv holds now: run after `make test` passes with a changed dependency.
constraints: install
	( sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable ) > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .whl
