"""The paper's rules: a learning-rate step schedule → decay_lr, increase_batch or hybrid.

The reference is ``decay_lr``: ε falls by ``factor`` at each boundary, so stage
k's target noise is g_k = g_0 / factor**k. The other rules hit the same targets
with larger batches (``increase_batch``), or with larger batches up to a cap and
then smaller ε (``hybrid``). The first stage may itself be scaled first by the
B ∝ ε and B ∝ 1/(1−m) rules (``schedule_from_config``).

Rounding: every B is rounded to a multiple of ``batch_multiple`` (what the user
gives: the least common multiple of the slice sizes they will use, never the
live device count, so the schedule and its fingerprint do not change when a run
moves). Batch sizes *solved* from the exact form (or scaled by a rule) are
rounded to ``batch_multiple × ghost_batch_size`` so ghost batch norm keeps its
fixed statistics size. The g error that any rounding causes is kept in
``Schedule.target_noise`` and shown, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from noise_scale import adaptive, theory
from noise_scale.config.fields import FIELDS, check_fields
from noise_scale.config.names import RULES
from noise_scale.errors import ScheduleError
from noise_scale.schedule.core import Schedule, Stage
from noise_scale.schedule.ladder import shaped_schedule
from noise_scale.schedule.measured import measured_schedule
from noise_scale.schedule.shapes import Shape


def from_lr_steps(
    rule: str,
    *,
    dataset_size: int,
    total_epochs: float,
    batch_size: int,
    learning_rate: float,
    momentum: float,
    boundaries: Sequence[float],
    factor: float,
    max_batch_size: int = 0,
    exact: bool = False,
    batch_multiple: int = 1,
    warmup_epochs: float = 0.0,
    warmup_start_lr: float = 0.0,
    reference_noise: float = 0.0,
    name: str = "",
    batch_factor: float = 0.0,
    decisions: Sequence[bool] = (),
    noise_model: str = "sgd",
) -> Schedule:
    """Turn a learning-rate step schedule into one of the paper's rules.

    - ``decay_lr``: ε ÷ ``factor`` at each boundary (the reference).
    - ``increase_batch``: B × ``factor`` at each boundary (with ``exact``: B solved
      from the exact form, so g_k is matched even where B is not ≪ N).
      Exceeding ``max_batch_size`` is an error.
    - ``hybrid``: B grows until the next growth would pass ``max_batch_size``;
      then B = max_batch_size and ε takes the remaining factor; later
      boundaries decay ε.

    ``reference_noise`` is the g the reference starts from when the first stage
    was itself derived by a scaling rule (B ∝ ε, B ∝ 1/(1−m)); by default it is
    the first stage's own g.

    ``batch_factor`` (a control, not a rule of the paper): where the batch grows
    it grows by this instead of ``factor`` (not solved, even with ``exact``), so
    g falls by ``batch_factor`` where the reference's falls by ``factor``. The
    targets stay the reference's, so the g error shows the mismatch. 0: ``factor``.

    ``decisions`` (the measured cap, ``capped_schedule``): one bool per boundary, in
    order; False makes that boundary's step an ε step (B kept), as the hybrid rule
    does at its cap. Boundaries past the given ones follow the rule.

    ``noise_model`` (a key of ``theory.NOISE_MODELS``): what is kept. ``sgd``: g, as
    above. ``adam_sqrt``: Adam's T = η/√B, so each batch step B×``factor`` also
    divides ε by √``factor`` and the hybrid rule's ε at the cap is T·√cap.
    """
    edges = _check_step_args(rule, dataset_size, total_epochs, batch_size, learning_rate,
                             momentum, boundaries, factor, max_batch_size, batch_multiple)
    if batch_factor and not batch_factor > 1:
        raise ScheduleError(f"batch_factor must be 0 (= factor) or > 1, got {batch_factor}.",
                            field="batch_factor")
    model = theory.NOISE_MODELS[noise_model]
    g0 = reference_noise or model.value(learning_rate, batch_size, dataset_size, momentum)
    targets = [g0 / factor**k for k in range(len(edges) - 1)]
    cap = max_batch_size or dataset_size
    stages, b, lr, capped = [], float(batch_size), float(learning_rate), False
    for k, g in enumerate(targets):
        if k > 0 and k <= len(decisions) and not decisions[k - 1]:  # the measured cap blocks
            b, lr, _ = _next_stage("hybrid", g, b, lr, True, factor, cap, exact,
                                   dataset_size, momentum, edges[k], model=model)
        elif k > 0:
            b, lr, capped = _next_stage(rule, g, b, lr, capped, factor, cap, exact,
                                        dataset_size, momentum, edges[k], batch_factor, model)
        stages.append(
            Stage(edges[k], edges[k + 1], round_batch(b, batch_multiple, cap), lr, momentum))
    return Schedule(dataset_size=dataset_size, stages=tuple(stages), warmup_epochs=warmup_epochs,
                    warmup_start_lr=warmup_start_lr, target_noise=tuple(targets),
                    name=name or rule, noise_model=noise_model)


def _next_stage(rule, g, b, lr, capped, factor, cap, exact, n, m, epoch, batch_factor=0.0,
                model=theory.SGD_NOISE):
    """(B, ε, capped) of the next stage, whose target noise is ``g`` (``model``'s quantity)."""
    sgd = model is theory.SGD_NOISE
    if rule == "decay_lr":
        return b, lr / factor, capped
    if rule == "hybrid" and capped:  # already at the cap: ε takes the step
        return b, (model.solve_learning_rate(g, b, n, m) if exact else lr / factor), True
    if batch_factor:  # the mismatched control: B grows by batch_factor, g is not kept
        nb, nlr = b * batch_factor, lr * model.lr_step(batch_factor)
    elif sgd:
        nb, nlr = (theory.solve_batch_size(g, lr, n, m) if exact else b * factor), lr
    else:  # Adam's square-root rule: B×factor, ε÷√factor (T = η/√B has no finite-N term)
        nb, nlr = b * factor, lr * model.lr_step(factor)
    if nb <= cap + 1e-9:
        return nb, nlr, False
    if rule == "increase_batch":
        raise ScheduleError(
            f"increase_batch needs batch_size {nb:,.0f} at epoch {epoch:g}, above "
            f"max_batch_size {cap:,} (or dataset_size). Use rule='hybrid' to let the learning "
            "rate take the rest, or raise max_batch_size.")
    if sgd:
        lr = theory.solve_learning_rate(g, cap, n, m) if exact else lr * cap / nb
    else:
        lr = model.solve_learning_rate(g, cap, n, m)
    return cap, lr, True


def _check_step_args(rule, n, total_epochs, batch_size, learning_rate, momentum, boundaries,
                     factor, max_batch_size, batch_multiple) -> list[float]:
    """Argument checks of ``from_lr_steps``; returns the stage edges in epochs.

    The ranges of ε, B, N and m are theory's (``theory.noise_scale`` checks and names
    them); the relations that make a schedule are here (``check_sizes``, the edges)."""
    if rule not in RULES:
        raise ScheduleError(f"rule must be one of {', '.join(RULES)}; got {rule!r}.", field="rule")
    theory.noise_scale(learning_rate, batch_size, n, momentum)  # its ranges, named
    for name, value in (("dataset_size", n), ("batch_size", batch_size)):
        check_int(name, value, minimum=1)  # whole examples (theory takes any positive number)
    check_int("batch_multiple", batch_multiple, minimum=1)
    check_int("max_batch_size", max_batch_size, minimum=0)
    check_number("total_epochs", total_epochs, positive=True)
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
        raise ScheduleError(f"factor must be a finite number > 1 (the size of each step), got "
                            f"{factor!r}.", field="factor")
    check_sizes(n, batch_size, max_batch_size)
    edges = [0.0, *[float(x) for x in boundaries], float(total_epochs)]
    if any(hi <= lo for lo, hi in zip(edges, edges[1:])):
        inside = tuple(b for b in boundaries if 0 < b < total_epochs)
        raise ScheduleError(
            f"boundaries must increase strictly inside (0, total_epochs={total_epochs:g}); "
            f"got {tuple(boundaries)!r}. Sort them and drop any at or past total_epochs "
            f"(e.g. {inside!r}), or raise total_epochs.", field="boundaries")
    return edges


def check_sizes(n: int, batch_size: int, max_batch_size: int) -> None:
    """The first batch below N; the cap 0 (none) or in [the first batch, N]."""
    if batch_size >= n:
        raise ScheduleError(
            f"batch_size {batch_size:,} is not below dataset_size {n:,}: full-batch descent "
            "has no noise to schedule. Choose a batch_size well below dataset_size (≤ N/10), "
            f"e.g. {max(1, min(32, n // 10))}.", field="batch_size")
    if max_batch_size and max_batch_size < batch_size:
        raise ScheduleError(
            f"max_batch_size {max_batch_size:,} is below the first batch_size {batch_size:,}; "
            f"raise max_batch_size (the paper caps B near N/10: {max(batch_size, n // 10)}), "
            "lower batch_size, or 0 (no cap).", field="max_batch_size")
    if max_batch_size > n:
        raise ScheduleError(
            f"max_batch_size {max_batch_size:,} exceeds dataset_size {n:,}; the paper caps the "
            f"batch near N/10 ({max(batch_size, n // 10)}), or 0 (no cap).",
            field="max_batch_size")


def round_batch(b: float, multiple: int, cap: int) -> int:
    """Nearest multiple of ``multiple`` (at least one), never above ``cap``."""
    r = max(multiple, int(round(b / multiple)) * multiple)
    while r > cap and r - multiple >= multiple:
        r -= multiple
    return r


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ScheduleError(f"{name} must be an integer >= {minimum}, got {value!r}.", field=name)


def check_number(name, value, positive=False):
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 or not positive)
    if not ok:
        raise ScheduleError(
            f"{name} must be a {'positive ' if positive else ''}number, got {value!r}.", field=name)


