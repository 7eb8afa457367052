"""Exploratory re-reads of the branching probe at the critical-batch sweep's forks.

``critical_batch.py`` scores the in-loop probe's registered readings against McCandlish's
B_crit (docs/probe.md). These reads ask *why* it reads low, at the fork run's checkpoints
(that script's workdir, its fork runs already trained), with the loop's own ``Prober``:

- ``--lengths``: the probe with branches of other lengths T, factors up to ×64, and
  ``--compare``/``--tolerance`` (e.g. the pure probe's progress ≤ 0.5 halving rule);
- ``--doubling=T,G``: McCandlish's halving read locally: each factor's branch at its best
  of ε·k·2^−i, i < G, and the critical batch where L_k(T) crosses L_1(T/2).

Neither is a rule the loop runs, and neither was registered before its runs: hints for a
next rule, not evidence. T = 2,048 with the registered rule reproduces the in-loop
readings exactly (``tests/test_critical_batch.py``).

  python benchmarks/critical_batch_reads.py --lengths=2048,8192,32768
  python benchmarks/critical_batch_reads.py --lengths=2048,8192,32768 --compare=progress --tolerance=0.5
  python benchmarks/critical_batch_reads.py --doubling=8192,4
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os

import critical_batch_forks
from harness import use_repository

FACTORS = (1, 2, 4, 8, 16, 32, 64)  # B·k up to N/2


def prober_at_forks(sweep, workdir: str, seed: int, tiny: bool, name: str, **probe):
    """(run, prober, eval_step, forks): ``critical_batch_forks.run_at_forks`` with
    ``config.probe`` fields ``probe`` (factors kept to B·k ≤ N/2), the run's ``Prober`` and
    its eval step."""
    from noise_scale import parallel
    from noise_scale.train import branching

    config, _ = critical_batch_forks.configs(sweep, workdir, tiny, seed)
    b0 = config.schedule.batch_size
    probe["factors"] = tuple(k for k in probe["factors"] if b0 * k <= sweep.dataset_size // 2)
    run, forks = critical_batch_forks.run_at_forks(sweep, workdir, seed, tiny, name, **probe)
    eval_step = parallel.make_eval_step(run.model, run.mesh, run.has_batch_stats)
    return run, branching.Prober(run, {}), eval_step, forks


def finite(values):
    """JSON has no NaN: a diverged branch's loss is None."""
    return [None if isinstance(x, float) and not math.isfinite(x) else x for x in values]


def probe_again(sweep, workdir: str, branch_examples: int, factors, tiny=False,
                compare: str = "ratio", tolerance: float = 0.15, seed: int = 0) -> list:
    """The in-loop probe re-read at each fork checkpoint with branches of
    ``branch_examples``, ``factors``, ``compare`` and ``tolerance``, everything else as
    the fork run's probe (two repeats, its ε)."""
    run, prober, eval_step, forks = prober_at_forks(
        sweep, workdir, seed, tiny,
        f"probe_n{sweep.dataset_size}_s{seed}_t{branch_examples}_{compare}{tolerance:g}",
        branch_examples=branch_examples, factors=tuple(factors), compare=compare,
        tolerance=tolerance)
    out = []
    for case, fork, state in forks:
        reading = prober.probe(state, run.plans[0], run.schedule, run.sampler, eval_step, fork)
        read = {k: finite(v) if isinstance(v, list) else v for k, v in reading.read().items()}
        out.append({"case": case, "branch_examples": branch_examples, "tolerance": tolerance,
                    **read})
    return out


def doubling_read(sweep, workdir: str, branch_examples: int, factors, grid: int,
                  seed: int = 0, tiny: bool = False) -> list:
    """McCandlish's halving read locally. At each fork, branches (``Prober.branch``) at B·k
    and ε·(the exact SGD factor)·2^−i, i < ``grid``, for T = ``branch_examples``, and the
    ×1 branch also for T/2; each factor's loss is the lowest over i (each batch at its
    best ε, as the sweep tunes it), the mean over two repeats, all read on the same
    held-out examples. The critical batch is where L_k(T) crosses L_1(T/2): past it a
    batch needs more than twice the examples of B to get as far (E_k/E_1 = 2 on the
    hyperbola: B·k = B_crit + 2B)."""
    from noise_scale.probe import critical_batch
    from noise_scale.train import branching

    run, prober, eval_step, forks = prober_at_forks(
        sweep, workdir, seed, tiny, f"doubling_n{sweep.dataset_size}_s{seed}",
        branch_examples=branch_examples, factors=tuple(factors))
    plan, schedule, p = run.plans[0], run.schedule, run.config.probe
    b, factors = plan.batch_size, p.factors
    out = []
    for case, fork, state in forks:
        heldout = fork + branch_examples * p.repeats

        def best(batch, examples, state=state, fork=fork, heldout=heldout):
            base = branching.lr_factor(schedule.noise_model, b, batch, sweep.dataset_size,
                                       plan.stage.momentum)
            losses = [sum(prober.loss(prober.branch(state, plan, batch, base * 2.0 ** -i,
                                                    run.sampler, fork + r * branch_examples,
                                                    examples),
                                      run.sampler, eval_step, heldout)
                          for r in range(p.repeats)) / p.repeats for i in range(grid)]
            return min((x for x in losses if math.isfinite(x)), default=float("inf"))

        half = best(b, branch_examples // 2)
        full = [best(b * k, branch_examples) for k in factors]
        cbs, censored = critical_batch([b * k for k in factors], [x / half - 1 for x in full],
                                       0.0)
        logging.warning("doubling read %s (T=%d, grid %d): L_1(T/2) %.4f; L_k(T) %s; "
                        "critical batch %.0f%s", case, branch_examples, grid, half,
                        ", ".join(f"{x:.4f}" for x in full), cbs,
                        " (censored)" if censored else "")
        out.append({"case": case, "seed": seed, "branch_examples": branch_examples,
                    "grid": grid, "factors": list(factors), "half_loss": half,
                    "losses": finite(full), "cbs": cbs, "censored": censored})
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", default="/tmp/critical_batch",
                   help="critical_batch.py's workdir (its fork runs are read, or trained)")
    p.add_argument("--out", default="", help="the JSON to write ('' = <workdir>/reads.json)")
    p.add_argument("--sizes", default="", help="comma-separated N (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the fork run's seed")
    p.add_argument("--lengths", default="",
                   help="re-read the probe with these branch lengths T (comma-separated)")
    p.add_argument("--compare", default="ratio", choices=["ratio", "progress"],
                   help="with --lengths: the probe's comparison (config.probe.compare)")
    p.add_argument("--tolerance", type=float, default=0.15,
                   help="with --lengths: its tolerance (config.probe.tolerance)")
    p.add_argument("--doubling", default="",
                   help="'T,G': the local halving read, branches of T examples, G halvings of ε")
    p.add_argument("--tiny", action="store_true", help="critical_batch.py --tiny's fork run")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    use_repository()
    sweeps = critical_batch_forks.sweeps_with_fork_runs(args)
    out = {}
    if args.lengths:
        out["probe_again"] = [r for t in args.lengths.split(",") for s in sweeps
                              for r in probe_again(s, args.workdir, int(t), FACTORS, args.tiny,
                                                   args.compare, args.tolerance, args.seed)]
    if args.doubling:
        t, grid = (int(x) for x in args.doubling.split(","))
        out["doubling"] = [r for s in sweeps for r in doubling_read(
            s, args.workdir, t, FACTORS, grid, args.seed, args.tiny)]
    with open(args.out or os.path.join(args.workdir, "reads.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
