"""A ``jax.profiler`` trace of the first steps of chosen stages (``config.profile_steps``).

Why per stage: a stage is one compiled program at one batch size, so a few of its
steps show where every step of it goes, and the stages differ (B grows ×5 at each
boundary: the per-device batch, the accumulation and the share of time spent in
the gradient all-reduce change with it). ``config.profile_stages`` picks them (()
= every stage); each trace goes to ``<workdir>/profile/stage<k>/``, laid out as
``jax.profiler.start_trace`` writes it (``plugins/profile/<time>/<host>.xplane.pb``),
so ``tensorboard --logdir <workdir>`` shows it in the profile tab beside the scalars.

Why it holds no compile: a stage's programs are compiled ahead of time
(``lower().compile()``, in ``Loop.step_for`` or ``compile_ahead``) before its first
step is called, so the trace starts after that, just before the first step, and
its k steps are executions only. The trace starts once the steps already
dispatched have finished and stops once the traced ones have (JAX dispatches
asynchronously): it holds those k steps whole and nothing of the previous stage.
A record (evaluation) or checkpoint that falls due among them is in it, as the
work those steps really did. A run resumed inside a stage traces its first k
steps from there (a new ``<time>`` directory beside any earlier trace).

Only process 0 traces: every host runs the same program on its share of the
batch, one host's trace shows the step, and n hosts writing into one workdir
would only multiply the files.
"""

from __future__ import annotations

import logging

import jax

from noise_scale import run_files
from noise_scale.errors import ConfigError


def wanted(config, stage: int) -> bool:
    """Whether ``stage`` is traced (``config.profile_steps`` > 0 and the stage chosen)."""
    stages = tuple(config.profile_stages)
    return config.profile_steps > 0 and (not stages or stage in stages)


def trace_dir(workdir: str, stage: int) -> str:
    return str(run_files.path(workdir, run_files.PROFILE) / f"stage{stage}")


def check_stages(config, num_stages: int) -> None:
    """Every stage named in ``config.profile_stages`` exists in this run's plan."""
    named = tuple(config.profile_stages)
    if any(k >= num_stages for k in named):
        kept = tuple(k for k in named if k < num_stages) or (num_stages - 1,)
        raise ConfigError(
            f"config.profile_stages={named!r} is invalid: this schedule has stages "
            f"0-{num_stages - 1}, so it must name stages among them (() = every stage). Fix: "
            f"--config.profile_stages='{kept!r}', or --config.profile_stages='()'.")


class StageTrace:
    """The open trace, if any: started before a stage's first step, stopped after k steps."""

    def __init__(self, config, workdir: str, enabled: bool):
        self.config, self.workdir = config, workdir
        self.enabled = enabled and config.profile_steps > 0
        self.stage: int | None = None  # the stage being traced
        self.left = 0  # steps still to trace

    def start(self, stage: int, state) -> None:
        """Before ``stage``'s first step (its programs already compiled)."""
        if not self.enabled or not wanted(self.config, stage):
            return
        jax.block_until_ready(state)  # the steps before it are not in the trace
        try:
            jax.profiler.start_trace(trace_dir(self.workdir, stage))
        except RuntimeError as e:  # another trace is open (one per process): not ours to stop
            logging.warning("stage %d: no profile taken (%s)", stage, e)
            return
        self.stage, self.left = stage, self.config.profile_steps

    def after_step(self, state) -> None:
        """Count a traced step; after the k-th, wait for it and write the trace."""
        if self.stage is not None:
            self.left -= 1
            if self.left == 0:
                self.stop(state)

    def stop(self, state=None) -> None:
        """Write the open trace (at its k-th step, the stage's end, or on the way out)."""
        if self.stage is None:
            return
        if state is not None:
            jax.block_until_ready(state)
        stage, self.stage = self.stage, None
        try:
            jax.profiler.stop_trace()
        except Exception as e:  # noqa: BLE001 - a trace that cannot be written never stops a run
            logging.warning("stage %d: the profile could not be written (%s)", stage, e)
            return
        logging.info("stage %d: profile of its first steps in %s", stage,
                     trace_dir(self.workdir, stage))
