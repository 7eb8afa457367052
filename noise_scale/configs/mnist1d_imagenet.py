"""The paper's ImageNet schedules at CPU scale: configs/imagenet_resnet50.py's family on MNIST-1D.

A rehearsal of the ImageNet comparison with the same proportions, on the
MNIST-1D CNN of configs/mnist1d.py (N = 40,000; ghost batch norm over 16).
Every batch size is scaled by N / N_ImageNet = 40,000 / 1,281,167 = 0.031222
and rounded to whole ghost batches (multiples of 16):

  Goyal's B = 8,192          → 8,192 · 0.031222 = 255.8   → B0 = 256
  B_max = 65,536 (5.12 % N)   → 65,536 · 0.031222 = 2,046.2 → B_max = 2,048 (5.12 % of N)
  increase_batch's 81,920    → 2,557.7                      → 2,560 (= 10 · 256)
  B0 ∝ 1/(1−m): m = 0.9, 0.95, 0.975 → B0 = 256, 512, 1,024 (ImageNet: 8,192, 16,384, 32,768)

Epochs are Goyal's 90 halved, in the same proportions: 45, a linear warm-up
over the first 2.5 (5/90 of training; from ε0/32, as 0.1 → 3.2), steps ×0.1
at 15, 30 and 40 (30, 60, 80 of 90); Nesterov momentum 0.9. Halved because
the CNN needs far fewer passes over MNIST-1D than ResNet-50 over ImageNet, and
it keeps the 14 runs near a quarter of an hour on two cores. The
learning rate is ours, not Goyal's 0.1·B/256: ε0 = 0.2 at B0 = 256. The first choice,
ε0 = 0.4 (configs/mnist1d.py's noise scale, ×8 with B), was stable under a 5-epoch
warm-up in short runs but not with this config's 2.5-epoch one: in that rehearsal
(two seeds, git show 7bf92dc:docs/mnist1d_imagenet_lr04/report.md) seed 0 of goyal
collapsed to 39 % test accuracy near epoch 3 and never fully recovered, the floor hid
both controls and the comparison was not reproduced. At ε0 = 0.2 it is reproduced
(docs/mnist1d_imagenet/report.md, five seeds). No weight
decay (as configs/mnist1d.py). Update counts are the stream rule's
(``python -m noise_scale.schedule --config=configs/mnist1d_imagenet.py:VARIANT``).

Variants (``--config=configs/mnist1d_imagenet.py:VARIANT``): goyal (the
reference), increase_batch, momentum_090, momentum_095, momentum_0975, and the
controls constant_lr (warm-up, then no decay) and mismatched (B ×2 where ε
would fall ×10).
"""

from noise_scale import config_lib

N = 40_000
N_IMAGENET = 1_281_167
B_MAX = 2_048  # 65,536 · N / N_IMAGENET = 2,046, in whole ghost batches of 16


def goyal(c):
    """Reference. B = 256, ε 0.00625 → 0.2 warm-up (2.5 ep), ×0.1 at 15, 30, 40; 7,032 updates.

    (ImageNet, 90 epochs: 14,076; every count here is about half the ImageNet one.)
    """
    c.schedule.rule = "decay_lr"


def increase_batch(c):
    """B 256 → 2,560 at epoch 15, then ε ×0.1 at 30, 40; 2,813 updates (ImageNet: 5,631)."""
    c.schedule.rule = "hybrid"
    c.schedule.max_batch_size = 2_560


def momentum_090(c):
    """m = .9, B 256 → 2,048 at 15 (ε takes the remaining ×0.8), ε decays at 30, 40; 2,930 updates."""
    c.schedule.rule = "hybrid"
    c.schedule.max_batch_size = B_MAX


def momentum_095(c):
    """m = .95, B0 = 512 (B ∝ 1/(1−m)) → 2,048 at 15 (ε ×0.4); 1,758 updates."""
    momentum_090(c)
    c.schedule.raise_momentum_to = 0.95


def momentum_0975(c):
    """m = .975, B0 = 1,024 → 2,048 at 15 (ε ×0.2); 1,172 updates."""
    momentum_090(c)
    c.schedule.raise_momentum_to = 0.975


def constant_lr(c):
    """Control: the warm-up, then ε = 0.2 at B = 256 for all 45 epochs; 7,032 updates."""
    c.schedule.rule = "decay_lr"
    c.schedule.boundaries = ()


def mismatched(c):
    """Control: B 256 → 512 → 1,024 → 2,048 at ε = 0.2 (×2 where ε would fall ×10); 4,005 updates."""
    c.schedule.rule = "increase_batch"
    c.schedule.batch_factor = 2.0


VARIANTS = {
    f.__name__: f for f in (goyal, increase_batch, momentum_090, momentum_095, momentum_0975,
                            constant_lr, mismatched)
}
REFERENCE = "goyal"  # what every schedule is compared with
CONTROLS = ("constant_lr", "mismatched")  # must come out distinguishable from REFERENCE


def _imagenet_shape(c):
    """configs/mnist1d.py's task and model with the ImageNet schedule's shape and optimizer."""
    c.optimizer = "nesterov"
    s = c.schedule
    s.batch_size, s.learning_rate, s.momentum = 256, 0.2, 0.9
    s.total_epochs, s.boundaries, s.factor = 45.0, (15.0, 30.0, 40.0), 10.0
    s.warmup_epochs, s.warmup_start_lr = 2.5, 0.2 / 32


def get_config(variant: str = "increase_batch"):
    return config_lib.derived_config("mnist1d.py:decay_lr", __file__, VARIANTS, variant,
                                     _imagenet_shape)
