"""Every way a command can stop, and the one map from each to an exit status.

Why one module: the training command, the reproduction, the schedule command, the
launcher and the judge (and a notebook calling their Python functions) must agree
on what a stop means, so a scheduler or a script can act on the status alone.
``exit_status`` is the only place that maps them; ``noise_scale.cli`` is the only
place that turns them into a message and ``sys.exit`` (every command's ``__main__``
ends there), but for one check that must run before anything is imported:
``noise_scale._python`` exits 2 on a Python too old to import the rest.

===========  =====================================================================
status       meaning
===========  =====================================================================
0            done (the run or the command finished)
1            the run diverged (:class:`TrainingDiverged`): the loss or the parameters
             became NaN/inf; the message names the first non-finite update, and the
             checkpoints from before it are kept
2            bad input (:class:`UsageError` and its kinds: a config value, a flag, a
             path, a workdir, a user's dataset or model); nothing was written or
             overwritten; the message names the field and the fix
70           an internal error (``EX_SOFTWARE``): a bug in noise_scale. The only stop
             that prints a traceback (to report); files already written are kept
74           an I/O failure (``EX_IOERR``, any ``OSError``: disk full, a file that
             cannot be read or written, a worker process killed by the system):
             one message; what was written is kept, and the same command resumes
75           paused on purpose at ``config.stop_at_stage`` (``EX_TEMPFAIL``, "try
             again later"): a checkpoint is saved at that stage's start. The same
             command pauses there again; to go on, rerun it *without*
             ``--config.stop_at_stage`` (or with a later stage), typically on a
             larger slice (the message prints that command)
128 + n      stopped by signal n after saving a checkpoint (:class:`Preempted`), or
             before the first step with nothing to save (:class:`Interrupted`):
             130 for SIGINT (Ctrl-C), 143 for SIGTERM; the same command resumes
===========  =====================================================================

A known stop never prints a traceback: one paragraph on stderr, then the status.
"""

from __future__ import annotations

import os
import signal

EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug (the one stop with a traceback)
EXIT_IO = 74  # sysexits.h EX_IOERR: disk full, unreadable or unwritable files, a killed worker
EXIT_PAUSED = 75  # sysexits.h EX_TEMPFAIL: stopped on purpose at config.stop_at_stage


class UsageError(ValueError):
    """Bad input (a config value, a path, a flag, a workdir): the message names the fix.

    ``field``, when known, is what was wrong (a config field, ``schedule.batch_size``, or
    an argument's name): a caller that adds context reads it here, never off the message.
    """

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # the field survives pickling (a --jobs worker's error)
        return type(self), (str(self), self.field)


class ConfigError(UsageError):
    """A config file, variant, override or field value is wrong."""


class ScheduleError(UsageError):
    """A schedule or schedule argument is invalid; the message names the field and the fix."""


class SetupError(UsageError):
    """The run cannot start as configured (devices, data, checkpoints in the workdir)."""


class TrainingDiverged(RuntimeError):
    """The training loss or the parameters became NaN or infinite."""


class WorkerDied(OSError):
    """A worker process of the command was killed from outside (the OOM killer, a signal)."""


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


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM arrived during start-up, before the first step: nothing to save."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(
            f"{signal.Signals(signum).name} received during start-up, before the first step: "
            "stopped with nothing to save (checkpoints already written are kept). Rerun the "
            "same command to start or resume.")


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


def exit_status(error: BaseException) -> int:
    """The exit status a command ends with for ``error`` (the table in the module docstring)."""
    if isinstance(error, (Preempted, Interrupted)):
        return 128 + error.signum
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C outside the trainer's own handler
        return 128 + signal.SIGINT
    if isinstance(error, Paused):
        return EXIT_PAUSED
    if isinstance(error, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, OSError):
        return EXIT_IO
    return EXIT_INTERNAL


def is_bug(error: BaseException) -> bool:
    """An error no stop above explains: its traceback is worth showing (and reporting)."""
    return exit_status(error) == EXIT_INTERNAL
