"""The one-step read of McCandlish's B_noise at the critical-batch sweep's forks (issue 29:
the second rule, pre-registered in docs/probe.md before the runs that score it).

The branching probe of the loop reads a loss-parity batch, 0.07–0.22× McCandlish's
critical batch at seeds 0 and 1 (docs/probe.md). This rule aims at McCandlish's quantity
itself. With the optimal step, one SGD step at batch B lowers the loss by

    D(B) = D_max / (1 + B_noise/B),        B_noise = tr(HΣ)/GᵀHG ≈ B_crit

(McCandlish et al. 2018, §2.2), so at each fork the branches are single plain SGD steps:
for each batch B = 32·2^i and each of ``REPEATS`` draws (nested: the batch of B is the
first B examples of the draw's ``B_max``), the train-mode gradient steps at every ε of
``LEARNING_RATES``; the loss after it is read in evaluation mode on ``EVAL_EXAMPLES``
held-out training examples. D(B) is the best mean decrease over ε (each batch at its own
best step, as the sweep tunes ε), and B_noise the fit of 1/D(B) to the hyperbola
(``noise_scale.probe.noise_probe``). It is scored against ``critical_batch.py``'s sweep of
the same seed with the issue's bar (``critical_batch.judge``).

  python benchmarks/critical_batch.py --seed=2 --workdir=W --out=sweep.json
  python benchmarks/critical_batch_one_step.py --seed=2 --workdir=W --sweep=sweep.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time

import critical_batch_forks
from harness import use_repository

REPEATS = 16  # draws per batch size (each of B_max examples, nested across the sizes)
LEARNING_RATES = tuple(0.05 * 2 ** (j / 2) for j in range(-2, 13))  # .025 … 3.2, √2 apart
EVAL_EXAMPLES = 4_096  # the held-out training examples each step's loss is read on
LARGEST = 2_048  # the largest batch (and at most N/2)


def batch_sizes(dataset_size: int, b0: int = 32, largest: int = LARGEST) -> tuple[int, ...]:
    """B0·2^i up to min(``largest``, N/2)."""
    out = [b0]
    while out[-1] * 2 <= min(largest, dataset_size // 2):
        out.append(out[-1] * 2)
    return tuple(out)


def objective(run, batch_stats, eval_batch):
    """(loss_fn, evaluate) at a fork: the training objective on a batch (train mode, ghost
    batch norm) and the mean evaluation-mode loss on ``eval_batch``, both with the fork's
    batch-norm statistics (a step changes only the parameters)."""
    import jax.numpy as jnp

    from noise_scale import parallel

    train = parallel.loss_fn(run.model, 0.0, run.has_batch_stats)
    held_out = parallel.eval_loss_fn(run.model, run.has_batch_stats)
    x, y = jnp.asarray(eval_batch["input"]), jnp.asarray(eval_batch["label"])

    def loss_fn(params, batch):
        return train(params, batch_stats, batch["input"], batch["label"])[0]

    def evaluate(params):
        return held_out(params, batch_stats, x, y)[0].mean()

    return loss_fn, evaluate


def read_sweep(sweep, workdir: str, seed: int, tiny: bool = False, repeats: int = REPEATS,
               eval_examples: int = EVAL_EXAMPLES, steps: int = 1,
               learning_rates=LEARNING_RATES) -> list[dict]:
    """The one-step read at each of ``sweep``'s forks (the fork run of ``seed``)."""
    import jax
    import jax.numpy as jnp

    from noise_scale import probe

    run, forks = critical_batch_forks.run_at_forks(sweep, workdir, seed, tiny,
                                             f"one_step_n{sweep.dataset_size}_s{seed}")
    sizes = batch_sizes(sweep.dataset_size, run.config.schedule.batch_size)
    out = []
    for case, fork, state in forks:
        t0 = time.perf_counter()
        params = jax.device_get(state.params)
        stats = jax.device_get(state.batch_stats) if run.has_batch_stats else None
        per_draw = steps * sizes[-1]
        draws = [run.sampler.batch_at(fork + r * per_draw, per_draw).data
                 for r in range(repeats)]
        held_out = run.sampler.batch_at(fork + repeats * per_draw, eval_examples).data
        loss_fn, evaluate = objective(run, stats, held_out)
        streams = [{k: jnp.asarray(d[k]) for k in ("input", "label")} for d in draws]
        result = probe.noise_probe(loss_fn, params, streams, evaluate, batch_sizes=sizes,
                                   learning_rates=learning_rates, steps=steps)
        seconds = time.perf_counter() - t0
        logging.warning("one-step read %s (seed %d): gains %s at ε %s; B_noise %s (%.0f s)",
                        case, seed, ", ".join(f"{g:.2e}" for g in result.gains),
                        ", ".join(f"{e:.3g}" for e in result.learning_rates),
                        "none" if result.b_noise is None else f"{result.b_noise:.0f}", seconds)
        out.append({"case": case, "seed": seed, **dataclasses.asdict(result),
                    "repeats": repeats, "eval_examples": eval_examples,
                    "steps": steps, "examples": repeats * per_draw, "seconds": seconds})
    return out


