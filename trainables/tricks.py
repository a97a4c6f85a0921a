"""The training tricks as functions: weight init, optimizers, learning-rate schedules, clipping.

Each is small and testable on its own; `train.fit` wires them together from a trial's config.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch import nn


# The classifier layer starts at this fraction of its scheme's scale, so initial logits are near zero
# and the loss at init is about ln(C) (the "init the last layer well" advice).
LAST_LAYER_SCALE = 0.1


INITIALISED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the layers `init` re-initialises
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def apply_model_knobs(model: nn.Module, config: Mapping[str, Any]) -> None:
    """The knobs that act on any model from outside it: ``init`` (unless keep) and ``dropout`` (unless null)."""
    if config["init"] != "keep":
        init_weights(model, config["init"])
    if config["dropout"] is not None:
        set_dropout(model, config["dropout"])


def set_dropout(model: nn.Module, p: float) -> int:
    """Set the rate of every dropout module in ``model``; return how many there are."""
    modules = [m for m in model.modules() if isinstance(m, DROPOUTS)]
    for module in modules:
        module.p = p
    return len(modules)


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise every linear/conv weight by ``scheme``; biases start at zero.

    With n_in = fan-in and n_out = fan-out of a layer (std shown):
      uniform   U(-1/sqrt(n_in), 1/sqrt(n_in))    std = 1/sqrt(3 n_in)
      gaussian  N(0, 1/n_in)                      std = 1/n_in
      lecun     N(0, 1/sqrt(n_in))                std = 1/sqrt(n_in)
      xavier    N(0, sqrt(2/(n_in+n_out)))        Glorot & Bengio 2010
      kaiming   N(0, sqrt(2/n_in))                He et al. 2015, for ReLU
    The last Linear layer registered (the output layer in most models) is then scaled by
    LAST_LAYER_SCALE, so the outputs start near zero and the loss at init near ln(C).
    """
    for module in model.modules():
        if isinstance(module, INITIALISED):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
            with torch.no_grad():
                if scheme == "uniform":
                    bound = 1 / math.sqrt(fan_in)
                    module.weight.uniform_(-bound, bound)
                elif scheme == "gaussian":
                    module.weight.normal_(0.0, 1 / fan_in)
                elif scheme == "lecun":
                    module.weight.normal_(0.0, 1 / math.sqrt(fan_in))
                elif scheme == "xavier":
                    module.weight.normal_(0.0, math.sqrt(2 / (fan_in + fan_out)))
                elif scheme == "kaiming":
                    module.weight.normal_(0.0, math.sqrt(2 / fan_in))
                else:
                    raise ValueError(f"unknown init scheme {scheme!r}")
                if module.bias is not None:
                    module.bias.zero_()
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linear:  # the last Linear registered: the output layer in most models
        with torch.no_grad():
            linear[-1].weight.mul_(LAST_LAYER_SCALE)


def make_optimizer(params: Iterable[nn.Parameter], config: Mapping[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd, momentum = config["optimizer"], config["lr"], config["weight_decay"], config["momentum"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=(name == "nesterov"), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(epoch: int, config: Mapping[str, Any]) -> float:
    """The multiplier of the initial lr during ``epoch`` (0-based), in closed form.

    exponential: gamma**epoch; step: gamma**(epoch // lr_step_size); cosine: (1 + cos(pi epoch/epochs)) / 2;
    none: 1. A linear warm-up over ``warmup_epochs`` multiplies the first epochs by (epoch + 1) / warmup.
    """
    schedule, gamma, epochs = config["lr_schedule"], config["lr_decay"], config["epochs"]
    if schedule == "exponential":
        factor = gamma**epoch
    elif schedule == "step":
        factor = gamma ** (epoch // config["lr_step_size"])
    elif schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    else:
        factor = 1.0
    warmup = config["warmup_epochs"]
    if warmup and epoch < warmup:
        factor *= (epoch + 1) / warmup
    return factor


def make_schedule(optimizer: torch.optim.Optimizer, config: Mapping[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch schedule: call ``.step()`` once at the end of each epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, config))


def clip_gradients(params: Iterable[nn.Parameter], clip: float | None) -> float:
    """Clip the gradients (not the loss) to global L2 norm ``clip``; return the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if clip is None:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    return float(nn.utils.clip_grad_norm_(params, clip))
