"""Execute the Colab notebooks: ``make notebooks`` (regenerate the committed outputs) and the tests.

Each notebook is a pair: ``colab/NAME.py`` (jupytext percent format, the reviewable
source) and ``colab/NAME.ipynb`` (the same cells with the outputs of a real execution,
what GitHub and Colab show). ``python colab/run_notebooks.py [NAME ...]`` reads each
``.py``, executes it top to bottom in a fresh kernel with nbclient (cwd ``colab/``, as
Jupyter would), strips what changes on every run (execution counts, timings, kernel
versions) and writes the ``.ipynb``. The tests execute the committed ``.ipynb`` with
``parameters`` injected papermill-style: a cell tagged ``injected-parameters`` right
after the cell tagged ``parameters``, so the quick values win.
"""

from __future__ import annotations

import hashlib
import os
import sys

import jupytext
import nbformat
from nbclient import NotebookClient

COLAB = os.path.dirname(os.path.abspath(__file__))


def notebook_names() -> list[str]:
    """The notebooks: the ``.py`` files here written in jupytext's format."""
    names = []
    for f in sorted(os.listdir(COLAB)):
        if f.endswith(".py"):
            with open(os.path.join(COLAB, f)) as source:
                if source.read(64).startswith("# ---\n# jupyter:"):
                    names.append(f.removesuffix(".py"))
    return names


def inject(nb, parameters: dict):
    """A copy of ``nb`` with ``parameters`` set in a cell after its ``parameters`` cell."""
    nb = nbformat.from_dict(nb)
    if not parameters:
        return nb
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(tagged)}")
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def execute(nb, parameters: dict | None = None, env: dict | None = None, timeout: int = 1200,
            cwd: str = COLAB):
    """Run every cell in a fresh python3 kernel in ``cwd``; raises CellExecutionError."""
    nb = inject(nb, parameters or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": cwd}})
    client.execute(env=dict(os.environ) if env is None else env)
    return nb


def strip(nb):
    """Drop what changes on every execution, so diffs show only changed cells and outputs."""
    seen = set()
    for i, cell in enumerate(nb.cells):  # ids from the source: stable while a cell is unchanged
        cell.id = hashlib.sha1(cell.source.encode()).hexdigest()[:8]
        cell.id = cell.id if cell.id not in seen else f"{cell.id}-{i}"
        seen.add(cell.id)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.execution_count = None
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = None
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def build(name: str) -> str:
    """Execute ``colab/NAME.py`` with its own parameters and write ``colab/NAME.ipynb``."""
    nb = jupytext.read(os.path.join(COLAB, f"{name}.py"))
    nb = strip(execute(nb, timeout=3600))  # the full MNIST-1D comparison takes minutes
    path = os.path.join(COLAB, f"{name}.ipynb")
    jupytext.write(nb, path)
    return path


def main(names: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(COLAB), os.environ.get("PYTHONPATH")])))
    os.environ.update(env)  # the kernel imports this checkout's package
    for name in names or notebook_names():
        print(f"executing colab/{name}.py ...", flush=True)
        print(f"  wrote {build(name)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
