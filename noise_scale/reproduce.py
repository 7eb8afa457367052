"""One command reproduces the paper's figure: every schedule, several seeds, one report.

  python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=/tmp/repro
  python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=/tmp/repro \
      --variants=decay_lr,increase_batch --seeds=3 --config.schedule.total_epochs=20
  python -m noise_scale.reproduce --config=configs/mnist1d.py --workdir=/tmp/repro --optimizer=adam

Runs each variant of the config file (``--variants``) for seeds 0 … S−1
(``--seeds``), one after another in this process, each in
``WORKDIR/<variant>/seed<s>/`` through ``noise_scale.train.train_and_evaluate``,
then writes into WORKDIR

- ``figure.png``: test accuracy and training loss against epochs (left) and
  against parameter updates (right, log x), mean over seeds with a min–max band;
- ``report.md``: per schedule the final test accuracy (mean ± sd), updates and
  how many fewer than ``decay_lr``, wall time, compiles, and the largest
  per-epoch test-accuracy gap to ``decay_lr`` after the first boundary; then a
  summary whose sentences are generated from those numbers;
- ``summary.json``: the same numbers, machine-readable.

Reuse. A run is finished when its folder holds ``DONE`` (written here after
``train_and_evaluate`` returns, with the final record and the run's
experiment fingerprint). Finished runs are read, not rerun; a finished run of
a *different* experiment (other overrides) stops the command with the fields
that differ. A run without ``DONE`` is handed to ``train_and_evaluate`` again:
if it left checkpoints it resumes from the newest one (metrics.jsonl is kept,
train cuts it back to the checkpoint); otherwise its metrics.jsonl is deleted
and it starts from scratch. Nothing else in a run folder is ever deleted.

Optimizers (``--optimizer``, when it differs from the config's; output goes to
``WORKDIR/<optimizer>/``). The conversion keeps the noise scale
g = ε/(1−m)(N/B−1) of every stage:

- ``sgd``: m → 0 and ε → ε/(1−m). ``increased_momentum`` (it raises m) has no
  SGD counterpart and is skipped with a note.
- ``momentum`` / ``nesterov``: the same ε and m, the other update rule.
- ``adam``: Adam normalises its step, so SGD's ε does not carry over. We use
  ε_adam = ADAM_LR_PER_EFFECTIVE_LR · ε/(1−m) = 0.002 · ε/(1−m): 1e-3 (Adam's
  usual default) for MNIST-1D's ε = 0.05, m = 0.9, and 2e-3 for CIFAR-10's
  ε = 0.1, m = 0.9. The schedule's m is Adam's b1 (0.9 if the config has none);
  the schedule's ratios (×factor steps, B ∝ ε, B ∝ 1/(1−m)) apply unchanged.

The workdir is read and written through ``etils.epath`` (local or ``gs://``),
from a single host: the command itself does not coordinate several processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time

import numpy as np
from etils import epath

from noise_scale import config_lib
from noise_scale.cli import fail
from noise_scale.metrics import format_duration, read_metrics

DEFAULT_VARIANTS = ("decay_lr", "hybrid", "increase_batch", "increased_lr", "increased_momentum")
REFERENCE = "decay_lr"
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
ADAM_LR_PER_EFFECTIVE_LR = 0.002  # ε_adam = 0.002 · ε/(1−m); see the module docstring
ADAM_DEFAULT_B1 = 0.9
DONE = "DONE"


# ---------------------------------------------------------------- arguments
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, no usage dump
        fail(f"{message}. Pass --help to see the flags.")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m noise_scale.reproduce",
        description="Run every schedule of a config for several seeds; write figure.png, "
        "report.md and summary.json. --config=FILE.py (no variant) and --config.a.b=value "
        "overrides (applied to every run) are accepted as in noise_scale.main.",
    )
    p.add_argument("--workdir", help="Directory for the runs, the figure and the report.")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="Comma-separated variants of the config file (default: %(default)s).")
    p.add_argument("--seeds", default="2",
                   help="Number of seeds; seed s sets config.seed = s (default: %(default)s).")
    p.add_argument("--jobs", type=int, default=1,
                   help="Runs trained at once, each in its own process (default: %(default)s). "
                   "2 suits MNIST-1D on a 2-core machine; keep 1 on an accelerator.")
    p.add_argument("--optimizer", default="",
                   help=f"One of {', '.join(OPTIMIZERS)}: rerun the comparison with it, "
                   "keeping g, into WORKDIR/<optimizer>/ (default: the config's).")
    return p


@dataclasses.dataclass
class Args:
    spec: str
    overrides: list[tuple[str, str]]
    workdir: str
    variants: list[str]
    seeds: int
    optimizer: str
    jobs: int = 1


def parse_args(argv: list[str]) -> Args:
    """Flags to Args; any mistake exits with status 2 and one message."""
    try:
        spec, overrides, rest = config_lib.split_config_args(argv)
    except config_lib.ConfigError as e:
        fail(str(e))
    ns = _parser().parse_args(rest)
    if not spec:
        fail("--config is required: the config file whose variants to compare, "
                        "e.g. --config=configs/mnist1d.py.")
    if ":" in spec:
        fail(f"--config={spec}: give the file without a variant; choose the "
                        f"variants with --variants=a,b (default: {','.join(DEFAULT_VARIANTS)}).")
    if not ns.workdir:
        fail("--workdir is required: the directory for the runs, figure.png, "
                        "report.md and summary.json.")
    variants = list(dict.fromkeys(v.strip() for v in ns.variants.split(",") if v.strip()))
    if not variants:
        fail("--variants is empty; name at least one variant, e.g. "
                        f"--variants={','.join(DEFAULT_VARIANTS)}.")
    try:
        seeds = int(ns.seeds)
    except ValueError:
        seeds = 0
    if seeds < 1:
        fail(f"--seeds={ns.seeds}: expected a whole number >= 1 (seeds 0 … S−1 run).")
    if ns.optimizer and ns.optimizer not in OPTIMIZERS:
        fail(f"--optimizer={ns.optimizer}: unknown optimizer; choose one of "
                        f"{', '.join(OPTIMIZERS)}.")
    if ns.jobs < 1:
        fail(f"--jobs={ns.jobs}: expected a whole number >= 1.")
    return Args(spec, overrides, ns.workdir, variants, seeds, ns.optimizer, ns.jobs)


# ------------------------------------------------------------------ optimizer
def convert_optimizer(config, optimizer: str) -> str | None:
    """Switch ``config`` to ``optimizer`` keeping every stage's g (see the module docstring).

    Returns why this variant cannot run with ``optimizer`` (it is then skipped), or None.
    """
    old = config.optimizer
    if not optimizer or optimizer == old:
        return None
    s = config.schedule
    if old == "adam":
        raise config_lib.ConfigError(
            f"--optimizer={optimizer}: the config uses adam, whose learning rate does not map "
            "onto SGD's; start from an SGD-family config (sgd, momentum, nesterov).")
    if optimizer == "sgd":
        if s.raise_momentum_to:
            return ("it raises the momentum (B ∝ 1/(1−m)), which plain SGD does not have")
        s.learning_rate = s.learning_rate / (1.0 - s.momentum)
        s.momentum = 0.0
    elif optimizer == "adam":
        effective = s.learning_rate / (1.0 - s.momentum)
        s.learning_rate = ADAM_LR_PER_EFFECTIVE_LR * effective
        if s.momentum <= 0:
            s.momentum = ADAM_DEFAULT_B1
    config.optimizer = optimizer
    return None


# ----------------------------------------------------------------------- runs
@dataclasses.dataclass
class RunSpec:
    variant: str
    seed: int
    config: object
    workdir: epath.Path
    total_examples: int  # where the schedule ends: the last record's examples_seen
    fingerprint: dict


def plan_runs(args: Args, num_devices: int) -> tuple[epath.Path, list[RunSpec], list[str], object]:
    """Every run's config, validated before anything trains. Returns (outdir, runs, notes, ref)."""
    from noise_scale import checkpoint as checkpoint_lib
    from noise_scale.schedule import ScheduleError, schedule_from_config

    root = epath.Path(args.workdir)
    base = config_lib.load_config(args.spec, args.overrides)  # validates the overrides once
    outdir = root / args.optimizer if args.optimizer and args.optimizer != base.optimizer else root
    runs, notes, skipped, first = [], [], set(), None
    for seed in range(args.seeds):
        for variant in args.variants:
            if variant in skipped:
                continue
            try:
                config = config_lib.load_config(f"{args.spec}:{variant}", args.overrides)
            except config_lib.ConfigError as e:
                raise config_lib.ConfigError(f"--variants: {variant}: {e}") from None
            config.seed = seed
            why = convert_optimizer(config, args.optimizer)
            if why:
                skipped.add(variant)
                notes.append(f"{variant} skipped with --optimizer={args.optimizer}: {why}.")
                continue
            try:
                schedule = schedule_from_config(config)
                end = schedule.plan(num_devices, config.max_device_batch)[-1].end_example
            except ScheduleError as e:
                raise config_lib.ConfigError(f"variant {variant}: {e}") from None
            if first is None:
                first = config
            fp = json.loads(json.dumps(checkpoint_lib.experiment_fingerprint(config, schedule)))
            runs.append(RunSpec(variant, seed, config, outdir / variant / f"seed{seed}", end, fp))
    if not runs:
        raise config_lib.ConfigError("no variant can run: " + " ".join(notes))
    return outdir, runs, notes, first


