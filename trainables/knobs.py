"""Every knob of the service's training loop, its default, and what values it accepts.

Declared once here (no torch import) so that the job spec can check a search space or a `fixed`
section against it before anything starts. A trial's config is ``DEFAULTS | fixed | sampled``.

Most knobs act on any model, built-in or your own (`trainables.train` applies them from outside the
model); `batchnorm`, `width`, `depth` and `channels` only reach a model through its factory, which
reads them from ``config`` (the built-in mlp and cnn do; yours may).
"""

from __future__ import annotations

import math
from typing import Any

INITS = ("uniform", "gaussian", "lecun", "xavier", "kaiming")
INIT_CHOICES = ("keep", *INITS)  # keep: the model's own init
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adagrad", "rmsprop")
LR_SCHEDULES = ("exponential", "step", "cosine", "none")
MODELS = ("mlp", "cnn")  # built-in model factories

DEFAULTS: dict[str, Any] = {
    "seed": 0,                  # torch/numpy seed: same config and seed -> same metrics on CPU
    "epochs": 20,               # set from trial.epochs by the spec
    "batch_size": 64,           # examples per step
    "lr": 0.01,                 # initial learning rate
    "optimizer": "adam",        # one of OPTIMIZERS; momentum/nesterov are SGD with `momentum`
    "momentum": 0.9,            # gamma for momentum and nesterov (and rmsprop's momentum)
    "weight_decay": 0.0,        # L2 penalty through the optimizer
    "init": "keep",             # keep the model's own init, or re-init every Linear/Conv by one of INITS
    "batchnorm": False,         # factories: BatchNorm after each linear/conv (mlp, cnn)
    "dropout": None,            # set p of every dropout module to this rate in [0, 1); null = the model's own
    "clip": None,               # clip gradients to this global L2 norm; null = off
    "lr_schedule": "exponential",  # one of LR_SCHEDULES, stepped once per epoch
    "lr_decay": 1.0,            # gamma: exponential lr * gamma**epoch; step lr * gamma**(epoch // lr_step_size)
    "lr_step_size": 10,         # epochs between decays for the step schedule
    "warmup_epochs": 0,         # linear warm-up from lr/warmup_epochs to lr over these epochs
    "patience": None,           # stop after this many epochs without a better val_loss; null = off
    "width": 128,               # factories: units per hidden layer (mlp)
    "depth": 2,                 # factories: hidden layers (mlp)
    "channels": 16,             # factories: channels of the first conv block (cnn; the second has twice as many)
    "amp": False,               # mixed precision on CUDA; ignored with a warning on CPU
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_RULES: dict[str, tuple[str, Any]] = {
    "seed": ("an integer in 0 .. 2**32 - 1", lambda v: _integer(v) and 0 <= v < 2**32),
    "epochs": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "batch_size": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "lr": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "optimizer": (f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
    "momentum": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "weight_decay": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "init": (f"one of {', '.join(INIT_CHOICES)}", lambda v: v in INIT_CHOICES),
    "batchnorm": ("true or false", lambda v: isinstance(v, bool)),
    "dropout": ("null (the model's own) or a number in [0, 1)", lambda v: v is None or (_number(v) and 0 <= v < 1)),
    "clip": ("null (off) or a number > 0", lambda v: v is None or (_number(v) and v > 0)),
    "lr_schedule": (f"one of {', '.join(LR_SCHEDULES)}", lambda v: v in LR_SCHEDULES),
    "lr_decay": ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    "lr_step_size": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "warmup_epochs": ("an integer >= 0", lambda v: _integer(v) and v >= 0),
    "patience": ("null (off) or an integer >= 1", lambda v: v is None or (_integer(v) and v >= 1)),
    "width": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "depth": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "channels": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "amp": ("true or false", lambda v: isinstance(v, bool)),
}


def knob_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for knob ``name``, or None when it is (or the knob is unknown)."""
    rule = _RULES.get(name)
    if rule is None:
        return None
    expected, ok = rule
    return None if ok(value) else f"must be {expected}"
