"""Loading ``--config=path.py[:variant]`` with ``--config.a.b=value`` overrides, cleanly.

ml_collections' ``config_flags`` answers a typo with a page of traceback and
exit status 1. A user who mistypes a variant or a field deserves one sentence
naming the field and the fix, and scripts deserve exit status 2 (usage error),
so ``noise_scale.cli`` parses these flags with the functions here and hands
everything else to absl.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os

import ml_collections

from noise_scale.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ConfigArgs:
    """``--config=path.py`` and its ``--config.a.b=value`` overrides, not yet loaded."""

    spec: str
    overrides: tuple[tuple[str, str], ...] = ()

    def load(self, variant: str = "") -> ml_collections.ConfigDict:
        path = self.spec.partition(":")[0]
        return load_config(f"{path}:{variant}" if variant else self.spec, self.overrides)


# The shipped configs travel inside the package, so a wheel or ``git+`` install has them too.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def packaged_configs() -> list[str]:
    """The shipped config files' names (``mnist1d.py``, ...), sorted."""
    return sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f[0] != "_")


def config_file(name: str) -> str:
    """The path of the shipped config ``name`` (``mnist1d.py`` or ``mnist1d``), from anywhere.

    For notebooks and scripts: the same file ``--config=mnist1d`` names.
    """
    file = name if name.endswith(".py") else f"{name}.py"
    path = os.path.join(CONFIG_DIR, file)
    if not os.path.isfile(path):
        raise ConfigError(f"no config {name!r} among the shipped configs; they are: "
                          f"{', '.join(packaged_configs())}.")
    return path


def resolve_config_path(path: str) -> str:
    """The file ``--config=PATH`` names: PATH itself if it is a file, else a shipped config.

    Why: the shipped configs live in the package (``noise_scale/configs/``), yet the
    commands in the README, the Makefile and the notebooks say ``configs/FILE.py``, and a
    user of an installed wheel has no ``configs/`` at all. So a path that is not a file is
    looked up among the shipped configs when it is a bare name (``mnist1d``,
    ``mnist1d.py``) or ``configs/NAME.py``; any other path must exist.
    """
    if os.path.isfile(path):
        return path
    parts = os.path.normpath(path).replace(os.sep, "/").split("/")
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
        name = parts[-1] if parts[-1].endswith(".py") else f"{parts[-1]}.py"
        if os.path.isfile(os.path.join(CONFIG_DIR, name)):
            return os.path.join(CONFIG_DIR, name)
    shipped = ", ".join(f.removesuffix(".py") for f in packaged_configs())
    raise ConfigError(
        f"config file {path!r} does not exist (looked relative to {os.getcwd()}) and names "
        f"no shipped config ({shipped}). Fix: give a shipped config by name, e.g. "
        "--config=mnist1d:increase_batch, or the path of your own config file.")


def load_config(spec: str, overrides: list[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """Load ``path.py[:variant]`` (get_config(variant)) and apply ``(field, value)`` overrides."""
    if not spec:
        raise ConfigError(
            "no config given: pass --config=NAME[:VARIANT] (a shipped config) or "
            "--config=FILE.py[:VARIANT], e.g. --config=mnist1d:increase_batch."
        )
    path, _, variant = spec.partition(":")
    module = config_module(path)
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for field, value in overrides:
        set_field(config, field, value)
    return config


def derived_config(base: str, here: str, variants: dict, variant: str, setup=None):
    """``variants[variant]`` applied on top of another config file's config.

    What configs that import a default and override it share: ``base`` is
    ``FILE.py:VARIANT`` beside ``here`` (the calling config file's ``__file__``), ``setup``
    what the whole file changes, then the variant; the result is locked like the base.
    """
    if variant not in variants:
        raise ConfigError(
            f"unknown variant {variant!r} of configs/{os.path.basename(here)}; choose one of "
            f"{', '.join(variants)} (e.g. --config=configs/{os.path.basename(here)}:"
            f"{next(iter(variants))}).")
    file, _, base_variant = base.partition(":")
    config = load_config(f"{os.path.join(os.path.dirname(os.path.abspath(here)), file)}:"
                         f"{base_variant}")
    if setup is not None:
        setup(config)
    variants[variant](config)
    config.variant = variant
    return config


def variants(path: str) -> list[str]:
    """The variants a config file offers (its ``VARIANTS``), in its order; [] if it has none."""
    return list(getattr(config_module(path), "VARIANTS", {}))


def config_module(path: str):
    """The config file ``path`` (see ``resolve_config_path``) as a module (``get_config``,
    ``VARIANTS``, ``REFERENCE``, ...), or a ConfigError that says why not."""
    path = resolve_config_path(path)
    module_name = "_noise_scale_config_" + os.path.basename(path).removesuffix(".py")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a user's config file may raise anything
        raise ConfigError(f"config file {path!r} failed to load: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config(variant) function.")
    return module


def set_field(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Set ``config.<dotted>`` from a command-line string, keeping the field's type."""
    *parents, leaf = dotted.split(".")
    node, path = config, "config"
    for p in parents:
        if not isinstance(node, ml_collections.ConfigDict) or p not in node:
            raise ConfigError(_unknown(node, path, p))
        node, path = node[p], f"{path}.{p}"
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise ConfigError(_unknown(node, path, leaf))
    current = node[leaf]
    value = _coerce(text, current, f"{path}.{leaf}")
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--{path}.{leaf}={text}: {e}") from None


def _unknown(node, path, key):
    known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
    return f"unknown field {path}.{key}; the fields of {path} are: {known}."


def _coerce(text: str, current, name: str):
    kind = {
        bool: "boolean (true/false)",
        int: "integer",
        float: "number",
        str: "string",
        tuple: "tuple",
    }.get(type(current), type(current).__name__)
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return low in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        value = ast.literal_eval(text)
        if isinstance(current, tuple):
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if current and all(isinstance(x, float) for x in current):
                value = tuple(float(x) for x in value)
        return value
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"--{name}={text}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} like {current!r}."
        ) from None


def split_config_args(argv: list[str]) -> tuple[str, list[tuple[str, str]], list[str]]:
    """Pull --config / --config.x=y out of argv; return (spec, overrides, rest)."""
    spec, overrides, rest = "", [], []
    it = iter(argv)
    for arg in it:
        if arg == "--config" or arg.startswith("--config=") or arg.startswith("--config."):
            name, eq, value = arg[2:].partition("=")
            if not eq:
                value = next(it, None)
                if value is None:
                    raise ConfigError(f"--{name} needs a value.")
            if name == "config":
                spec = value
            else:
                overrides.append((name.removeprefix("config."), value))
        else:
            rest.append(arg)
    return spec, overrides, rest