def read_records(workdir) -> list[dict]:
    """metrics.jsonl, one record per examples_seen (the last one written wins), in order."""
    by_position = {r["examples_seen"]: r for r in read_metrics(str(workdir))}
    return [by_position[k] for k in sorted(by_position)]


def finished(run: RunSpec) -> dict | None:
    """The DONE marker's final record if the run is finished (and is this experiment)."""
    marker = run.workdir / DONE
    if not marker.exists():
        return None
    try:
        done = json.loads(marker.read_text())
        final = done["final_record"]
    except (ValueError, KeyError, TypeError):
        return None  # a damaged marker: treat the run as unfinished
    from noise_scale.checkpoint import fingerprint_diff

    changes = fingerprint_diff(done.get("fingerprint", {}), run.fingerprint)
    if changes:
        raise config_lib.ConfigError(
            f"{run.workdir} holds a finished run of a different experiment; what differs "
            f"(finished run -> now): {'; '.join(changes[:6])}{'; ...' if len(changes) > 6 else ''}. "
            "Use another --workdir for the new settings (or rerun with the old ones)."
        )
    records = read_records(run.workdir)
    if not records or records[-1]["examples_seen"] != run.total_examples:
        return None  # metrics.jsonl missing or cut short: rerun
    return final


def prepare_unfinished(run: RunSpec) -> str:
    """Start from scratch unless the run left checkpoints to resume from; returns which."""
    if (run.workdir / "checkpoints").exists():
        return "resuming"
    metrics = run.workdir / "metrics.jsonl"
    if metrics.exists():
        metrics.unlink()
    return "running"


