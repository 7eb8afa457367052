"""The paper's comparison as one Python call: every schedule, several seeds, one report.

  from noise_scale import config_lib, experiments
  summary = experiments.reproduce(
      config_lib.ConfigArgs("configs/mnist1d.py", (("schedule.total_epochs", "20"),)),
      "/tmp/repro", variants=("decay_lr", "increase_batch"), seeds=3)

Runs each variant of the config file for seeds 0 … S−1, each in
``WORKDIR/<variant>/seed<s>/`` through ``noise_scale.train.train_and_evaluate``,
then writes into WORKDIR (``WORKDIR/<optimizer>/`` with a converted optimizer)

- ``figure.png``: test accuracy and training loss against epochs (left) and
  against parameter updates (right, log x), mean over seeds with a min–max band;
- ``report.md``: per schedule its role (reference, equivalent, control, with
  cost), the final test accuracy, updates, wall time, compiles, the curve
  agreement with the reference and its verdict by ``agreement``'s fixed rule,
  whether the comparison is reproduced, then a summary generated from them;
- ``summary.json``: the same numbers, machine-readable.

The reference is the config file's ``REFERENCE`` (default ``decay_lr``), its
controls its ``CONTROLS``. Why a package of five modules: planning and reuse
(``runs``), training (``executor``), the verdict rule (``agreement``), numbers
(``report``) and drawing (``figure``) change for
different reasons and are tested apart. ``python -m noise_scale.reproduce`` is
the flags over ``reproduce``; a notebook calls it directly. Bad input raises
``errors.ConfigError`` before anything trains; a run that stops raises
``errors.SetupError``, ``errors.TrainingDiverged`` or ``errors.Preempted``
(finished runs are kept, and calling again reuses them and resumes the rest).
"""

from __future__ import annotations

import sys

from noise_scale import config_lib
from noise_scale.experiments import agreement, cap_report, executor, figure, report, runs
from noise_scale.experiments.report import summary_sentences

__all__ = ["reproduce", "summary_sentences"]


def reproduce(config: config_lib.ConfigArgs, workdir: str, *, variants=None,
              seeds: int = agreement.DEFAULT_SEEDS, jobs: int = 1, optimizer: str = "", stream=None) -> dict:
    """Train (or reuse) every run, write figure.png, report.md and summary.json.

    ``config``: the config file without a variant, and overrides applied to every run;
    ``variants``: names (or one comma-separated string; None: every variant of the file,
    its controls included); ``jobs``: runs trained at once,
    each in a spawned process when > 1 (1 trains here); ``optimizer``: rerun with it
    keeping g (see ``runs``). Progress goes to ``stream`` (default: stdout).

    Returns summary.json's content plus ``files``: where the three outputs are.
    """
    stream = stream or sys.stdout
    variants = runs.check_inputs(config, workdir, variants, seeds, jobs, optimizer)
    import jax  # after the input has been checked

    plan = runs.plan_runs(config, workdir, variants, seeds, optimizer, jax.device_count())
    for note in plan.notes:
        print(f"note: {note}", file=stream, flush=True)
    n_variants = len({r.variant for r in plan.runs})
    print(f"{len(plan.runs)} runs ({n_variants} variants × {seeds} seed{'s' if seeds > 1 else ''})"
          f" into {plan.outdir}", file=stream, flush=True)
    records = executor.execute(plan.runs, jobs, stream)
    by_variant = {}
    for run in plan.runs:  # variant → records per seed, in seed order
        by_variant.setdefault(run.variant, []).append(records[(run.variant, run.seed)])
    summary = report.write_outputs(plan.outdir, by_variant, list(range(seeds)), config,
                                   plan.notes, plan.reference_config, plan.reference, plan.roles)
    figure.write_figure(plan.outdir / "figure.png", by_variant, summary, config.spec,
                        plan.reference_config)
    outputs = (("figure", "png"), ("report", "md"), ("summary", "json"))
    if figure.write_noise_figure(plan.outdir / "noise_scale.png", by_variant, config.spec,
                                 plan.reference_config):
        report.add_noise_figure(plan.outdir)
        outputs += (("noise_scale", "png"),)
    cap_report.add_cap_decisions(plan.outdir, by_variant)
    files = {name: str(plan.outdir / f"{name}.{ext}") for name, ext in outputs}
    return {**summary, "files": files}
