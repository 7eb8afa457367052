"""The committed results in docs/ say what their own records say.

Each set (docs/<set>/: report.md, summary.json, figure.png and every run's
metrics.jsonl) is recomputed from its metrics.jsonl files: the windows, seed-paired means and
verdicts by a direct transcription of the written rule (not through
``agreement``), then the whole summary through ``report.summarize``; the update
counts against the schedule each config describes (what
``python -m noise_scale.schedule`` prints). Fast: reading ~100 small files.
"""

import json
import math
import pathlib

import pytest
from scipy import stats as scipy_stats

from noise_scale import config_lib
from noise_scale.experiments import agreement, report, runs
from noise_scale.metrics import read_metrics
from noise_scale.schedule import schedule_from_config
from noise_scale.schedule.rules import capped_schedule

ROOT = pathlib.Path(__file__).resolve().parents[1]
# set → (config file, optimizer, overrides)
SETS = {
    "mnist1d": ("configs/mnist1d.py", "momentum", ()),
    "mnist1d_sgd": ("configs/mnist1d.py", "sgd", ()),
    "mnist1d_adam": ("configs/mnist1d_adam.py", "adam", ()),  # the arms of Adam's rule
    "mnist1d_adamw": ("configs/mnist1d_adamw.py", "adamw", ()),
    "mnist1d_nesterov": ("configs/mnist1d.py", "nesterov", ()),
    "mnist1d_imagenet": ("configs/mnist1d_imagenet.py", "nesterov", ()),
    "mnist1d_cosine": ("configs/mnist1d_cosine.py", "momentum", ()),
}
RUN_WITH_OTHER_DEFAULTS: set[str] = set()  # sets run when a config's defaults differed
# The rule as the report states it; must equal agreement's constants.
LOSS_MARGIN, ACCURACY_MARGIN = math.log(1.15), 0.25


def _load(name):
    folder = ROOT / "docs" / name
    summary = json.loads((folder / "summary.json").read_text())
    records = {v: [read_metrics(str(folder / v / f"seed{s}")) for s in summary["seeds"]]
               for v in summary["variants"]}
    return folder, summary, records


def _windows(run, ref):
    """Evaluation epochs per window: from the first where (B, ε, m) differ (the first of all
    where they never do: a control that reran the reference, or a capped seed 0 that held
    every boundary), cut wherever the (schedule stage, reference stage) pair changes."""
    a, b = ({round(r["epoch"]): r for r in x} for x in (run, ref))
    hyper = lambda r: (r["batch_size"], r["learning_rate"], r["momentum"])
    keys = sorted(set(a) & set(b))
    differ = [k for k in keys if any(not math.isclose(x, y, rel_tol=1e-6)
                                     for x, y in zip(hyper(a[k]), hyper(b[k])))]
    out = {}
    for k in keys[keys.index(differ[0]):] if differ else keys:
        out.setdefault((a[k]["stage"], b[k]["stage"]), []).append(k)
    return list(out.values())


def _interval(values, confidence):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def _verdict(by_seed, ref, role):
    """The written rule, transcribed: (verdict, per-window (loss, accuracy) D over seeds)."""
    windows = _windows(by_seed[0], ref[0])
    d = []
    for keys in windows:
        per = []
        for run, r in zip(by_seed, ref):
            a, b = ({round(x["epoch"]): x for x in y} for y in (run, r))
            per.append((sum(math.log(a[k]["train_loss"] / b[k]["train_loss"]) for k in keys)
                        / len(keys),
                        sum(100 * (a[k]["test_accuracy"] - b[k]["test_accuracy"]) for k in keys)
                        / len(keys)))
        d.append(per)
    same = all(-m < lo and hi < m for per in d for c, m in ((0, LOSS_MARGIN),
                                                            (1, ACCURACY_MARGIN))
               for lo, hi in [_interval([p[c] for p in per], 0.90)])
    conf = 1 - 0.05 / (2 * len(d))
    differs = any(lo > 0 or hi < 0 for per in d for c in (0, 1)
                  for lo, hi in [_interval([p[c] for p in per], conf)])
    if role == "control":
        return ("distinguishable" if differs else "indistinguishable"), d
    return ("equivalent" if same else "distinguishable" if differs else "inconclusive"), d