def _resume_estimate(run: RunSpec) -> int:
    """Examples an unfinished run will not redo: its last record's, if it can resume."""
    if not (run.workdir / "checkpoints").exists():
        return 0
    records = read_records(run.workdir)
    return min(records[-1]["examples_seen"], run.total_examples) if records else 0


def mark_done(run: RunSpec, records: list[dict]) -> None:
    marker = run.workdir / DONE
    tmp = run.workdir / (DONE + ".tmp")
    tmp.write_text(json.dumps(
        {"final_record": records[-1], "fingerprint": run.fingerprint}, indent=2, sort_keys=True))
    tmp.replace(marker)


def progress_line(index: int, total: int, run: RunSpec, status: str, examples_left: int,
                  runs_left: int, rate: float) -> str:
    line = f"[run {index}/{total}] {run.variant} seed {run.seed} ({status})"
    if runs_left:
        line += f" | {runs_left} run{'s' if runs_left > 1 else ''} to train, {examples_left:,} examples"
        if rate > 0:
            line += f" | {rate:,.0f} ex/s so far | ETA {format_duration(examples_left / rate)}"
        else:
            line += " | ETA after the first run"
    return line


def _train_in_subprocess(config, workdir: str) -> tuple[str, str]:
    """One run in a worker process (``--jobs`` > 1); its terminal output goes to train.log.

    Returns ("ok", "") or (kind, message) with kind setup | diverged | preempted.
    """
    import os

    log = epath.Path(workdir) / "train.log"
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)  # JAX's own messages (C level)
    os.close(fd)
    sys.stderr = open(str(log), "a", buffering=1)  # the per-step progress line
    from noise_scale import train

    try:
        train.train_and_evaluate(config, workdir)
    except train.SetupError as e:
        return "setup", str(e)
    except (train.TrainingDiverged, train.Preempted) as e:
        return "stopped", str(e)
    return "ok", ""


