"""The measured cap where it matters: MNIST-1D at its canonical size, N = 4,000.

At N = 4,000 the paper's increase_batch rule (B 32 → 160 → 800 → 4,000 at ε = .05)
runs into the finite data set: g = ε/(1−m)·(N/B − 1) is 3 % below decay_lr's in
stage 1, 19 % below in stage 2 and 100 % below in stage 3 (B = N: every update is
the full-batch gradient, no noise at all). The uncapped rule is predicted to break
the equivalence there. The measured cap (``noise_scale.cap``) grows B at a boundary
only if the new B ≤ c × the 95 % lower bound of the measured B_simple, else ε takes
that step; c = 0.2 is the value ``cap`` derives from the equivalence error (the
curvature excess ≤ 16 % of the noise term at k = 5; c = 1, McCandlish's efficiency
knee, would allow 80 %).

The prediction, fixed here before any run of this file (the verdict rule is
``noise_scale.experiments.agreement``'s, unchanged; 5 seeds):
- ``measured_cap`` (c = 0.2) is *equivalent* to decay_lr (role: equivalent);
- ``increase_batch`` (no cap) is *distinguishable* from it (role: control, so
  "reproduced" means exactly: capped equivalent and uncapped not);
If the cap holds B at every boundary, the capped run is decay_lr itself and its
equivalence says nothing about the cap: the report's decisions table shows which.
"""

from noise_scale import config_lib

N = 4_000
REFERENCE = "decay_lr"
CONTROLS = ("increase_batch",)  # predicted distinguishable: B = N in the last stage


def decay_lr(c):
    """Reference: (32, .05) → (32, .01) → (32, .002) → (32, .0004); 5,000 updates."""
    c.schedule.rule = "decay_lr"


def increase_batch(c):
    """No cap: B 32 → 160 → 800 → 4,000 (= N) at ε = .05; 1,848 updates."""
    c.schedule.rule = "increase_batch"


def measured_cap(c):
    """increase_batch under the cap at c = 0.2 (the equivalence's c, ``noise_scale.cap``)."""
    increase_batch(c)
    c.schedule.noise_cap = 0.2


VARIANTS = {f.__name__: f for f in (decay_lr, increase_batch, measured_cap)}


def _canonical_size(c):
    c.dataset_size = N


def get_config(variant: str = "measured_cap"):
    return config_lib.derived_config("mnist1d.py:decay_lr", __file__, VARIANTS, variant,
                                     _canonical_size)
