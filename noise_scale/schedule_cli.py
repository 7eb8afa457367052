"""``python -m noise_scale.schedule``: print, export, plot or compare a config's schedule.

  python -m noise_scale.schedule --config=configs/imagenet_resnet50.py:increase_batch
  python -m noise_scale.schedule --config=configs/cifar10_wrn16_4.py:increase_batch \
      --compare=decay_lr --plot=schedule.png
  python -m noise_scale.schedule --config=configs/mnist1d.py:increase_batch --json
"""

from __future__ import annotations

import json
import sys

from absl import flags

from noise_scale import cli, config_lib
from noise_scale.schedule import compare_table, schedule_from_config

_JSON = flags.DEFINE_bool("json", False, "Print the schedule as JSON instead of a table.")
_PLOT = flags.DEFINE_string("plot", "", "Also draw B, ε and g against epochs into this PNG file.")
_COMPARE = flags.DEFINE_string(
    "compare", "", "Another variant of the same config file to show side by side."
)
_DEVICES = flags.DEFINE_integer(
    "devices", 1, "Device count for the per-device batch and accumulation columns."
)


def _main(argv_and_config):
    config, _ = argv_and_config
    try:
        schedule = schedule_from_config(config)
        other = None
        if _COMPARE.value:
            spec = sys_config_spec().partition(":")[0] + ":" + _COMPARE.value
            other_config = config_lib.load_config(spec, _overrides())
            other = schedule_from_config(other_config)
        kwargs = dict(num_devices=_DEVICES.value, max_device_batch=config.max_device_batch)
        if _JSON.value:
            out = schedule.to_dict(**kwargs)
            if other is not None:
                out = {"schedule": out, "compare": other.to_dict(**kwargs)}
            print(json.dumps(out, indent=2))
        else:
            print(schedule.table(**kwargs))
            if other is not None:
                print()
                print(other.table(**kwargs))
                print()
                print(compare_table(other, schedule))
        if _PLOT.value:
            from noise_scale import plots

            plots.plot_schedules([s for s in (schedule, other) if s is not None], _PLOT.value)
            print(f"wrote {_PLOT.value}", file=sys.stderr)
    except OSError as e:
        cli.fail(f"--plot={_PLOT.value}: cannot write the figure: {e}")


def sys_config_spec() -> str:
    return config_lib.split_config_args(sys.argv[1:])[0]


def _overrides():
    return config_lib.split_config_args(sys.argv[1:])[1]


def run():
    cli.run(_main)


if __name__ == "__main__":
    run()
