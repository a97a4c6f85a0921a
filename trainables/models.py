"""The built-in models, mlp and cnn: model factories of the same form as a user's own.

    model = mlp(config, input_shape=(64,), output_dim=10)

Both read `width`/`depth` or `channels`, `batchnorm` and `dropout` from the config. BatchNorm (when
on) sits after each linear/conv and before the activation; dropout after it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from torch import nn


def mlp(config: Mapping[str, Any], input_shape: tuple[int, ...], output_dim: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units (Linear, [BN], ReLU, Dropout), then a linear output."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in, width = math.prod(input_shape), config["width"]
    for _ in range(config["depth"]):
        layers.append(nn.Linear(fan_in, width))
        if config["batchnorm"]:
            layers.append(nn.BatchNorm1d(width))
        layers += [nn.ReLU(), nn.Dropout(config["dropout"] or 0.0)]
        fan_in = width
    layers.append(nn.Linear(fan_in, output_dim))
    return _own_init(nn.Sequential(*layers))


def cnn(config: Mapping[str, Any], input_shape: tuple[int, ...], output_dim: int) -> nn.Sequential:
    """Two conv blocks (3x3 conv, [BN], ReLU, Dropout2d, 2x2 max-pool), then a linear output.

    Needs image-shaped examples, (channels, height, width) or (height, width).
    """
    if len(input_shape) not in (2, 3):
        raise ValueError(f"the cnn needs image-shaped examples, (C, H, W) or (H, W); got {tuple(input_shape)}")
    c, h, w = input_shape if len(input_shape) == 3 else (1, *input_shape)
    layers: list[nn.Module] = [nn.Flatten(), nn.Unflatten(1, (c, h, w))] if len(input_shape) == 2 else []
    channels = config["channels"]
    for c_out in (channels, 2 * channels):
        layers.append(nn.Conv2d(c, c_out, kernel_size=3, padding=1))
        if config["batchnorm"]:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [nn.ReLU(), nn.Dropout2d(config["dropout"] or 0.0), nn.MaxPool2d(2)]
        c, h, w = c_out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, output_dim)]
    return _own_init(nn.Sequential(*layers))


def _own_init(model: nn.Module) -> nn.Module:
    """The built-ins' own init (what ``init: keep`` keeps): kaiming, the output layer scaled down."""
    from trainables.tricks import init_weights

    init_weights(model, "kaiming")
    return model
