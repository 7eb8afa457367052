"""The run's record: ``metrics.jsonl``, TensorBoard scalars and a progress line with ETA.

One JSON object per evaluation (epoch end) in ``<workdir>/metrics.jsonl``, with
three clocks — ``epoch``, ``examples_seen``, ``updates`` — so a run can be
plotted against epochs or against parameter updates. TensorBoard scalars use
examples seen as their step: the one axis that means the same thing in every
schedule; their tags are grouped ``train/`` and ``eval/`` (``tensorboard_tag``).
Only process 0 writes; ``records`` reads the file back.
"""

from __future__ import annotations

import collections
import json
import math
import sys
import time
from typing import NamedTuple

from noise_scale import run_files

# The noise scale's raw estimates, named once in gns. Neither module imports JAX at import
# time (gns only inside the functions that trace), so the report tools stay light.
from noise_scale.gns import RAW as RAW_NOISE
from noise_scale.records import read_metrics  # noqa: F401 - read back where it is written

REQUIRED_KEYS = (
    "epoch", "examples_seen", "updates", "stage", "batch_size", "learning_rate", "momentum",
    "noise_scale", "train_loss", "test_loss", "test_accuracy", "examples_per_second", "compiles",
)


class NonFinite(NamedTuple):
    """The first step of a fetched window whose loss is not finite, counted back from the
    window's end: the loop names that update, not the log step that fetched it."""

    loss: float
    steps_back: int  # 1: the window's last step
    examples_back: int  # examples of this step and of those after it


class Window:
    """Sums of the step metrics since the last record, fetched from the devices in batches.

    Steps append their (batch size, device metrics) to ``pending`` without waiting;
    ``flush`` fetches them all at once (one host-device sync per log step, not per
    step). ``state``/``restore`` carry the open window through a checkpoint.
    """

    def __init__(self, state=(0, 0.0, 0.0), noise=None):
        self.pending: list[tuple[int, object]] = []
        # the first step of the last flush whose loss is NaN/inf (the loop names it)
        self.nonfinite: NonFinite | None = None
        # gns.Averages: every fetched step goes through it in order (not reset per window)
        self.noise = noise
        self.restore(state)

    def restore(self, state):
        self.examples, self.loss_sum, self.acc_sum = state[:3]
        # the noise scale's raw estimates: examples of the steps that measured, and sums
        self.raw_examples, *raw = state[3:] or (0, 0.0, 0.0)
        self.raw_sums = dict(zip(RAW_NOISE, raw))
        self.last: dict = {}

    @property
    def state(self) -> list:
        raw = [self.raw_examples, *self.raw_sums.values()] if self.raw_examples else []
        return [self.examples, self.loss_sum, self.acc_sum, *raw]

    @property
    def raw_means(self) -> dict:
        """The raw noise-scale estimates' example-weighted means over the window's measured steps."""
        n = self.raw_examples
        return {k: v / n for k, v in self.raw_sums.items()} if n else {}

    def flush(self, unpack) -> float | None:
        """Fetch pending device metrics (``unpack``: array → dict); returns the last loss."""
        if not self.pending:
            return None
        import jax

        fetched = jax.device_get([m for _, m in self.pending])
        self.nonfinite = None
        for k, ((b, _), m) in enumerate(zip(self.pending, fetched)):
            m = unpack(m)
            if self.nonfinite is None and not math.isfinite(m["loss"]):
                later = self.pending[k:]  # this step and those dispatched after it
                self.nonfinite = NonFinite(m["loss"], len(later), sum(b for b, _ in later))
            self.examples += b
            self.loss_sum += b * m["loss"]
            self.acc_sum += b * m["accuracy"]
            if self.noise is not None:
                self.noise.add(b, m)
            if math.isfinite(m.get(RAW_NOISE[0], math.nan)):
                self.raw_examples += b
                for k in RAW_NOISE:
                    self.raw_sums[k] += b * m[k]
            self.last = m
        self.pending = []
        return self.last["loss"]


def train_record(plan, window: Window, examples_seen: int, updates: int, compiles: int,
                 train_seconds: float, *, dataset_size: int, devices: int,
                 noise_model: str = "sgd") -> dict:
    """A record's training half: the three clocks, the stage, what the optimizer used
    (ε and m as the last step read them), and the window's example-weighted means.

    ``noise_scale`` is the schedule's own quantity (``noise_model``): SGD's g, or Adam's
    temperature η/√B under the square-root rule."""
    from noise_scale import theory

    lr, m = float(window.last["learning_rate"]), float(window.last["momentum"])
    return {
        "epoch": examples_seen / dataset_size,
        "examples_seen": examples_seen,
        "updates": updates,
        "stage": plan.index,
        "batch_size": plan.batch_size,
        "accumulation_steps": plan.accumulation_steps,
        "learning_rate": lr,
        "momentum": m,
        # a shape that decays to 0 ends at ε = 0 (in float32 already a step early): g = 0
        "noise_scale": (theory.NOISE_MODELS[noise_model].value(lr, plan.batch_size, dataset_size, m)
                        if lr > 0 else 0.0),
        "train_loss": window.loss_sum / window.examples,
        "train_accuracy": window.acc_sum / window.examples,
        "examples_per_second": window.examples / max(train_seconds, 1e-9),
        "compiles": compiles,
        "devices": devices,
    }


