"""What every command shares: absl flags with ``--config``, and one way to stop.

Each command (``noise_scale.main``, ``noise_scale.reproduce``,
``python -m noise_scale.schedule``) is a thin wrapper over a plain Python
function that a notebook can call with a config and get results back. The
wrapper is ``run(main)``: absl parses the flags (``--config=path.py:variant``
and ``--config.a.b=value`` through ``config_lib``, the rest through absl), and
every exception ends the command as ``errors.exit_status`` maps it (the table in
``noise_scale.errors``): a known stop as one message on stderr and its status,
never a traceback; a bug with its traceback and status 70. Commands without
absl flags (``noise_scale.experiments.judge``) end through ``stop`` as well.
"""

from __future__ import annotations

import sys
import traceback

from absl import app, flags

from noise_scale import config_lib, errors

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for the run's (or runs') metrics, checkpoints and figures.")


def fail(message: str, code: int = errors.EXIT_USAGE):
    """Print one clear error paragraph and exit (no traceback)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def stop(error: BaseException):
    """End the command as ``errors.exit_status`` says: a message, and a traceback only for a
    bug (``errors.is_bug``), which is then named as one."""
    code = errors.exit_status(error)
    if errors.is_bug(error):
        traceback.print_exception(error)
        fail(f"internal error ({type(error).__name__}: {error}): a bug in noise_scale; please "
             "report it with the traceback above. Files the run wrote are kept.", code)
    if isinstance(error, KeyboardInterrupt):
        fail("interrupted (Ctrl-C). Checkpoints already written are kept; rerun the same "
             "command to resume.", code)
    if isinstance(error, OSError) and not isinstance(error, errors.WorkerDied):
        fail(f"{error} ({type(error).__name__}: a file or the disk failed). Files already "
             "written are kept; fix it and rerun the same command to resume.", code)
    if isinstance(error, (errors.Preempted, errors.Interrupted, errors.Paused)):  # resumable
        print(str(error), file=sys.stderr, flush=True)
        sys.exit(code)
    fail(str(error), code)


def require_workdir(purpose: str) -> str:
    if not WORKDIR.value:
        raise errors.ConfigError(f"--workdir is required: the directory for {purpose}.")
    return WORKDIR.value


def flags_parser(argv: list[str], *, variant: bool = True):
    """absl ``flags_parser``: returns (config, remaining argv); bad flags exit 2 in one line.

    ``variant=False`` (the reproduction) loads the file's default config and leaves the
    variants to the command; the spec and the overrides are kept on the config's
    command as ``config_lib.ConfigArgs``.
    """
    try:
        spec, overrides, rest = config_lib.split_config_args(argv[1:])
        rest = flags.FLAGS([argv[0], *rest])
        if not variant:
            return config_lib.ConfigArgs(spec, tuple(overrides)), rest
        return config_lib.load_config(spec, overrides), rest
    except errors.UsageError as e:
        fail(str(e))
    except flags.Error as e:
        fail(f"{e}. Pass --helpshort to see the flags.")


def run(main, *, variant: bool = True):
    """``app.run(main)`` with the config flags, and every known stop mapped to its status."""

    def guarded(argv_and_config):
        try:
            return main(argv_and_config)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every stop has its status
            stop(e)

    app.run(guarded, flags_parser=lambda argv: flags_parser(argv, variant=variant))


def run_plain(main):
    """``sys.exit(main(sys.argv))`` for a command without absl flags, every stop mapped as
    in ``run`` (``main`` returns its exit status)."""
    try:
        code = main(sys.argv)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every stop has its status
        stop(e)
    sys.exit(code)
