"""Data parallelism: one replica per device, a step compiled once per batch size.

The train step is ``jax.jit`` of a ``jax.shard_map`` over the mesh's ``data``
axis — the modern form of ``pmap``: parameters, batch-norm statistics and the
optimizer state are replicated, each device takes B/devices examples, and
gradients and batch-norm statistics are averaged with ``pmean``. The batch
size is the only static quantity (it is a shape); ε and m are read from the
optimizer state, so a stage change that keeps B reuses the compiled step.

Compilations are counted with a ``jax.monitoring`` listener, so "one compile
per batch-size stage" is measured, not assumed.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from noise_scale import gns, optim
from noise_scale.errors import SetupError

AXIS = "data"


# ------------------------------------------------------------------ compiles
class CompileCounter:
    """Counts XLA backend compilations made by one thread while it is active.

    ``with counter: step(...)`` attributes to the counter only the compiles that
    thread triggers inside the block (a prefetch thread's work is not counted).
    ``cached``: how many of them the persistent compilation cache served.
    """

    _EVENT = "/jax/core/compile/backend_compile_duration"
    _CACHE_HIT = "/jax/compilation_cache/cache_hits"
    _lock = threading.Lock()
    _active: dict[int, CompileCounter] = {}
    _registered = False

    def __init__(self):
        self.count = self.cached = 0
        CompileCounter._register()

    @classmethod
    def _register(cls):
        with cls._lock:
            if not cls._registered:
                jax.monitoring.register_event_duration_secs_listener(cls._listen)
                jax.monitoring.register_event_listener(cls._listen_hit)
                cls._registered = True

    @classmethod
    def _listen(cls, event, duration, **_):
        if event == cls._EVENT:
            counter = cls._active.get(threading.get_ident())
            if counter is not None:
                counter.count += 1

    @classmethod
    def _listen_hit(cls, event, **_):
        if event == cls._CACHE_HIT:
            counter = cls._active.get(threading.get_ident())
            if counter is not None:
                counter.cached += 1

    def __enter__(self):
        CompileCounter._active[threading.get_ident()] = self
        return self

    def __exit__(self, *exc):
        CompileCounter._active.pop(threading.get_ident(), None)


# --------------------------------------------------------------------- state
@flax.struct.dataclass
class TrainState:
    params: Any
    batch_stats: Any
    opt_state: Any


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over every device of every process (``device_order``)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(device_order(devices), (AXIS,))


def device_order(devices) -> np.ndarray:
    """The devices in the order the ``data`` axis walks them.

    On one slice, as JAX lists them. On several TPU slices (multislice: the devices
    report more than one ``slice_index``), slice by slice, each slice in its ICI
    order (``mesh_utils.create_hybrid_device_mesh`` with the data axis over DCN), so
    the gradient all-reduce crosses the slow data-center network between slices once
    instead of at every hop. A process's devices may then hold non-adjacent parts of
    the batch; ``make_array_from_process_local_data`` places its examples there, and
    each step still averages over the same global batch.
    """
    from jax.experimental import mesh_utils

    slices = collections.Counter(getattr(d, "slice_index", 0) for d in devices)
    if len(slices) == 1:
        return np.asarray(devices)
    per_slice = set(slices.values())
    if len(per_slice) != 1:
        raise SetupError(
            f"the devices are spread unevenly over {len(slices)} slices (devices per "
            f"slice_index: {dict(sorted(slices.items()))}); a multislice run needs slices "
            "of one shape. Create the queued resource with the same accelerator type for "
            "every slice.")
    return mesh_utils.create_hybrid_device_mesh((per_slice.pop(),), (len(slices),), devices)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def create_train_state(model, tx, rng, sample_input, mesh) -> TrainState:
    """Initialise on the host, then replicate over the mesh with the step's output sharding."""
    variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rng, sample_input)
    params = variables["params"]
    state = TrainState(params, variables.get("batch_stats", {}), tx.init(params))
    return jax.device_put(state, replicated(mesh))