def tensorboard_tag(key: str) -> str:
    """A record key's TensorBoard tag: ``eval/`` for the test split's numbers, ``train/`` else.

    TensorBoard groups tags by their prefix, so the test split's accuracy and loss sit
    apart from the many training numbers (``test_loss`` → ``eval/loss``, ``train_loss``
    → ``train/loss``, ``batch_size`` → ``train/batch_size``). metrics.jsonl keeps the flat
    keys: the report tools and the committed records read those.
    """
    for prefix, group in (("test_", "eval/"), ("train_", "train/")):
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return "train/" + key


class MetricWriter:
    """Writes metrics.jsonl (whole, on every record) and TensorBoard scalars.

    The JSONL file is rewritten rather than appended, through a new file and a
    rename (``run_files.write_text``): cloud buckets (``gs://`` workdirs) have no append, a run has one
    record per evaluation, and a crash mid-write leaves the previous file intact.
    ``records`` are those already written before a resume.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True,
                 records=()):
        self.enabled = enabled
        self.dir = run_files.workdir_path(workdir)
        self.path = run_files.path(workdir, run_files.METRICS)
        self.records = list(records)
        self._tb = None
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.records or self.path.exists():
                self._flush()
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(run_files.path(workdir, run_files.TENSORBOARD)),
                                         flush_secs=30)

    def _flush(self):
        run_files.write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                for r in self.records))

    def write(self, record: dict) -> None:
        """Add one record to the JSONL file and its numbers to TensorBoard."""
        if not self.enabled:
            return
        self.records.append(record)
        self._flush()
        self.scalars(record["examples_seen"], record)

    def scalars(self, step: int, values: dict) -> None:
        """Every finite number of ``values`` at ``step``, tagged by ``tensorboard_tag``."""
        if self._tb is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self._tb.add_scalar(tensorboard_tag(k), v, step)

    def close(self):
        if self._tb is not None:
            self._tb.close()


def records_table(records: list[dict], keys) -> str:
    """Records as a plain text table, one row each, ``keys`` as columns (no pandas needed)."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    rows = [list(keys)] + [[cell(r.get(k, "")) for k in keys] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keys))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def format_duration(seconds: float) -> str:
    """``1h02m``, ``1m01s``, ``59s``; a negative duration (a clock past its end) is ``0s``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


RATE_POINTS = 5  # the progress line's rate spans this many log points, however far apart
NONE = "–"  # what the line shows for a number it does not have yet (never "nan")


class Progress:
    """A one-line progress report with ETA, measured in examples (the clock).

    The rate is examples per second over the last ``RATE_POINTS`` log points, not
    over a time window: on a TPU an ImageNet stage may log every 35 s or more, and
    a window of seconds would then hold one point and no rate. Examples, not
    steps, so ETA stays right while B (and hence the cost of an update) changes.
    Until there are two points the rate and ETA read ``–``; ETA is never negative
    and is 0s once the last example is seen. ``input_wait`` (the fraction of the
    interval spent waiting for batches) above ``INPUT_BOUND`` adds a note that the
    stage is input-bound and which knobs help. ``clock`` is injectable for tests.

    On a terminal the line rewrites itself (``\\r``); an evaluation line or the
    run's summary first ends it with a newline, so both stay on screen.
    """

    def __init__(self, total_examples: int, dataset_size: int, enabled: bool = True,
                 stream=None, prefix: str = "", min_interval: float = 1.0, clock=time.time):
        self.total, self.n = total_examples, dataset_size
        self.enabled, self.stream, self.prefix = enabled, stream or sys.stderr, prefix
        self.min_interval, self.clock = min_interval, clock
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.decodes = True  # the training split decodes in workers (the input-bound advice)
        self._last_print = -math.inf
        self._points: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=RATE_POINTS)
        self._open = False  # a \r line is on the terminal without its newline

    def rate(self) -> float | None:
        """Examples per second between the oldest and newest kept points; None without two."""
        if len(self._points) < 2:
            return None
        (t0, p0), (t1, p1) = self._points[0], self._points[-1]
        return (p1 - p0) / (t1 - t0) if t1 > t0 and p1 > p0 else None

    def eta(self, examples_seen: int) -> float | None:
        """Seconds to the last example at the current rate: 0 at the end, None without a rate."""
        left = max(self.total - examples_seen, 0)
        if left == 0:
            return 0.0
        rate = self.rate()
        return left / rate if rate else None

    def skip(self, seconds: float) -> None:
        """Leave ``seconds`` that trained nothing (a branching probe) out of the rate: the
        kept points move forward by them, so the ETA is the training's alone."""
        self._points = collections.deque(((t + seconds, p) for t, p in self._points),
                                         maxlen=RATE_POINTS)

    def update(self, examples_seen: int, *, stage: int, num_stages: int, batch_size: int,
               updates: int, total_updates: int, loss: float | None = None, force=False,
               input_wait: float | None = None,
               noise_scale_measured: float | None = None) -> str:
        now = self.clock()
        self._points.append((now, examples_seen))
        if not self.enabled or (not force and now - self._last_print < self.min_interval):
            return ""
        self._last_print = now
        rate, eta = self.rate(), self.eta(examples_seen)
        line = (
            f"{self.prefix}stage {stage + 1}/{num_stages} B={batch_size:,} | "
            f"epoch {examples_seen / self.n:.2f}/{self.total / self.n:g} "
            f"({100 * examples_seen / self.total:.0f}%) | updates {updates:,}/{total_updates:,}"
        )
        if loss is not None:
            line += f" | loss {_number(loss, '.4f')}"
        if noise_scale_measured is not None:
            line += f" | B_simple {_number(noise_scale_measured, ',.0f')}"
        line += (f" | {_number(rate, ',.0f')} ex/s | "
                 f"ETA {NONE if eta is None else format_duration(eta)}")
        if input_wait is not None and input_wait > INPUT_BOUND:
            line += f" | {input_bound_note(input_wait, self.decodes)}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        return line

    def evaluation(self, record: dict, num_stages: int) -> str:
        """One line per evaluation record, below the progress line (which it leaves on screen)."""
        return self._line(evaluation_line(record, num_stages))

    def summary(self, record: dict) -> str:
        """The run's last line: what it reached and what it cost (``summary_line``)."""
        return self._line(summary_line(record))

    def _line(self, text: str) -> str:
        if not self.enabled:
            return ""
        self.done()  # end the \r line first: the next progress line starts below this one
        self.stream.write(self.prefix + text + "\n")
        self.stream.flush()
        return self.prefix + text

    def done(self):
        if self.enabled and self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def evaluation_line(record: dict, num_stages: int) -> str:
    """A record as the terminal shows it: test accuracy and loss, and the stage's B, ε and m."""
    return (f"eval | epoch {record['epoch']:.2f} | "
            f"test accuracy {_number(100 * record['test_accuracy'], '.2f')}% | "
            f"test loss {_number(record['test_loss'], '.4f')} | "
            f"stage {record['stage'] + 1}/{num_stages} B={record['batch_size']:,} "
            f"ε={_number(record['learning_rate'], '.4g')} m={_number(record['momentum'], '.4g')}")


