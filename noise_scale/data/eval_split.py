"""Which split of a TFDS dataset is evaluated on: a labelled one, checked before training.

Why a check and not the metadata: TFDS's metadata says which splits exist, not
whether they are labelled. ImageNet is the trap: with ``ILSVRC2012_img_test.tar``
in the manual folder, ``tfds build imagenet2012`` also builds a ``test`` split whose
100,000 labels are all -1 (the test labels were never released). Preferring
``test`` (right for CIFAR-10, whose test split is its standard evaluation set) then
scored every ImageNet evaluation 0 %, found an epoch after the start.

So a split counts as labelled when the first ``LABEL_SAMPLE`` labels it holds are
classes (0 <= label < num_classes). The first few hundred: a split released
without labels lacks them on every example, and its first records sit in its first
shard, so the check is one short sequential read (about 30 MB of undecoded ImageNet)
instead of a scan or random reads over a bucket. A rule for ImageNet alone ("always
``validation``") would fix the one dataset known today and miss the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from noise_scale.errors import ConfigError

LABEL_SAMPLE = 256  # labels read from the start of a split to tell whether it is labelled
PREFERRED = ("test", "validation")  # the automatic choice's order (CIFAR: test; ImageNet: val)


def unlabelled(source, num_classes: int) -> np.ndarray:
    """The labels among the first ``LABEL_SAMPLE`` of ``source`` that are not a class."""
    keys = list(range(min(len(source), LABEL_SAMPLE)))
    try:  # one batched read (array_record reads the records in parallel)
        examples = source.__getitems__(keys)
    except (AttributeError, TypeError):  # no batched read; tfds.testing.mock_data's is broken
        examples = [source[k] for k in keys]
    labels = np.asarray([int(ex["label"]) for ex in examples], np.int64)
    return labels[(labels < 0) | (labels >= num_classes)]


def choose(name: str, info, requested: str, num_classes: int,
           open_split: Callable[[str], object]) -> tuple[str, object]:
    """(split, its opened source) to evaluate on: ``requested`` if given, else the first
    labelled one of ``PREFERRED`` that the dataset has.

    ``open_split(split)`` opens a split (``tfds_data.open_split``). A requested split
    that is not labelled is refused; the automatic choice skips one, saying so.
    """
    splits = set(getattr(info, "splits", None) or {})  # empty: metadata that lists none (a mock)
    if requested:
        return requested, _open_requested(name, requested, splits, num_classes, open_split)
    candidates = [s for s in PREFERRED if s in splits] if splits else list(PREFERRED)
    if not candidates:
        raise ConfigError(
            f"config.eval_split='' is invalid for config.dataset={name!r}: it has neither a "
            f"test nor a validation split (it has {', '.join(sorted(splits))}). Fix: "
            "--config.eval_split=<a labelled split of it>, e.g. a slice of the training split "
            "('train[-10%:]', TFDS slicing; the run still trains on it).")
    skipped, error = [], None
    for split in candidates:
        try:
            source = open_split(split)
        except ValueError as e:  # not prepared: only a guess where the metadata lists no splits
            if splits:
                raise
            error = e
            continue
        bad = unlabelled(source, num_classes)
        if not len(bad):
            if skipped:
                logging.warning("%s: evaluating on its %r split: %s.", name, split,
                                "; ".join(skipped))
            return split, source
        skipped.append(f"its {split!r} split is not labelled (label {int(bad[0])} among the "
                       f"first {min(len(source), LABEL_SAMPLE)})")
    if not skipped:
        raise error
    raise ConfigError(
        f"config.eval_split='' is invalid for config.dataset={name!r}: {'; '.join(skipped)}, "
        "so every evaluation would score 0 %. Fix: --config.eval_split=<a labelled split of "
        "it>.")


def _open_requested(name, split, splits, num_classes, open_split):
    """The source of an explicitly requested split, refused if absent or not labelled."""
    if splits and split.split("[")[0] not in splits:
        raise ConfigError(
            f"config.eval_split={split!r} is invalid: {name} has no such split (it has "
            f"{', '.join(sorted(splits))}). Fix: --config.eval_split=validation (or another of "
            "them), or --config.eval_split='' (the first labelled one of test, validation).")
    source = open_split(split)
    bad = unlabelled(source, num_classes)
    if len(bad):
        raise ConfigError(_unlabelled_message(name, split, bad, num_classes))
    return source


def _unlabelled_message(name: str, split: str, bad: np.ndarray, num_classes: int) -> str:
    imagenet = (" (ImageNet's test images were released without labels; TFDS builds them, "
                "labelled -1, when ILSVRC2012_img_test.tar is in the manual folder)"
                if name.split(":")[0] == "imagenet2012" else "")
    return (f"config.eval_split={split!r} is invalid: {name}'s {split!r} split is not labelled"
            f"{imagenet}: labels such as {int(bad[0])} are not classes 0-{num_classes - 1}, so "
            "every evaluation would score 0 %. Fix: --config.eval_split=validation, or "
            "--config.eval_split='' (the first labelled one of test, validation).")
