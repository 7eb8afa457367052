"""Copy a finished comparison's evidence into the repository: ``python -m noise_scale.experiments.publish SRC DEST``.

SRC is a reproduction's output folder (``runs/mnist1d``, ``runs/mnist1d/adam``);
DEST gets its ``report.md``, ``summary.json``, ``figure.png`` (and ``noise_scale.png``
where the runs measured it) and every run's
``metrics.jsonl`` as ``DEST/<variant>/seed<s>/metrics.jsonl`` — one record per
evaluation, small — so every verdict can be recomputed from the repository
without rerunning (``tests/test_committed_results.py`` does). Only the runs
``summary.json`` names are copied: SRC may hold other optimizers' folders.
"""

from __future__ import annotations

import json
import pathlib
import shutil

from noise_scale.errors import UsageError

OUTPUTS = ("report.md", "summary.json", "figure.png")
OPTIONAL = ("noise_scale.png",)  # only where the runs measured the noise scale


def publish(src, dest) -> list[pathlib.Path]:
    """Copy the outputs and the named runs' metrics.jsonl; returns the files written."""
    src, dest = pathlib.Path(src), pathlib.Path(dest)
    summary = json.loads((src / "summary.json").read_text())
    written = []
    dest.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS + tuple(n for n in OPTIONAL if (src / n).exists()):
        written.append(pathlib.Path(shutil.copyfile(src / name, dest / name)))
    for variant in summary["variants"]:
        for seed in summary["seeds"]:
            run = pathlib.Path(variant) / f"seed{seed}" / "metrics.jsonl"
            (dest / run).parent.mkdir(parents=True, exist_ok=True)
            written.append(pathlib.Path(shutil.copyfile(src / run, dest / run)))
    return written


def main(argv) -> int:
    if len(argv) != 3:
        raise UsageError("usage: python -m noise_scale.experiments.publish SRC DEST")
    print(f"{len(publish(argv[1], argv[2]))} files into {argv[2]}")
    return 0


if __name__ == "__main__":
    from noise_scale import cli

    cli.run_plain(main)
