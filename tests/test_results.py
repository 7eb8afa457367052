"""README's results block is what docs/*/summary.json say (``noise_scale.experiments.results``)."""

import json
import math
import pathlib

import pytest

from noise_scale.experiments import results

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_block_is_generated_from_the_committed_summaries():
    assert results.main(["results", "--check"]) == 0, (
        "README.md's results block is stale: run python -m noise_scale.experiments.results")
    readme = (ROOT / "README.md").read_text()
    for folder, s in results.load_sets(ROOT / "docs").items():
        assert results.set_line(folder, s) in readme
        assert f"**{s['agreement']['result'] or 'no result'}**" in results.set_line(folder, s)


def test_a_set_line_reads_every_verdict_and_names_too_few_seeds():
    s = json.loads((ROOT / "docs" / "mnist1d_sgd" / "summary.json").read_text())
    s["seeds"] = [0, 1]
    s["variants"]["hybrid"].update(verdict="distinguishable", margin_units=3.456)
    line = results.set_line("mnist1d_sgd", s)
    assert "| 2 (too few) | decay_lr |" in line
    assert "hybrid → distinguishable (3.46; 2.3× fewer)" in line
    assert "control: constant_lr → " in line and "decay_lr →" not in line


def test_a_stale_block_is_found_and_rewritten():
    text = f"intro\n{results.BEGIN}\nold numbers\n{results.END}\nafter\n"
    new = results.rewrite(text, ["| a | b |"])
    assert new == f"intro\n{results.BEGIN}\n| a | b |\n{results.END}\nafter\n"
    with pytest.raises(ValueError, match="lacks the markers"):
        results.rewrite("no markers here", [])


def test_docs_adam_block_lists_every_window_of_the_adam_sets():
    sets = results.load_sets(ROOT / "docs")
    adam = (ROOT / "docs" / "adam.md").read_text()
    for folder in results.ADAM_SETS:
        if folder not in sets:
            continue
        s = sets[folder]
        for arm, v in s["variants"].items():
            for w in v["windows"] if arm != s["reference"] else []:
                assert results.window_line(arm, w) in adam


def test_a_window_line_shows_the_ratio_and_the_gap_with_their_intervals():
    w = {"from_epoch": 13.0, "to_epoch": 24.0, "stage": 1,
         "loss": {"mean": math.log(1.18), "low": math.log(1.03), "high": math.log(1.35)},
         "accuracy": {"mean": -0.021, "low": -0.07, "high": 0.034}}
    assert results.window_line("sqrt", w) == (
        "| sqrt | 13–24 | 1 | ×1.180 [1.030, 1.350] | -0.02 [-0.07, +0.03] |")
