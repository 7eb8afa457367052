"""Stage schedules over epochs: the single source of truth for B, ε and m.

A :class:`Schedule` is a run of contiguous :class:`Stage` s over *epochs*
(passes over the N training examples). The optimizer, the sampler and the
compiled step all ask it what holds at a given number of examples seen, so a
batch-size change can never stretch a warm-up or shift a decay the way
step-counted schedules do.

Rounding convention (documented once, used everywhere): the examples form one
continuous stream and an epoch is N examples of it. A step that *starts* at
position p (examples seen so far) uses the stage whose end lies beyond p and
takes that stage's B examples; it may run past the stage's end, in which case
the next stage starts that many examples late (never more than B − 1). The
update count of a stage is therefore ``ceil((end·N − p_start) / B)``, computed
by :meth:`Schedule.plan` with the very rule the training loop follows, so the
printed counts are the counts a run makes.

Run ``python -m noise_scale.schedule --config=configs/X.py:variant`` to see one.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections.abc import Sequence

import numpy as np

from noise_scale import theory

RULES = ("decay_lr", "increase_batch", "hybrid")


from noise_scale.errors import ScheduleError  # noqa: E402,F401 - re-exported


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: epochs [start_epoch, end_epoch) at fixed batch size, learning rate, momentum."""

    start_epoch: float
    end_epoch: float
    batch_size: int
    learning_rate: float
    momentum: float

    @property
    def epochs(self) -> float:
        return self.end_epoch - self.start_epoch

    def noise_scale(self, dataset_size: int) -> float:
        return theory.noise_scale(self.learning_rate, self.batch_size, dataset_size, self.momentum)


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """What the run actually does in one stage, by the rounding convention above.

    ``accumulation_steps`` micro-batches of ``micro_batch`` examples per device
    make one update of ``batch_size`` examples over ``num_devices`` devices.
    """

    index: int
    stage: Stage
    start_example: int
    end_example: int
    updates: int
    num_devices: int
    per_device_batch: int
    accumulation_steps: int

    @property
    def micro_batch(self) -> int:
        return self.per_device_batch // self.accumulation_steps


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Immutable, validated stages over epochs, with an optional linear warm-up.

    Attributes:
      dataset_size: N, the number of training examples (one epoch).
      stages: contiguous stages starting at epoch 0.
      warmup_epochs: length of a linear learning-rate ramp from
        ``warmup_start_lr`` to the stage learning rate (Goyal et al.: 5 epochs,
        0.1 → 3.2). The ramp is evaluated at examples seen, so it does not
        stretch when the batch grows.
      target_noise: the g each stage was built to have (None for hand-made
        schedules); rounding and the B ≪ N approximation are reported
        against it instead of being hidden.
      name: a label for tables and plots.
    """

    dataset_size: int
    stages: tuple[Stage, ...]
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    target_noise: tuple[float, ...] | None = None
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.target_noise is not None:
            object.__setattr__(self, "target_noise", tuple(float(g) for g in self.target_noise))
        # Looked up on every step by the sampler and the loop: computed once.
        ends = tuple(int(math.ceil(s.end_epoch * self.dataset_size - 1e-9)) for s in self.stages)
        object.__setattr__(self, "_ends", ends)
        _validate(self)

    # ------------------------------------------------------------------ queries
    @property
    def total_epochs(self) -> float:
        return self.stages[-1].end_epoch

    @property
    def total_examples(self) -> int:
        return self.stage_end_examples()[-1]

    def stage_end_examples(self) -> list[int]:
        """Each stage's end as a position in the example stream."""
        return list(self._ends)

    def stage_index_at(self, examples_seen: int) -> int:
        """The stage a step starting at ``examples_seen`` uses (see the module docstring)."""
        i = bisect.bisect_right(self._ends, examples_seen)
        if i < len(self._ends):
            return i
        raise ScheduleError(
            f"examples_seen={examples_seen} is past the end of the schedule "
            f"({self.total_examples} examples = {self.total_epochs:g} epochs)."
        )

    def batch_size_at(self, examples_seen: int) -> int:
        return self.stages[self.stage_index_at(examples_seen)].batch_size

    def momentum_at(self, examples_seen: int) -> float:
        return self.stages[self.stage_index_at(examples_seen)].momentum

    def learning_rate_at(self, examples_seen: int) -> float:
        """ε at a position, including the warm-up ramp (linear in examples seen)."""
        lr = self.stages[self.stage_index_at(examples_seen)].learning_rate
        epoch = examples_seen / self.dataset_size
        if epoch < self.warmup_epochs:
            return self.warmup_start_lr + (lr - self.warmup_start_lr) * epoch / self.warmup_epochs
        return lr

    def noise_scale_at(self, examples_seen: int) -> float:
        return theory.noise_scale(
            self.learning_rate_at(examples_seen),
            self.batch_size_at(examples_seen),
            self.dataset_size,
            self.momentum_at(examples_seen),
        )

    def noise_scales(self) -> list[float]:
        """Each stage's g (after warm-up), by the exact formula."""
        return [s.noise_scale(self.dataset_size) for s in self.stages]

    def stage_warmup_epochs(self, index: int) -> float:
        """How many of the warm-up epochs fall inside stage ``index``."""
        s = self.stages[index]
        return max(0.0, min(s.end_epoch, self.warmup_epochs) - s.start_epoch)

    def batch_sizes(self) -> list[int]:
        """Distinct batch sizes in order of first use: one compile each."""
        return list(dict.fromkeys(s.batch_size for s in self.stages))

    # --------------------------------------------------------------- execution
    def plan(self, num_devices: int = 1, max_device_batch: int = 0) -> list[StagePlan]:
        """Per stage: examples covered, update count, per-device batch and accumulation.

        Raises ScheduleError (naming the fix) if a batch does not divide over the
        devices, before anything is compiled.
        """
        if num_devices < 1:
            raise ScheduleError(f"num_devices must be >= 1, got {num_devices}.")
        if max_device_batch < 0:
            raise ScheduleError(
                f"max_device_batch must be >= 0 (0 = no limit), got {max_device_batch}."
            )
        plans, position = [], 0
        for i, (stage, end) in enumerate(zip(self.stages, self.stage_end_examples())):
            b = stage.batch_size
            if b % num_devices:
                raise ScheduleError(
                    f"stage {i} batch_size {b} does not divide over {num_devices} devices "
                    f"({b / num_devices:g} per device). Set schedule.batch_multiple="
                    f"{num_devices} so batch sizes are rounded to a multiple of the device "
                    "count, or change the batch size."
                )
            per_device = b // num_devices
            accum = _accumulation_steps(per_device, max_device_batch)
            updates = max(0, math.ceil((end - position) / b))
            start = position
            position += updates * b
            plans.append(
                StagePlan(i, stage, start, position, updates, num_devices, per_device, accum)
            )
        return plans

    def updates_per_stage(self) -> list[int]:
        return [p.updates for p in self.plan()]

    @property
    def total_updates(self) -> int:
        return sum(self.updates_per_stage())

    # ------------------------------------------------------------------ output
    def to_dict(self, num_devices: int = 1, max_device_batch: int = 0) -> dict:
        plans = self.plan(num_devices, max_device_batch)
        stages = []
        for i, (s, p, g) in enumerate(zip(self.stages, plans, self.noise_scales())):
            row = {
                "start_epoch": s.start_epoch,
                "end_epoch": s.end_epoch,
                "batch_size": s.batch_size,
                "learning_rate": s.learning_rate,
                "momentum": s.momentum,
                "warmup_epochs": self.stage_warmup_epochs(i),
                "noise_scale": g,
                "updates": p.updates,
                "examples": p.end_example - p.start_example,
                "per_device_batch": p.per_device_batch,
                "accumulation_steps": p.accumulation_steps,
            }
            if self.target_noise is not None:
                row["target_noise_scale"] = self.target_noise[i]
                row["noise_scale_error"] = g / self.target_noise[i] - 1.0
            stages.append(row)
        return {
            "name": self.name,
            "dataset_size": self.dataset_size,
            "total_epochs": self.total_epochs,
            "total_updates": sum(p.updates for p in plans),
            "warmup_epochs": self.warmup_epochs,
            "warmup_start_lr": self.warmup_start_lr,
            "num_devices": num_devices,
            "stages": stages,
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(**kwargs), indent=2)

    def table(self, num_devices: int = 1, max_device_batch: int = 0) -> str:
        """A readable table: one row per stage, then totals."""
        d = self.to_dict(num_devices, max_device_batch)
        show_devices = num_devices > 1 or max_device_batch > 0
        head = ["stage", "epochs", "B", "lr", "m", "g"]
        if self.target_noise is not None:
            head.append("g vs target")
        if show_devices:
            head += ["B/device", "accum"]
        head.append("updates")
        rows = []
        for i, r in enumerate(d["stages"]):
            lr = f"{r['learning_rate']:.4g}"
            if r["warmup_epochs"] > 0:
                lr = f"{self.warmup_start_lr:.3g}->{lr} (warm-up {r['warmup_epochs']:g} ep)"
            row = [
                str(i),
                f"{r['start_epoch']:g}-{r['end_epoch']:g}",
                f"{r['batch_size']:,}",
                lr,
                f"{r['momentum']:g}",
                f"{r['noise_scale']:.4g}",
            ]
            if self.target_noise is not None:
                row.append(f"{100 * r['noise_scale_error']:+.2f}%")
            if show_devices:
                micro = r["per_device_batch"] // r["accumulation_steps"]
                row += [
                    f"{r['per_device_batch']:,}",
                    f"{r['accumulation_steps']} x {micro:,}"
                    if r["accumulation_steps"] > 1
                    else "1",
                ]
            row.append(f"{r['updates']:,}")
            rows.append(row)
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        title = f"{self.name or 'schedule'}: N = {self.dataset_size:,}"
        if show_devices:
            title += f", {num_devices} devices"
        lines = [title, fmt(head), fmt(["-" * w for w in widths])]
        lines += [fmt(r) for r in rows]
        lines.append(
            f"total: {self.total_epochs:g} epochs, {d['total_updates']:,} updates, "
            f"{len(self.batch_sizes())} batch size(s) -> {len(self.batch_sizes())} compile(s)"
        )
        return "\n".join(lines)

    def noise_per_epoch(self, epochs: Sequence[float]) -> np.ndarray:
        """g at the given epochs (used by --compare and plots)."""
        return np.array([self.noise_scale_at(int(e * self.dataset_size)) for e in epochs])

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_lr_steps(
        cls,
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
    ) -> Schedule:
        """Turn a learning-rate step schedule into one of the paper's rules.

        The reference is ``decay_lr``: ε falls by ``factor`` at each boundary,
        so stage k's target noise is g_k = g_0 / factor**k. The other rules hit
        the same targets with larger batches:

        - ``increase_batch``: B grows by ``factor`` at each boundary (with
          ``exact``: B solved from the exact form, so g_k is matched even where
          B is not ≪ N). Exceeding ``max_batch_size`` is an error.
        - ``hybrid``: B grows until the next growth would pass
          ``max_batch_size``; then B = max_batch_size and ε takes the remaining
          factor; later boundaries decay ε.

        Batch sizes are rounded to a multiple of ``batch_multiple`` (e.g. the
        device count); the g error this causes is kept in ``target_noise``.
        ``reference_noise`` is the g the reference starts from when the first
        stage was itself derived by a scaling rule (B ∝ ε, B ∝ 1/(1−m)); by
        default it is the first stage's own g.
        """
        if rule not in RULES:
            raise ScheduleError(f"rule must be one of {', '.join(RULES)}; got {rule!r}.")
        _check_int("dataset_size", dataset_size, minimum=1)
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("batch_multiple", batch_multiple, minimum=1)
        _check_int("max_batch_size", max_batch_size, minimum=0)
        _check_number("total_epochs", total_epochs, positive=True)
        _check_number("factor", factor, positive=True)
        if factor <= 1:
            raise ScheduleError(f"factor must be > 1 (the size of each step), got {factor}.")
        try:
            g0 = theory.noise_scale(learning_rate, batch_size, dataset_size, momentum)
        except ValueError as e:
            raise ScheduleError(str(e)) from None
        if batch_size == dataset_size:
            raise ScheduleError(
                f"batch_size {batch_size} equals dataset_size: full-batch descent has no "
                "noise to schedule. Choose a batch_size well below dataset_size (≤ N/10)."
            )
        cap = max_batch_size or dataset_size
        if max_batch_size and max_batch_size < batch_size:
            raise ScheduleError(
                f"max_batch_size {max_batch_size} is below the first batch_size {batch_size}; "
                "raise max_batch_size (the paper uses about N/10) or lower batch_size."
            )
        if max_batch_size > dataset_size:
            raise ScheduleError(
                f"max_batch_size {max_batch_size} exceeds dataset_size {dataset_size}; "
                "the paper caps the batch near N/10."
            )
        edges = [0.0, *[float(b) for b in boundaries], float(total_epochs)]
        for i in range(1, len(edges)):
            if edges[i] <= edges[i - 1]:
                raise ScheduleError(
                    f"boundaries must increase strictly inside (0, total_epochs={total_epochs:g}); "
                    f"got {list(boundaries)}. Sort them and drop any at or past total_epochs."
                )

        if reference_noise:
            g0 = reference_noise
        targets = [g0 / factor**k for k in range(len(edges) - 1)]
        stages = []
        b, lr = float(batch_size), float(learning_rate)
        capped = False
        for k, g in enumerate(targets):
            if k > 0:
                if rule == "decay_lr":
                    lr = lr / factor
                elif rule == "increase_batch" or (rule == "hybrid" and not capped):
                    nb = (
                        theory.solve_batch_size(g, lr, dataset_size, momentum)
                        if exact
                        else b * factor
                    )
                    if nb > cap + 1e-9:
                        if rule == "increase_batch":
                            raise ScheduleError(
                                f"increase_batch needs batch_size {nb:,.0f} at epoch {edges[k]:g}, "
                                f"above max_batch_size {cap:,} (or dataset_size). Use "
                                "rule='hybrid' to let the learning rate take the rest, or raise "
                                "max_batch_size."
                            )
                        capped = True
                        lr = (
                            theory.solve_learning_rate(g, cap, dataset_size, momentum)
                            if exact
                            else lr * cap / nb
                        )
                        nb = cap
                    b = nb
                else:  # hybrid, already at the cap: ε takes the step
                    lr = (
                        theory.solve_learning_rate(g, b, dataset_size, momentum)
                        if exact
                        else lr / factor
                    )
            stages.append(
                Stage(edges[k], edges[k + 1], _round_batch(b, batch_multiple, cap), lr, momentum)
            )
        return cls(
            dataset_size=dataset_size,
            stages=tuple(stages),
            warmup_epochs=warmup_epochs,
            warmup_start_lr=warmup_start_lr,
            target_noise=tuple(targets),
            name=name or rule,
        )


