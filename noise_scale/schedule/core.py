"""Stages over epochs, and the one walk that turns them into what a run does.

A :class:`Schedule` is a run of contiguous :class:`Stage` s over *epochs*
(passes over the N training examples). Everything else asks it what holds at
a given number of examples seen, so a batch-size change can never stretch a
warm-up or shift a decay the way step-counted schedules do.

The stream rule, written once here: the examples form one continuous stream
and an epoch is N examples of it. A step that *starts* at position p
(examples seen so far) uses the stage whose end lies beyond p
(:func:`stage_index`) and takes that stage's B examples; it may run past the
stage's end, in which case the next stage starts that many examples late
(never more than B − 1). :func:`walk` is the rule's closed form — a stage's
update count is ``ceil((end·N − p_start) / B)`` — and :meth:`Schedule.plan`,
validation, the sampler, the optimizer and the update counts all use these two
functions, so the printed counts are the counts a run makes.

The warm-up ramp is written once too (:func:`warmed_up`), and so is ε and m at a
position (:func:`hyperparams_at`: the stream rule, the shape, the ramp), for NumPy on
the host and for traced values inside the compiled step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from noise_scale import theory
from noise_scale.config.names import MAX_EXAMPLES  # the int32 clock
from noise_scale.errors import ScheduleError
from noise_scale.schedule.shapes import Shape


def stage_index(ends, position):
    """The stream rule: the stage whose end lies beyond ``position`` (NumPy or JAX arrays).

    One compare and a sum: on the per-step path inside the compiled step a
    ``searchsorted`` lowers to a loop and is measurably slower.
    """
    return (ends <= position).sum()


def walk(ends, batch_sizes) -> list[tuple[int, int, int]]:
    """(start example, end example, updates) per stage: the stream rule in closed form."""
    segments, position = [], 0
    for end, b in zip(ends, batch_sizes):
        updates = max(0, math.ceil((end - position) / b))
        segments.append((position, position + updates * b, updates))
        position += updates * b
    return segments


def warmed_up(learning_rate, epoch, warmup_epochs: float, warmup_start_lr: float, where=np.where):
    """ε with a linear ramp from ``warmup_start_lr`` over ``warmup_epochs`` (Goyal et al.)."""
    if warmup_epochs <= 0:
        return learning_rate
    ramp = warmup_start_lr + (learning_rate - warmup_start_lr) * epoch / warmup_epochs
    return where(epoch < warmup_epochs, ramp, learning_rate)


def hyperparams_at(examples_seen, table, schedule, xp=np):
    """(ε, m) at ``examples_seen``: the stream rule, the learning-rate shape and the warm-up
    ramp composed once, for the host (``xp=numpy``) and inside the compiled step (``jax.numpy``).

    ``table`` is (stage ends in examples, ε per stage, m per stage): the host passes the
    schedule's own (float64), the optimizer its float32 device table, which a decision
    of the measured cap replaces. From ``schedule`` only what such a decision never
    changes is read: the dataset size, the shape and the warm-up. A position past the
    last stage reads the last one (the host refuses it first: ``stage_index_at``).
    """
    ends, learning_rates, momenta = table
    i = xp.minimum(stage_index(ends, examples_seen), len(ends) - 1)
    epoch = xp.asarray(examples_seen) / schedule.dataset_size
    lr = learning_rates[i]
    if schedule.shape is not None:
        lr = lr * schedule.shape.value(epoch, xp=xp)
    lr = warmed_up(lr, epoch, schedule.warmup_epochs, schedule.warmup_start_lr, where=xp.where)
    return lr, momenta[i]


def accumulation_steps(per_device: int, max_device_batch: int) -> int:
    """Fewest micro-batches of at most max_device_batch that split per_device evenly."""
    if not max_device_batch or per_device <= max_device_batch:
        return 1
    steps = math.ceil(per_device / max_device_batch)
    while per_device % steps:
        steps += 1
    return steps


def smallest_slice(batch_size: int, slices, max_device_batch: int) -> int | None:
    """The fewest devices among ``slices`` over which ``batch_size`` divides and needs no
    accumulation under ``max_device_batch`` (0: no limit); None if none does."""
    for n in sorted(slices):
        if batch_size % n == 0 and accumulation_steps(batch_size // n, max_device_batch) == 1:
            return n
    return None


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

    def noise_scale(self, dataset_size: int, noise_model: str = "sgd") -> float:
        """The stage's g (SGD) or T = η/√B (Adam's square-root rule): ``noise_model``."""
        return theory.NOISE_MODELS[noise_model].value(
            self.learning_rate, self.batch_size, dataset_size, self.momentum)


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """What the run does in one stage, by the stream rule.

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
    def batch_size(self) -> int:
        return self.stage.batch_size

    @property
    def micro_batch(self) -> int:
        return self.per_device_batch // self.accumulation_steps

    def positions(self, start: int | None = None) -> range:
        """Start positions of this stage's steps, from ``start`` (a step start) on."""
        start = self.start_example if start is None else start
        if not self.start_example <= start <= self.end_example or (
                start - self.start_example) % self.batch_size:
            raise ScheduleError(
                f"examples_seen={start:,} is not where a step of stage {self.index} starts "
                f"({self.start_example:,} + k·{self.batch_size:,}); the checkpoint does not "
                "belong to this schedule.")
        return range(start, self.end_example, self.batch_size)


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
      shape: a learning-rate shape s(e) that multiplies every stage's learning
        rate (``shapes.Shape``; None: constant within each stage, the step rules).
      noise_model: what ``target_noise`` and the noise scales measure, a key of
        ``theory.NOISE_MODELS``: ``sgd`` (g = ε/(1−m)(N/B−1)) or ``adam_sqrt``
        (T = η/√B, Adam's square-root rule).
    """

    dataset_size: int
    stages: tuple[Stage, ...]
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    target_noise: tuple[float, ...] | None = None
    name: str = ""
    shape: Shape | None = None
    noise_model: str = "sgd"

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.target_noise is not None:
            object.__setattr__(self, "target_noise", tuple(float(g) for g in self.target_noise))
        _validate_stages(self)
        ends = tuple(int(math.ceil(s.end_epoch * self.dataset_size - 1e-9)) for s in self.stages)
        object.__setattr__(self, "_ends", np.array(ends, np.int64))
        object.__setattr__(self, "_walk", walk(ends, [s.batch_size for s in self.stages]))
        _validate_walk(self)
        if self.end_example > MAX_EXAMPLES:  # the last batch, run past the end, may not fit
            raise ScheduleError(
                f"the run's last batch ends at example {self.end_example:,}, past the int32 "
                f"clock that counts examples seen ({MAX_EXAMPLES:,} at most); shorten "
                "total_epochs.", field="total_epochs")

    # ------------------------------------------------------------------ queries
    @property
    def total_epochs(self) -> float:
        return self.stages[-1].end_epoch

    @property
    def total_examples(self) -> int:
        """Where the last stage ends nominally (N · total_epochs)."""
        return int(self._ends[-1])

    @property
    def end_example(self) -> int:
        """Where the run ends: the last step's end by the stream rule (≥ total_examples)."""
        return self._walk[-1][1]

    def stage_end_examples(self) -> list[int]:
        """Each stage's nominal end as a position in the example stream."""
        return self._ends.tolist()

    def stage_index_at(self, examples_seen: int) -> int:
        """The stage a step starting at ``examples_seen`` uses (the stream rule)."""
        i = int(stage_index(self._ends, examples_seen))
        if i < len(self.stages):
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
        """ε at a position, including the shape and the warm-up ramp (``hyperparams_at``)."""
        self.stage_index_at(examples_seen)  # past the end: refused, not clamped
        return float(hyperparams_at(examples_seen, self.table, self)[0])

    @property
    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stage ends in examples, ε per stage, m per stage): ``hyperparams_at``'s table."""
        return (self._ends, np.array([s.learning_rate for s in self.stages], np.float64),
                np.array([s.momentum for s in self.stages], np.float64))

    def noise_scale_at(self, examples_seen: int) -> float:
        """g (or Adam's T, by ``noise_model``) at a position, warm-up included."""
        return theory.NOISE_MODELS[self.noise_model].value(
            self.learning_rate_at(examples_seen),
            self.batch_size_at(examples_seen),
            self.dataset_size,
            self.momentum_at(examples_seen),
        )

    def noise_scales(self) -> list[float]:
        """Each stage's g (or T, by ``noise_model``) after warm-up, by the exact formula."""
        return [s.noise_scale(self.dataset_size, self.noise_model) for s in self.stages]

    def stage_warmup_epochs(self, index: int) -> float:
        """How many of the warm-up epochs fall inside stage ``index``."""
        s = self.stages[index]
        return max(0.0, min(s.end_epoch, self.warmup_epochs) - s.start_epoch)

    def batch_sizes(self) -> list[int]:
        """Distinct batch sizes in order of first use: one compile each."""
        return list(dict.fromkeys(s.batch_size for s in self.stages))

    # --------------------------------------------------------------- the plan
    def plan(self, num_devices: int = 1, max_device_batch: int = 0) -> list[StagePlan]:
        """Per stage: examples covered, update count, per-device batch and accumulation.

        Raises ScheduleError (naming the fix) if a batch does not divide over the
        devices, before anything is compiled.
        """
        if num_devices < 1:
            raise ScheduleError(f"num_devices must be >= 1, got {num_devices}.")
        if max_device_batch < 0:
            raise ScheduleError(
                f"max_device_batch must be >= 0 (0 = no limit), got {max_device_batch}.")
        plans = []
        for i, (stage, (start, end, updates)) in enumerate(zip(self.stages, self._walk)):
            b = stage.batch_size
            if b % num_devices:
                raise ScheduleError(
                    f"stage {i} batch_size {b} does not divide over {num_devices} devices "
                    f"({b / num_devices:g} per device). Set schedule.batch_multiple="
                    f"{num_devices} so batch sizes are rounded to a multiple of the device "
                    "count, or change the batch size.")
            per_device = b // num_devices
            accum = accumulation_steps(per_device, max_device_batch)
            plans.append(StagePlan(i, stage, start, end, updates, num_devices, per_device, accum))
        return plans

    def updates_per_stage(self) -> list[int]:
        return [updates for _, _, updates in self._walk]

    @property
    def total_updates(self) -> int:
        return sum(self.updates_per_stage())

    def steps(self, start: int = 0, stop: int | None = None):
        """(position, B) of every step from ``start`` (a step start) up to ``stop``: the walk."""
        stop = self.end_example if stop is None else stop
        for (first, end, _), stage in zip(self._walk, self.stages):
            if end <= start:
                continue
            b = stage.batch_size
            if start > first and (start - first) % b:
                raise ScheduleError(
                    f"examples_seen={start:,} is not where a step starts ({first:,} + k·{b:,} "
                    "in its stage); the position does not belong to this schedule.")
            for position in range(max(start, first), min(end, stop), b):
                yield position, b

    def updates_at(self, examples_seen: int) -> int:
        """Updates a run has made when it has seen ``examples_seen`` (a step start or the end)."""
        done = 0
        for (start, end, updates), stage in zip(self._walk, self.stages):
            if examples_seen >= end:
                done += updates
            elif examples_seen > start:
                return done + (examples_seen - start) // stage.batch_size
        return done


