"""The critical batch size by branching (Merrill, Arora, Groeneveld & Hajishirzi 2025).

At a point of training, fork the parameters, run short branches of plain SGD at the
batch sizes B0·k (k = 1, 2, 4, ...) with the linear rule's learning rate ε0·k, each over
the same T examples, and take the largest batch whose loss after the branch stays within
a tolerance of the ×1 branch's. The rule, its tolerance and its ground-truth check are
fixed in docs/probe.md (pre-registered before the runs that judge it):

- every repeat r draws one stream of T examples, and every factor's branch consumes that
  same stream in its own batch size (the factors differ by batching, not by data);
- the loss compared is ``evaluate(params)`` after the branch, averaged over the repeats;
- lost(k) = (L̄_k − L̄_1)/(L_fork − L̄_1), the fraction of the ×1 branch's progress the
  ×k branch gives up; the CBS is interpolated geometrically between the last factor
  within the tolerance and the first past it (``critical_batch``).

The fork is in memory and never modified: JAX arrays are immutable, nothing is donated,
and the branches start from the caller's own tree. Each batch size compiles one program
(``jax.jit``: a ``lax.scan`` over the branch's updates, ``vmap`` over the repeats).

``noise_probe`` is a second rule, aimed at McCandlish et al.'s (2018) quantity rather
than loss parity: one-step branches, each batch size at its best ε on a grid, and
B_noise fitted to the gains D(B) = D_max/(1 + B_noise/B) with ``fit_hyperbola`` (the
constant-B sweeps' fit of S = S_min + E_min/B). It reads the closed form in linear
regression, and 0.31–0.43× the swept critical batch on MNIST-1D at the seed it was
scored on (docs/probe.md): a measurement of B_noise, not of B_crit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from noise_scale.config import fields
from noise_scale.errors import UsageError

FACTORS = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """One probe: per factor the batch size, the mean loss after its branch and the
    progress it lost; the CBS read off them, and whether it is only a lower bound."""

    batch_sizes: tuple[int, ...]
    losses: tuple[float, ...]  # L̄_k: evaluate() after the branch, mean over repeats
    fork_loss: float  # evaluate() at the fork
    lost: tuple[float, ...]  # (L̄_k − L̄_1)/(L_fork − L̄_1)
    cbs: float
    censored: bool  # no factor exceeded the tolerance: cbs is the largest batch, a bound


def check_arguments(batch_size, learning_rate, factors, branch_examples, tolerance,
                    repeats) -> tuple[int, ...]:
    """The probe's arguments checked (a UsageError naming the argument); the factors.
    Types and ranges by the config's own predicates (``config.fields``)."""

    def bad(field, message):
        return UsageError(f"probe: {field} {message}", field=field)

    positive_int, positive = fields.integer(minimum=1), fields.number(positive=True)
    if not positive_int(batch_size):
        raise bad("batch_size", f"must be a positive integer, got {batch_size!r}")
    if not positive(learning_rate):
        raise bad("learning_rate", f"must be a positive finite number, got {learning_rate!r}")
    factors = tuple(factors)
    if not _increasing(factors) or factors[0] != 1:
        raise bad("factors", "must be strictly increasing integers starting at 1 "
                  f"(the ×1 branch is the reference), got {factors!r}")
    if not positive(tolerance):
        raise bad("tolerance", f"must be a positive finite fraction, got {tolerance!r}")
    if not positive_int(repeats):
        raise bad("repeats", f"must be a positive integer, got {repeats!r}")
    if not fields.integer(minimum=batch_size * factors[-1])(branch_examples):
        raise bad("branch_examples", f"must be an integer of at least the largest batch, "
                  f"{batch_size * factors[-1]}, got {branch_examples!r}")
    uneven = [batch_size * k for k in factors if branch_examples % (batch_size * k)]
    if uneven:
        raise bad("branch_examples", f"{branch_examples} must be a multiple of every "
                  f"branch's batch; it is not of {uneven}")
    return factors


