"""Train the unfinished runs, ``jobs`` at a time; reuse the finished ones.

One loop for every ``jobs``: it keeps at most ``jobs`` runs in flight on an
executor with ``concurrent.futures``' ``submit()``/Future interface. ``jobs=1``
is a pool of one that trains in this process (``InProcessExecutor``: nothing
is spawned, and a debugger or a monkeypatched trainer sees the run); more
jobs use spawned worker processes, a fresh one per run, each writing its
terminal output to its run's ``train.log``. Small models on a few CPU cores
gain from that (two MNIST-1D runs on two cores do ~1.4× the examples per
second of one). Each worker is pinned to its own share of this process's CPUs
(``cpu_slots``) before JAX starts, so XLA sizes its thread pool to that share:
two unpinned workers on two cores each ran two threads and fought over them
(MNIST-1D's CNN at B = 32: 21k examples/s per run unpinned, 25.7k pinned).

A run that stops is reported as a *kind* (``setup``, ``diverged``,
``preempted``, ``paused``), since a worker's exceptions do not all survive pickling; this
process re-raises the matching ``noise_scale.errors`` exception, so a
preempted run ends the command with 143 whether it ran here or in a worker (a
worker killed from outside, say by the OOM killer, ends it with 74: ``errors``).
SIGTERM/SIGINT reach the workers (they checkpoint and stop) and keep runs not
yet started from starting. A run paused on purpose at a stage boundary
(``config.stop_at_stage``) is not a failure: the other runs go on, and the
command then ends with ``errors.Paused`` (exit 75) naming the paused runs.

"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import time
from typing import NamedTuple

from noise_scale import errors, run_files
from noise_scale.experiments import runs as runs_lib
from noise_scale.metrics import format_duration

KEPT = "Finished runs are kept; rerunning the command reuses them and resumes the others."


class Outcome(NamedTuple):
    """How a run ended: kind ok | setup | diverged | preempted | paused, and what it said."""

    kind: str
    message: str = ""
    signum: int = 0
    examples_seen: int = 0


def train_one(config, workdir: str, log_to_file: bool, cpus=None) -> Outcome:
    """Train one run to the end of its schedule (or resume it); never raises a known stop.

    ``cpus``: the CPUs this worker may use, set before JAX's backend starts (it sizes its
    thread pool by the process's affinity)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if log_to_file:
        _log_to(os.path.join(workdir, run_files.LOG))
    from noise_scale import train  # looked up now: tests replace train_and_evaluate

    try:
        train.train_and_evaluate(config, workdir)
    except errors.UsageError as e:
        return Outcome("setup", str(e))
    except errors.TrainingDiverged as e:
        return Outcome("diverged", str(e))
    except errors.Preempted as e:
        return Outcome("preempted", str(e), e.signum, e.examples_seen)
    except errors.Paused as e:
        return Outcome("paused", str(e), 0, e.examples_seen)
    return Outcome("ok")


def _log_to(path: str) -> None:
    """A worker's stderr, JAX's C-level messages included, goes to its run's train.log."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(path, "a", buffering=1)  # the per-step progress line


def stop_error(run: runs_lib.RunSpec, outcome: Outcome) -> errors.UsageError | RuntimeError:
    """The ``errors`` exception for a run that did not finish, naming the run."""
    where = f"{run.variant} seed {run.seed}"
    if outcome.kind == "paused":
        return errors.Paused(f"{where} ({run.workdir}): {outcome.message}",
                             outcome.examples_seen)
    if outcome.kind == "setup":
        return errors.SetupError(f"{where}: {outcome.message}")
    if outcome.kind == "preempted":
        error = errors.Preempted(outcome.signum, outcome.examples_seen, str(run.workdir))
    else:
        error = errors.TrainingDiverged()
    error.args = (f"{where} ({run.workdir}): {outcome.message} {KEPT}",)  # the message, with where
    return error


def cpu_slots(jobs: int) -> list[frozenset[int]] | None:
    """``jobs`` disjoint, equal shares of this process's CPUs; None for one job, or where
    there are fewer CPUs than jobs (then the workers share them all, unpinned)."""
    if jobs < 2 or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < jobs:
        return None
    per = len(cpus) // jobs
    return [frozenset(cpus[k * per:(k + 1) * per]) for k in range(jobs)]


class InProcessExecutor:
    """A pool of one in this process: ``submit`` runs the call and returns its finished Future."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - handed over like a worker's: result() raises it
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def make_executor(jobs: int):
    """A pool of one in this process for ``jobs=1``; else a fresh spawned process per run."""
    if jobs == 1:
        return InProcessExecutor()
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),  # JAX does not survive fork
        max_tasks_per_child=1)  # nothing (compiled steps, memory, files) carries over


class _Signals:
    """With workers: record SIGTERM/SIGINT and forward them, so each worker checkpoints and stops.

    In this process (``jobs=1``) the trainer handles them itself; nothing is installed.
    """

    def __init__(self, pool):
        self.pool, self.received, self._old = pool, None, {}

    def __enter__(self):
        if not isinstance(self.pool, InProcessExecutor):
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            try:
                os.kill(proc.pid, signum)
            except OSError:
                pass

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def preempted(self, run: runs_lib.RunSpec, what: str) -> errors.Preempted:
        error = errors.Preempted(self.received, 0, str(run.workdir))
        error.args = (f"{signal.Signals(self.received).name} received {what} "
                      f"{run.variant} seed {run.seed} ({run.workdir}). {KEPT}",)
        return error


