"""The built-in models: an MLP and a small CNN, both shaped by the knobs in `knobs.DEFAULTS`.

BatchNorm (when on) sits after each linear/conv and before the activation; dropout after it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


def build_model(config: Mapping[str, Any], *, input_dim: int, image_shape: tuple[int, int, int] | None,
                num_classes: int) -> nn.Module:
    """The model a trial trains, weights initialised by ``config["init"]``."""
    from trainables.tricks import init_weights

    if config["model"] == "mlp":
        model = mlp(input_dim=input_dim, num_classes=num_classes, width=config["width"], depth=config["depth"],
                    dropout=config["dropout"], batchnorm=config["batchnorm"])
    else:
        if image_shape is None:
            raise ValueError("the cnn needs image-shaped inputs (IDX, digits, or an .npz of N x H x W)")
        model = cnn(image_shape=image_shape, num_classes=num_classes, channels=config["channels"],
                    dropout=config["dropout"], batchnorm=config["batchnorm"])
    init_weights(model, config["init"])
    return model


def mlp(*, input_dim: int, num_classes: int, width: int, depth: int, dropout: float, batchnorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = input_dim
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers += [nn.ReLU(), nn.Dropout(dropout)]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def cnn(*, image_shape: tuple[int, int, int], num_classes: int, channels: int, dropout: float,
        batchnorm: bool) -> nn.Sequential:
    """Two conv blocks (3x3 conv, [BN], ReLU, Dropout2d, 2x2 max-pool), then a linear classifier."""
    c, h, w = image_shape
    layers: list[nn.Module] = [nn.Unflatten(1, image_shape)]
    for c_out in (channels, 2 * channels):
        layers.append(nn.Conv2d(c, c_out, kernel_size=3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [nn.ReLU(), nn.Dropout2d(dropout), nn.MaxPool2d(2)]
        c, h, w = c_out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
    return nn.Sequential(*layers)


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The last linear layer (the one producing logits)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities in eval mode, on the model's device, returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.softmax(model(x[i : i + batch_size].to(device)).float(), dim=1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)