def _increasing(values: tuple) -> bool:
    """Non-empty, positive integers, strictly increasing: the probes' factors and sizes."""
    return (bool(values) and all(map(fields.integer(minimum=1), values))
            and all(a < b for a, b in zip(values, values[1:])))


def critical_batch(batch_sizes: Sequence[int], lost: Sequence[float],
                   tolerance: float) -> tuple[float, bool]:
    """The CBS read off the progress lost per batch size, and whether it is censored.

    The first batch whose lost fraction exceeds ``tolerance`` and the one before it;
    log B interpolated linearly in the lost fraction between them (a diverged branch,
    lost not finite: the one before it). None exceeding it: the largest batch, censored
    (a lower bound).
    """
    for i in range(1, len(batch_sizes)):
        if not lost[i] <= tolerance:  # NaN too: a branch that diverged
            lo, hi = batch_sizes[i - 1], batch_sizes[i]
            if not math.isfinite(lost[i]):
                return float(lo), False
            t = (tolerance - lost[i - 1]) / (lost[i] - lost[i - 1])
            return float(lo * (hi / lo) ** t), False
    return float(batch_sizes[-1]), True


def _branches(loss_fn: Callable, evaluate: Callable, batch: int):
    """The jitted program for one batch size: R branches of plain SGD, then evaluate."""
    grad = jax.grad(loss_fn)

    def one(params, stream, lr):
        steps = jax.tree.leaves(stream)[0].shape[0] // batch
        batches = jax.tree.map(lambda a: a.reshape((steps, batch) + a.shape[1:]), stream)

        def update(p, b):
            g = grad(p, b)
            return jax.tree.map(lambda w, gw: w - lr * gw, p, g), None

        final, _ = jax.lax.scan(update, params, batches)
        return evaluate(final)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


def probe(loss_fn: Callable, params, sample: Callable, evaluate: Callable, *,
          batch_size: int, learning_rate: float, factors: Sequence[int] = FACTORS,
          branch_examples: int = 256, tolerance: float = 0.5, repeats: int = 64,
          seed: int = 0) -> ProbeResult:
    """Branch at ``params`` and read off the critical batch size (docs/probe.md).

    ``loss_fn(params, batch)``: the mean loss over a batch (its gradient drives SGD);
    ``sample(key, n)``: a batch of n examples (a pytree whose leaves lead with n);
    ``evaluate(params)``: the scalar loss compared (a JAX function: a held-out batch's
    loss, or a population loss in closed form). ``batch_size`` and ``learning_rate`` are
    B0 and ε0; branch ×k runs ``branch_examples // (B0·k)`` updates at ε0·k.
    """
    factors = check_arguments(batch_size, learning_rate, factors, branch_examples,
                              tolerance, repeats)
    keys = jax.random.split(jax.random.PRNGKey(seed), repeats)
    streams = [sample(k, branch_examples) for k in keys]
    stream = jax.tree.map(lambda *a: jnp.stack(a), *streams)
    fork_loss = float(evaluate(params))
    sizes = tuple(batch_size * k for k in factors)
    losses = tuple(
        float(np.mean(np.asarray(_branches(loss_fn, evaluate, b)(
            params, stream, jnp.asarray(learning_rate * k, jnp.float32)), np.float64)))
        for b, k in zip(sizes, factors))
    progress = fork_loss - losses[0]
    if not progress > 0:
        raise UsageError(f"probe: the ×1 branch did not lower the loss ({fork_loss:.6g} → "
                         f"{losses[0]:.6g}); a smaller learning_rate or a longer branch "
                         "is needed to compare against it", field="learning_rate")
    lost = tuple((loss - losses[0]) / progress for loss in losses)
    cbs, censored = critical_batch(sizes, lost, tolerance)
    return ProbeResult(sizes, losses, fork_loss, lost, cbs, censored)


# -- the hyperbola ---------------------------------------------------------------------------