def summary_line(record: dict) -> str:
    """The end of a run from its last record: final test accuracy, the three clocks, the cost."""
    wall = record.get("wall_time")
    return (f"done | test accuracy {_number(100 * record['test_accuracy'], '.2f')}% | "
            f"{record['updates']:,} updates | {record['examples_seen']:,} examples "
            f"({record['epoch']:g} epochs) | wall time "
            f"{NONE if wall is None else format_duration(wall)} | {record['compiles']} compiles")


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None and math.isfinite(value) else NONE


# Input wait ---------------------------------------------------------------------------

INPUT_BOUND = 0.10  # a stage waiting for its batches more than this is input-bound


def input_bound_note(fraction: float, decodes: bool = True) -> str:
    """What the progress line says when the loop waits for data: how much, and the knobs.

    ``decodes``: the training split is decoded in worker processes (images); otherwise
    (arrays in memory) more workers cannot help, only a larger batch or prefetch can.
    """
    knobs = ("raise --config.data_workers (decode processes, up to the host's cores) or "
             "--config.prefetch" if decodes else
             "the host's work per step (in-memory data): larger batches amortise it; "
             "--config.prefetch helps only if the wait comes in bursts")
    return f"input-bound: {100 * fraction:.0f}% of the time waiting for batches; {knobs}"


class InputWait:
    """Seconds the loop spent waiting for its next batch, as a fraction of wall time.

    Why: the larger the batch, the more the host's input matters, and a stage that
    waits for data trains no faster for a larger B. ``next(batches)`` is timed
    (``take``); ``fraction`` divides the wait since a mark by the wall time since
    it, for the records (``input_wait_fraction``) and for the progress line.
    """

    def __init__(self):
        self.seconds = 0.0
        self._marks: dict[str, tuple[float, float]] = {}
        self.mark("record")
        self.mark("log")

    def take(self, batches):
        t0 = time.perf_counter()
        item = next(batches)
        self.seconds += time.perf_counter() - t0
        return item

    def mark(self, name: str) -> None:
        self._marks[name] = (time.perf_counter(), self.seconds)

    def fraction(self, name: str, exclude: float = 0.0) -> float:
        """Wait over wall time since ``mark(name)`` (less ``exclude`` seconds, e.g. compiles)."""
        t0, w0 = self._marks[name]
        wall = time.perf_counter() - t0 - exclude
        return min(1.0, (self.seconds - w0) / wall) if wall > 0 else 0.0