def extrapolation_note(config) -> str | None:
    """What a reader must know when Adam meets a converted schedule, else None."""
    from noise_scale import adaptive

    if not adaptive.is_adaptive(config) or config.schedule.rule == "decay_lr":
        return None
    if adaptive.adam_rule(config) == "linear":
        return (f"note: with optimizer {config.optimizer} and schedule.adam_rule=linear, the "
                "schedule keeps SGD's g = ε/(1−m)(N/B−1) with b1 as m: the paper's empirical "
                "rule. Adam's own temperature is η/√B (adam_rule=sqrt, the default); treat "
                "the linear plan as the arm to compare against.")
    return None


# The rules a measured cap (schedule.noise_cap) may hold back: their batch grows at boundaries.
CAPPED_RULES = ("increase_batch", "hybrid")


def probe_every(config) -> float:
    """``config.probe.every_epochs``, which rule ``measured`` needs (> 0): its stages."""
    every = config.get("probe", {}).get("every_epochs", 0.0)
    if not every:
        raise ScheduleError(
            "rule 'measured' grows B where the branching probe decides, every "
            "probe.every_epochs epochs; it is 0 (no probe). Set e.g. "
            "--config.probe.every_epochs=4.", field="probe.every_epochs")
    return every


def capped_schedule(config, decisions: Sequence[bool]) -> Schedule:
    """The measured cap's schedule (``config.schedule.noise_cap``) after ``decisions``.

    ``decisions[k]`` is the outcome at boundary k + 1: True, B grows as the rule says;
    False, the measured noise scale capped it and ε takes the step (B kept). Boundaries
    past the prefix default to True, so ``capped_schedule(config, ())`` is the rule's
    own schedule (bit for bit) and a run re-plans with each new decision.
    """
    return schedule_from_config(config, decisions=tuple(decisions))


