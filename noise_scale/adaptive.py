"""Adam and AdamW by their own noise scale: which rule a config uses and what it sets per batch.

SGD's rule (g = ε/(1−m)·(N/B − 1), B×k for ε÷k) does not carry over to Adam, whose
step is normalised by √v ≈ σ/√B: its temperature is η/√B (``theory.adam_temperature``).
``config.schedule.adam_rule`` chooses, for ``optimizer`` adam or adamw:

- ``sqrt`` (the default): the square-root rule of Malladi et al. (2022). A reference
  decay η÷k becomes B×k with η÷√k (the same number of updates as SGD's B×k),
  ``lr_scale`` k is B ∝ η² (B×k²), shaped ladders keep T at every example; β2 keeps its
  half-life in examples (β2^(B/B_ref), unless ``config.adam_b2_rescale`` is off),
  ε_adam shrinks as 1/√κ and AdamW's λ grows as √κ (κ = B/B_ref), which keeps the
  weight-decay timescale B/(η·λ·N) the reference's. β1 stays fixed: the SDE rule's
  (1 − β1)×κ reaches β1 = 0 at κ = 10 from β1 = 0.9, and the paper's ladders take κ = 125.
- ``linear``: the paper's empirical rule, SGD's g with b1 as m (B×k for η÷k), kept as a
  labelled arm to compare against.

``raise_momentum_to`` (B ∝ 1/(1−m)) has no Adam counterpart: Adam divides its first
moment by (1 − b1), so a larger b1 does not enlarge the step (validation refuses it
under ``sqrt``). B_ref is ``config.schedule.batch_size``: the reference's batch, before
``lr_scale``. Pure Python: the schedule command and validation read it without JAX.
"""

from __future__ import annotations

from noise_scale import theory

ADAPTIVE = ("adam", "adamw")
ADAM_RULES = ("sqrt", "linear")
DEFAULT_RULE = "sqrt"


def is_adaptive(config) -> bool:
    return config.optimizer in ADAPTIVE


def adam_rule(config) -> str:
    """``sqrt`` or ``linear`` for adam/adamw (``schedule.adam_rule``, '' = sqrt); '' else."""
    if not is_adaptive(config):
        return ""
    return config.schedule.get("adam_rule", "") or DEFAULT_RULE


def noise_model(config) -> str:
    """The ``theory.NOISE_MODELS`` key the schedule rules solve for this config."""
    return "adam_sqrt" if adam_rule(config) == "sqrt" else "sgd"


def reference_batch_size(config) -> int:
    return config.schedule.batch_size


def b2_rescaled(config) -> bool:
    return is_adaptive(config) and bool(config.get("adam_b2_rescale", True))


def per_batch(config, batch_size: int) -> dict:
    """Adam's static hyperparameters for a step of ``batch_size``: b2, eps, weight_decay.

    Fixed per compiled step (the batch size is static there), so none is a traced value.
    Under ``linear`` only β2 may change (``adam_b2_rescale``); the others are the
    config's. Under ``sqrt`` ε_adam/√κ and, for adamw, λ·√κ (coupled L2 under adam
    is left as given: its decay is divided by √v like any gradient, so no λ keeps a
    per-epoch timescale, which is why AdamW exists).
    """
    ref = reference_batch_size(config)
    rule = adam_rule(config)
    b2 = (theory.adam_b2_for_batch(config.adam_b2, batch_size, ref) if b2_rescaled(config)
          else config.adam_b2)
    eps, wd = config.adam_eps, config.weight_decay
    if rule == "sqrt":
        eps = theory.adam_eps_for_batch(eps, batch_size, ref)
        if config.optimizer == "adamw":
            wd = theory.adamw_decay_for_batch(wd, batch_size, ref, rule)
    return {"b2": b2, "eps": eps, "weight_decay": wd}


def per_stage(config, schedule) -> list[dict] | None:
    """``per_batch`` at each stage's batch size, or None for the SGD family."""
    if not is_adaptive(config):
        return None
    return [per_batch(config, s.batch_size) for s in schedule.stages]


def describe(config) -> str | None:
    """One line for the schedule command: which rule an adaptive run uses, else None."""
    rule = adam_rule(config)
    if not rule:
        return None
    b2 = ("β2 per example, β2^(B/B_ref)" if b2_rescaled(config) else "β2 per update (fixed)")
    if rule == "sqrt":
        wd = ", λ·√κ (AdamW timescale B/(ηλN) kept)" if config.optimizer == "adamw" else ""
        return (f"{config.optimizer}: square-root rule (schedule.adam_rule=sqrt): T = η/√B kept, "
                f"B×k with η÷√k per step; {b2}; ε_adam/√κ{wd}; κ = B/"
                f"{reference_batch_size(config)}.")
    return (f"{config.optimizer}: linear rule (schedule.adam_rule=linear, the paper's empirical "
            f"rule): SGD's g with b1 as m, B×k per η÷k; {b2}.")
