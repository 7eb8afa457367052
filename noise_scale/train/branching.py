"""The branching probe inside the training loop (issue 29; its rule: docs/probe.md).

Every ``probe.every_epochs`` (at the first step that starts at or after the point), the
loop hands the probe its state. The probe forks it **in memory** and, for each factor k
with B·k dividing T = ``probe.branch_examples``, runs ``probe.repeats`` branches of T
examples at batch B·k with the rule's learning rate for that batch (``lr_factor``: the
stage's ε scaled so the noise scale stays the same, exactly the ladder's own step), each
repeat over the same stretch of the training stream for every k (the factors differ by
batching, not by data). Each branch's loss is then read, in evaluation mode, on the same
``probe.eval_examples`` training examples (the stream's next ones, after the branches'),
so the comparison between factors shares its evaluation noise. lost(k) and the critical
batch are read off exactly as the pure probe (``noise_scale.probe.critical_batch``).

Why the main run cannot be changed by it: the branches run on copies of the state (the
compiled step donates its input, so each branch donates its own copy), with programs of
their own (plain, no measurement), and read the data by position, which the main
stream's order does not depend on. Their compiles are counted apart
(``probe_compiles``), their seconds are left out of the throughput, and their examples
are reported (``probe_examples``, ``probe_fraction``): a run with the probe on writes
every field of a run without it, plus the probe's (``tests/test_branching.py``).

Why a resume repeats nothing: the readings are stored in the checkpoint (``meta``) and
a resumed run replays them. A run killed during a probe resumes from the checkpoint
before it and probes again from the same state, data and programs: the same reading.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from noise_scale import parallel, theory
from noise_scale.errors import ConfigError
from noise_scale.probe import critical_batch
from noise_scale.schedule.core import accumulation_steps
from noise_scale.schedule.measured import candidate_sizes, next_batch, probe_epochs
from noise_scale.schedule.rules import solved_multiple
from noise_scale.train import evaluation
from noise_scale.train.stage import batch_stats_weight


def enabled(config) -> bool:
    return bool(config.get("probe", {}).get("every_epochs", 0.0))


def measured(config) -> bool:
    """Whether the probe's readings set B (``schedule.rule = "measured"``)."""
    return config.schedule.rule == "measured"


def points(config) -> list[int]:
    """The examples seen from which each probe is due (it runs at the first step there)."""
    n = config.dataset_size
    return [int(math.ceil(e * n - 1e-9))
            for e in probe_epochs(config.schedule.total_epochs, config.probe.every_epochs)]


