"""A small ResNet for grey images (MNIST's 28 x 28, or digits' 8 x 8): your own model, as tuner takes it.

tuner calls ``build(config, input_shape, output_dim)`` once per trial: ``input_shape`` is one
example's shape, (1, 28, 28) here, and ``output_dim`` the number of classes found in the labels.
The factory reads what it wants from ``config`` (here ``channels``, ``depth`` and ``batchnorm``,
which the job may fix or search); the other knobs (lr, init, dropout, clipping, lr decay, ...) act
on the model from outside, without this file knowing.

    model = build({"channels": 16, "depth": 1, "batchnorm": True}, (1, 28, 28), 10)
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions with a shortcut (He et al. 2016, "Deep Residual Learning")."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, batchnorm: bool) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)
        self.norm1 = norm(c_out)
        self.drop = nn.Dropout2d(0.0)  # the job's `dropout` knob sets its rate
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batchnorm)
        self.norm2 = norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batchnorm), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(torch.relu(self.norm1(self.conv1(x))))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, three stages of ``depth`` blocks (``channels``, 2x and 4x as many; the last two halve
    the image), global average pooling, dropout and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int, depth: int, batchnorm: bool) -> None:
        super().__init__()
        norm = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=not batchnorm), norm, nn.ReLU())
        blocks, c = [], channels
        for stage, c_out in enumerate((channels, 2 * channels, 4 * channels)):
            for i in range(depth):
                blocks.append(Block(c, c_out, stride=2 if stage and i == 0 else 1, batchnorm=batchnorm))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.0), nn.Linear(c, num_classes))
        self._init()

    def _init(self) -> None:
        """The model's own init (what `init: keep` keeps): He init for the convolutions, each block's
        last BatchNorm at zero so a block starts as its shortcut (Goyal et al. 2017), and a small
        classifier so the loss at init is about ln(C)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for block in self.blocks:
            if isinstance(block.norm2, nn.BatchNorm2d):
                nn.init.zeros_(block.norm2.weight)
        classifier = self.head[-1]
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (N, H, W): one channel
            x = x.unsqueeze(1)
        return self.head(self.blocks(self.stem(x)))


def build(config: dict, input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    in_channels = input_shape[0] if len(input_shape) == 3 else 1
    return ResNet(in_channels, output_dim, channels=config.get("channels", 16), depth=config.get("depth", 1),
                  batchnorm=config.get("batchnorm", True))