def shard_batch(data: dict, mesh) -> dict:
    """This process's slice of a global batch → global arrays split over ``data``.

    With one process the slice is the whole batch and a plain ``device_put`` does the
    same job with less host work (it is on the per-step path).
    """
    sharding = NamedSharding(mesh, P(AXIS))
    if jax.process_count() == 1:
        return jax.device_put(data, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in data.items()}


# ---------------------------------------------------------------------- loss
def loss_fn(model, label_smoothing: float, has_bn: bool):
    """The training objective (train mode: ghost batch norm on the batch's own statistics):
    ``(params, batch_stats, x, y) -> (mean loss, (new batch_stats, accuracy))``."""

    def objective(params, batch_stats, x, y):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats
            logits, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
            batch_stats = new["batch_stats"]
        else:
            logits = model.apply(variables, x, train=True)
        if label_smoothing:
            labels = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), label_smoothing)
            loss = optax.softmax_cross_entropy(logits, labels).mean()
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        accuracy = (jnp.argmax(logits, -1) == y).mean()
        return loss, (batch_stats, accuracy)

    return objective


STEP_METRICS = ("loss", "accuracy", "learning_rate", "momentum") + gns.STEP_METRICS


def unpack_metrics(packed) -> dict:
    """The train step's metric array (one per step) as a dict of floats.

    A step that does not measure the noise scale returns only the first four.
    """
    return dict(zip(STEP_METRICS, (float(v) for v in np.asarray(packed))))


