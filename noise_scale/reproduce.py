"""One command reproduces the paper's figure: every schedule, several seeds, one report.

  python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=/tmp/repro
  python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=/tmp/repro \
      --variants=decay_lr,increase_batch --seeds=3 --config.schedule.total_epochs=20
  python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=/tmp/repro --optimizer=adam

The flags over ``noise_scale.experiments.reproduce`` (what is run, reused,
resumed and written is described there); ``--config.a.b=value`` overrides apply
to every run. Rerunning the command reuses finished runs and resumes the others.
"""

from __future__ import annotations

from noise_scale import _python

_python.require_supported()  # before absl, JAX and the pinned packages are imported

from absl import flags, logging

from noise_scale import cli, errors, experiments
from noise_scale.config.names import OPTIMIZERS  # the names, without JAX
from noise_scale.experiments import agreement

_VARIANTS = flags.DEFINE_list(
    "variants", [], "Variants of the config file to compare (default: all of them, with the "
    "controls).")
_SEEDS = flags.DEFINE_integer(
    "seeds", agreement.DEFAULT_SEEDS, "Number of seeds; seed s sets config.seed = s (the "
    "verdict rule pairs seed s of each schedule with seed s of the reference).")
_JOBS = flags.DEFINE_integer(
    "jobs", 1, "Runs trained at once, each in its own process (1: in this process). "
    "2 suits MNIST-1D on a 2-core machine; keep 1 on an accelerator.")
_OPTIMIZER = flags.DEFINE_string(
    "optimizer", "", f"One of {', '.join(OPTIMIZERS)}: rerun the comparison with it, keeping g, "
    "into WORKDIR/<optimizer>/ (default: the config's).")


def main(argv_and_config):
    config, argv = argv_and_config  # config: a config_lib.ConfigArgs (cli.run(variant=False))
    if len(argv) > 1:
        raise errors.UsageError(f"unexpected arguments: {' '.join(argv[1:])}. "
                                "Pass --helpshort to see the flags.")
    logging.set_verbosity(logging.WARNING)  # one error line, not JAX's backend probing
    summary = experiments.reproduce(
        config, cli.WORKDIR.value or "", variants=_VARIANTS.value or None, seeds=_SEEDS.value,
        jobs=_JOBS.value, optimizer=_OPTIMIZER.value)
    for sentence in experiments.summary_sentences(summary):
        print(f"- {sentence}")
    files = summary["files"]
    print(f"wrote {files['figure']}, {files['report']}, {files['summary']}")


if __name__ == "__main__":
    cli.run(main, variant=False)
