"""MNIST-1D with AdamW: ``configs/mnist1d_adam.py``'s comparison with decoupled weight decay.

The same reference and three arms, with optax ``adamw`` and λ = 0.1 on the kernels. The
decay's timescale τ = B/(η·λ·N) is 8 epochs in the first stage (B = 32, η = 1e-3,
N = 40,000). Under the square-root rule λ grows as √(B/32) (0.1 → 0.224 → 0.5 → 1.118), so
τ at every stage is the reference's (``theory.adamw_decay_for_batch``); under the linear
rule λ stays 0.1, which keeps τ too (η fixed, B×5 where the reference's η÷5).
Variants: decay_lr (reference), increase_batch_sqrt, increase_batch_linear,
increase_batch_sqrt_fixed_b2.
"""

import os

from noise_scale import config_lib

_ADAM = config_lib.config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "mnist1d_adam.py"))

REFERENCE = "decay_lr"
CONTROLS = ()
WEIGHT_DECAY = 0.1


def _adamw(c):
    c.optimizer = "adamw"
    c.weight_decay = WEIGHT_DECAY


VARIANTS = dict(_ADAM.VARIANTS)  # the same arms; _adamw switches the optimizer


def get_config(variant: str = "increase_batch_sqrt"):
    return config_lib.derived_config("mnist1d_adam.py:decay_lr", __file__, VARIANTS, variant,
                                     _adamw)