def _check_finished(run: RunSpec) -> list[dict]:
    records = read_records(run.workdir)
    if not records or records[-1]["examples_seen"] != run.total_examples:
        fail(
            f"{run.variant} seed {run.seed}: train_and_evaluate returned but "
            f"{run.workdir}/metrics.jsonl ends at examples_seen="
            f"{records[-1]['examples_seen'] if records else 0:,}, not at the schedule's end "
            f"{run.total_examples:,}. If its checkpoints folder holds a finished run whose "
            "metrics.jsonl was removed, delete that checkpoints folder to retrain the run.",
            code=1)
    mark_done(run, records)
    return records


def execute_parallel(runs: list[RunSpec], jobs: int, stream=None) -> dict:
    """Like ``execute``, with up to ``jobs`` runs at once in spawned worker processes.

    Small models on a few CPU cores gain from it (two MNIST-1D runs on two cores do ~1.4×
    the examples per second of one); each worker writes its terminal output to its run's
    train.log, and this process prints one line as each run starts and ends.
    """
    import concurrent.futures
    import multiprocessing

    stream = stream or sys.stdout
    out, todo = {}, []
    for i, run in enumerate(runs):
        if finished(run) is None:
            todo.append(i)
        else:
            out[(run.variant, run.seed)] = read_records(run.workdir)
            print(f"[run {i + 1}/{len(runs)}] {run.variant} seed {run.seed} (reused)",
                  file=stream, flush=True)
    start = {i: _resume_estimate(runs[i]) for i in todo}  # before anything trains
    examples_left = sum(runs[i].total_examples - start[i] for i in todo)
    t0, done_examples, left = time.perf_counter(), 0, len(todo)
    ctx = multiprocessing.get_context("spawn")  # JAX does not survive fork
    # A fresh process per run: nothing (compiled steps, memory, open files) carries over.
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                                  max_tasks_per_child=1)

    def forward(signum, frame):
        """A SIGTERM/SIGINT to this process reaches the workers: they checkpoint and stop."""
        for proc in list(getattr(pool, "_processes", {}).values()):
            try:
                os.kill(proc.pid, signum)
            except OSError:
                pass

    def stop(message: str, code: int):
        pool.shutdown(wait=True, cancel_futures=True)  # queued runs never start
        fail(message, code=code)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        futures = {}
        for i in todo:
            run = runs[i]
            status = prepare_unfinished(run)
            futures[pool.submit(_train_in_subprocess, run.config, str(run.workdir))] = i
            print(f"[run {i + 1}/{len(runs)}] {run.variant} seed {run.seed} ({status}, "
                  f"queued; log in {run.workdir / 'train.log'})", file=stream, flush=True)
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            run = runs[i]
            try:
                kind, message = future.result()
            except Exception as e:  # noqa: BLE001 - a worker died (killed, out of memory)
                kind, message = "stopped", f"its worker process died ({type(e).__name__}: {e})."
            if kind == "setup":
                stop(f"{run.variant} seed {run.seed}: {message}", 2)
            if kind != "ok":
                stop(f"{run.variant} seed {run.seed} ({run.workdir}): {message} Finished runs "
                     "are kept; rerunning the command reuses them and resumes the others.", 1)
            out[(run.variant, run.seed)] = _check_finished(run)
            trained = run.total_examples - start[i]
            done_examples += trained
            examples_left -= trained
            rate = done_examples / (time.perf_counter() - t0)
            left -= 1
            print(f"[done] {run.variant} seed {run.seed}: test accuracy "
                  f"{100 * out[(run.variant, run.seed)][-1]['test_accuracy']:.2f} % | "
                  f"{left} run{'s' if left != 1 else ''} left, {examples_left:,} examples | "
                  f"{rate:,.0f} ex/s so far | ETA {format_duration(examples_left / max(rate, 1e-9))}",
                  file=stream, flush=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        pool.shutdown(wait=True, cancel_futures=True)
    return {(r.variant, r.seed): out[(r.variant, r.seed)] for r in runs}


def execute(runs: list[RunSpec], stream=None) -> dict[tuple[str, int], list[dict]]:
    """Train what is unfinished (in order), reuse the rest; returns each run's records."""
    from noise_scale import train

    stream = stream or sys.stdout
    todo = {i for i, r in enumerate(runs) if finished(r) is None}
    # a run with checkpoints resumes near its last record; the rest start from 0
    start = {i: _resume_estimate(runs[i]) for i in todo}
    examples_left = sum(runs[i].total_examples - start[i] for i in todo)
    done_examples, done_seconds = 0, 0.0
    out = {}
    for i, run in enumerate(runs):
        rate = done_examples / done_seconds if done_seconds > 0 else 0.0
        if i not in todo:
            print(progress_line(i + 1, len(runs), run, "reused", examples_left, len(todo), rate),
                  file=stream, flush=True)
            out[(run.variant, run.seed)] = read_records(run.workdir)
            continue
        status = prepare_unfinished(run)
        print(progress_line(i + 1, len(runs), run, status, examples_left, len(todo), rate),
              file=stream, flush=True)
        t0 = time.perf_counter()
        try:
            train.train_and_evaluate(run.config, str(run.workdir))
        except train.SetupError as e:
            fail(f"{run.variant} seed {run.seed}: {e}")
        except (train.TrainingDiverged, train.Preempted) as e:
            fail(f"{run.variant} seed {run.seed} ({run.workdir}): {e} Finished runs "
                            "are kept; rerunning the command reuses them.", code=1)
        records = _check_finished(run)
        out[(run.variant, run.seed)] = records
        todo.discard(i)
        examples_left -= run.total_examples - start[i]
        done_examples += run.total_examples - start[i]  # what this invocation trained
        done_seconds += time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- aggregation
def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1); sd is 0 for a single value."""
    v = np.asarray(list(values), float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def updates_ratio(reference_updates: int, updates: int) -> float:
    """How many times fewer updates than the reference (> 1: fewer)."""
    return reference_updates / updates


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if abs(ratio - 1) < 0.05:
        return "same"
    return f"{ratio:.1f}× fewer" if ratio > 1 else f"{1 / ratio:.1f}× more"


def _key(record: dict, eval_every: float) -> int:
    """Evaluation index: records of different schedules at the same epoch share it.

    An evaluation happens at the first step past each multiple of eval_every
    epochs, so its epoch overshoots by < B/N; rounding absorbs that.
    """
    return int(round(record["epoch"] / eval_every))


def seed_curve(records_by_seed: list[list[dict]], metric: str, eval_every: float = 1.0) -> dict:
    """Per evaluation: epoch, updates, and the metric's mean, min and max over seeds."""
    grouped: dict[int, list[dict]] = {}
    for records in records_by_seed:
        for r in records:
            grouped.setdefault(_key(r, eval_every), []).append(r)
    keys = sorted(grouped)
    col = lambda f, name: np.array([f([r[name] for r in grouped[k]]) for k in keys], float)
    return {
        "key": np.array(keys),
        "epoch": col(np.mean, "epoch"),
        "updates": col(np.mean, "updates"),
        "mean": col(np.mean, metric),
        "lo": col(np.min, metric),
        "hi": col(np.max, metric),
    }


