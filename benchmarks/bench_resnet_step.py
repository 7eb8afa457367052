"""ResNet-50 train step: noise_scale's step against a flax-examples/imagenet-style ``jax.pmap`` step.

Both steps train the same model (``noise_scale.models`` ResNet-50 v1.5 with ghost batch
norm, 1000 classes) on the same device-resident batches, in the same dtype, with the same
optimizer math:

- ours:  ``noise_scale.parallel.make_train_step`` (``jax.jit`` of ``jax.shard_map``) with
         ``noise_scale.optim.create_optimizer`` built from the ``imagenet_resnet50.py:goyal``
         schedule (Nesterov m = 0.9, L2 1e-4 on kernels, ε with warm-up read off the
         schedule at examples seen inside the step);
- pmap:  the step of flax ``examples/imagenet`` (``train.py``): ``jax.pmap`` over a
         ``batch`` axis, cross-entropy on one-hot labels plus ½·1e-4·Σ‖kernel‖² in the
         loss, ``lax.pmean`` of the gradients, loss and accuracy, a step-counted
         warm-up + piecewise-constant ``optax`` schedule into ``optax.sgd(nesterov=True)``,
         ``TrainState.apply_gradients``; batch-norm statistics ``pmean``'d every step (as
         ours does; the flax example syncs them once per epoch).

Both donate their state. After warm-up (compile + a few steps) the timed rounds alternate
(ours, pmap, pmap, ours, ...), each ``--steps`` steps closed by ``block_until_ready``;
reported are the median images/s of each and the median of the per-round-pair ratios
ours ÷ pmap (goal: ≥ 1.00).

  python benchmarks/bench_resnet_step.py                                   # 224², bf16
  python benchmarks/bench_resnet_step.py --image_size=64 --batch_per_device=8 \\
      --dtype=float32 --devices=1 --steps=3 --rounds=6                     # a CPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def parse():
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
    return p.parse_args()


def main():
    args = parse()
    if args.devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get(
            "XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax.training import train_state

    from noise_scale import config_lib, optim, parallel
    from noise_scale.models import create_model
    from noise_scale.schedule import schedule_from_config

    devices = jax.devices()[: args.devices] if args.devices > 0 else jax.devices()
    n = len(devices)
    batch = n * args.batch_per_device
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = config_lib.load_config(os.path.join(root, "configs/imagenet_resnet50.py:goyal"))
    config.dtype, config.image_size = args.dtype, args.image_size
    config.ghost_batch_size = args.ghost_batch_size
    config.max_device_batch = 0  # one micro-batch per device: the same work as the pmap step
    config.schedule.batch_size = batch
    config.schedule.learning_rate = 0.1 * batch / 256  # Goyal et al.'s scaling rule
    # Goyal's warm-up starts at B = 256's rate; below that batch it would start *above* ε.
    config.schedule.warmup_start_lr = min(config.schedule.warmup_start_lr,
                                          config.schedule.learning_rate)
    schedule = schedule_from_config(config)
    model = create_model(config, 1000)
    dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.dtype]

    print(f"devices: {n} x {devices[0].device_kind} ({jax.default_backend()}); "
          f"ResNet-50, {args.image_size}x{args.image_size}, {args.dtype}, "
          f"{args.batch_per_device}/device, global batch {batch}, ghost {args.ghost_batch_size}")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, args.image_size, args.image_size, 3)).astype(np.float32)
    x = x.astype(jnp.dtype(dtype))
    y = rng.integers(0, 1000, size=(batch,)).astype(np.int32)
    t0 = time.perf_counter()
    init_key = jax.random.key(0, impl="rbg")  # compiles much faster on CPU than threefry
    variables = jax.jit(lambda k, v: model.init(k, v, train=False))(init_key, jnp.asarray(x[:1]))
    print(f"init: {time.perf_counter() - t0:.1f}s")

    # ---- ours ----------------------------------------------------------------------
    mesh = parallel.make_mesh(devices)
    tx = optim.create_optimizer(config, schedule)
    params = variables["params"]
    ours_state = jax.device_put(
        parallel.TrainState(params, variables["batch_stats"], tx.init(params)),
        parallel.replicated(mesh))
    ours_batch = parallel.shard_batch({"input": x, "label": y}, mesh)
    ours_step = parallel.make_train_step(model, tx, mesh, batch_size=batch, has_batch_stats=True)

    # ---- flax examples/imagenet style pmap --------------------------------------------
    class TrainState(train_state.TrainState):
        batch_stats: object

    steps_per_epoch = schedule.dataset_size // batch
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

    pmap_tx = optax.sgd(lr_fn, momentum=momentum, nesterov=True)
    pmap_state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                                   tx=pmap_tx, batch_stats=variables["batch_stats"])
    put = jax.pmap(lambda t: t, devices=devices)  # host → one shard per device
    pmap_state = put(jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (n, *np.shape(a))),
                                  pmap_state))
    pmap_batch = put({"image": x.reshape(n, -1, *x.shape[1:]), "label": y.reshape(n, -1)})
    pmap_step = jax.pmap(pmap_train_step, axis_name="batch", devices=devices,
                         donate_argnums=(0,))

    # ---- timing -----------------------------------------------------------------------
    states = {"ours": ours_state, "pmap": pmap_state}
    steps = {"ours": lambda s: ours_step(s, ours_batch), "pmap": lambda s: pmap_step(s, pmap_batch)}

    def go(name, count):
        s, m = states[name], None
        for _ in range(count):
            s, m = steps[name](s)
        jax.block_until_ready((s, m))
        states[name] = s
        return m

    compiles = [0]

    def on_event(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    def loss_of(name, m):
        return float(parallel.unpack_metrics(m)["loss"]) if name == "ours" else float(m["loss"][0])

    # The same math: both see the same batch every step, so their loss sequences agree (up to
    # float reassociation, which a memorised batch at this learning rate amplifies slowly).
    for name in ("ours", "pmap"):
        compiles[0] = 0
        t0 = time.perf_counter()
        losses = [loss_of(name, go(name, 1))]
        t1 = time.perf_counter()
        losses += [loss_of(name, go(name, 1)) for _ in range(args.warmup)]
        print(f"{name}: compile + first step {t1 - t0:.1f}s, {args.warmup} warm-up steps "
              f"{time.perf_counter() - t1:.1f}s, {compiles[0]} compiles; losses "
              + " ".join(f"{v:.4f}" for v in losses))

    compiles[0] = 0

    rates = {"ours": [], "pmap": []}
    ratios = []
    for r in range(args.rounds):
        order = ("ours", "pmap") if r % 2 == 0 else ("pmap", "ours")
        this = {}
        for name in order:
            t0 = time.perf_counter()
            go(name, args.steps)
            this[name] = args.steps * batch / (time.perf_counter() - t0)
            rates[name].append(this[name])
        ratios.append(this["ours"] / this["pmap"])
        print(f"round {r + 1}: ours {this['ours']:8.1f} img/s   pmap {this['pmap']:8.1f} img/s"
              f"   ratio {ratios[-1]:.3f}")
    if compiles[0]:
        print(f"WARNING: {compiles[0]} compiles during the timed rounds; the figures include them")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"median images/s: ours {med['ours']:.1f}, pmap {med['pmap']:.1f}; "
          f"ratio ours/pmap: median of rounds {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); goal >= 1.00")


if __name__ == "__main__":
    main()
