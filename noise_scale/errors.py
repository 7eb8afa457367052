"""Every way a command can stop, and the one map from each to an exit status.

Why one module: the training command, the reproduction and the schedule command
(and a notebook calling their Python functions) must agree on what a stop
means. Bad input of any kind is a :class:`UsageError` (exit 2, nothing written
or overwritten); a run that diverged exits 1; a preempted run has saved a
checkpoint and exits with the conventional 128 + signal number (143 for
SIGTERM) wherever it was started; a run stopped on purpose at a stage boundary
(``config.stop_at_stage``) has saved a checkpoint and exits 75, ``EX_TEMPFAIL`` of
sysexits.h ("try again later": the same command resumes it, typically on a larger
slice), distinct from success, usage (2), divergence (1) and signals (> 128).
``exit_status`` is the only place that maps
them; ``noise_scale.cli`` is the only place that calls ``sys.exit`` with it.
"""

from __future__ import annotations

import os
import signal

EXIT_USAGE = 2
EXIT_DIVERGED = 1
EXIT_PAUSED = 75  # sysexits.h EX_TEMPFAIL: stopped on purpose, rerun to continue


class UsageError(ValueError):
    """Bad input (a config value, a path, a flag, a workdir): the message names the fix."""


class ConfigError(UsageError):
    """A config file, variant, override or field value is wrong."""


class ScheduleError(UsageError):
    """A schedule or schedule argument is invalid; the message names the field and the fix."""


class SetupError(UsageError):
    """The run cannot start as configured (devices, data, checkpoints in the workdir)."""


class TrainingDiverged(RuntimeError):
    """The training loss or the parameters became NaN or infinite."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was written and the run stopped cleanly."""

    def __init__(self, signum: int, examples_seen: int, directory: str, elsewhere: bool = False):
        """``elsewhere``: the signal reached another process of the run, not this one."""
        self.signum, self.examples_seen = signum, examples_seen
        name = signal.Signals(signum).name
        where = "received by another process of this run" if elsewhere else "received"
        super().__init__(
            f"{name} {where}: saved a checkpoint at examples_seen={examples_seen:,} in "
            f"{shown_path(directory)} and stopped. Rerun the same command to resume from there."
        )


def shown_path(path: str) -> str:
    """``path`` as the user wrote it where that is likely: relative to the working directory
    when inside it (checkpoints are kept under absolute paths; a message need not be)."""
    if "://" in path or not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


class Paused(RuntimeError):
    """The run reached ``config.stop_at_stage``, saved a checkpoint there and stopped on purpose.

    ``message`` says which stage comes next, its batch, the slice it wants and how to resume.
    """

    def __init__(self, message: str, examples_seen: int = 0, stage: int = 0):
        self.examples_seen, self.stage = examples_seen, stage
        super().__init__(message)


def exit_status(error: BaseException) -> int | None:
    """The exit status a command ends with for ``error``; None for a bug (let it raise)."""
    if isinstance(error, Preempted):
        return 128 + error.signum
    if isinstance(error, Paused):
        return EXIT_PAUSED
    if isinstance(error, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(error, UsageError):
        return EXIT_USAGE
    return None