def candidates(config, schedule) -> list[int]:
    """The batch sizes a measured ladder may take (``schedule.measured``)."""
    s, n = config.schedule, config.dataset_size
    b0 = schedule.stages[0].batch_size
    return candidate_sizes(b0, max(s.max_batch_size or n // 10, b0), solved_multiple(config),
                           s.max_stages)


def lr_factor(noise_model: str, batch_size: int, branch_batch: int, dataset_size: int,
              momentum: float) -> float:
    """ε at ``branch_batch`` over ε at ``batch_size`` for the same noise scale (SGD's exact
    form: (N/B − 1)/(N/b − 1) ≈ b/B; Adam's square-root rule: √(b/B))."""
    solve = theory.NOISE_MODELS[noise_model].solve_learning_rate
    return solve(1.0, branch_batch, dataset_size, momentum) / solve(
        1.0, batch_size, dataset_size, momentum)


def check(config, schedule, devices: int) -> None:
    """The probe's relations, before any compile: T a multiple of B0 × the largest factor,
    and every branch batch and the evaluation set dividing over the devices."""
    if not enabled(config):
        return
    p, b0 = config.probe, schedule.stages[0].batch_size

    def bad(field, message):
        return ConfigError(f"config.probe.{field}: {message}", field=f"config.probe.{field}")

    largest = b0 * p.factors[-1]
    if p.branch_examples % largest:
        raise bad("branch_examples", f"{p.branch_examples} is not a multiple of B0 × the "
                  f"largest factor = {b0} × {p.factors[-1]} = {largest}, so the largest branch "
                  f"cannot train on exactly T examples. Fix: --config.probe.branch_examples="
                  f"{max(1, round(p.branch_examples / largest)) * largest}.")
    if p.eval_examples % devices:
        raise bad("eval_examples", f"{p.eval_examples} does not divide over {devices} devices. "
                  f"Fix: --config.probe.eval_examples={-(-p.eval_examples // devices) * devices}.")
    odd = [b0 * k for k in p.factors if (b0 * k) % devices]
    if odd:
        raise bad("factors", f"branch batches {odd} (B0 = {b0} × factors) do not divide over "
                  f"{devices} devices. Fix: factors whose batches do, or a B0 that is a "
                  "multiple of the device count.")
    if measured(config):
        sizes = candidates(config, schedule)
        odd = [c for c in sizes if c % devices]
        if odd:
            raise bad("factors", f"rule 'measured' may grow B to {odd}, which do not divide "
                      f"over {devices} devices. Fix: --config.schedule.batch_multiple="
                      f"{devices}.")
        if len(sizes) < 2:
            raise bad("every_epochs", f"rule 'measured' has no batch to grow to: the only "
                      f"candidate is B0 = {b0} (schedule.max_batch_size and max_stages allow "
                      "no 2·B0). Fix: --config.schedule.max_stages=4, or a larger "
                      "schedule.max_batch_size.")


COMPARES = ("ratio", "progress")


def excess(compare: str, fork_loss: float, losses) -> tuple[float, ...] | None:
    """What each factor gave up against the ×1 branch, which the tolerance bounds:

    - ``ratio``: L̄_k / L̄_1 − 1, the loss after the branch above the ×1 branch's, as a
      fraction of it (Merrill et al.'s comparison at equal examples);
    - ``progress``: (L̄_k − L̄_1) / (L_fork − L̄_1), the share of the ×1 branch's decrease
      given up (the pure probe's rule, docs/probe.md); None where the ×1 branch did not
      lower the loss, which at a noise floor it need not (then there is no reading).
    """
    if not losses:
        return None
    if compare == "ratio":
        return tuple(x / losses[0] - 1 for x in losses)
    progress = fork_loss - losses[0]
    return tuple((x - losses[0]) / progress for x in losses) if progress > 0 else None


@dataclasses.dataclass(frozen=True)
class Reading:
    """One probe: where, at which B, per factor the batch, mean loss and progress lost,
    the critical batch (None where the ×1 branch made no progress), and the measured
    rule's choice (None where the probe only measures)."""

    examples_seen: int
    batch_size: int
    compare: str
    batch_sizes: tuple[int, ...]
    losses: tuple[float, ...]
    fork_loss: float
    lost: tuple[float | None, ...]
    cbs: float | None
    censored: bool
    chosen: int | None

    def read(self) -> dict:
        """As the records and the checkpoint keep it (lists: what a resume reads back)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


class Prober:
    """The probe's part of the loop: its readings, cost and programs (the loop owns it)."""

    def __init__(self, run, meta: dict):
        self.run, self.config = run, run.config
        self.points = points(self.config)
        self.reads: list[dict] = list(meta.get("probe_reads", []))
        self.examples = int(meta.get("probe_examples", 0))
        self.compiles_before = int(meta.get("probe_compiles", 0))
        self.counter = parallel.CompileCounter()
        self.programs: dict[int, object] = {}

    @property
    def decided(self) -> list[int]:
        """The measured rule's batch per probe point so far (replayed by a resume)."""
        return [r["chosen"] for r in self.reads]

    def due(self, examples_seen: int) -> bool:
        k = len(self.reads)
        return k < len(self.points) and examples_seen >= self.points[k]

    def meta(self) -> dict:
        return {"probe_reads": list(self.reads), "probe_examples": self.examples,
                "probe_compiles": self.compiles_before + self.counter.count}

    def record_fields(self, examples_seen: int) -> dict:
        last = self.reads[-1] if self.reads else None
        fields = {"probe_examples": self.examples,
                  "probe_fraction": self.examples / max(examples_seen, 1),
                  "probe_compiles": self.compiles_before + self.counter.count,
                  "probe_cbs": None if last is None else last["cbs"],
                  "probe_reads": list(self.reads)}
        if measured(self.config):
            fields["measured_batches"] = ",".join(str(b) for b in self.decided)
        return fields

    # -- one probe ------------------------------------------------------------------------

    def probe(self, state, plan, schedule, sampler, eval_step, examples_seen: int) -> Reading:
        """Branch at ``state`` (never changed), read the critical batch, note the reading."""
        p, run, b = self.config.probe, self.run, plan.batch_size
        n, devices = schedule.dataset_size, run.mesh.size
        factors = [k for k in p.factors
                   if p.branch_examples % (b * k) == 0 and (b * k) % devices == 0]
        stretch = p.branch_examples * p.repeats
        heldout = examples_seen + stretch  # the evaluation examples follow the branches'
        fork_loss = self.loss(state, sampler, eval_step, heldout)
        losses = []
        for k in factors:
            bk = b * k
            scale = lr_factor(schedule.noise_model, b, bk, n, plan.stage.momentum)
            total = 0.0
            for r in range(p.repeats):
                branch = self.branch(state, plan, bk, scale, sampler,
                                     examples_seen + r * p.branch_examples)
                total += self.loss(branch, sampler, eval_step, heldout)
            losses.append(total / p.repeats)
        self.examples += stretch * len(factors)
        sizes = tuple(b * k for k in factors)
        lost = excess(p.compare, fork_loss, losses)
        if len(factors) < 2 or lost is None:  # nothing to compare against (JSON: no NaN)
            lost, cbs, censored = tuple(None for _ in losses), None, False
        else:
            cbs, censored = critical_batch(sizes, lost, p.tolerance)
        chosen = None
        if measured(self.config):
            chosen = next_batch(cbs, b, candidates(self.config, schedule))
        reading = Reading(examples_seen, b, p.compare, sizes, tuple(losses), fork_loss, lost, cbs,
                          censored, chosen)
        self.reads.append(reading.read())
        logging.warning(
            "probe at epoch %.2f (B=%d): loss %.4f → %s over %d examples at B×%s; critical "
            "batch %s%s", examples_seen / n, b, fork_loss,
            ", ".join(f"{x:.4f}" for x in losses), p.branch_examples,
            ",".join(map(str, factors)),
            "none (the ×1 branch did not lower the loss)" if cbs is None else f"{cbs:.0f}",
            "" if chosen is None else f"; B {'stays' if chosen == b else 'grows to'} {chosen}")
        return reading

    def branch(self, state, plan, batch_size: int, scale: float, sampler, start: int,
               examples: int | None = None):
        """A copy of ``state`` after ``examples`` (default T) at ``batch_size`` and ε ×
        ``scale``."""
        fork = jax.tree.map(jnp.copy, state)  # the step donates its input: never ``state``'s
        table = fork.opt_state.table
        fork = fork.replace(opt_state=fork.opt_state._replace(
            table=table._replace(learning_rates=table.learning_rates * np.float32(scale))))
        step = None
        examples = self.config.probe.branch_examples if examples is None else examples
        for position in range(start, start + examples, batch_size):
            hb = sampler.batch_at(position, batch_size)
            batch = parallel.shard_batch(hb.data, self.run.mesh)
            if step is None:
                step = self.program(plan, batch_size, fork, batch)
                fork = step.place(fork)
            fork, _ = step(fork, batch, update=1)
        return fork

    def program(self, plan, batch_size: int, state, batch):
        """The plain compiled step at ``batch_size`` (one per size, counted as the probe's)."""
        if batch_size not in self.programs:
            with self.counter:
                self.programs[batch_size] = plain_step(self.run, batch_size, state, batch)
        return self.programs[batch_size]

    def loss(self, state, sampler, eval_step, start: int) -> float:
        """The mean loss (evaluation mode) on the ``probe.eval_examples`` training examples
        of the stream from ``start``."""
        return stream_loss(self.run, state, sampler, eval_step, start,
                           self.config.probe.eval_examples)


def stream_loss(run, state, sampler, eval_step, start: int, total: int) -> float:
    """The mean loss (evaluation mode) on the ``total`` training examples of ``sampler``'s
    stream from position ``start``, in pieces of at most ``eval_batch_size``: the probe's
    branch loss, and ``benchmarks/critical_batch.py``'s fixed training set (start 0)."""
    size = evaluation.padded_size(min(total, run.config.eval_batch_size), run.mesh)

    def read(offset, lo, hi):  # the stream's examples from position start + offset
        idx = sampler.global_indices(start + offset, size)[lo:hi]
        positions = np.arange(start + offset + lo, start + offset + hi, dtype=np.int64)
        return sampler.source.get_batch(idx, positions, run.config.seed)

    sums = evaluation.summed(state, eval_step, run.mesh, total, size, read)
    return sums["loss"] / sums["count"]


def plain_step(run, batch_size: int, state, batch):
    """The run's compiled step at any ``batch_size``, without the noise-scale measurement:
    a branch's (and ``benchmarks/critical_batch.py``'s constant-B runs from a fork)."""
    config = run.config
    micro = accumulation_steps(batch_size // run.mesh.size, config.max_device_batch)
    return parallel.compile_stage_step(
        run.model, run.tx, run.mesh, state, batch, batch_size=batch_size,
        accumulation_steps=micro, label_smoothing=config.label_smoothing,
        has_batch_stats=run.has_batch_stats, measure=None,
        batch_stats_weight=batch_stats_weight(config, batch_size))


def timed(probe_call):
    """(result, seconds) of ``probe_call()``: the loop leaves the seconds out of its rates."""
    t0 = time.perf_counter()
    out = probe_call()
    return out, time.perf_counter() - t0
