"""The values of the fields that name a thing, in one place, importing nothing.

Why a module of its own: the schedule command checks the Python version before absl or
JAX is imported, and the schedule package reads these names; ``default_config`` (which
imports ml_collections, and through it absl) re-exports them for user configs.
``noise_scale.config.fields`` checks them; the model registry, the optimizer and the data
loaders build from them.
"""

DATASETS = ("mnist1d", "cifar10", "imagenet2012")
# The shipped models, each with the paper's ghost batch size where it uses batch norm
# throughout (a ghost size > 0 is then required), else 0.
MODEL_GHOST_SIZES = {"mlp": 0, "cnn": 0, "resnet50": 32, "wrn16_4": 128}
MODELS = tuple(MODEL_GHOST_SIZES)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
DTYPE_NAMES = ("float32", "bfloat16")  # config.dtype; default_config.DTYPES maps them to array dtypes
# The schedule's rules and learning-rate shapes (noise_scale.schedule.rules, .shapes).
RULES = ("decay_lr", "increase_batch", "hybrid", "measured")
SHAPES = ("step", "cosine", "linear", "exponential", "polynomial", "wsd", "piecewise")
# The clock, examples seen, is an int32 on the device (x64 off): ~1,600 ImageNet epochs.
# The schedule refuses a run past it (the schedule command and training alike).
MAX_EXAMPLES = 2**31 - 1