def _local_gradients(grad_fn, params, batch_stats, x, y, accumulation_steps: int,
                     halves: bool, with_estimates: bool):
    """This device's (grads, stats, loss, accuracy) and the mean |g|² of its small batches.

    The small batches are the micro-batches with accumulation, the two halves with
    ``halves``, else the device's whole batch; the |g|² is None unless ``with_estimates``.
    Accumulation scans over equal micro-batches and averages their gradients; every
    micro-batch (or half) starts from the same batch-norm statistics and their updates
    are averaged, which equals one update over all its ghost batches (the running
    average is linear).
    """
    if halves:  # two gradients side by side in one program: the same FLOPs as one
        h = x.shape[0] // 2
        (l1, (s1, a1)), g1 = grad_fn(params, batch_stats, x[:h], y[:h])
        (l2, (s2, a2)), g2 = grad_fn(params, batch_stats, x[h:], y[h:])
        mean = jax.tree.map(lambda a, b: (a + b) / 2, (g1, s1, l1, a1), (g2, s2, l2, a2))
        return *mean, gns.sq_norm((g1, g2)) / 2
    if accumulation_steps == 1:
        (loss, (stats, acc)), grads = grad_fn(params, batch_stats, x, y)
        return grads, stats, loss, acc, gns.sq_norm(grads) if with_estimates else None
    xs = x.reshape(accumulation_steps, x.shape[0] // accumulation_steps, *x.shape[1:])
    ys = y.reshape(accumulation_steps, -1)

    def body(carry, xy):
        (loss, (stats, acc)), grads = grad_fn(params, batch_stats, *xy)
        out = (grads, stats, loss, acc) + ((gns.sq_norm(grads),) if with_estimates else ())
        return jax.tree.map(jnp.add, carry, out), None

    scalar = jax.lax.pcast(jnp.float32(0), AXIS, to="varying")
    zeros = jax.tree.map(jnp.zeros_like, (params, batch_stats, scalar, scalar)
                         + ((scalar,) if with_estimates else ()))
    total, _ = jax.lax.scan(body, zeros, (xs, ys))
    total = jax.tree.map(lambda t: t / accumulation_steps, total)
    return *total[:4], total[4] if with_estimates else None


def _halves(measure: gns.Measure | None, devices: int, accumulation_steps: int) -> bool:
    """Whether the step splits its batch in two for a second batch size (one device only)."""
    return bool(measure and measure.halves and gns.in_halves(devices, accumulation_steps))


def measures(measure: gns.Measure | None, devices: int, accumulation_steps: int) -> bool:
    """Whether a step with ``measure`` has a second batch size to measure with."""
    halves = _halves(measure, devices, accumulation_steps)
    return measure is not None and gns.small_batches(devices, accumulation_steps, halves) > 1


def make_train_step(
    model,
    tx: optax.GradientTransformationExtraArgs,
    mesh,
    *,
    batch_size: int,
    accumulation_steps: int = 1,
    label_smoothing: float = 0.0,
    has_batch_stats: bool = False,
    measure: gns.Measure | None = None,
    batch_stats_weight: float = 1.0,
) -> Callable:
    """The compiled data-parallel step for one global batch size.

    With ``accumulation_steps`` > 1 each device scans over that many equal
    micro-batches and averages their gradients, so the update equals the
    full-batch one (see ``_local_gradients``).

    ``step(state, batch) -> (state, metrics)``. With ``measure`` (where the mesh and
    accumulation give two batch sizes, ``measures``) it is the measuring step: it also
    estimates |G|² and tr Σ from its small batches' gradients and the averaged one
    (noise_scale.gns) — of the objective's gradient: with the optimizer's coupled L2 (λ in
    ``measure.weight_decay``) their norms are shifted to those of g + λw — and returns them
    as two more metrics (the host smooths them: ``gns.Averages``).
    ``batch_stats_weight`` scales the batch-norm running averages' update so they decay
    per example (``models.layers.update_weight``).
    """
    n = mesh.shape[AXIS]
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} does not divide over {n} devices.")
    per_device = batch_size // n
    if per_device % accumulation_steps:
        raise ValueError(
            f"per-device batch {per_device} does not split into {accumulation_steps} micro-batches."
        )
    with_estimates = measures(measure, n, accumulation_steps)  # this program measures
    halves = with_estimates and _halves(measure, n, accumulation_steps)
    small = gns.small_batches(n, accumulation_steps, halves)
    grad_fn = jax.value_and_grad(loss_fn(model, label_smoothing, has_batch_stats), has_aux=True)

    def per_device_step(state: TrainState, batch: dict):
        # Mark the replicated parameters as per-device values: their gradients are then this
        # device's own, averaged explicitly by the pmean below. (Differentiating the
        # replicated values directly would make JAX sum the gradients over devices itself.)
        params, batch_stats = jax.lax.pcast((state.params, state.batch_stats), AXIS, to="varying")
        *local, small_sq = _local_gradients(grad_fn, params, batch_stats, batch["input"],
                                            batch["label"], accumulation_steps, halves, with_estimates)
        # The small batches' |g|² rides in the gradients' all-reduce: no collective of its own.
        grads, stats, loss, acc, small_sq = jax.lax.pmean((*local, small_sq), AXIS)
        if batch_stats_weight != 1.0:  # a Python constant: B is static in this program
            stats = jax.tree.map(lambda new, old: old + (new - old) * batch_stats_weight,
                                 stats, state.batch_stats)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, batch_size=batch_size)
        params = optax.apply_updates(state.params, updates)
        lr, m = optim.current_hyperparams(opt_state)
        metrics = [loss, acc, lr, m]
        if with_estimates:
            big_sq = gns.sq_norm(grads)
            if measure.weight_decay:  # the objective's gradient: the optimizer adds λw to it
                shift = gns.objective_shift(grads, state.params, measure.weight_decay,
                                            optim.decay_mask(state.params))
                small_sq, big_sq = small_sq + shift, big_sq + shift
            metrics += gns.estimates(small_sq, big_sq, batch_size // small, batch_size,
                                     measure.dataset_size)
        # One small array rather than many scalars: fewer buffers to hand back per step.
        metrics = jnp.stack(metrics).astype(jnp.float32)
        return TrainState(params, stats, opt_state), metrics

    step = jax.shard_map(per_device_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
    # Returns (new state, metrics): metrics is a float32 array ordered as STEP_METRICS.
    return jax.jit(step, donate_argnums=(0,))


class StageStep:
    """A stage's compiled programs, and which one each update runs.

    ``plain``: the step of a run that does not measure. ``measuring``: the same plus the
    noise-scale measurement (two more metrics), run on every ``every``-th update — the
    update count is the loop's clock, so a resume measures on the same updates (and so
    does the dense stretch before a boundary where the cap decides: a position). With
    ``every`` = 1 there is no plain program; without a measurement, no measuring one.
    The 9 updates in 10 that do not measure cost exactly what they cost in a run that
    does not measure.
    """

    def __init__(self, plain=None, measuring=None, every: int = 1):
        self.plain, self.measuring, self.every = plain, measuring, every

    def measures(self, update: int, dense: bool = False) -> bool:
        """Whether update ``update`` measures: every k-th, or every one where ``dense``."""
        return self.measuring is not None and (
            self.plain is None or dense or update % self.every == 0)

    def __call__(self, state: TrainState, batch: dict, update: int, dense: bool = False):
        """(state, metrics) after update number ``update`` (counted from the run's start);
        ``dense``: in a stretch where every update measures (``cap.dense_from``)."""
        return (self.measuring if self.measures(update, dense) else self.plain)(state, batch)

    @property
    def programs(self) -> list:
        """The compiled programs, the measuring one (the larger) first."""
        return [p for p in (self.measuring, self.plain) if p is not None]

    def place(self, state: TrainState) -> TrainState:
        """The state moved onto the programs' input shardings (a no-op unless it was
        restored elsewhere); both programs take the same state."""
        return _place(state, self.programs[0].input_shardings[0][0])

    def memory_analysis(self):
        """The measuring program's, where there is one (it holds the plain one's buffers)."""
        return self.programs[0].memory_analysis()


def _place(tree, shardings):
    """Move only the leaves whose placement differs (e.g. restored onto other devices).

    A leaf the program never reads has no sharding (None) and stays where it is.
    """
    return jax.tree.map(
        lambda x, s: x if s is None or x.sharding.is_equivalent_to(s, x.ndim)
        else jax.device_put(x, s), tree, shardings, is_leaf=lambda x: x is None)


def compile_stage_step(model, tx, mesh, state: TrainState, batch: dict, *, batch_size: int,
                       accumulation_steps: int = 1, label_smoothing: float = 0.0,
                       has_batch_stats: bool = False,
                       measure: gns.Measure | None = None,
                       batch_stats_weight: float = 1.0) -> StageStep:
    """A stage's programs, compiled ahead of time for ``state`` and ``batch``'s shapes and
    shardings: the plain one, and the measuring one where the stage can measure."""
    kw = dict(batch_size=batch_size, accumulation_steps=accumulation_steps,
              label_smoothing=label_smoothing, has_batch_stats=has_batch_stats,
              batch_stats_weight=batch_stats_weight)
    measuring = plain = None
    every = measure.every_steps if measure is not None else 1
    if measures(measure, mesh.shape[AXIS], accumulation_steps):
        measuring = make_train_step(model, tx, mesh, measure=measure, **kw).lower(
            state, batch).compile()
    if measuring is None or every > 1:
        plain = make_train_step(model, tx, mesh, **kw).lower(state, batch).compile()
    return StageStep(plain, measuring, every)


def eval_loss_fn(model, has_bn: bool):
    """The evaluation objective (running batch-norm statistics, no label smoothing):
    ``(params, batch_stats, x, y) -> (per-example loss, logits)``."""

    def objective(params, batch_stats, x, y):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats
        logits = model.apply(variables, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y), logits

    return objective


def make_eval_step(model, mesh, has_batch_stats: bool):
    """Sums of loss, correct predictions and real examples over a padded, masked batch."""
    losses = eval_loss_fn(model, has_batch_stats)

    def per_device(state: TrainState, batch: dict):
        loss, logits = losses(state.params, state.batch_stats, batch["input"], batch["label"])
        mask = batch["mask"].astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        sums = {"loss": (loss * mask).sum(), "correct": (correct * mask).sum(), "count": mask.sum()}
        return jax.lax.psum(sums, AXIS)

    return jax.jit(
        jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())
    )