def max_gap_after(reference: list[list[dict]], records_by_seed: list[list[dict]],
                  first_boundary: float, eval_every: float = 1.0) -> tuple[float, float | None]:
    """Largest |mean test accuracy − reference's| (points) over evaluations at epochs >= the boundary.

    Means are over seeds at each evaluation; returns (gap, its epoch), (0, None) if
    no evaluation is shared.
    """
    ref = seed_curve(reference, "test_accuracy", eval_every)
    cur = seed_curve(records_by_seed, "test_accuracy", eval_every)
    ref_by_key = dict(zip(ref["key"].tolist(), ref["mean"]))
    gap, where = 0.0, None
    for k, e, m in zip(cur["key"].tolist(), cur["epoch"], cur["mean"]):
        if k in ref_by_key and k * eval_every >= first_boundary - 1e-9:
            g = 100.0 * abs(m - ref_by_key[k])
            if where is None or g > gap:
                gap, where = g, float(e)
    return gap, where


def summarize(runs: dict[str, list[list[dict]]], seeds: list[int], first_boundary: float,
              eval_every: float = 1.0, reference: str = REFERENCE) -> dict:
    """The report's numbers per variant (``runs``: variant → records per seed, in seed order)."""
    ref = runs.get(reference)
    ref_updates = ref[0][-1]["updates"] if ref else None
    variants = {}
    for name, by_seed in runs.items():
        finals = [100.0 * recs[-1]["test_accuracy"] for recs in by_seed]
        mean, sd = mean_sd(finals)
        updates = by_seed[0][-1]["updates"]
        gap, gap_epoch = (max_gap_after(ref, by_seed, first_boundary, eval_every)
                          if ref else (None, None))
        variants[name] = {
            "final_test_accuracy_mean": mean,
            "final_test_accuracy_sd": sd,
            "final_test_accuracy_per_seed": finals,
            "final_train_loss_mean": mean_sd(r[-1]["train_loss"] for r in by_seed)[0],
            "updates": updates,
            "updates_ratio_vs_decay_lr": updates_ratio(ref_updates, updates) if ref else None,
            "wall_time_mean": mean_sd(r[-1]["wall_time"] for r in by_seed)[0],
            "compiles": max(r[-1]["compiles"] for r in by_seed),
            "max_gap_after_first_stage": gap,
            "max_gap_epoch": gap_epoch,
        }
    return {
        "reference": reference if ref else None,
        "seeds": list(seeds),
        "first_boundary_epoch": first_boundary,
        "units": {"accuracy": "percent", "gap": "percentage points", "wall_time": "seconds",
                  "updates_ratio": "reference updates / updates (> 1: fewer)"},
        "variants": variants,
    }


