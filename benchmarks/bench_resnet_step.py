"""ResNet-50 train step: noise_scale's step against a flax-examples/imagenet-style ``jax.pmap`` step.

Both steps train the same model (``noise_scale.models`` ResNet-50 v1.5 with ghost batch
norm, 1000 classes) on the same device-resident batches, in the same dtype, with the same
optimizer math:

- ours:  ``noise_scale.parallel.make_train_step`` (``jax.jit`` of ``jax.shard_map``) with
         ``noise_scale.optim.create_optimizer`` built from the ``imagenet_resnet50.py:goyal``
         schedule (Nesterov m = 0.9, L2 1e-4 on kernels, ε with warm-up read off the
         schedule at examples seen inside the step), compiled ahead of time
         (``lower().compile()``) as the training loop does;
- pmap:  the step of flax ``examples/imagenet`` (``train.py``): ``jax.pmap`` over a
         ``batch`` axis, cross-entropy on one-hot labels plus ½·1e-4·Σ‖kernel‖² in the
         loss, ``lax.pmean`` of the gradients, loss and accuracy, a step-counted
         warm-up + piecewise-constant ``optax`` schedule into ``optax.sgd(nesterov=True)``,
         ``TrainState.apply_gradients``; batch-norm statistics ``pmean``'d every step (as
         ours does; the flax example syncs them once per epoch).

Both donate their state. After warm-up (compile + a few steps) the timed rounds alternate
(ours, pmap, pmap, ours, ...), each ``--steps`` steps closed by ``block_until_ready``;
reported are the median images/s of each, the median of the per-round-pair ratios
ours ÷ pmap (goal: ≥ 1.00) and the FLOPs of our compiled step per device (XLA's cost
analysis). ``measure`` returns the same numbers (``benchmarks/accelerator.py`` uses it).

  python benchmarks/bench_resnet_step.py                                   # 224², bf16
  python benchmarks/bench_resnet_step.py --image_size=64 --batch_per_device=8 \\
      --dtype=float32 --devices=1 --steps=3 --rounds=6                     # a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

from harness import interleaved, simulate_host_devices, use_repository

RESNET50_BLOCKS = (3, 4, 6, 3)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_per_device", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=6, help="timed rounds of each step")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each after compiling")
    p.add_argument("--ghost_batch_size", type=int, default=32)
    p.add_argument("--devices", type=int, default=0,
                   help="0 = every device; on a CPU host, N > 1 simulates N host devices")
    p.add_argument("--blocks", default="3,4,6,3",
                   help="bottleneck blocks per stage (3,4,6,3 = ResNet-50; 1,1,1,1 for smoke tests)")
    return p.parse_args(argv)


@dataclasses.dataclass
class Side:
    """One implementation: its step (state → (state, metrics)), state and first-call costs."""

    step: Callable
    state: object
    loss: Callable  # metrics → float
    compile_seconds: float = 0.0  # ahead-of-time compile (ours); the first call's (pmap)
    compiles: int = 0
    flops: float | None = None  # per step per device, XLA's cost analysis (ours only)

    def run(self, count: int):
        metrics = None
        for _ in range(count):
            self.state, metrics = self.step(self.state)
        import jax

        jax.block_until_ready((self.state, metrics))
        return metrics


def make_config(args, batch: int):
    """The goyal preset at this batch, image size and dtype; one micro-batch per device."""
    from noise_scale import config_lib
    from noise_scale.schedule import schedule_from_config

    config = config_lib.load_config("imagenet_resnet50:goyal")
    config.dtype, config.image_size = args.dtype, args.image_size
    config.ghost_batch_size = args.ghost_batch_size
    config.max_device_batch = 0  # one micro-batch per device: the same work as the pmap step
    config.schedule.batch_size = batch
    config.schedule.learning_rate = 0.1 * batch / 256  # Goyal et al.'s scaling rule
    # Goyal's warm-up starts at B = 256's rate; below that batch it would start *above* ε.
    config.schedule.warmup_start_lr = min(config.schedule.warmup_start_lr,
                                          config.schedule.learning_rate)
    return config, schedule_from_config(config)


def make_model(args):
    import jax.numpy as jnp

    from noise_scale.models.resnet import ResNet

    blocks = tuple(int(b) for b in str(args.blocks).split(","))
    dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.dtype]
    return ResNet(stage_sizes=blocks, num_classes=1000, ghost_size=args.ghost_batch_size,
                  dtype=dtype)


def init_variables(model, image_size: int):
    """Parameters and batch statistics, on the host (initialisation needs the input's shape).

    On the host, so that every step that takes them gets its own device copy: the steps
    donate their state, which would delete arrays shared with another step.
    """
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0, impl="rbg")  # compiles much faster on CPU than threefry
    sample = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return jax.device_get(jax.jit(lambda k, v: model.init(k, v, train=False))(key, sample))


def make_ours(model, config, schedule, variables, devices, x, y) -> Side:
    """The training loop's step, compiled ahead of time; its FLOPs per device from XLA."""
    import jax

    from noise_scale import optim, parallel

    mesh = parallel.make_mesh(devices)
    tx = optim.create_optimizer(config, schedule)
    params = variables["params"]
    state = jax.device_put(parallel.TrainState(params, variables["batch_stats"], tx.init(params)),
                           parallel.replicated(mesh))
    batch = parallel.shard_batch({"input": x, "label": y}, mesh)
    step = parallel.make_train_step(model, tx, mesh, batch_size=len(x), has_batch_stats=True)
    counter = parallel.CompileCounter()
    t0 = time.perf_counter()
    with counter:
        compiled = step.lower(state, batch).compile()
    return Side(lambda s: compiled(s, batch), state, lambda m: parallel.unpack_metrics(m)["loss"],
                time.perf_counter() - t0, counter.count, step_flops(compiled))


def step_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program per device, by XLA's cost analysis (None if absent)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def make_pmap(model, config, schedule, variables, devices, x, y) -> Side:
    """flax examples/imagenet's train step and state, one replica per device with ``jax.pmap``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax.training import train_state

    class TrainState(train_state.TrainState):
        batch_stats: object

    n = len(devices)
    steps_per_epoch = schedule.dataset_size // len(x)
    warm = int(schedule.warmup_epochs * steps_per_epoch)
    lr = schedule.stages[0].learning_rate
    # optax multiplies the scales cumulatively: each is the ratio to the stage before.
    decays = {int(b.start_epoch * steps_per_epoch) - warm: b.learning_rate / a.learning_rate
              for a, b in zip(schedule.stages, schedule.stages[1:])}
    lr_fn = optax.join_schedules(
        [optax.linear_schedule(schedule.warmup_start_lr, lr, warm),
         optax.piecewise_constant_schedule(lr, decays)], [warm])
    weight_decay, momentum = config.weight_decay, schedule.stages[0].momentum

    def pmap_train_step(state, batch):
        def loss_fn(params):
            logits, new_model_state = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"],
                train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy(logits, jax.nn.one_hot(batch["label"], 1000)).mean()
            weight_l2 = sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params) if p.ndim > 1)
            return loss + weight_decay * 0.5 * weight_l2, (new_model_state, logits, loss)

        (_, (new_model_state, logits, loss)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        grads = jax.lax.pmean(grads, axis_name="batch")
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        metrics = jax.lax.pmean({"loss": loss, "accuracy": accuracy}, axis_name="batch")
        metrics["learning_rate"] = lr_fn(state.step)
        batch_stats = jax.lax.pmean(new_model_state["batch_stats"], axis_name="batch")
        return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              tx=optax.sgd(lr_fn, momentum=momentum, nesterov=True),
                              batch_stats=variables["batch_stats"])
    # Host → one shard per device. The axis name must be the step's: an array placed under
    # another name has another sharding, and the step would compile again on its 2nd call.
    put = jax.pmap(lambda t: t, axis_name="batch", devices=devices)
    state = put(jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (n, *np.shape(a))), state))
    batch = put({"image": x.reshape(n, -1, *x.shape[1:]), "label": y.reshape(n, -1)})
    step = jax.pmap(pmap_train_step, axis_name="batch", devices=devices, donate_argnums=(0,))
    return Side(lambda s: step(s, batch), state, lambda m: float(np.asarray(m["loss"])[0]))


def warm_up(sides: dict[str, Side], steps: int, log=print) -> dict:
    """First call (pmap: compiles), then ``steps`` untimed steps; compiles counted per side.

    Both see the same batch every step, so their loss sequences agree (up to float
    reassociation, which a memorised batch at this learning rate amplifies slowly).
    """
    from noise_scale import parallel

    out = {}
    for name, side in sides.items():
        counter = parallel.CompileCounter()
        with counter:
            t0 = time.perf_counter()
            losses = [side.loss(side.run(1))]
            first = time.perf_counter() - t0
            losses += [side.loss(side.run(1)) for _ in range(steps)]
        if name == "pmap":
            side.compile_seconds = first
        side.compiles += counter.count
        out[name] = {"compile_seconds": side.compile_seconds, "first_call_seconds": first,
                     "compiles": side.compiles, "losses": losses}
        log(f"{name}: compile {side.compile_seconds:.1f}s, first call {first:.1f}s, "
            f"{side.compiles} compiles; losses " + " ".join(f"{v:.4f}" for v in losses))
    return out


def measure(args, devices, variables=None, deadline: float | None = None, log=print) -> dict:
    """Build, warm up and time both steps at ``args.batch_per_device``: every figure as a dict.

    ``variables``: initialised parameters to reuse (they do not depend on the batch);
    ``deadline``: no timed round starts after it (``time.perf_counter`` value).
    """
    import jax
    import numpy as np

    from noise_scale import parallel
    from noise_scale.default_config import DTYPES

    n, model = len(devices), make_model(args)
    batch = n * args.batch_per_device
    config, schedule = make_config(args, batch)
    log(f"devices: {n} x {devices[0].device_kind} ({jax.default_backend()}); "
        f"ResNet blocks {args.blocks}, {args.image_size}x{args.image_size}, {args.dtype}, "
        f"{args.batch_per_device}/device, global batch {batch}, ghost {args.ghost_batch_size}")
    if variables is None:
        t0 = time.perf_counter()
        variables = init_variables(model, args.image_size)
        log(f"init: {time.perf_counter() - t0:.1f}s")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, args.image_size, args.image_size, 3)).astype(np.float32)
    x = x.astype(DTYPES[args.dtype])
    y = rng.integers(0, 1000, size=(batch,)).astype(np.int32)
    sides = {"ours": make_ours(model, config, schedule, variables, devices, x, y),
             "pmap": make_pmap(model, config, schedule, variables, devices, x, y)}
    first = warm_up(sides, args.warmup, log)
    counter = parallel.CompileCounter()

    def round_of(side):
        def run():
            t0 = time.perf_counter()
            side.run(args.steps)
            return args.steps * batch / (time.perf_counter() - t0)
        return run

    with counter:
        timed = interleaved({k: round_of(s) for k, s in sides.items()}, args.rounds,
                            deadline=deadline, log=log)
    if counter.count:
        log(f"WARNING: {counter.count} compiles during the timed rounds; the figures include them")
    return {"devices": n, "device_kind": devices[0].device_kind, "global_batch": batch,
            "per_device_batch": args.batch_per_device, "first": first, "timed": timed,
            "compiles_while_timing": counter.count, "flops_per_step_per_device": sides["ours"].flops}


def main(argv=None):
    args = parse(argv)
    simulate_host_devices(args.devices)
    use_repository()
    import jax

    devices = jax.devices()[: args.devices] if args.devices > 0 else jax.devices()
    r = measure(args, devices)
    med, t = r["timed"]["median"], r["timed"]
    print(f"median images/s: ours {med['ours']:.1f}, pmap {med['pmap']:.1f}; "
          f"ratio ours/pmap: median of rounds {t['ratio']:.3f} "
          f"(min {min(t['ratios']):.3f}, max {max(t['ratios']):.3f}); goal >= 1.00")
    flops = r["flops_per_step_per_device"]
    print("ours: " + (f"{flops / 1e9:.4g} GFLOPs per step per device (XLA cost analysis)"
                      if flops else "XLA reports no FLOP count for this backend"))
    return r


if __name__ == "__main__":
    main()