def _validate_stages(s: Schedule) -> None:
    if isinstance(s.dataset_size, bool) or not isinstance(s.dataset_size, (int, np.integer)) \
            or s.dataset_size < 1:
        raise ScheduleError(f"dataset_size must be an integer >= 1, got {s.dataset_size!r}.",
                            field="dataset_size")
    if not s.stages:
        raise ScheduleError("a schedule needs at least one stage.")
    prev_end = 0.0
    for i, st in enumerate(s.stages):
        _validate_stage(i, st, s.dataset_size, prev_end)
        prev_end = st.end_epoch
    if not (s.warmup_epochs >= 0 and s.warmup_epochs <= s.total_epochs):
        raise ScheduleError(
            f"warmup_epochs must lie in [0, total_epochs={s.total_epochs:g}], got "
            f"{s.warmup_epochs}; e.g. {min(5.0, s.total_epochs / 2):g}.", field="warmup_epochs")
    if s.warmup_epochs > 0 and not s.warmup_start_lr > 0:
        peak = s.stages[0].learning_rate
        raise ScheduleError(
            f"warmup_start_lr must be positive when warmup_epochs={s.warmup_epochs:g} > 0, got "
            f"{s.warmup_start_lr}; e.g. {peak / 32:g} (ε0/32, Goyal et al.), or warmup_epochs "
            "0.", field="warmup_start_lr")
    if s.noise_model not in theory.NOISE_MODELS:
        raise ScheduleError(f"noise_model must be one of {', '.join(theory.NOISE_MODELS)}, "
                            f"got {s.noise_model!r}.")
    if s.target_noise is not None and len(s.target_noise) != len(s.stages):
        raise ScheduleError("target_noise needs one value per stage.")


