"""MNIST-1D with Adam: can a batch schedule stand in for Adam's learning-rate decay, and by which rule?

The task, model, B0 = 32 and steps ×5 at epochs 12/24/32 of ``configs/mnist1d.py``, with
Adam at η0 = 1e-3 (b1 = .9, b2 = .999, ε_adam = 1e-8; Adam's usual default, and the
learning rate ``--optimizer=adam`` has always mapped MNIST-1D's ε/(1−m) = .5 to). Three
arms replace the reference's decay η÷5 by B×5 (18,480 updates each against the
reference's 50,000) and differ only in how Adam's other settings follow
(``noise_scale.adaptive``):

- ``increase_batch_sqrt``: the square-root rule (Malladi et al. 2022): T = η/√B kept,
  so η÷√5 at each B×5; b2 per example (.999^(B/32)), ε_adam/√κ.
- ``increase_batch_linear``: the paper's empirical rule, SGD's g with b1 as m: B×5 at
  fixed η, b2 per update. The SDE predicts this arm keeps √5× too much temperature.
- ``increase_batch_sqrt_fixed_b2``: the square-root rule with b2 per update, to see
  what the β2 rescale alone does.

AdamW (decoupled decay λ, its timescale B/(ηλN) kept per stage): ``configs/mnist1d_adamw.py``.
Variants (``--config=configs/mnist1d_adam.py:VARIANT``): decay_lr (reference) and the
three arms.
"""

from noise_scale import config_lib

REFERENCE = "decay_lr"
CONTROLS = ()
LEARNING_RATE = 1e-3


def decay_lr(c):
    """Reference: B = 32, η 1e-3 → 2e-4 → 4e-5 → 8e-6; 50,000 updates."""
    c.schedule.rule = "decay_lr"


def increase_batch_sqrt(c):
    """B 32 → 160 → 800 → 4,000 with η 1e-3 → 4.47e-4 → 2e-4 → 8.9e-5; b2 .999 → .99501
    → .97530 → .88244 (.999^(B/32)); 18,480 updates."""
    c.schedule.rule = "increase_batch"
    c.schedule.adam_rule = "sqrt"


def increase_batch_linear(c):
    """The paper's rule: B 32 → 160 → 800 → 4,000 at η = 1e-3, b2 = .999; 18,480 updates."""
    c.schedule.rule = "increase_batch"
    c.schedule.adam_rule = "linear"
    c.adam_b2_rescale = False


def increase_batch_sqrt_fixed_b2(c):
    """increase_batch_sqrt with b2 = .999 per update at every B; 18,480 updates."""
    increase_batch_sqrt(c)
    c.adam_b2_rescale = False


VARIANTS = {f.__name__: f for f in (decay_lr, increase_batch_sqrt, increase_batch_linear,
                                    increase_batch_sqrt_fixed_b2)}


def _adam(c):
    c.optimizer = "adam"
    c.schedule.learning_rate = LEARNING_RATE  # the schedule's m = .9 is b1


def get_config(variant: str = "increase_batch_sqrt"):
    return config_lib.derived_config("mnist1d.py:decay_lr", __file__, VARIANTS, variant, _adam)
