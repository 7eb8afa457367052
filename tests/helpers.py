"""Shared test helpers: small MNIST-1D configs that run in seconds on 8 CPU devices."""

from noise_scale import config_lib

TIMING_KEYS = {"examples_per_second", "wall_time", "compile_seconds", "input_wait_fraction"}


def small_config(variant="increase_batch", data_dir="", config_file="configs/mnist1d.py",
                 **overrides):
    """MNIST-1D with N = 4,000 and 4 epochs (steps at 1, 2, 3): a 4-stage run in seconds."""
    c = config_lib.load_config(f"{config_file}:{variant}")
    c.dataset_size = 4000
    c.data_dir = data_dir
    c.eval_batch_size = 500
    c.log_every_steps = 10
    c.prefetch = 2
    c.ghost_batch_size = 4  # exercise ghost batch norm: 4, 20, 100, 500 examples per device
    c.schedule.total_epochs = 4.0
    c.schedule.boundaries = (1.0, 2.0, 3.0)
    c.schedule.max_batch_size = {"hybrid": 160, "increased_lr": 400, "increased_momentum": 400}.get(
        variant, 0)
    return apply_overrides(c, overrides)


def tiny_config(data_dir="", **overrides):
    """One stage, one epoch of 1,000 MNIST-1D examples: two compiles, a few seconds."""
    return small_config("constant_lr", data_dir, dataset_size=1000,
                        **{"schedule.total_epochs": 1.0, "schedule.boundaries": (),
                           **overrides})


def apply_overrides(c, overrides: dict):
    """Set dotted fields ("schedule.batch_size") of a config; returns it."""
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def comparable(records):
    """Records without timing or the compile counts (a resumed process recompiles, or reads
    the compiles back from the cache)."""
    return [{k: v for k, v in r.items() if k not in ("compiles", "compiles_cached")}
            for r in strip_timing(records)]


def optimizer_config(optimizer="momentum", weight_decay=0.0):
    """The default config with only the optimizer fields a test sets."""
    from noise_scale import default_config

    c = default_config.get_config()
    c.optimizer, c.weight_decay = optimizer, weight_decay
    return c