def summary_sentences(summary: dict) -> list[str]:
    """Plain-language findings, every number taken from ``summary``."""
    v, ref_name = summary["variants"], summary["reference"]
    seeds, b = summary["seeds"], summary["first_boundary_epoch"]
    if ref_name is None:
        best = max(v, key=lambda k: v[k]["final_test_accuracy_mean"])
        return [f"{REFERENCE} was not among the variants, so nothing is compared with it; the "
                f"highest final test accuracy is {best}'s "
                f"{v[best]['final_test_accuracy_mean']:.2f} %."]
    ref = v[ref_name]
    out = []
    for name, s in v.items():
        if name == ref_name:
            continue
        delta = s["final_test_accuracy_mean"] - ref["final_test_accuracy_mean"]
        if len(seeds) < 2:
            noise = "one seed, so no run-to-run noise estimate"
        else:
            band = 2.0 * math.hypot(s["final_test_accuracy_sd"], ref["final_test_accuracy_sd"])
            noise = ("within" if abs(delta) <= band else "outside") + (
                f" run-to-run noise, taken as 2·√(sd² + sd_ref²) = {band:.2f} points")
        out.append(
            f"{name} ends at {s['final_test_accuracy_mean']:.2f} % against {ref_name}'s "
            f"{ref['final_test_accuracy_mean']:.2f} % ({delta:+.2f} points, {noise}) with "
            f"{s['updates']:,} parameter updates ({ratio_text(s['updates_ratio_vs_decay_lr'])} "
            f"than {ref_name}'s {ref['updates']:,}); from epoch {b:g} on its per-epoch test "
            f"accuracy stays within {s['max_gap_after_first_stage']:.2f} points of {ref_name}'s"
            + (f" (largest at epoch {s['max_gap_epoch']:.3g})." if s["max_gap_epoch"] else ".")
        )
    others = [k for k in v if k != ref_name]
    if others:
        fewest = min(others, key=lambda k: v[k]["updates"])
        worst = min(v, key=lambda k: v[k]["final_test_accuracy_mean"])
        out.append(
            f"Fewest updates: {fewest} ({v[fewest]['updates']:,}, "
            f"{ratio_text(v[fewest]['updates_ratio_vs_decay_lr'])} than {ref_name}) at "
            f"{v[fewest]['final_test_accuracy_mean']:.2f} % final test accuracy. Lowest final "
            f"test accuracy: {worst} ({v[worst]['final_test_accuracy_mean']:.2f} %)."
        )
    return out


