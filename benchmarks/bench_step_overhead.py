"""Overhead of noise_scale's train step (and its input path) against a bare jitted step.

Two ratios, each measured in one run with interleaved timed rounds (A, B, A, B, ...)
after warm-up, median over rounds:

1. step:  ``parallel.make_train_step`` (shard_map, schedule-driven optimizer reading
          ε and m at examples seen, clock, metrics) vs a bare ``jax.jit`` data-parallel
          step (sharded batch, fixed-hyperparameter optax SGD with momentum), on the
          same model, the same pre-sharded batches, the same devices;
2. input: the same two steps fed by their input paths — the host ``Sampler`` (schedule
          lookups, seeded permutation, per-process slice, prefetch thread,
          ``make_array_from_process_local_data``) vs a bare loop that slices a
          pre-shuffled array and ``device_put`` s it.

Ratio = bare examples/s ÷ ours (1.00 = no overhead; goal ≤ 1.03).

  python benchmarks/bench_step_overhead.py                     # MNIST-1D CNN, B = 32
  python benchmarks/bench_step_overhead.py --batch_size=256 --devices=8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--devices", type=int, default=1, help="host CPU devices to simulate")
    p.add_argument("--steps", type=int, default=200, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    p.add_argument("--prefetch", type=int, default=0,
                   help="sampler prefetch depth (config.prefetch); 0 = inline")
    return p.parse_args()


def main():
    args = parse()
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from noise_scale import config_lib, optim, parallel
    from noise_scale.data import ArraySource, Sampler
    from noise_scale.models import create_model
    from noise_scale.schedule import schedule_from_config

    config = config_lib.load_config("configs/mnist1d.py:decay_lr")
    config.model = args.model
    config.schedule.batch_size = args.batch_size
    n_ex = 40_000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_ex, 40)).astype(np.float32)
    y = rng.integers(0, 10, n_ex).astype(np.int32)
    schedule = schedule_from_config(config)
    mesh = parallel.make_mesh()
    model = create_model(config, 10)
    b = args.batch_size

    # ours
    tx = optim.create_optimizer(config, schedule)
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
    ours = parallel.make_train_step(model, tx, mesh, batch_size=b)

    # bare: jit with a sharded batch (XLA inserts the gradient all-reduce), fixed SGD momentum
    bare_tx = optax.sgd(0.05, momentum=0.9)
    params = jax.device_put(model.init(jax.random.key(0), jnp.zeros((1, 40)))["params"],
                            NamedSharding(mesh, P()))
    bare_state = (params, bare_tx.init(params))

    @jax.jit
    def bare(st, batch):
        p, o = st

        def loss_fn(p):
            logits = model.apply({"params": p}, batch["input"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

        loss, g = jax.value_and_grad(loss_fn)(p)
        u, o = bare_tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), {"loss": loss}

    batch_sharding = NamedSharding(mesh, P("data"))
    batches = [jax.device_put({"input": x[i * b:(i + 1) * b], "label": y[i * b:(i + 1) * b]},
                              batch_sharding) for i in range(args.steps)]

    def bounded(fn):
        """Keep at most two steps in flight, as the training loop does (MAX_STEPS_IN_FLIGHT)."""
        queue = []

        def call(st, bt):
            st, m = fn(st, bt)
            queue.append(m)
            if len(queue) > 2:
                jax.block_until_ready(queue.pop(0))
            return st, m

        return call

    ours, bare = bounded(ours), bounded(bare)

    def time_steps(fn, st):
        t = time.perf_counter()
        for bt in batches:
            st, m = fn(st, bt)
        jax.block_until_ready((st, m))
        return time.perf_counter() - t, st

    # input paths
    sampler = Sampler(ArraySource({"input": x, "label": y}), schedule, seed=0)
    perm = rng.permutation(n_ex)
    xs, ys = x[perm], y[perm]
    position = [0]

    def ours_with_input(st):
        t = time.perf_counter()
        it = sampler.iterate(position[0], position[0] + args.steps * b, prefetch=args.prefetch,
                             transform=lambda hb: parallel.shard_batch(hb.data, mesh))
        for bt in it:
            st, m = ours(st, bt)
        jax.block_until_ready((st, m))
        position[0] = (position[0] + args.steps * b) % (schedule.total_examples // 2)
        return time.perf_counter() - t, st

    def bare_with_input(st):
        t = time.perf_counter()
        off = position[0] % (n_ex - args.steps * b)
        for i in range(args.steps):
            lo = off + i * b
            bt = jax.device_put({"input": xs[lo:lo + b], "label": ys[lo:lo + b]}, batch_sharding)
            st, m = bare(st, bt)
        jax.block_until_ready((st, m))
        return time.perf_counter() - t, st

    # warm-up (compiles)
    _, state = time_steps(ours, state)
    _, bare_state = time_steps(bare, bare_state)
    times = {"step": ([], []), "input": ([], [])}
    for _ in range(args.rounds):
        to, state = time_steps(ours, state)
        tb, bare_state = time_steps(bare, bare_state)
        times["step"][0].append(to)
        times["step"][1].append(tb)
        to, state = ours_with_input(state)
        tb, bare_state = bare_with_input(bare_state)
        times["input"][0].append(to)
        times["input"][1].append(tb)

    ex = args.steps * b
    print(f"devices={mesh.size} model={args.model} B={b} prefetch={args.prefetch} "
          f"steps/round={args.steps} rounds={args.rounds}")
    for name, (to, tb) in times.items():
        paired = [a / c for a, c in zip(to, tb)]
        # The fastest round of each is the least disturbed by other load: the headline figure.
        print(f"{name:5s}: ours {ex / min(to):,.0f} ex/s, bare {ex / min(tb):,.0f} ex/s -> "
              f"overhead {min(to) / min(tb):.3f}x (best rounds); paired median "
              f"{statistics.median(paired):.3f}x (rounds: {', '.join(f'{r:.2f}' for r in paired)})")


if __name__ == "__main__":
    main()
