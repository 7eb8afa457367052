"""``benchmarks/accelerator.py``'s report: the same numbers as Markdown (to paste into
RESULTS.md) and as JSON (everything, including each WRN record and every timed round)."""

from __future__ import annotations

import json
import os
import re


def _f(v, fmt: str = ",.1f", none: str = "—") -> str:
    return none if v is None else format(v, fmt)


def header(env: dict) -> list[str]:
    lines = [f"### {env['devices']} × {env['device_kind']} ({env['backend']}), {env['date']}", ""]
    if env["tiny"]:
        lines += ["**`--tiny`: a sample of the format, not a measurement of speed** (a "
                  "4-block ResNet at 32², batches of 2-4, one step a round, a 64-example WRN "
                  "run, 16 images through the pipeline).", ""]
    lines += [f"Host: {env['cpus']} CPUs, Python {env['python']}, jax {env['jax']} (jaxlib "
              f"{env['jaxlib']}), flax {env['flax']}, optax {env['optax']}. Command: "
              f"`{env['command']}`.", ""]
    return lines


def resnet_lines(r: dict) -> list[str]:
    peak = (f"peak {r['peak_bf16'] / 1e12:,.0f} TFLOP/s dense bf16 ({r['peak_source']})"
            if r["peak_bf16"] else r["peak_source"])
    model = "ResNet-50 v1.5" if r["blocks"] == "3,4,6,3" else f"ResNet v1.5, blocks {r['blocks']}"
    lines = [f"{model} train step, {r['image_size']}², {r['dtype']}, ghost batch "
             f"{r['ghost_batch_size']}; ours = `parallel.make_train_step` compiled ahead of time, "
             f"pmap = the flax examples/imagenet step. FLOPs: XLA's cost analysis of our compiled "
             f"step; {peak}.", "",
             "| batch / device | images/s/device ours, pmap | ratio ours ÷ pmap [min-max] | "
             "compile s ours, pmap | compiles ours, pmap | GFLOP / step / device | "
             "TFLOP/s / device | of peak |", "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        t, first = row["timed"], row["first"]
        ratios = t["ratios"]
        flops, rate = row["flops_per_step_per_device"], row["flop_per_second_per_device"]
        frac = row["fraction_of_peak"]
        lines.append(
            f"| {row['per_device_batch']} | {_f(row['ours_images_per_second_per_device'])}, "
            f"{_f(row['pmap_images_per_second_per_device'])} | **{_f(t['ratio'], '.3f')}** "
            f"[{_f(min(ratios), '.3f')}-{_f(max(ratios), '.3f')}] | "
            f"{first['ours']['compile_seconds']:.1f}, {first['pmap']['compile_seconds']:.1f} | "
            f"{first['ours']['compiles']}, {first['pmap']['compiles']} | "
            f"{_f(flops and flops / 1e9, ',.1f', 'not reported')} | "
            f"{_f(rate and rate / 1e12, ',.3f')} | "
            f"{'peak unknown' if frac is None else f'{100 * frac:.1f} %'} |")
    return lines + ["", f"{row['timed']['rounds']} timed rounds of each step per batch "
                    "(alternating); images/s are medians."]


def wrn_lines(r: dict) -> list[str]:
    lines = [f"WRN-16-4 through `train.train_and_evaluate` (configs/cifar10_wrn16_4.py cut to two "
             f"stages) on synthetic CIFAR-shaped data: N = {r['dataset_size']:,}, "
             f"{r['epochs']:g} epochs, {r['dtype']}, ghost batch {r['ghost_batch_size']}; "
             f"{r['seconds']:.1f} s in all, {r['compiles']} train-step compiles.", "",
             "| stage | B | updates (cumulative) | examples/s (last record, compile excluded) | "
             "compiles so far | train loss |", "|---|---|---|---|---|---|"]
    for s in r["stages"]:
        lines.append(f"| {s['stage']} | {s['batch_size']:,} | {s['updates']:,} | "
                     f"{_f(s['examples_per_second'])} | {s['compiles']} | {s['train_loss']:.4f} |")
    checks = ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in r["checks"].items())
    return lines + ["", f"Checks: {checks}."]


def pipeline_lines(r: dict) -> list[str]:
    t = r["timed"]
    lines = [f"Host input pipeline, {r['image_size']}² uint8 batches of {r['batch_size']}, "
             f"{r['cpus']} CPUs, our source with {r['workers']} worker processes "
             f"({r['ours_source']}).", "",
             "| side | images/s (median) | rounds |", "|---|---|---|"]
    for name, median in t["median"].items():
        lines.append(f"| {name} | {_f(median)} | {t['rounds']} |")
    if t["ratio"] is not None:
        lines += ["", f"Ratio ours ÷ tf.data: **{t['ratio']:.3f}** "
                  f"[{min(t['ratios']):.3f}-{max(t['ratios']):.3f}]."]
    else:
        lines += ["", "tf.data: not measured (TensorFlow is not installed)."]
    return lines


def noise_lines(r: dict) -> list[str]:
    model = {"resnet50": f"ResNet-50, {r['image_size']}², {r['dtype']}"}.get(r["model"], r["model"])
    c = r.get("control")
    lines = [f"The step measuring the gradient noise scale on every {r['every_steps']}th update ÷ "
             f"the plain step: {model}, {r['devices']} device(s) x {r['batch_per_device']}, "
             f"{r['timed']['rounds']} alternating rounds. Goal < 1.02.", "",
             "| comparison | step time ratio | 95 % interval |", "|---|---|---|",
             f"| measuring ÷ plain | **{r['ratio']:.4f}** | {r['interval'][0]:.4f}-"
             f"{r['interval'][1]:.4f} |"]
    if c:
        lines.append(f"| control: plain ÷ plain (compiled twice) | {c['ratio']:.4f} | "
                     f"{c['low']:.4f}-{c['high']:.4f} |")
    return lines


RENDER = {"resnet50": resnet_lines, "wrn16_4": wrn_lines, "pipeline": pipeline_lines,
          "noise_scale": noise_lines}
TITLES = {"resnet50": "ResNet train step, ours and pmap", "wrn16_4": "WRN-16-4, two stages, the real loop",
          "pipeline": "Host input pipeline", "noise_scale": "Measuring the gradient noise scale"}


def markdown(report: dict) -> str:
    lines = header(report["environment"])
    lines += ["| section | status | wall time (s) |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} |" for s in report["sections"]]
    lines += ["", f"Total {report['seconds']:.1f} s." if report["complete"] else
              f"**Incomplete**: {report['seconds']:.1f} s so far (the file is rewritten after "
              "every section)."]
    for s in report["sections"]:
        lines += ["", f"#### {TITLES[s['name']]}", ""]
        if s["error"]:
            lines += [f"**{s['status']}**: `{s['error']}`", ""]
        if s["result"] is not None:
            lines += RENDER[s["name"]](s["result"])
    return "\n".join(lines) + "\n"


def write(report: dict, out: str) -> tuple[str, str]:
    """``accelerator-<device kind>-<UTC time>.{md,json}`` in ``out``: the two paths."""
    env = report["environment"]
    kind = re.sub(r"[^A-Za-z0-9]+", "_", env["device_kind"]).strip("_").lower()
    stem = os.path.join(out, f"accelerator-{kind}{'-tiny' if env['tiny'] else ''}-"
                             f"{env['date'].replace(' ', '_').replace(':', '')}")
    os.makedirs(out, exist_ok=True)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1, default=float)
    return stem + ".md", stem + ".json"
