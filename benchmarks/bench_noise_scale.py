"""What measuring the gradient noise scale costs: the train step with it on ÷ off.

The same model, batch, devices and optimizer, run as the training loop runs them
(``parallel.StageStep``). The "on" side measures on every ``--every_steps``-th update
(the default's 10) with the measuring program (squared norms of each small batch's
gradient and of the average, one more scalar in the gradients' all-reduce; on one
device two half-batch gradients) and runs the plain program on the others; the "off"
side runs the plain program only. Rounds of a multiple of k steps time the average over
the cycle. Timed rounds alternate (harness.interleaved) after a warm-up; the figure is the per-round ratio of step times, on ÷ off (1.00 = free; goal
< 1.02), as the geometric mean over rounds with a 95 % bootstrap interval.

  python benchmarks/bench_noise_scale.py                          # MNIST-1D CNN, 8 devices
  python benchmarks/bench_noise_scale.py --model=resnet50 --image_size=32 --batch_per_device=4
  python benchmarks/bench_noise_scale.py --devices=1              # one device: two halves
"""

from __future__ import annotations

import argparse
import collections
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
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="resnet50 only: the model's compute dtype")
    p.add_argument("--ghost_batch_size", type=int, default=0, help="0: the model's own default")
    p.add_argument("--every_steps", type=int, default=10,
                   help="config.noise_scale_every_steps: the norms on every k-th step only")
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no_control", dest="control", action="store_false",
                   help="skip the A/A control side (a second, separately compiled copy of the "
                        "'off' step, timed in the same rounds: its ratio to 'off' is the "
                        "benchmark's own bias and spread, which the claim must beat)")
    return p.parse_args(argv)


def make_config(args, batch: int):
    from noise_scale import config_lib, default_config

    if args.model == "resnet50":
        config = config_lib.load_config("configs/imagenet_resnet50.py:goyal")
        config.image_size, config.dtype = args.image_size, args.dtype
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
                                        mesh)
    rng = np.random.default_rng(0)
    data = parallel.shard_batch({"input": rng.normal(size=(batch, *shape)).astype(np.float32),
                                 "label": rng.integers(0, 10, batch).astype(np.int32)}, mesh)
    plan = schedule.plan(len(devices))[0]
    step = parallel.compile_stage_step(
        model, tx, mesh, state, data, batch_size=batch,
        has_batch_stats=config.ghost_batch_size > 0,
        measure=gns.measure_for(config, plan, len(devices)) if measure else None)
    return step, state, data


def bootstrap_interval(ratios, level=0.95, resamples=4000, seed=0):
    """(geometric mean, low, high) of per-round ratios: a percentile bootstrap of the mean log."""
    import numpy as np

    logs = np.log(np.asarray(ratios))
    means = np.random.default_rng(seed).choice(logs, (resamples, len(logs))).mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return math.exp(logs.mean()), math.exp(low), math.exp(high)


def measure(args, devices, log=print, deadline: float | None = None) -> dict:
    import jax

    from noise_scale.train import MAX_STEPS_IN_FLIGHT

    names = ("on", "off", "control") if args.control else ("on", "off")
    sides = {name: make_side(args, devices, name == "on") for name in names}
    states = {name: s[1] for name, s in sides.items()}

    updates = {name: 0 for name in sides}

    def round_of(name):
        step, _, data = sides[name]

        def run(count=args.steps):
            in_flight = collections.deque()
            t0 = time.perf_counter()
            for _ in range(count):  # as the loop runs it: the program the update count picks,
                states[name], metrics = step(states[name], data, updates[name])
                updates[name] += 1
                in_flight.append(metrics)  # and a bounded number of steps in flight (a long
                if len(in_flight) > MAX_STEPS_IN_FLIGHT:  # queue deadlocks XLA:CPU's
                    in_flight.popleft().block_until_ready()  # simulated all-reduce)
            jax.block_until_ready((states[name], metrics))
            return count / (time.perf_counter() - t0)
        return run

    for name in sides:
        round_of(name)(args.warmup)
    timed = interleaved({n: round_of(n) for n in sides}, args.rounds, deadline=deadline, log=log)
    rates = timed["rates"]
    # rates are steps/s: time on ÷ time off = rate off ÷ rate on, round by round
    ratios = [off / on for on, off in zip(rates["on"], rates["off"])]
    mean, low, high = bootstrap_interval(ratios)
    what = (f"{args.model}, {len(devices)} device(s) x {args.batch_per_device}, every "
            f"{args.every_steps} step(s)")
    log(f"{what}: step time on/off {mean:.4f} (95% CI {low:.4f}-{high:.4f}, {len(ratios)} "
        "rounds); goal < 1.02")
    out = {"model": args.model, "devices": len(devices), "batch_per_device": args.batch_per_device,
           "every_steps": args.every_steps, "ratio": mean, "interval": [low, high],
           "ratios": ratios, "timed": timed}
    if args.control:
        control = [off / c for c, off in zip(rates["control"], rates["off"])]
        out["control"] = dict(zip(("ratio", "low", "high"), bootstrap_interval(control)))
        log("control (A/A, the same step compiled twice): {ratio:.4f} (95% CI {low:.4f}-"
            "{high:.4f}): the benchmark's own bias".format(**out["control"]))
    return out


def main(argv=None):
    args = parse(argv)
    simulate_host_devices(args.devices)
    use_repository()
    import jax

    return measure(args, jax.devices()[: args.devices])


if __name__ == "__main__":
    main()
