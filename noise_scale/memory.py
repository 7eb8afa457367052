"""Will one micro-batch fit on a device? Ask the compiler before paying for a run.

A run's biggest program is its train step on one micro-batch of at most
``config.max_device_batch`` examples per device (larger per-device batches are
accumulated over such micro-batches, see ``parallel.make_train_step``). Compiling
that step for one device and reading XLA's ``memory_analysis()`` gives the bytes it
needs without allocating any of them; ``device_memory`` says what the device has
(its own report where it gives one, else the published size of its kind), and
``fit_max_device_batch`` halves the micro-batch until the compiler's figure fits.
Nothing here allocates parameters: shapes come from ``jax.eval_shape``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from noise_scale import optim, parallel
from noise_scale.default_config import DTYPES
from noise_scale.models import create_model
from noise_scale.schedule import schedule_from_config

GiB = 2**30

# Memory of one JAX device by ``device_kind``, for devices that report none themselves.
# A TPU v2 or v3 chip is two JAX devices (cores) of 8 or 16 GiB; later chips are one
# (v4: 32 GiB, v5e "v5 lite": 16, v5p "v5": 95, v6e "v6 lite": 32). GPUs report theirs.
DEVICE_MEMORY = {
    "TPU v2": 8 * GiB, "TPU v3": 16 * GiB, "TPU v4": 32 * GiB, "TPU v5 lite": 16 * GiB,
    "TPU v5": 95 * GiB, "TPU v6 lite": 32 * GiB,
}
HEADROOM = 0.9  # leave a tenth for the runtime, the eval step and fragmentation


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """What XLA says one train step on ``micro_batch`` examples needs on one device."""

    micro_batch: int
    argument_bytes: int  # parameters, batch-norm statistics, optimizer state, the batch
    output_bytes: int
    alias_bytes: int  # outputs written in place of donated arguments (the state)
    temp_bytes: int  # activations kept for the backward pass, gradients, scratch

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @classmethod
    def of(cls, compiled, micro_batch: int = 0) -> StepMemory:
        """XLA's figure for a compiled step (``memory_analysis()``), read in one place: here
        for the notebook's fit and in ``train.precompile`` for every stage of a run."""
        stats = compiled.memory_analysis()
        return cls(micro_batch, stats.argument_size_in_bytes, stats.output_size_in_bytes,
                   stats.alias_size_in_bytes, stats.temp_size_in_bytes)


def input_spec(config) -> tuple[tuple[int, ...], int]:
    """(one example's input shape, number of classes) of ``config.dataset``, without loading it."""
    if config.dataset == "mnist1d":
        return (40,), 10
    if config.dataset == "cifar10":
        return (32, 32, 3), 10
    return (config.image_size, config.image_size, 3), 1000


def step_memory(config, micro_batch: int | None = None, device=None) -> StepMemory:
    """Compile the train step for one micro-batch on one device and read its memory analysis.

    ``micro_batch`` defaults to ``config.max_device_batch`` (the largest a run uses);
    ``device`` to the first device. The step is the run's own (``make_train_step``).
    """
    micro_batch = micro_batch or config.max_device_batch
    if not micro_batch or micro_batch < 1:
        raise ValueError("give micro_batch, or set config.max_device_batch (> 0).")
    shape, num_classes = input_spec(config)
    model = create_model(config, num_classes)
    tx = optim.create_optimizer(config, schedule_from_config(config))
    mesh = parallel.make_mesh([device or jax.devices()[0]])
    x = jax.ShapeDtypeStruct((micro_batch, *shape), DTYPES[config.dtype])
    batch = {"input": x, "label": jax.ShapeDtypeStruct((micro_batch,), jnp.int32)}

    def init():
        variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
        params = variables["params"]
        return parallel.TrainState(params, variables.get("batch_stats", {}), tx.init(params))

    step = parallel.make_train_step(
        model, tx, mesh, batch_size=micro_batch, label_smoothing=config.label_smoothing,
        has_batch_stats=config.ghost_batch_size > 0)
    return StepMemory.of(step.lower(jax.eval_shape(init), batch).compile(), micro_batch)


def device_memory(device=None) -> int | None:
    """Bytes of memory on ``device``: its own report, else its kind's size, else None (CPU)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - some backends do not implement it
        stats = {}
    return stats.get("bytes_limit") or DEVICE_MEMORY.get(device.device_kind)


def fit_max_device_batch(config, device=None, limit: int | None = None,
                         ) -> tuple[int, list[StepMemory]]:
    """The largest micro-batch (``max_device_batch`` halved as needed) whose step fits.

    Returns (that micro-batch, every measurement made). ``limit``: bytes available
    (default: ``HEADROOM`` × ``device_memory``); with no known limit the first
    measurement is returned as it is. Never halves below the ghost batch size.
    """
    total = device_memory(device) if limit is None else None
    limit = limit if limit is not None else (int(HEADROOM * total) if total else None)
    micro, measured = config.max_device_batch, []
    floor = max(1, config.ghost_batch_size)
    while True:
        measured.append(step_memory(config, micro, device))
        if limit is None or measured[-1].total_bytes <= limit or micro // 2 < floor:
            return micro, measured
        micro //= 2