def render_report(summary: dict, title: str, context: list[str]) -> str:
    v, ref = summary["variants"], summary["reference"]
    b = summary["first_boundary_epoch"]
    n = len(summary["seeds"])
    ref_label = ref or REFERENCE
    lines = [f"# {title}", "", *context, "",
             f"Final test accuracy: mean ± sample sd over {n} seed{'s' if n > 1 else ''} "
             f"({', '.join(map(str, summary['seeds']))}). Wall time: mean over seeds. Gap: the "
             f"largest |test accuracy − {ref_label}'s| over the evaluations at epochs ≥ {b:g} "
             "(the first boundary), on the means over seeds. Compiles: train-step "
             "compilations of a run (the most over seeds).", "",
             f"| schedule | final test accuracy (%) | updates | vs {ref_label} | wall time | "
             f"compiles | max gap to {ref_label} from epoch {b:g} (points) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in v.items():
        gap = "reference" if name == ref else "—" if s["max_gap_after_first_stage"] is None else (
            f"{s['max_gap_after_first_stage']:.2f}")
        ratio = "reference" if name == ref else ratio_text(s["updates_ratio_vs_decay_lr"])
        lines.append(
            f"| {name} | {s['final_test_accuracy_mean']:.2f} ± {s['final_test_accuracy_sd']:.2f} | "
            f"{s['updates']:,} | {ratio} | {format_duration(s['wall_time_mean'])} | "
            f"{s['compiles']} | {gap} |")
    lines += ["", "## Summary", ""]
    lines += [f"- {s}" for s in summary_sentences(summary)]
    lines += ["", "![test accuracy and training loss against epochs and updates](figure.png)", ""]
    return "\n".join(lines)


def figure_curves(runs: dict[str, list[list[dict]]], summary: dict, eval_every: float) -> list:
    curves = []
    for name, by_seed in runs.items():
        acc = seed_curve(by_seed, "test_accuracy", eval_every)
        loss = seed_curve(by_seed, "train_loss", eval_every)
        curves.append({
            "name": name, "updates_total": summary["variants"][name]["updates"],
            "epoch": acc["epoch"], "updates": acc["updates"],
            "test_accuracy": (100 * acc["mean"], 100 * acc["lo"], 100 * acc["hi"]),
            "train_loss": (loss["mean"], loss["lo"], loss["hi"]),
        })
    return curves


def write_outputs(outdir: epath.Path, records: dict, runs: list[RunSpec], args: Args,
                  notes: list[str], reference_config) -> dict:
    from noise_scale import plots

    variants = list(dict.fromkeys(r.variant for r in runs))
    seeds = list(range(args.seeds))
    by_variant = {v: [records[(v, s)] for s in seeds] for v in variants}
    boundaries = tuple(reference_config.schedule.boundaries)
    first = float(boundaries[0]) if boundaries else 0.0
    eval_every = float(reference_config.eval_every_epochs)
    summary = summarize(by_variant, seeds, first, eval_every)
    summary.update(config=args.spec, overrides=[f"{k}={v}" for k, v in args.overrides],
                   optimizer=reference_config.optimizer, notes=notes)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    s = reference_config.schedule
    context = [
        f"Config `{args.spec}`, optimizer {reference_config.optimizer}, N = "
        f"{reference_config.dataset_size:,}, {s.total_epochs:g} epochs, boundaries "
        f"{', '.join(f'{x:g}' for x in boundaries) or 'none'} (factor {s.factor:g})"
        + (f", overrides: `{' '.join(f'--config.{k}={v}' for k, v in args.overrides)}`"
           if args.overrides else "") + ".",
        *notes,
    ]
    title = f"Don't decay the learning rate, increase the batch size: {args.spec}"
    (outdir / "report.md").write_text(render_report(summary, title, context))
    with (outdir / "figure.png").open("wb") as f:
        plots.plot_runs(figure_curves(by_variant, summary, eval_every), f,
                        boundaries=boundaries, title=f"{args.spec} ({reference_config.optimizer}, "
                        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    return summary


# ----------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import jax  # after the flags have had their say

    try:
        outdir, runs, notes, ref_config = plan_runs(args, jax.device_count())
        for note in notes:
            print(f"note: {note}", flush=True)
        print(f"{len(runs)} runs ({len({r.variant for r in runs})} variants × {args.seeds} "
              f"seed{'s' if args.seeds > 1 else ''}) into {outdir}", flush=True)
        records = execute(runs) if args.jobs <= 1 else execute_parallel(runs, args.jobs)
    except config_lib.ConfigError as e:
        fail(str(e))
    summary = write_outputs(outdir, records, runs, args, notes, ref_config)
    for sentence in summary_sentences(summary):
        print(f"- {sentence}")
    print(f"wrote {outdir / 'figure.png'}, {outdir / 'report.md'}, {outdir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
