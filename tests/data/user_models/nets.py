"""A user's own model factories, as tests hand them to the service's loop.

`build` is a small conv net with two dropout modules (rates 0.1 and 0.2) and its own init (every
bias 0.1), so tests can tell whether the `init` and `dropout` knobs reached it. `dies_once` kills
its worker process once, after `die_after_steps` training steps, to test retries from a checkpoint.
"""

import os
from pathlib import Path

import torch
from torch import nn

OWN_BIAS = 0.1


class SmallConvNet(nn.Module):
    def __init__(self, in_channels: int, height: int, width: int, output_dim: int, hidden: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * height * width, hidden), nn.ReLU(), nn.Dropout(0.2),
                                  nn.Linear(hidden, output_dim))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.constant_(module.bias, OWN_BIAS)
        with torch.no_grad():
            self.head[-1].weight.mul_(0.05)
            self.head[-1].bias.zero_()

    def forward(self, x):
        return self.head(self.features(x))


def build(config, input_shape, output_dim):
    c, h, w = input_shape
    return SmallConvNet(c, h, w, output_dim, hidden=config.get("hidden", 32))


class _DiesOnce(SmallConvNet):
    def __init__(self, *args, marker: Path, die_after_steps: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.die_after_steps, self.steps = marker, die_after_steps, 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps > self.die_after_steps and not self.marker.exists():
                self.marker.touch()
                os._exit(1)  # as the OOM killer or a lost node would
        return super().forward(x)


def dies_once(config, input_shape, output_dim):
    c, h, w = input_shape
    return _DiesOnce(c, h, w, output_dim, hidden=16, marker=Path(config["marker"]),
                     die_after_steps=config["die_after_steps"])