def _validate_stage(i: int, st: Stage, n: int, prev_end: float) -> None:
    where = f"stage {i} ({st.start_epoch:g}-{st.end_epoch:g} epochs)"
    b = st.batch_size
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
        raise ScheduleError(f"{where}: batch_size must be an integer, got {b!r}.")
    if b <= 0:
        raise ScheduleError(f"{where}: batch_size must be > 0, got {b}.")
    if b > n:
        raise ScheduleError(
            f"{where}: batch_size {b:,} exceeds dataset_size {n:,}; a batch cannot "
            "hold more than one epoch. Lower it (the paper caps B near N/10).")
    if not (math.isfinite(st.learning_rate) and st.learning_rate > 0):
        raise ScheduleError(f"{where}: learning_rate must be positive, got {st.learning_rate!r}.")
    if not (0.0 <= st.momentum < 1.0):
        raise ScheduleError(
            f"{where}: momentum must lie in [0, 1), got {st.momentum!r} (0 = plain SGD).")
    if st.start_epoch != prev_end:
        kind = "overlaps the previous stage" if st.start_epoch < prev_end else "leaves a gap"
        raise ScheduleError(
            f"{where}: stages must be in order and contiguous from epoch 0, but this one "
            f"starts at {st.start_epoch:g} where the previous ends at {prev_end:g} "
            f"({kind}). Make each start_epoch equal the previous end_epoch.")
    if st.end_epoch <= st.start_epoch:
        raise ScheduleError(f"{where}: end_epoch must be after start_epoch.")


def _validate_walk(s: Schedule) -> None:
    """A stage shorter than the overshoot of the previous one would get no update."""
    for i, (st, (_, _, updates)) in enumerate(zip(s.stages, s._walk)):
        if updates <= 0:
            raise ScheduleError(
                f"stage {i} ({st.start_epoch:g}-{st.end_epoch:g} epochs) is covered entirely by "
                "the previous stage's last batch and would get no update; lengthen it.")
