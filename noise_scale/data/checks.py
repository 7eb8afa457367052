"""A dataset and a model checked on one training and one evaluation batch before training.

Why before, and on real batches: a user's loader or network (``config.dataset`` /
``config.model`` as ``module:name``) is code we did not write, and its mistakes
used to surface late and disguised. A label outside 0 … num_classes−1 or a model
with the wrong number of logits made the loss NaN and was reported as divergence
("lower the learning rate"); a negative label trained silently (the one-hot of −1
is all zeros); a wrong input shape or a missing ``label`` gave a traceback after
the workdir's records were written; an empty evaluation split crashed after a full
epoch. One batch of each split (its first examples) and the model's output shape
(``jax.eval_shape``: traced, never compiled or run) catch all of these in well
under a second, before any record is written. The shipped datasets pass through
the same checks: one rule for every source.
"""

from __future__ import annotations

import numbers

import numpy as np

from noise_scale.errors import ConfigError

SAMPLE = 256  # examples of each split read for the check (labels: the first SAMPLE)


def check_dataset(dataset, config) -> dict:
    """``dataset`` (a ``noise_scale.data.Dataset``) against what training needs; returns the
    first training batch (its ``input`` feeds ``check_model``). Raises ConfigError."""
    where = f"config.dataset={config.dataset!r}"
    c = dataset.num_classes
    if not isinstance(c, numbers.Integral) or isinstance(c, bool) or c < 2:
        raise ConfigError(f"{where} returned num_classes={c!r}: a classifier needs an integer "
                          ">= 2. Fix: set Dataset(num_classes=...) to the number of classes.")
    shape = tuple(dataset.input_shape)
    if not shape or not all(isinstance(d, numbers.Integral) and d > 0 for d in shape):
        raise ConfigError(f"{where} returned input_shape={dataset.input_shape!r}: one "
                          "example's shape, a non-empty tuple of positive integers. Fix: e.g. "
                          "Dataset(input_shape=(40,)) or (32, 32, 3).")
    if len(dataset.eval) == 0:
        raise ConfigError(f"{where} returned an empty evaluation split: every evaluation "
                          "would divide by zero. Fix: return labelled examples in "
                          "Dataset(eval=...) (a held-out slice of the data will do).")
    train = check_batch(dataset.train, "training", dataset, config,
                        min(SAMPLE, config.schedule.batch_size))
    check_batch(dataset.eval, "evaluation", dataset, config, min(SAMPLE, config.eval_batch_size))
    return train


def check_batch(source, split: str, dataset, config, size: int) -> dict:
    """The first ``size`` examples of ``source``: an ``input`` of the declared shape and an
    integer ``label`` per example, each a class of ``dataset``."""
    from noise_scale.config.user_code import is_import_path

    k = min(size, len(source))
    indices = np.arange(k)
    what = f"config.dataset={config.dataset!r}: its {split} split's first {k} examples"
    try:
        batch = source.get_batch(indices, indices.astype(np.int64), 0)
    except Exception as e:  # noqa: BLE001 - a user's source: its failure is theirs to fix
        if not is_import_path(config.dataset):
            raise
        raise ConfigError(f"{what} cannot be read: get_batch(indices, positions, seed) raised "
                          f"{type(e).__name__}: {e}. Fix: make the source's get_batch return "
                          "{'input': ..., 'label': ...} for any indices below its "
                          "length.") from None
    missing = [key for key in ("input", "label") if key not in batch]
    if missing:
        raise ConfigError(f"{what} have no {' or '.join(map(repr, missing))} (keys: "
                          f"{sorted(batch)}). Fix: get_batch must return a dict with 'input' "
                          "(the features) and 'label' (an integer class per example).")
    x, y = np.asarray(batch["input"]), np.asarray(batch["label"])
    if x.shape != (k, *dataset.input_shape):
        raise ConfigError(f"{what} have inputs of shape {x.shape}, not (batch, *input_shape) = "
                          f"{(k, *dataset.input_shape)}. Fix: make Dataset(input_shape=...) one "
                          "example's shape, as get_batch returns it.")
    if y.shape != (k,) or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{what} have labels of shape {y.shape} and dtype {y.dtype}, not one "
                          "integer class per example. Fix: return 'label' as an int32 array "
                          "of shape (batch,) (class indices, not one-hot vectors).")
    bad = y[(y < 0) | (y >= dataset.num_classes)]
    if len(bad):
        raise ConfigError(f"{what} include label {int(bad[0])}, outside the classes 0-"
                          f"{dataset.num_classes - 1} (num_classes={dataset.num_classes}): it "
                          "would train on a wrong target (a negative one silently, a large "
                          "one as NaN). Fix: number the classes 0 … num_classes−1, or raise "
                          "Dataset(num_classes=...).")
    return batch


def check_model(model, inputs, num_classes: int, config) -> None:
    """``model``'s logits for ``inputs`` have shape (batch, num_classes): traced, not run.

    A model that cannot take the input is the user's to fix where one of the two is
    theirs; between shipped models and datasets it is a bug, and raises as such.
    """
    import jax

    from noise_scale.config.user_code import is_import_path

    x = jax.ShapeDtypeStruct((min(2, len(inputs)), *np.shape(inputs)[1:]), inputs.dtype)

    def logits(x):
        variables = model.init(jax.random.key(0), x, train=False)
        return model.apply(variables, x, train=False)

    where = f"config.model={config.model!r}"
    try:
        out = jax.eval_shape(logits, x)
    except Exception as e:  # noqa: BLE001 - user code: any failure is theirs to fix
        if not (is_import_path(config.model) or is_import_path(config.dataset)):
            raise
        raise ConfigError(f"{where} cannot take config.dataset={config.dataset!r}'s input of "
                          f"shape {x.shape} and dtype {x.dtype} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}). Fix: make the model "
                          "accept a batch of that shape, or the dataset return it.") from None
    shape = getattr(out, "shape", None)
    if shape != (x.shape[0], num_classes):
        raise ConfigError(f"{where} returns outputs of shape {shape} for a batch of "
                          f"{x.shape[0]}, not (batch, num_classes) = ({x.shape[0]}, "
                          f"{num_classes}): the loss would be computed on the wrong logits "
                          "(NaN, or silently wrong). Fix: end the model with "
                          "nn.Dense(num_classes) (a module class is built as "
                          "Net(num_classes=...)).")
