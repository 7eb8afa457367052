"""What measuring the gradient noise scale costs: the train step with it on ÷ off.

The same model, batch, devices and optimizer; one side compiles the step with
``measure=gns.Measure(...)`` (squared norms of each small batch's gradient and of the
average, one more scalar in the gradients' all-reduce; on one device two half-batch
gradients; the norms on every ``--every_steps``-th step only, the default's 10), the
other without. Rounds of a multiple of k steps time the average over the cycle. Timed rounds alternate (harness.interleaved) after a
warm-up; the figure is the per-round ratio of step times, on ÷ off (1.00 = free; goal
< 1.02), as the geometric mean over rounds with a 95 % bootstrap interval.

  python benchmarks/bench_noise_scale.py                          # MNIST-1D CNN, 8 devices
  python benchmarks/bench_noise_scale.py --model=resnet50 --image_size=32 --batch_per_device=4
  python benchmarks/bench_noise_scale.py --devices=1              # one device: two halves
"""

from __future__ import annotations

import argparse
import math
import time

from harness import interleaved, simulate_host_devices, use_repository


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="cnn", choices=["cnn", "mlp", "resnet50"])
    p.add_argument("--devices", type=int, default=8,
                   help="devices to use; on a CPU host, N > 1 simulates N host devices")
    p.add_argument("--batch_per_device", type=int, default=32)
    p.add_argument("--image_size", type=int, default=32, help="resnet50 only")
    p.add_argument("--ghost_batch_size", type=int, default=0, help="0: the model's own default")
    p.add_argument("--every_steps", type=int, default=10,
                   help="config.noise_scale_every_steps: the norms on every k-th step only")
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    return p.parse_args(argv)


def make_config(args, batch: int):
    from noise_scale import config_lib, default_config

    if args.model == "resnet50":
        config = config_lib.load_config("configs/imagenet_resnet50.py:goyal")
        config.image_size, config.dtype = args.image_size, "float32"
        config.schedule.warmup_epochs, config.schedule.warmup_start_lr = 0.0, 0.0
    else:
        config = default_config.get_config()
        config.model = args.model
    if args.ghost_batch_size:
        config.ghost_batch_size = args.ghost_batch_size
    config.max_device_batch = 0
    config.measure_noise_scale = True  # the "on" side's measurement (the "off" side passes none)
    config.noise_scale_every_steps = args.every_steps
    config.schedule.batch_size = batch
    return config


def make_side(args, devices, measure: bool):
    """(step taking the state, state, batch) for one side, compiled ahead of time."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from noise_scale import gns, optim, parallel
    from noise_scale.models import create_model
    from noise_scale.schedule import schedule_from_config

    batch = len(devices) * args.batch_per_device
    config = make_config(args, batch)
    schedule = schedule_from_config(config)
    model, mesh = create_model(config, 10), parallel.make_mesh(devices)
    shape = (config.image_size, config.image_size, 3) if args.model == "resnet50" else (40,)
    tx = optim.create_optimizer(config, schedule)
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, *shape)),
                                        mesh, measure_noise_scale=measure)
    rng = np.random.default_rng(0)
    data = parallel.shard_batch({"input": rng.normal(size=(batch, *shape)).astype(np.float32),
                                 "label": rng.integers(0, 10, batch).astype(np.int32)}, mesh)
    plan = schedule.plan(len(devices))[0]
    step = parallel.make_train_step(
        model, tx, mesh, batch_size=batch, has_batch_stats=config.ghost_batch_size > 0,
        measure=gns.measure_for(config, plan, len(devices)) if measure else None)
    return step.lower(state, data).compile(), state, data


def bootstrap_interval(ratios, level=0.95, resamples=4000, seed=0):
    """(geometric mean, low, high) of per-round ratios: a percentile bootstrap of the mean log."""
    import numpy as np

    logs = np.log(np.asarray(ratios))
    means = np.random.default_rng(seed).choice(logs, (resamples, len(logs))).mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return math.exp(logs.mean()), math.exp(low), math.exp(high)


def measure(args, devices, log=print) -> dict:
    import jax

    sides = {name: make_side(args, devices, name == "on") for name in ("on", "off")}
    states = {name: s[1] for name, s in sides.items()}

    def round_of(name):
        compiled, _, data = sides[name]

        def run(count=args.steps):
            t0 = time.perf_counter()
            for _ in range(count):
                states[name], metrics = compiled(states[name], data)
            jax.block_until_ready((states[name], metrics))
            return count / (time.perf_counter() - t0)
        return run

    for name in sides:
        round_of(name)(args.warmup)
    timed = interleaved({n: round_of(n) for n in sides}, args.rounds, log=log)
    # rates are steps/s: time on ÷ time off = rate off ÷ rate on
    ratios = [1 / r for r in timed["ratios"]]
    mean, low, high = bootstrap_interval(ratios)
    log(f"{args.model}, {len(devices)} device(s) x {args.batch_per_device}, every "
        f"{args.every_steps} step(s): step time on/off "
        f"{mean:.4f} (95% CI {low:.4f}-{high:.4f}, {len(ratios)} rounds); goal < 1.02")
    return {"model": args.model, "devices": len(devices), "batch_per_device": args.batch_per_device,
            "every_steps": args.every_steps,
            "ratio": mean, "interval": [low, high], "ratios": ratios, "timed": timed}


def main(argv=None):
    args = parse(argv)
    simulate_host_devices(args.devices)
    use_repository()
    import jax

    return measure(args, jax.devices()[: args.devices])


if __name__ == "__main__":
    main()
