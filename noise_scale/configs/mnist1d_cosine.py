"""MNIST-1D with a cosine learning rate: the paper's rule applied to a continuous shape.

The task, model, ε0 = .05, B0 = 32 and m = .9 of ``configs/mnist1d.py``. The reference
``cosine_decay_lr`` decays ε as .05·½(1 + cos(π·e/40)) at B = 32 (50,000 updates);
``increase_batch`` of a shape (``noise_scale.schedule.ladder``) keeps the reference's
noise scale g at every example with at most ``schedule.max_stages`` = 6 batch sizes,
each starting as early as ε ≤ ε0 allows. Not in the paper: our extension of its rule.
With ε ≤ ε0 no batch schedule can need fewer than half the reference's updates (the
bound 1/mean(s) = 2 for a cosine to 0). The control ``constant_lr`` never decays.

``cosine_measured`` grows B where the branching probe inside the loop reads the critical
batch (issue 29, docs/probe.md): not a fixed ladder but one measured as the run goes.

Variants (``--config=configs/mnist1d_cosine.py:VARIANT``):
  cosine_decay_lr (reference), cosine_increase_batch, cosine_increased_lr, constant_lr,
  cosine_measured.
"""

from noise_scale import config_lib

REFERENCE = "cosine_decay_lr"  # what every schedule is compared with
CONTROLS = ("constant_lr",)  # must come out distinguishable from REFERENCE


def cosine_decay_lr(c):
    """Reference: B = 32, ε = .05·½(1 + cos(π·e/40)); 50,000 updates."""
    c.schedule.rule = "decay_lr"


def cosine_increase_batch(c):
    """The reference as ≤ 6 batch sizes with its g at every example; 29,367 updates.

    B 32 → 48 → 64 → 96 → 176 → 512 from epochs 15.7, 20.0, 24.3, 28.8, 33.6: the
    ladder with the fewest updates; 1.70× fewer than cosine_decay_lr (bound 2×).
    """
    c.schedule.rule = "increase_batch"
    c.schedule.max_batch_size = c.dataset_size // 10


def cosine_increased_lr(c):
    """B ∝ ε on top: ε0 = .25, B0 = 160 (exact form), then the ladder; 5,799 updates.

    B 160 → 192 → 256 → 368 → 656 → 1,856; 8.6× fewer than cosine_decay_lr. The first
    stage's g is 0.3 % below the reference's (160 is the solved 159.5 rounded up to whole
    ghost batches of 16, and ε may not exceed ε0).
    """
    cosine_increase_batch(c)
    c.schedule.lr_scale = 5.0


def cosine_measured(c):
    """B from the branching probe: every 4 epochs, branches at B×1, 2, 4, 8 (2 × 2,048
    examples each, ε solved for the same g), and B grows to the largest candidate 32·2^j
    (≤ 1,024: 6 sizes, ≤ N/10) whose branch loss stays within 15 % of the ×1 branch's;
    ε keeps the cosine's g at every example, so it may exceed ε0 (the bound 2× of
    cosine_increase_batch does not hold). Updates: whatever the probe decides.
    """
    c.schedule.rule = "measured"
    c.schedule.max_batch_size = c.dataset_size // 10
    c.probe.every_epochs = 4.0


def constant_lr(c):
    """Control: ε = .05 throughout at B = 32 (no decay); 50,000 updates."""
    c.schedule.shape = "step"


VARIANTS = {f.__name__: f for f in (cosine_decay_lr, cosine_increase_batch, cosine_increased_lr,
                                    constant_lr, cosine_measured)}


def _cosine(c):
    c.schedule.shape, c.schedule.boundaries = "cosine", ()


def get_config(variant: str = "cosine_increase_batch"):
    return config_lib.derived_config("mnist1d.py:decay_lr", __file__, VARIANTS, variant, _cosine)
