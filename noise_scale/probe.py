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
    if (not factors or not all(map(positive_int, factors))
            or factors[0] != 1 or any(b <= a for a, b in zip(factors, factors[1:]))):
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