def fit_hyperbola(batches, steps) -> dict:
    """S(B) = S_min + E_min/B, least squares on log S: B_crit = E_min/S_min.

    Written as S = S_min(1 + B_crit/B): for a given B_crit the best log S_min is the mean
    residual, so the fit is a one-dimensional search over log B_crit (a fine grid, then
    golden-section refinement), with no starting guess to choose. ``b_crit`` at the grid's
    ends means the data do not bound it (all points on one branch of the hyperbola).
    """
    b = np.asarray(batches, float)
    log_s = np.log(np.asarray(steps, float))

    def sse(log_bc):
        r = log_s - np.log1p(math.exp(log_bc) / b)
        return float(((r - r.mean()) ** 2).sum()), float(r.mean())

    lo, hi = math.log(1e-2), math.log(1e7)
    grid = np.linspace(lo, hi, 2001)
    i = int(np.argmin([sse(g)[0] for g in grid]))
    a, c = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        x1, x2 = c - g * (c - a), a + g * (c - a)
        if sse(x1)[0] <= sse(x2)[0]:
            c = x2
        else:
            a = x1
    log_bc = (a + c) / 2
    err, log_smin = sse(log_bc)
    s_min = math.exp(log_smin)
    b_crit = math.exp(log_bc)
    return {"b_crit": b_crit, "s_min": s_min, "e_min": s_min * b_crit,
            "rms_log_residual": math.sqrt(err / len(b)),
            "bounded": bool(lo + 0.01 < log_bc < hi - 0.01)}


def jackknife(batches, steps) -> tuple[float, float]:
    """The range of B_crit over the fits leaving one batch size out (needs ≥ 4 points)."""
    vals = [fit_hyperbola([b for j, b in enumerate(batches) if j != i],
                          [s for j, s in enumerate(steps) if j != i])["b_crit"]
            for i in range(len(batches))]
    return min(vals), max(vals)


# -- the one-step read: McCandlish's B_noise by branching (docs/probe.md, the second rule) ----


@dataclasses.dataclass(frozen=True)
class NoiseProbeResult:
    """One read: per batch size the best mean loss decrease of one plain SGD step over the
    learning-rate grid (the gain D(B)) and the ε that gave it; B_noise fitted to them."""

    batch_sizes: tuple[int, ...]
    gains: tuple[float, ...]  # D(B) = max over ε of −mean ΔL (≤ 0: no ε lowered the loss)
    learning_rates: tuple[float, ...]  # the ε of each D(B)
    at_grid_edge: tuple[bool, ...]  # that ε is the grid's smallest or largest
    fork_loss: float
    b_noise: float | None  # None: fewer than three batch sizes gained
    gain_max: float | None  # D_max, the gain of a noiseless step
    bounded: bool  # the fit found B_noise inside its search range


def noise_from_gains(batch_sizes: Sequence[int], mean_deltas, learning_rates: Sequence[float],
                     fork_loss: float) -> NoiseProbeResult:
    """B_noise from the mean one-step loss changes ``mean_deltas[i][j]`` (batch size i,
    learning rate j): D(B) = max_j −mean_deltas, and 1/D(B) = (1 + B_noise/B)/D_max fitted
    (``fit_hyperbola``, 1/D as the steps) over the batch sizes with D > 0.

    Why that form: with the optimal step, one SGD step at batch B lowers the loss by
    D_max/(1 + B_noise/B), B_noise = tr(HΣ)/GᵀHG (McCandlish et al. 2018, eq. 2.6), so the
    steps a run needs scale as 1/D: the same hyperbola the constant-B sweeps fit, read at
    one point of training instead of over a run.
    """
    deltas = np.asarray(mean_deltas, np.float64)
    deltas = np.where(np.isfinite(deltas), deltas, np.inf)  # a diverged step gains nothing
    best = deltas.argmin(axis=1)
    gains = tuple(float(-deltas[i, j]) for i, j in enumerate(best))
    lrs = tuple(float(learning_rates[j]) for j in best)
    edge = tuple(bool(j in (0, len(learning_rates) - 1)) for j in best)
    used = [(b, g) for b, g in zip(batch_sizes, gains) if g > 0]
    b_noise = gain_max = None
    bounded = False
    if len(used) >= 3:
        f = fit_hyperbola([b for b, _ in used], [1.0 / g for _, g in used])
        b_noise, gain_max, bounded = f["b_crit"], 1.0 / f["s_min"], f["bounded"]
    return NoiseProbeResult(tuple(int(b) for b in batch_sizes), gains, lrs, edge,
                            float(fork_loss), b_noise, gain_max, bounded)


