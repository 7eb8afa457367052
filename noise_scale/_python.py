"""The Python version check every command makes before it imports anything else.

Why it exists: every pinned core package (jax, numpy, orbax, ...) needs Python 3.11 or
later, and stock Cloud TPU VM images ship 3.10. ``requires-python`` makes pip refuse to
install there, but a clone run with ``PYTHONPATH`` (or an environment assembled by
hand) would otherwise fail deep inside an import with a traceback. This module uses only
the standard library and runs first in each command's entry point, so the user reads
one line naming the version they ran and the one they need, with exit status 2 (a
usage error, as ``noise_scale.errors`` maps every bad input).
"""

import sys

MINIMUM = (3, 11)
EXIT_USAGE = 2  # noise_scale.errors.EXIT_USAGE; not imported so this module stays import-free


def unsupported(version_info=None) -> str:
    """The one-line reason this Python cannot run noise_scale, or '' if it can."""
    version = tuple(sys.version_info if version_info is None else version_info)
    if version[:2] >= MINIMUM:
        return ""
    running = ".".join(str(part) for part in version[:3])
    return (f"error: noise_scale needs Python {MINIMUM[0]}.{MINIMUM[1]} or later (its pinned "
            f"jax, numpy and orbax do); this is Python {running} ({sys.executable}). Fix: run "
            f"it with python{MINIMUM[0]}.{MINIMUM[1]} or later, e.g. python3.11 -m venv .venv "
            "and install there.")


def require_supported() -> None:
    """Exit 2 with one line on stderr when the running Python is too old; else do nothing."""
    message = unsupported()
    if message:
        print(message, file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
