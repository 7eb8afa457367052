"""noise_scale: don't decay the learning rate, increase the batch size.

SGD's noise scale is g = ε/(1−m)·(N/B − 1): raising the batch size B by k lowers the
noise as lowering the learning rate ε by k does, with k times fewer parameter updates.
The package turns any learning-rate schedule into a batch-size one and trains it with
data parallelism in JAX. Where each part lives: docs/architecture.md.

Nothing is imported here on purpose: the commands check the Python version
(``_python``) before JAX or anything else is imported.
"""
