"""``python -m noise_scale.schedule``: print, export, plot or compare a config's schedule.

  python -m noise_scale.schedule --config=configs/imagenet_resnet50.py:increase_batch
  python -m noise_scale.schedule --config=configs/cifar10_wrn16_4.py:increase_batch \
      --compare=decay_lr --plot=schedule.png
  python -m noise_scale.schedule --config=configs/mnist1d.py:increase_batch --json
  python -m noise_scale.schedule --config=configs/imagenet_resnet50.py:increase_batch \
      --slices=8,32,64 --max_device_batch=256 --devices=8
  python -m noise_scale.schedule --config=configs/mnist1d.py:increase_batch \
      --measured=runs/mnist1d/increase_batch/seed0
"""

from __future__ import annotations

from noise_scale import _python

_python.require_supported()  # before absl, JAX and the pinned packages are imported

import json
import sys

from absl import flags

from noise_scale import adaptive, cli, config_lib
from noise_scale.cluster import slices
from noise_scale.config import validation
from noise_scale.errors import UsageError
from noise_scale.schedule import render
from noise_scale.schedule.rules import capped_schedule, extrapolation_note, schedule_from_config

_JSON = flags.DEFINE_bool("json", False, "Print the schedule as JSON instead of a table.")
_PLOT = flags.DEFINE_string("plot", "", "Also draw B, ε and g against epochs into this PNG file.")
_COMPARE = flags.DEFINE_string(
    "compare", "", "Another variant of the same config file to show side by side.")
_DEVICES = flags.DEFINE_integer(
    "devices", 1, "Device count for the per-device batch and accumulation columns.")
_SLICES = flags.DEFINE_list(
    "slices", [], "Slices you can run on, as device counts or Cloud TPU types (e.g. 8,32,64 "
    "or v4-16,v4-64,v4-128): per stage, the smallest on which it needs no accumulation "
    "(default: config.slices).")
_MEASURED = flags.DEFINE_string(
    "measured", "", "A run's workdir: per stage and slice it ran on, the examples/s and "
    "updates/s its records measured and the time the stage takes at that rate.")
_MAX_DEVICE_BATCH = flags.DEFINE_integer(
    "max_device_batch", None, "Largest per-device batch that fits (default: "
    "config.max_device_batch).")


def _slices(config) -> tuple[int, ...]:
    try:
        counts = tuple(slices.slice_devices(x) for x in _SLICES.value) or tuple(config.slices)
    except ValueError:
        counts = (0,)
    if any(n < 1 for n in counts):
        raise UsageError(
            f"--slices={','.join(_SLICES.value)}: give device counts (integers >= 1) or Cloud "
            f"TPU types ({', '.join(k + '-N' for k in slices.TPU_DEVICES_PER_UNIT)}), e.g. "
            "--slices=8,32,64 or --slices=v4-16,v4-64.")
    return counts


def _read(workdir: str) -> list[dict]:
    from noise_scale.metrics import read_metrics

    try:
        records = read_metrics(workdir)
    except (OSError, ValueError) as e:
        raise UsageError(f"--measured={workdir}: cannot read its metrics.jsonl: {e}") from None
    if not records:
        raise UsageError(f"--measured={workdir}: no metrics.jsonl there; give the --workdir "
                         "of a run that has written at least one record.")
    return records


def cap_note(config, schedule) -> str:
    """What a measured cap leaves open: the table is the plan if every increase happens."""
    held = capped_schedule(config, [False] * (len(schedule.stages) - 1))
    return (f"measured cap (schedule.noise_cap={config.schedule.noise_cap:g}): B grows at a "
            f"boundary only while the new B <= {config.schedule.noise_cap:g} x the measured "
            "noise scale, else ε takes the step. The table is the plan if every increase "
            f"happens ({schedule.total_updates:,} updates); if none does, {held.total_updates:,}. "
            "The run's records list its decisions (cap_decisions).")


def _load(config):
    validation.validate_config(config)
    return schedule_from_config(config)


def main(argv_and_config):
    config, _ = argv_and_config
    schedule = _load(config)
    other = other_config = None
    if _COMPARE.value:
        spec, overrides, _ = config_lib.split_config_args(sys.argv[1:])
        other_config = config_lib.ConfigArgs(spec, tuple(overrides)).load(_COMPARE.value)
        other = _load(other_config)
    mdb = config.max_device_batch if _MAX_DEVICE_BATCH.value is None else _MAX_DEVICE_BATCH.value
    if mdb < 0:
        raise UsageError(f"--max_device_batch={mdb}: must be >= 0 (0 = no limit).")
    kwargs = dict(num_devices=_DEVICES.value, max_device_batch=mdb, slices=_slices(config))
    if _JSON.value:
        out = render.to_dict(schedule, **kwargs, adam=adaptive.per_stage(config, schedule))
        if other is not None:
            out = {"schedule": out, "compare": render.to_dict(
                other, **kwargs, adam=adaptive.per_stage(other_config, other))}
        print(json.dumps(out, indent=2))
    else:
        parts = [render.table(schedule, **kwargs, adam=adaptive.per_stage(config, schedule))]
        if other is not None:
            parts += [render.table(other, **kwargs, adam=adaptive.per_stage(other_config, other)),
                      render.compare_table(other, schedule)]
        if _MEASURED.value:
            parts.append(render.measured_table(schedule, _read(_MEASURED.value),
                                               _MEASURED.value))
        print("\n\n".join(parts))
    if config.schedule.get("noise_cap", 0) and not _JSON.value:
        print(cap_note(config, schedule))
    rule = adaptive.describe(config)
    if rule and not _JSON.value:
        print(rule)
    note = extrapolation_note(config)
    if note:
        print(note, file=sys.stderr)
    if _PLOT.value:
        try:
            render.plot([s for s in (schedule, other) if s is not None], _PLOT.value)
        except OSError as e:
            raise UsageError(f"--plot={_PLOT.value}: cannot write the figure: {e}") from None
        print(f"wrote {_PLOT.value}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