@pytest.mark.parametrize("name", sorted(SETS))
def test_verdicts_recomputed_from_the_committed_records(name):
    folder, summary, records = _load(name)
    assert (agreement.LOSS_MARGIN, agreement.ACCURACY_MARGIN) == (LOSS_MARGIN, ACCURACY_MARGIN)
    assert summary["agreement"]["loss_margin"] == pytest.approx(LOSS_MARGIN)
    ref = records[summary["reference"]]
    want = {"equivalent": "equivalent", "control": "distinguishable"}
    ok = True
    report_md = (folder / "report.md").read_text()
    for variant, by_seed in records.items():
        got = summary["variants"][variant]
        if variant == summary["reference"]:
            shown = "reference"
        else:
            verdict, d = _verdict(by_seed, ref, got["role"])
            assert [[w["loss"]["per_seed"], w["accuracy"]["per_seed"]] for w in got["windows"]
                    ] == [[pytest.approx([p[0] for p in per]), pytest.approx([p[1] for p in per])]
                          for per in d], variant
            assert got["verdict"] == verdict, variant
            if got["role"] in want:
                ok &= verdict == want[got["role"]]
            shown = verdict
        assert [line for line in report_md.splitlines()
                if line.startswith(f"| {variant} | {got['role']} |")][0].endswith(f"| {shown} |")
    if not any(v["role"] == "control" for v in summary["variants"].values()):
        # a set without a control (the Adam arms) has no overall result, only its verdicts
        assert summary["agreement"]["result"] is None
        assert "No overall result" in report_md
        return
    assert summary["agreement"]["result"] == ("reproduced" if ok else "not reproduced")
    assert f"**{summary['agreement']['result'].capitalize()}**" in report_md


def test_the_committed_demo_has_the_default_seeds():
    """docs/mnist1d is `make demo`'s output: as many seeds as the rule's power was sized for."""
    _, summary, _ = _load("mnist1d")
    assert len(summary["seeds"]) == agreement.DEFAULT_SEEDS


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_summary_is_the_records_summary(name):
    folder, summary, records = _load(name)
    again = report.summarize(records, summary["seeds"], summary["eval_every_epochs"],
                             summary["reference"], {v: s["role"] for v, s in
                                                    summary["variants"].items()})
    for key in ("agreement", "variants", "reference", "seeds"):
        assert again[key] == _approx_tree(summary[key]), key
    spec, _, overrides = SETS[name]
    recorded = [tuple(o.split("=", 1)) for o in summary["overrides"]]
    if name in RUN_WITH_OTHER_DEFAULTS:  # its overrides were the defaults of its day
        assert recorded == []
    else:  # run with the settings the config file (with SETS' overrides) gives today
        variant = f"{spec}:{summary['reference']}"
        assert (config_lib.load_config(variant, recorded).to_dict()
                == config_lib.load_config(variant, overrides).to_dict())
    assert (folder / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _approx_tree(x):
    if isinstance(x, dict):
        return {k: _approx_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_approx_tree(v) for v in x]
    return pytest.approx(x) if isinstance(x, float) else x


@pytest.mark.parametrize("name", sorted(SETS))
def test_roles_and_update_counts_are_the_configs(name):
    _, summary, records = _load(name)
    spec, optimizer, overrides = SETS[name]
    _, reference, controls = runs.config_roles(spec)
    assert summary["reference"] == reference and summary["optimizer"] == optimizer
    for variant, got in summary["variants"].items():
        config = config_lib.load_config(f"{spec}:{variant}", overrides)
        assert runs.convert_optimizer(config, optimizer) is None
        assert got["role"] == agreement.role(variant, reference, controls, config)
        if config.schedule.get("noise_cap", 0):  # as each run decided, boundary by boundary
            planned = [capped_schedule(config, [d == "grew" for d in r[-1]["cap_decisions"]
                                                .split(",")]).total_updates
                       for r in records[variant]]
        elif config.schedule.rule == "measured":  # the ladder each run's probe chose
            planned = [schedule_from_config(config, measured=[int(b) for b in r[-1][
                "measured_batches"].split(",")]).total_updates for r in records[variant]]
        else:
            planned = [schedule_from_config(config).total_updates] * len(records[variant])
        assert got["updates"] == planned[0], variant  # the summary's: seed 0's
        assert [r[-1]["updates"] for r in records[variant]] == planned