class _Progress:
    """One line per run as it starts (or is reused) and as it ends, with examples left and ETA."""

    def __init__(self, runs: list[runs_lib.RunSpec], todo: set[int], stream):
        self.runs, self.stream = runs, stream
        self.start = {i: runs_lib.resume_estimate(runs[i]) for i in todo}  # before any training
        self.examples_left = sum(runs[i].total_examples - s for i, s in self.start.items())
        self.runs_left, self.trained, self.t0 = len(todo), 0, None

    def _print(self, head: str) -> None:
        line = head
        if self.runs_left:
            s = "s" if self.runs_left > 1 else ""
            line += f" | {self.runs_left} run{s} to train, {self.examples_left:,} examples"
            if self.trained:
                rate = self.trained / (time.perf_counter() - self.t0)
                line += (f" | {rate:,.0f} ex/s so far | "
                         f"ETA {format_duration(self.examples_left / rate)}")
            else:
                line += " | ETA after the first run"
        print(line, file=self.stream, flush=True)

    def begin(self, i: int, status: str) -> None:
        if status != "reused" and self.t0 is None:
            self.t0 = time.perf_counter()
        run = self.runs[i]
        self._print(f"[run {i + 1}/{len(self.runs)}] {run.variant} seed {run.seed} ({status})")

    def end(self, i: int, records: list[dict]) -> None:
        run = self.runs[i]
        trained = run.total_examples - self.start[i]  # what this invocation trained
        self.trained += trained
        self.examples_left -= trained
        self.runs_left -= 1
        self._print(f"[done] {run.variant} seed {run.seed}: test accuracy "
                    f"{100 * records[-1]['test_accuracy']:.2f} %")


def execute(runs: list[runs_lib.RunSpec], jobs: int = 1, stream=None) -> dict:
    """Train what is unfinished (in order, ``jobs`` at once), reuse the rest.

    Returns each run's records by (variant, seed). A run that stops raises its
    ``errors`` exception (after the runs in flight have stopped); finished runs are kept.
    """
    todo = {i for i, run in enumerate(runs) if runs_lib.finished(run) is None}
    progress = _Progress(runs, todo, stream or sys.stdout)
    records, in_flight = {}, {}  # in flight: future -> (run index, CPU slot)
    slots = cpu_slots(jobs)
    free = list(range(jobs))
    pool = make_executor(jobs)
    try:
        with _Signals(pool) as signals:
            for i, run in enumerate(runs):
                if i not in todo:
                    records[i] = runs_lib.read_records(run.workdir)
                    progress.begin(i, "reused")
                    continue
                while len(in_flight) >= jobs:
                    free += _collect(in_flight, runs, records, progress, signals)
                if signals.received is not None:
                    raise signals.preempted(run, "before")
                status = runs_lib.prepare_unfinished(run)
                log = f"; log in {run.workdir / 'train.log'}" if jobs > 1 else ""
                progress.begin(i, status + log)
                slot = free.pop(0)
                cpus = slots[slot] if slots else None
                in_flight[pool.submit(train_one, run.config, str(run.workdir), jobs > 1, cpus)] = (
                    i, slot)
            while in_flight:
                _collect(in_flight, runs, records, progress, signals)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    paused = [stop_error(runs[i], r) for i, r in records.items() if isinstance(r, Outcome)]
    if paused:
        raise errors.Paused(f"{len(paused)} run(s) paused on purpose, the others finished. "
                            + " | ".join(str(e) for e in paused))
    return {(run.variant, run.seed): records[i] for i, run in enumerate(runs)}


def _collect(in_flight: dict, runs, records: dict, progress: _Progress, signals) -> list[int]:
    """Wait for a run in flight to end; keep its records and mark it done, or raise its stop.

    Returns the CPU slots the ended runs free."""
    done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
    freed = []
    for future in done:
        i, slot = in_flight.pop(future)
        freed.append(slot)
        run = runs[i]
        try:
            outcome = future.result()
        except concurrent.futures.BrokenExecutor as e:  # a worker was killed
            if signals.received is not None:  # before the trainer could catch the signal
                raise signals.preempted(run, "while starting") from e
            raise errors.WorkerDied(f"{run.variant} seed {run.seed} ({run.workdir}): its "
                                    f"worker process died ({e}), killed from outside (out "
                                    f"of memory?). {KEPT}") from e
        if outcome.kind == "paused":  # on purpose: the other runs go on
            records[i] = outcome
            print(f"[paused] {run.variant} seed {run.seed} at examples_seen="
                  f"{outcome.examples_seen:,}", file=progress.stream, flush=True)
            continue
        if outcome.kind != "ok":
            raise stop_error(run, outcome)
        records[i] = runs_lib.mark_done(run)
        progress.end(i, records[i])
    return freed