def compare_table(a: Schedule, b: Schedule) -> str:
    """Two schedules side by side over every epoch range where both are constant.

    The last column is how far ``b``'s g departs from ``a``'s: where B is not
    ≪ N the batch route's g falls below the decay route's (the −1 in N/B − 1).
    """
    if a.dataset_size != b.dataset_size:
        raise ScheduleError(
            f"cannot compare schedules over different dataset sizes "
            f"({a.dataset_size} vs {b.dataset_size})."
        )
    edges = sorted(
        {0.0, *(s.end_epoch for s in a.stages), *(s.end_epoch for s in b.stages)}
        | {a.warmup_epochs, b.warmup_epochs}
    )
    edges = [e for e in edges if e <= min(a.total_epochs, b.total_epochs)]
    head = [
        "epochs",
        f"B {a.name}",
        f"lr {a.name}",
        f"g {a.name}",
        f"B {b.name}",
        f"lr {b.name}",
        f"g {b.name}",
        "g ratio",
    ]
    rows = []
    n = a.dataset_size
    for lo, hi in zip(edges, edges[1:]):
        p = int(math.ceil(max(lo, min(a.warmup_epochs, b.warmup_epochs, hi)) * n))
        p = min(max(int(math.ceil(lo * n)), p), int(hi * n) - 1)
        ga, gb = a.noise_scale_at(p), b.noise_scale_at(p)
        rows.append(
            [
                f"{lo:g}-{hi:g}",
                f"{a.batch_size_at(p):,}",
                f"{a.learning_rate_at(p):.4g}",
                f"{ga:.4g}",
                f"{b.batch_size_at(p):,}",
                f"{b.learning_rate_at(p):.4g}",
                f"{gb:.4g}",
                f"{gb / ga:.4f} ({100 * (gb / ga - 1):+.2f}%)",
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    lines.append(
        f"updates: {a.name} {a.total_updates:,}, {b.name} {b.total_updates:,} "
        f"({a.total_updates / b.total_updates:.2f}x fewer for {b.name})"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------- helpers
def _accumulation_steps(per_device: int, max_device_batch: int) -> int:
    """Fewest micro-batches of at most max_device_batch that split per_device evenly."""
    if not max_device_batch or per_device <= max_device_batch:
        return 1
    steps = math.ceil(per_device / max_device_batch)
    while per_device % steps:
        steps += 1
    return steps


def _round_batch(b: float, multiple: int, cap: int) -> int:
    """Nearest multiple of ``multiple`` (at least one), never above ``cap``."""
    r = max(multiple, int(round(b / multiple)) * multiple)
    while r > cap and r - multiple >= multiple:
        r -= multiple
    return r


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ScheduleError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_number(name, value, positive=False):
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 or not positive)
    if not ok:
        raise ScheduleError(
            f"{name} must be a {'positive ' if positive else ''}number, got {value!r}."
        )


def _validate(s: Schedule) -> None:
    _check_int("dataset_size", s.dataset_size, minimum=1)
    if not s.stages:
        raise ScheduleError("a schedule needs at least one stage.")
    n = s.dataset_size
    prev_end = 0.0
    for i, st in enumerate(s.stages):
        where = f"stage {i} ({st.start_epoch:g}-{st.end_epoch:g} epochs)"
        if not (
            isinstance(st.batch_size, (int, np.integer)) and not isinstance(st.batch_size, bool)
        ):
            raise ScheduleError(f"{where}: batch_size must be an integer, got {st.batch_size!r}.")
        if st.batch_size <= 0:
            raise ScheduleError(f"{where}: batch_size must be > 0, got {st.batch_size}.")
        if st.batch_size > n:
            raise ScheduleError(
                f"{where}: batch_size {st.batch_size:,} exceeds dataset_size {n:,}; a batch cannot "
                "hold more than one epoch. Lower it (the paper caps B near N/10)."
            )
        if not (math.isfinite(st.learning_rate) and st.learning_rate > 0):
            raise ScheduleError(
                f"{where}: learning_rate must be positive, got {st.learning_rate!r}."
            )
        if not (0.0 <= st.momentum < 1.0):
            raise ScheduleError(
                f"{where}: momentum must lie in [0, 1), got {st.momentum!r} (0 = plain SGD)."
            )
        if st.start_epoch != prev_end:
            kind = "overlaps the previous stage" if st.start_epoch < prev_end else "leaves a gap"
            raise ScheduleError(
                f"{where}: stages must be in order and contiguous from epoch 0, but this one "
                f"starts at {st.start_epoch:g} where the previous ends at {prev_end:g} "
                f"({kind}). Make each start_epoch equal the previous end_epoch."
            )
        if st.end_epoch <= st.start_epoch:
            raise ScheduleError(f"{where}: end_epoch must be after start_epoch.")
        prev_end = st.end_epoch
    if not (s.warmup_epochs >= 0 and s.warmup_epochs <= s.total_epochs):
        raise ScheduleError(
            f"warmup_epochs must lie in [0, total_epochs={s.total_epochs:g}], got {s.warmup_epochs}."
        )
    if s.warmup_epochs > 0 and not s.warmup_start_lr > 0:
        raise ScheduleError(
            f"warmup_start_lr must be positive when warmup_epochs > 0, got {s.warmup_start_lr}."
        )
    if s.target_noise is not None and len(s.target_noise) != len(s.stages):
        raise ScheduleError("target_noise needs one value per stage.")
    # A stage shorter than the overshoot of the previous one would get no update.
    position = 0
    for i, (st, end) in enumerate(zip(s.stages, s.stage_end_examples())):
        updates = math.ceil((end - position) / st.batch_size)
        if updates <= 0:
            raise ScheduleError(
                f"stage {i} ({st.start_epoch:g}-{st.end_epoch:g} epochs) is covered entirely by the "
                "previous stage's last batch and would get no update; lengthen it."
            )
        position += updates * st.batch_size


def schedule_from_config(config) -> Schedule:
    """The Schedule a config describes: ``config.schedule`` over ``config.dataset_size``.

    Applies the scaling rules to the first stage before the step rule, each in
    the approximate (×k) form or, with ``exact``, by solving the exact form for
    B so the first stage's g equals the unscaled one's:

    - ``lr_scale`` k (B ∝ ε): ε0 ← k·ε0, B0 ← k·B0;
    - ``raise_momentum_to`` m' (B ∝ 1/(1−m)): B0 ← B0·(1−m)/(1−m'), m ← m'.

    Errors name the config field (``config.schedule.X``) and how to fix it.
    """
    s = config.schedule
    n = config.dataset_size
    name = config.get("variant", "") or s.rule
    try:
        b, lr, m = s.batch_size, s.learning_rate, s.momentum
        _check_int("batch_size", b, minimum=1)
        _check_number("lr_scale", s.lr_scale, positive=True)
        g0 = theory.noise_scale(lr, b, n, m)
        if s.lr_scale != 1.0:
            lr = lr * s.lr_scale
            b = theory.scale_batch_for_learning_rate(b, s.lr_scale)
        if s.raise_momentum_to:
            b = theory.scale_batch_for_momentum(b, m, s.raise_momentum_to)
            m = s.raise_momentum_to
        if s.exact and (s.lr_scale != 1.0 or s.raise_momentum_to):
            b = theory.solve_batch_size(g0, lr, n, m)
        multiple = s.batch_multiple
        b = _round_batch(b, multiple if isinstance(multiple, int) and multiple > 0 else 1, n)
        return Schedule.from_lr_steps(
            s.rule,
            dataset_size=n,
            total_epochs=s.total_epochs,
            batch_size=b,
            learning_rate=lr,
            momentum=m,
            boundaries=tuple(s.boundaries),
            factor=s.factor,
            max_batch_size=s.max_batch_size,
            exact=s.exact,
            batch_multiple=s.batch_multiple,
            warmup_epochs=s.warmup_epochs,
            warmup_start_lr=s.warmup_start_lr,
            reference_noise=g0,
            name=name,
        )
    except ValueError as e:
        msg = str(e)
        field = msg.split(" ", 1)[0]
        where = "config" if field == "dataset_size" else "config.schedule"
        raise ScheduleError(
            f"invalid schedule in {where} (variant {name!r}, dataset_size {n:,}): {msg} "
            f"Fix it in the config file or with --{where}.FIELD=VALUE."
        ) from None


if __name__ == "__main__":  # python -m noise_scale.schedule --config=...
    from noise_scale import schedule_cli

    schedule_cli.run()
