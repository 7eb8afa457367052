"""Verdicts from records alone: ``python -m noise_scale.experiments.judge DIR``.

DIR is laid out as ``publish`` writes a comparison (``docs/mnist1d``):
``summary.json`` names the reference, each variant's role and the seeds, and
``<variant>/seed<s>/metrics.jsonl`` holds every run's records. The command
recomputes every verdict under today's rule (``agreement``), rewrites DIR's
``summary.json`` and ``report.md`` (the figure is left as it is), prints one line
per variant (``<variant>: <verdict>``) and the result, and exits 0. A folder
missing a seed's records exits 2 naming what is missing, writing nothing.

Why it exists: a verdict a reader cannot recompute is a claim. With it the
committed results are checked by ``tests/test_committed_results.py``, and a
change of rule is applied to old records without rerunning them.
"""

from __future__ import annotations

import json
import pathlib
import sys

from noise_scale import errors
from noise_scale.experiments import cap_report, report
from noise_scale.metrics import read_metrics

CARRIED = ("config", "overrides", "optimizer", "notes", "context", "title")


def load(folder) -> tuple[dict, dict[str, list[list[dict]]]]:
    """(summary.json, variant → records per seed); ``errors.UsageError`` names what is missing."""
    folder = pathlib.Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise errors.UsageError(f"{path} does not exist: judge reads a folder written by "
                                "noise_scale.experiments.publish (summary.json, "
                                "<variant>/seed<s>/metrics.jsonl).")
    summary = _read_summary(path)
    missing, records = [], {}
    for variant in summary["variants"]:
        records[variant] = []
        for seed in summary["seeds"]:
            run = folder / variant / f"seed{seed}" / "metrics.jsonl"
            recs = read_metrics(str(run.parent)) if run.is_file() else []
            if not recs:
                missing.append(str(run.relative_to(folder)))
            records[variant].append(recs)
    if missing:
        raise errors.UsageError(
            f"{folder}: summary.json names seeds {summary['seeds']} but these records are "
            f"missing or empty: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}. "
            "Copy them in (noise_scale.experiments.publish) or rerun those runs.")
    return summary, records


def _read_summary(path: pathlib.Path) -> dict:
    """summary.json, refused (exit 2) where it is damaged or not one ``report`` wrote."""
    try:
        summary = json.loads(path.read_text())
        ok = (isinstance(summary.get("variants"), dict) and isinstance(summary.get("seeds"), list)
              and "reference" in summary
              and all(isinstance(v, dict) and "role" in v for v in summary["variants"].values()))
    except (ValueError, AttributeError) as e:
        ok, summary = False, str(e)
    if not ok:
        raise errors.UsageError(
            f"{path} is damaged or not a summary written by noise_scale.reproduce (it needs "
            "'variants' with each one's role, 'seeds' and 'reference'). Fix: copy the run's "
            "summary.json back in, or rerun the reproduction to write it.")
    return summary


def _old_context(folder: pathlib.Path) -> dict:
    """Title and context lines of a report written before summary.json carried them."""
    path = folder / "report.md"
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("Final test accuracy")),
               len(lines))
    return {"title": lines[0].lstrip("# "),
            "context": [line for line in lines[1:end] if line.strip()]}


def judge(folder) -> dict:
    """Recompute and rewrite ``folder``'s summary.json and report.md; returns the summary."""
    folder = pathlib.Path(folder)
    old, records = load(folder)
    roles = {v: s["role"] for v, s in old["variants"].items()}
    summary = report.summarize(records, old["seeds"], old.get("eval_every_epochs", 1.0),
                               old["reference"], roles)
    carried = {k: old[k] for k in CARRIED if k in old}
    summary.update({**_old_context(folder), **carried})
    report.write_summary(folder, summary)
    if (folder / "noise_scale.png").is_file():
        report.add_noise_figure(folder)
    cap_report.add_cap_decisions(folder, records)
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m noise_scale.experiments.judge DIR", file=sys.stderr)
        return errors.EXIT_USAGE
    try:
        summary = judge(argv[1])
    except errors.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return errors.EXIT_USAGE
    for name, s in summary["variants"].items():
        print(f"{name}: {'reference' if name == summary['reference'] else s['verdict']}")
    print(f"result: {summary['agreement']['result']}")
    return 0


if __name__ == "__main__":
    from noise_scale import cli  # the command's exit statuses (errors); not the library's

    cli.run_plain(main)
