"""The Colab notebooks (colab/): each runs top to bottom, and says where it comes from.

Every committed notebook is executed in a fresh kernel on the CPU with its quick
parameters injected after its ``parameters`` cell (``colab/run_notebooks.py``, over
nbclient); a cell that raises fails its test. The install cell's Colab branch runs
against a stand-in ``google.colab`` with the commands it would run recorded, not run.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re

import jupytext
import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from colab import run_notebooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [os.path.basename(p).removesuffix(".ipynb")
         for p in sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))]
with open(os.path.join(ROOT, "pyproject.toml")) as f:  # [project.urls] Repository
    REPOSITORY = re.search(r'^Repository = "(.+)"$', f.read(), re.M).group(1)


def quick_parameters(name: str, tmp_path) -> dict:
    """What CI runs: seconds, not the full experiment; nothing written outside tmp_path."""
    return {"schedules": {},
            "reproduce_mnist1d": {"QUICK": True, "WORKDIR": str(tmp_path / "mnist1d")},
            "resnet50_tpu": {"DATA_DIR": "", "WORKDIR": str(tmp_path / "resnet50")}}[name]


def kernel_env(*paths: str) -> dict:
    """One CPU device, as a CPU runtime has (not the tests' 8), and this checkout's package."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # keep the inline backend
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env.update(XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
        [*paths, ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def read(name: str):
    return nbformat.read(os.path.join(ROOT, "colab", f"{name}.ipynb"), as_version=4)


def outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_every_notebook_is_found():
    assert NAMES == ["reproduce_mnist1d", "resnet50_tpu", "schedules"]
    assert run_notebooks.notebook_names() == NAMES


# The ResNet-50 notebook compiles the real ResNet-50 three times (~2 minutes on 2 cores) and
# the reproduction notebook trains 8 runs (~30 s): slow, so `make test` stays under 6 minutes;
# CI runs them after (`make test-slow`). The schedules notebook stays in the default tier.
SLOW = ("resnet50_tpu", "reproduce_mnist1d")
RUNS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES]


@pytest.mark.parametrize("name", RUNS)
def test_notebook_runs_top_to_bottom_with_quick_parameters(name, tmp_path):
    nb = run_notebooks.execute(read(name), quick_parameters(name, tmp_path), env=kernel_env())
    text = outputs(nb)
    if name == "reproduce_mnist1d":
        assert os.path.isfile(tmp_path / "mnist1d" / "figure.png")
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    if name == "resnet50_tpu":
        assert "stopped: SIGTERM received" in text
        assert "resuming at examples_seen=32 (epoch 1.000, stage 1, update 4)" in text
        assert "stages [0, 1], batch sizes [8, 16], 2 compiles" in text


@pytest.mark.slow
def test_the_mnist1d_notebook_runs_its_default_path_at_a_reduced_size(tmp_path):
    """QUICK = False as shipped: every variant with the controls, through the same cells;
    NOISE_SCALE_NOTEBOOK_REDUCED=1 (documented in the notebook) only shrinks N and seeds."""
    env = {**kernel_env(), "NOISE_SCALE_NOTEBOOK_REDUCED": "1"}
    nb = run_notebooks.execute(read("reproduce_mnist1d"), {"WORKDIR": str(tmp_path / "m")},
                               env=env)
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert list(summary["variants"]) == [
        "decay_lr", "hybrid", "increase_batch", "increased_lr", "increased_momentum",
        "measured_cap", "constant_lr", "mismatched"]
    assert summary["seeds"] == [0, 1] and summary["agreement"]["result"] is not None
    assert "every variant × 2 seed(s)" in outputs(nb)


# An absolute path of the machine that executed a notebook: a home, a temporary or a work
# folder, an installed package's folder, a Windows drive.
MACHINE_PATH = re.compile(r"(/home/|/Users/|/tmp/|/work/|/root/|/var/folders/|site-packages"
                          r"|\b[A-Z]:\\)")


def _shown(nb) -> str:
    """Every text a reader sees in the outputs: streams, and rich outputs' text forms."""
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", ""))
            for kind in ("text/plain", "text/markdown", "text/html"):
                value = o.get("data", {}).get(kind, "")
                out.append("".join(value) if isinstance(value, list) else value)
    return "".join(out)


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_hold_no_machine_path_and_no_error(name):
    nb = read(name)
    shown = _shown(nb)
    assert not MACHINE_PATH.findall(shown), MACHINE_PATH.findall(shown)[:5]
    assert "Traceback (most recent call last)" not in shown
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_the_scan_finds_a_machine_path_and_a_traceback():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="saved in /tmp/abc/ckpt\n")]
    assert MACHINE_PATH.findall(_shown(nb)) == ["/tmp/"]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="runs/mnist1d/report.md\n")]
    assert not MACHINE_PATH.findall(_shown(nb))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_metadata_names_the_accelerator_it_is_meant_for(name):
    """Colab opens a notebook on the runtime its metadata names (none: a CPU runtime)."""
    want = {"resnet50_tpu": "TPU"}.get(name)
    assert read(name).metadata.get("accelerator") == want


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_its_py_source_executed(name):
    """The .ipynb has the .py's cells, the outputs of a run, and nothing volatile."""
    nb, source = read(name), jupytext.read(os.path.join(ROOT, "colab", f"{name}.py"))
    assert [(c.cell_type, c.source) for c in nb.cells] == [
        (c.cell_type, c.source) for c in source.cells]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2
    assert all(c.execution_count is None and "execution" not in c.metadata for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


@pytest.mark.parametrize("name", NAMES)
def test_badge_and_install_cell_use_the_one_repository_url(name):
    nb = read(name)
    slug = REPOSITORY.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{slug}/blob/main/colab/{name}.ipynb"
    assert badge in nb.cells[0].source and nb.cells[0].cell_type == "markdown"
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert f'REPOSITORY = "{REPOSITORY}"' in install.source
    assert install.source == next(c for c in read("schedules").cells if c.cell_type == "code").source
    assert "setup_tpu" not in "".join(c.source for c in nb.cells if c.cell_type == "code")


STAND_IN = """
import json, os, shutil, subprocess, sys
CALLS = []
def record(command, **kwargs):
    CALLS.append(command)
    if command[:2] == ["git", "clone"]:  # what the clone would bring: the constraints
        os.makedirs(command[-1])
        shutil.copy(CONSTRAINTS, command[-1])
subprocess.check_call = record
sys.modules["noise_scale"] = None  # a fresh runtime: the package is not installed yet
"""


def _install_on_fake_colab(tmp_path, before: str = ""):
    """The install cell under a stand-in google.colab (kernel's path), twice; its commands
    recorded, not run. ``before``: code run first (e.g. an older JAX)."""
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package
    (fake / "google" / "colab" / "__init__.py").write_text("")
    install = next(c for c in read("schedules").cells if c.cell_type == "code").source
    report = 'print(json.dumps({"colab": ON_COLAB, "calls": CALLS, "pins": open(PINS).read()}))'
    again = 'sys.modules.pop("noise_scale"); CALLS.clear()'  # installed: the cell does nothing
    cells = [f"CONSTRAINTS = {os.path.join(ROOT, 'constraints.txt')!r}\n" + STAND_IN + before,
             install, f"PINS = 'constraints-colab.txt'\n{report}", again, install,
             "print(CALLS)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    return run_notebooks.execute(nb, env=kernel_env(str(fake)), cwd=str(tmp_path))


def test_install_cell_on_colab_adds_what_is_missing_and_leaves_jax_alone(tmp_path):
    nb = _install_on_fake_colab(tmp_path)
    seen = json.loads(nb.cells[2].outputs[0].text)
    assert seen["colab"] is True
    clone, pip = seen["calls"]
    assert clone == ["git", "clone", "--depth=1", REPOSITORY, "noise_scale_repo"]
    # no pins beyond the runtime's JAX: pyproject's floors decide, pip keeps what meets them
    assert pip[1:] == ["-m", "pip", "install", "-q", "-c", "constraints-colab.txt",
                       "-e", "noise_scale_repo"]
    assert seen["pins"].splitlines() == [
        f"{n}=={importlib.metadata.version(n)}" for n in ("jax", "jaxlib")]
    assert nb.cells[5].outputs[0].text.strip() == "[]"


def test_install_cell_states_and_checks_the_minimum_jax(tmp_path):
    install = next(c for c in read("schedules").cells if c.cell_type == "code").source
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        floor = re.search(r'"jax>=([0-9.]+)"', f.read()).group(1)
    assert f'MIN_JAX = "{floor}"' in install  # the same floor as the package's
    older = ('import importlib.metadata as _m\n_v = _m.version\n'
             '_m.version = lambda n: "0.4.30" if n == "jax" else _v(n)\n')
    with pytest.raises(CellExecutionError, match=f"JAX is 0.4.30; noise_scale needs jax>={floor}"):
        _install_on_fake_colab(tmp_path, older)


def test_a_cell_that_raises_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('broken')")])
    with pytest.raises(CellExecutionError, match="broken"):
        run_notebooks.execute(nb, env=kernel_env(), cwd=str(tmp_path))


@pytest.mark.parametrize("readme", ["README.md", "colab/README.md"])
def test_readme_badges_link_every_notebook_at_the_one_url(readme):
    with open(os.path.join(ROOT, readme)) as f:
        links = re.findall(r"https://colab\.research\.google\.com/github/([^)\s]+)", f.read())
    slug = REPOSITORY.removeprefix("https://github.com/")
    assert sorted(links) == [f"{slug}/blob/main/colab/{name}.ipynb" for name in NAMES]
