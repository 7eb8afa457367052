"""A dataset or a model of the user's own, named by import path: ``my_pkg.data:load``.

Why import paths and not a registry to edit: a user trains their own data or
network through the same commands (``python -m noise_scale.main``,
``python -m noise_scale.reproduce``), with the same validation, resume and
multi-host behaviour, without forking the package. ``module:attribute`` is
the entry-point syntax of Python packaging; the module must be importable
(installed, or on ``PYTHONPATH``). A TFDS name may carry a version after a
colon (``cifar100:3.0.2``), so a path is told apart by its attribute: a
Python identifier, not a version number.
"""

from __future__ import annotations

import importlib
import re

from noise_scale.errors import ConfigError

_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name) -> bool:
    """``module.sub:attr`` (the attribute may be dotted), not a TFDS ``name:1.2.3``."""
    return isinstance(name, str) and bool(_PATH.match(name))


def resolve(name: str, field: str, what: str, example: str):
    """The object ``name`` points to; a ConfigError naming ``config.<field>`` and the fix."""
    module_name, _, attr = name.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure to import is the user's to fix
        raise ConfigError(
            f"config.{field}={name!r} is invalid: module {module_name!r} cannot be imported "
            f"({type(e).__name__}: {e}). Fix: make {module_name!r} importable (pip install it, "
            f"or add its directory to PYTHONPATH), or name {what} such as {example}.") from None
    module = obj
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"config.{field}={name!r} is invalid: module {module_name!r} has no attribute "
                f"{attr!r}. Fix: --config.{field}={module_name}:NAME with NAME one of its "
                f"callables ({', '.join(_public(module)) or 'it defines none'}).")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"config.{field}={name!r} is invalid: {attr!r} is a "
                          f"{type(obj).__name__}, not {what}. Fix: point to {example}.")
    return obj


def _public(module) -> list[str]:
    return sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