def shape_from_config(config) -> Shape:
    """``config.schedule``'s learning-rate shape (``step``: the boundaries carry the decay)."""
    s = config.schedule
    return Shape(s.shape, s.total_epochs, s.warmup_epochs, final_fraction=s.final_lr_fraction,
                 power=s.power, decay_fraction=s.decay_fraction, knots=tuple(s.knots))


def solved_multiple(config) -> int:
    """What solved or scaled batch sizes round to: batch_multiple × the ghost batch size.

    A solved B (say 3,639) that is not a multiple of the ghost size would make ghost
    batch norm fall back to tiny ghost batches: the batch-norm drift it exists to
    prevent. Hand-given and ×factor batch sizes keep ``batch_multiple`` alone.
    """
    multiple = config.schedule.batch_multiple
    ghost = config.get("ghost_batch_size", 0)
    return multiple * ghost if ghost > 0 else multiple


def rounded_message(config, rounded: int, multiple: int, exact: bool, model, lr, m) -> str:
    """Why a hand-given B0 is refused where rounding would change it, and the fixes.

    An error, not a g-error column: B0 is the reference's own batch (its g starts every
    target), so a rounded B0 moves every stage of the run, and training shows no table."""
    s, n = config.schedule, config.dataset_size
    g_error = model.value(lr, rounded, n, m) / model.value(lr, s.batch_size, n, m) - 1
    ghost = config.get("ghost_batch_size", 0)
    form = f"of the {s.shape} shape" if s.shape != "step" else "in the exact form"
    why = (f"schedule.batch_multiple × ghost_batch_size = {s.batch_multiple} × {ghost} = "
           f"{multiple}, what batch sizes {form} are rounded to so ghost batch norm keeps "
           "its size" if exact and ghost > 0 else f"schedule.batch_multiple = {multiple}")
    return (f"batch_size={s.batch_size} is not a multiple of {why}: it would start at "
            f"B = {rounded} instead, g {100 * g_error:+.0f} % for the whole run. Fix: "
            f"--config.schedule.batch_size={rounded} knowingly (and scale learning_rate to "
            "keep g), or a schedule.batch_multiple"
            + (" (or ghost_batch_size)" if exact and ghost > 0 else "") + " that divides it.")