def reading(read: dict) -> tuple[float | None, bool]:
    """(the value judged, censored): B_noise; a fit the data do not bound (D(B) still
    rising at the largest batch, or flat from the smallest) is judged at that batch, a
    bound like the probe's censored readings; no reading (< 3 batches gained): None."""
    value = read["b_noise"]
    if value is None or read["bounded"]:
        return value, False
    sizes = read["batch_sizes"]
    return float(sizes[-1] if value > sizes[-1] else sizes[0]), True


def score(reads: list[dict], sweep_results: list[dict]) -> dict:
    """Each read beside its case's sweep B_crit and B_simple, and the issue's bar."""
    import critical_batch

    by_case = {(r.get("seed", 0), r["case"]): r for r in sweep_results}
    missing = [(r["seed"], r["case"]) for r in reads if (r["seed"], r["case"]) not in by_case]
    if missing:
        raise SystemExit(f"--sweep: no sweep result for (seed, case) {missing} (it has "
                         f"{sorted(by_case)}); pass critical_batch.py's JSON of the same seed "
                         "and sizes, or leave --sweep out to read without scoring.")
    cases = []
    for read in reads:
        truth = by_case[(read["seed"], read["case"])]
        b_crit = truth["fit"]["b_crit"]
        value, censored = reading(read)
        cases.append({"case": read["case"], "b_crit": b_crit,
                      "jackknife": truth.get("jackknife"), "one_step": value,
                      "one_step_censored": censored,
                      "one_step_over_sweep": None if not value else value / b_crit,
                      "b_simple": truth["b_simple"],
                      "b_simple_over_sweep": truth["b_simple_over_sweep"],
                      "probe": truth["probe"], "probe_over_sweep": truth["probe_over_sweep"]})
    return {"cases": cases, "verdict": critical_batch.judge(cases, "one_step")}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", default="/tmp/critical_batch",
                   help="critical_batch.py's workdir (its fork runs are read, or trained)")
    p.add_argument("--seed", type=int, default=2, help="the fork run's seed (scored: 2)")
    p.add_argument("--sizes", default="", help="comma-separated N (default: all)")
    p.add_argument("--sweep", nargs="*", default=[],
                   help="critical_batch.py's JSON(s) of the same seed to score against")
    p.add_argument("--out", default="", help="the JSON to write ('' = <workdir>/one_step.json)")
    p.add_argument("--steps", type=int, default=1,
                   help="steps per branch (the registered rule: 1; more: exploratory)")
    p.add_argument("--tiny", action="store_true",
                   help="critical_batch.py --tiny's fork run, two repeats: the format, no result")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    use_repository()
    sweeps = critical_batch_forks.sweeps_with_fork_runs(args)
    reads = []
    for s in sweeps:
        reads += read_sweep(s, args.workdir, args.seed, args.tiny,
                            repeats=2 if args.tiny else REPEATS, steps=args.steps)
    out = {"rule": {"repeats": REPEATS, "learning_rates": LEARNING_RATES,
                    "eval_examples": EVAL_EXAMPLES, "largest": LARGEST, "steps": args.steps},
           "reads": reads, "tiny": args.tiny}
    if args.sweep:
        sweep_results = [c for path in args.sweep for c in json.load(open(path))["cases"]]
        out.update(score(reads, sweep_results))
        for c in out["cases"]:
            print(f"{c['case']}: sweep B_crit {c['b_crit']:.0f}; one-step "
                  f"{c['one_step'] or math.nan:.0f}; B_simple {c['b_simple']:.0f}",
                  file=sys.stderr)
        print(json.dumps(out["verdict"]), file=sys.stderr)
    with open(args.out or os.path.join(args.workdir, "one_step.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
