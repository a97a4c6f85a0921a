"""A residual MLP for tabular regression: your own model, as tuner takes it.

``build(config, input_shape, output_dim)`` gets one example's shape, (10,) for the diabetes
features, and the number of targets, 1. It reads ``width``, ``depth`` and ``batchnorm`` from the
config; dropout, init, the optimizer and the rest are applied by tuner from outside.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Residual(nn.Module):
    """x + Linear(Dropout(ReLU(Norm(x)))): a pre-norm residual block."""

    def __init__(self, width: int, batchnorm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width) if batchnorm else nn.LayerNorm(width)
        self.drop = nn.Dropout(0.0)  # the job's `dropout` knob sets its rate
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(self.drop(torch.relu(self.norm(x))))


def build(config: dict, input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    width, depth = config.get("width", 64), config.get("depth", 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width),
                          *[Residual(width, config.get("batchnorm", False)) for _ in range(depth)],
                          nn.ReLU(), nn.Linear(width, output_dim))
    with torch.no_grad():  # start the predictions near the targets' mean (0: they are standardised)
        model[-1].weight.mul_(0.1)
        model[-1].bias.zero_()
    return model