# schedule arguments that are fields of config itself (not of config.schedule)
CONFIG_FIELDS = ("dataset_size", "probe.every_epochs")
# The fields schedule_from_config reads, each checked by its own FIELDS entry first, so a
# notebook that calls it without validate_config gets the same refusal as training.
INPUTS = ("dataset_size", "ghost_batch_size", "optimizer", "probe.every_epochs",
          *(name for name in FIELDS if name.startswith("schedule.")))


def schedule_from_config(config, decisions: Sequence[bool] = (),
                         measured: Sequence[int] = ()) -> Schedule:
    """The Schedule a config describes: ``config.schedule`` over ``config.dataset_size``
    (with a measured cap, after ``decisions``: see ``capped_schedule``; with rule
    ``measured``, after the batch sizes the probe chose, ``measured``: see ``measured``).

    Applies the scaling rules to the first stage before the step rule, each in
    the approximate (×k) form or, with ``exact``, by solving the exact form for
    B so the first stage's g equals the unscaled one's:

    - ``lr_scale`` k (B ∝ ε): ε0 ← k·ε0, B0 ← k·B0;
    - ``raise_momentum_to`` m' (B ∝ 1/(1−m)): B0 ← B0·(1−m)/(1−m'), m ← m'.

    A ``shape`` other than ``step`` (cosine, linear, ..., see ``shapes``) is converted
    by ``ladder.shaped_schedule``, always in the exact form.

    Errors name the config field (``config.schedule.X``) and how to fix it.
    """
    check_fields(config, INPUTS)  # each field's own type and range: config.fields, one table
    s, n = config.schedule, config.dataset_size
    name = config.get("variant", "") or s.rule
    try:
        check_sizes(n, s.batch_size, s.max_batch_size)  # as given, before any scaling rule
        shape = shape_from_config(config)
        b, m = s.batch_size, s.momentum
        lr = shape.peak_learning_rate if shape.kind == "piecewise" else s.learning_rate
        kind = adaptive.noise_model(config)
        model = theory.NOISE_MODELS[kind]
        g0 = model.value(lr, b, n, m)
        exact = s.exact or shape.kind != "step"
        scaled = s.lr_scale != 1.0 or bool(s.raise_momentum_to)
        if s.lr_scale != 1.0:
            lr, b = lr * s.lr_scale, model.batch_for_lr_scale(b, s.lr_scale)
        if s.raise_momentum_to:
            if kind != "sgd":
                raise ScheduleError(
                    "raise_momentum_to has no counterpart under Adam's square-root rule: "
                    "Adam divides its first moment by (1 − b1), so a larger b1 does not "
                    "enlarge the step (set it to 0, or schedule.adam_rule='linear').",
                    field="raise_momentum_to")
            b, m = theory.scale_batch_for_momentum(b, m, s.raise_momentum_to), s.raise_momentum_to
        if exact and scaled:
            b = model.solve_batch_size(g0, lr, n, m)
        multiple = solved_multiple(config) if exact else s.batch_multiple
        b = round_batch(b, multiple, n)
        if not scaled and b != s.batch_size:
            raise ScheduleError(rounded_message(config, b, multiple, exact, model, lr, m),
                                field="batch_size")
        if s.rule == "measured":
            return measured_schedule(
                shape=shape, dataset_size=n, batch_size=b, learning_rate=lr, momentum=m,
                reference_noise=model.value(lr, b, n, m),
                every_epochs=probe_every(config), decided=measured,
                warmup_start_lr=s.warmup_start_lr, name=name, noise_model=kind)
        if shape.kind != "step":
            return shaped_schedule(
                s.rule, shape=shape, dataset_size=n, batch_size=b, learning_rate=lr,
                momentum=m, reference_noise=g0, max_batch_size=s.max_batch_size,
                max_stages=s.max_stages, multiple=multiple, ladder_ratio=s.ladder_ratio,
                warmup_start_lr=s.warmup_start_lr, name=name, noise_model=kind)
        return from_lr_steps(
            s.rule, dataset_size=n, total_epochs=s.total_epochs, batch_size=b,
            learning_rate=lr, momentum=m, boundaries=tuple(s.boundaries), factor=s.factor,
            max_batch_size=s.max_batch_size, exact=s.exact, batch_multiple=multiple,
            warmup_epochs=s.warmup_epochs, warmup_start_lr=s.warmup_start_lr,
            reference_noise=g0, name=name, batch_factor=s.get("batch_factor", 0.0),
            decisions=decisions, noise_model=kind)
    except OverflowError as e:  # a finite value whose batch sizes or rates do not fit a float
        field, value = max(((k, v) for k, v in s.items() if isinstance(v, (int, float))
                            and not isinstance(v, bool)), key=lambda kv: abs(kv[1]))
        raise ScheduleError(
            f"invalid schedule in config.schedule (variant {name!r}, dataset_size {n:,}): the "
            f"batch sizes or learning rates it implies overflow ({e}); the largest value is "
            f"config.schedule.{field}={value!r}. Fix: --config.schedule.{field}=<a sensible "
            "value> (the paper's factors are 2-10).", field=f"config.schedule.{field}") from None
    except ScheduleError as e:  # the check's own field says where to fix it
        where = "config" if e.field in CONFIG_FIELDS else "config.schedule"
        field = f"{where}.{e.field}" if e.field else where
        flag = f"--{field}=VALUE" if e.field else f"--{where}.FIELD=VALUE"
        raise ScheduleError(
            f"invalid schedule in {where} (variant {name!r}, dataset_size {n:,}): {e} "
            f"Fix it in the config file or with {flag}.", field=field) from None
