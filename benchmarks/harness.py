"""What the benchmark scripts share: the repository on ``sys.path``, simulated host
devices, and interleaved timed rounds under an optional deadline.

Nothing here imports JAX: ``--devices=N`` on a CPU host only works if ``XLA_FLAGS`` is
set before JAX initialises, so the scripts import it inside their functions.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_repository() -> None:
    """Import ``noise_scale`` from this checkout, installed or not."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def simulate_host_devices(n: int) -> None:
    """On a CPU host, ask XLA for ``n`` devices (only before JAX is imported; else a no-op)."""
    flag = "xla_force_host_platform_device_count"
    if n > 1 and "jax" not in sys.modules and flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{flag}={n}".strip()


def interleaved(rounds: dict[str, Callable[[], float]], count: int, *,
                deadline: float | None = None, log=print) -> dict:
    """Timed rounds of each side (A, B, B, A, ...): the rate of each, the per-round ratio A ÷ B.

    Each callable runs one round and returns its rate. Alternating the order makes slow
    drift in machine load hit both sides alike. With one side there is no ratio. After
    the first round, no new round starts past ``deadline`` (a ``time.perf_counter`` value).
    """
    names = list(rounds)
    rates: dict[str, list[float]] = {n: [] for n in names}
    ratios: list[float] = []
    for r in range(count):
        if r and deadline is not None and time.perf_counter() >= deadline:
            log(f"time budget reached after {r} rounds")
            break
        this = {n: rounds[n]() for n in (names if r % 2 == 0 else names[::-1])}
        for n in names:
            rates[n].append(this[n])
        line = f"round {r + 1}: " + "   ".join(f"{n} {this[n]:9.1f}/s" for n in names)
        if len(names) == 2:
            ratios.append(this[names[0]] / this[names[1]])
            line += f"   ratio {ratios[-1]:.3f}"
        log(line)
    return {
        "rounds": len(rates[names[0]]),
        "rates": rates,
        "median": {n: statistics.median(v) for n, v in rates.items()},
        "ratios": ratios,
        "ratio": statistics.median(ratios) if ratios else None,
    }