def branch_program(loss_fn: Callable, evaluate: Callable):
    """The jitted read of one draw: ``batches`` (S batches, leaves leading with S) run as S
    plain SGD steps from ``params`` at every ε of ``lrs`` (one after another, ``lax.map``,
    so a large ``evaluate`` never holds every ε's activations), and evaluate(after) for
    each (the fork's own loss is the caller's, read once)."""
    grad = jax.grad(loss_fn)

    def losses(params, batches, lrs):
        def branch(lr):
            def update(p, b):
                return jax.tree.map(lambda w, gw: w - lr * gw, p, grad(p, b)), None

            return evaluate(jax.lax.scan(update, params, batches)[0])

        return jax.lax.map(branch, lrs)

    return jax.jit(losses)


def noise_probe(loss_fn: Callable, params, streams: Sequence, evaluate: Callable, *,
                batch_sizes: Sequence[int], learning_rates: Sequence[float],
                steps: int = 1) -> NoiseProbeResult:
    """McCandlish's B_noise at ``params`` by branches of ``steps`` plain SGD steps, each
    batch size at its best ε of a grid (docs/probe.md; the registered rule: steps = 1).

    ``streams``: R pytrees of at least ``steps``·max(batch_sizes) examples each (leaves
    lead with the example axis); step t of the branch at batch B in repeat r takes the
    first B of the t-th max(batch_sizes) examples of ``streams[r]`` (nested: the sizes
    share data, so they differ by batching, not by draw). Every branch runs at every ε of
    ``learning_rates``; ``evaluate`` reads the loss after it; the mean over repeats of the
    change is ``noise_from_gains``'s table. Nothing of ``params`` is changed.
    """
    sizes = tuple(batch_sizes)
    if not _increasing(sizes):
        raise UsageError(f"noise_probe: batch_sizes must be strictly increasing positive "
                         f"integers, got {sizes!r}", field="batch_sizes")
    lrs = tuple(learning_rates)
    if len(lrs) < 2 or not all(map(fields.number(positive=True), lrs)):
        raise UsageError(f"noise_probe: learning_rates must be at least two positive numbers "
                         f"(a grid to take the best of), got {lrs!r}", field="learning_rates")
    if not fields.integer(minimum=1)(steps):
        raise UsageError(f"noise_probe: steps must be a positive integer, got {steps!r}",
                         field="steps")
    need = steps * sizes[-1]
    short = [i for i, s in enumerate(streams) if jax.tree.leaves(s)[0].shape[0] < need]
    if not streams or short:
        raise UsageError(f"noise_probe: streams must be at least one, each of at least "
                         f"{need} examples (steps × the largest batch); "
                         f"{'none were given' if not streams else f'{short} are shorter'}",
                         field="streams")
    program, grid = branch_program(loss_fn, evaluate), jnp.asarray(lrs, jnp.float32)
    fork_loss = float(jax.jit(evaluate)(params))
    table = np.zeros((len(sizes), len(lrs)))
    for stream in streams:
        for i, b in enumerate(sizes):  # step t: the first b of the stream's t-th B_max
            batches = jax.tree.map(
                lambda a, b=b: a[:need].reshape((steps, sizes[-1]) + a.shape[1:])[:, :b], stream)
            table[i] += np.asarray(program(params, batches, grid), np.float64) - fork_loss
    return noise_from_gains(sizes, table / len(streams), lrs, fork_loss)
