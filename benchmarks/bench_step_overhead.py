"""Overhead of noise_scale's train step (and its input path) against a bare jitted step.

Two ratios, each measured in one run with interleaved timed rounds (A, B, A, B, ...)
after warm-up, median over rounds:

1. step:  ``parallel.make_train_step`` (shard_map, schedule-driven optimizer reading
          ε and m at examples seen, clock, metrics) vs a bare ``jax.jit`` data-parallel
          step (sharded batch, fixed-hyperparameter optax SGD with momentum), on the
          same model (the config's, ghost batch norm included), the same pre-sharded
          batches, the same devices;
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
import statistics
import time

from harness import simulate_host_devices, use_repository

N_EXAMPLES = 40_000  # MNIST-1D's training split (random features of its shape)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--devices", type=int, default=1,
                   help="devices to use; on a CPU host, N > 1 simulates N host devices")
    p.add_argument("--steps", type=int, default=200, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    p.add_argument("--prefetch", type=int, default=0,
                   help="sampler prefetch depth (config.prefetch); 0 = inline")
    return p.parse_args(argv)


def make_bare_step(model, has_batch_stats: bool):
    """A plain ``jax.jit`` step: fixed SGD with momentum; XLA inserts the all-reduce itself."""
    import jax
    import optax

    tx = optax.sgd(0.05, momentum=0.9)

    @jax.jit
    def step(state, batch):
        params, batch_stats, opt_state = state

        def loss_fn(p):
            if not has_batch_stats:
                return model.apply({"params": p}, batch["input"], train=True), batch_stats
            logits, new = model.apply({"params": p, "batch_stats": batch_stats}, batch["input"],
                                      train=True, mutable=["batch_stats"])
            return logits, new["batch_stats"]

        def loss(p):
            logits, stats = loss_fn(p)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return ce, stats

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), {"loss": value}

    return step, tx


def bounded(fn):
    """Keep at most two steps in flight, as the training loop does (MAX_STEPS_IN_FLIGHT)."""
    import jax

    queue = []

    def call(st, bt):
        st, m = fn(st, bt)
        queue.append(m)
        if len(queue) > 2:
            jax.block_until_ready(queue.pop(0))
        return st, m

    return call


def build(args, devices):
    """Both steps and states, the pre-sharded batches, and both input paths as round functions."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from noise_scale import config_lib, optim, parallel
    from noise_scale.data import ArraySource, Sampler
    from noise_scale.models import create_model
    from noise_scale.schedule import schedule_from_config

    config = config_lib.load_config("mnist1d:decay_lr")
    config.model, config.schedule.batch_size = args.model, args.batch_size
    has_bn, b = config.ghost_batch_size > 0, args.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_EXAMPLES, 40)).astype(np.float32)
    y = rng.integers(0, 10, N_EXAMPLES).astype(np.int32)
    schedule = schedule_from_config(config)
    mesh = parallel.make_mesh(devices)
    model = create_model(config, 10)
    tx = optim.create_optimizer(config, schedule)
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
    bare, bare_tx = make_bare_step(model, has_bn)
    params, stats = jax.device_get((state.params, state.batch_stats))  # the same start, copied
    sides = {"ours": [bounded(parallel.make_train_step(model, tx, mesh, batch_size=b,
                                                        has_batch_stats=has_bn)), state],
             "bare": [bounded(bare), jax.device_put((params, stats, bare_tx.init(params)),
                                                    parallel.replicated(mesh))]}
    sharding = NamedSharding(mesh, P("data"))
    batches = [jax.device_put({"input": x[i * b:(i + 1) * b], "label": y[i * b:(i + 1) * b]},
                              sharding) for i in range(args.steps)]
    sampler = Sampler(ArraySource({"input": x, "label": y}), schedule, seed=0)
    perm = rng.permutation(N_EXAMPLES)
    xs, ys = x[perm], y[perm]
    position = [0]

    def ours_input():
        it = sampler.iterate(position[0], position[0] + args.steps * b, prefetch=args.prefetch,
                             transform=lambda hb: parallel.shard_batch(hb.data, mesh))
        position[0] = (position[0] + args.steps * b) % (schedule.total_examples // 2)
        return it

    def bare_input():
        off = position[0] % (N_EXAMPLES - args.steps * b)
        return (jax.device_put({"input": xs[off + i * b:off + (i + 1) * b],
                                "label": ys[off + i * b:off + (i + 1) * b]}, sharding)
                for i in range(args.steps))

    inputs = {"ours": ours_input, "bare": bare_input}
    return sides, batches, inputs, mesh.size


def timed(side, batches) -> float:
    """Seconds for one pass of ``side``'s step over ``batches`` (an iterable: input included)."""
    import jax

    step, state = side
    t, m = time.perf_counter(), None
    for bt in batches:
        state, m = step(state, bt)
    jax.block_until_ready((state, m))
    side[1] = state
    return time.perf_counter() - t


def measure(args, devices, log=print) -> dict:
    """Warm up (compiles), then ``rounds`` interleaved rounds of step-only and with-input passes."""
    sides, batches, inputs, n = build(args, devices)
    for side in sides.values():
        timed(side, batches)
    times = {"step": {"ours": [], "bare": []}, "input": {"ours": [], "bare": []}}
    for _ in range(args.rounds):
        for name in ("ours", "bare"):
            times["step"][name].append(timed(sides[name], batches))
        for name in ("ours", "bare"):
            times["input"][name].append(timed(sides[name], inputs[name]()))
    ex = args.steps * args.batch_size
    log(f"devices={n} model={args.model} B={args.batch_size} prefetch={args.prefetch} "
        f"steps/round={args.steps} rounds={args.rounds}")
    out = {}
    for what, t in times.items():
        paired = [a / c for a, c in zip(t["ours"], t["bare"])]
        out[what] = {"ours_examples_per_second": ex / min(t["ours"]),
                     "bare_examples_per_second": ex / min(t["bare"]),
                     "overhead_best": min(t["ours"]) / min(t["bare"]),
                     "overhead_paired_median": statistics.median(paired)}
        # The fastest round of each is the least disturbed by other load: the headline figure.
        log(f"{what:5s}: ours {ex / min(t['ours']):,.0f} ex/s, bare {ex / min(t['bare']):,.0f} "
            f"ex/s -> overhead {out[what]['overhead_best']:.3f}x (best rounds); paired median "
            f"{statistics.median(paired):.3f}x (rounds: {', '.join(f'{r:.2f}' for r in paired)})")
    return out


def main(argv=None):
    args = parse(argv)
    simulate_host_devices(args.devices)
    use_repository()
    import jax

    return measure(args, jax.devices()[: args.devices])


if __name__ == "__main__":
    main()
