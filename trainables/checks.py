"""The recipe's sanity checks, run before a sweep burns compute (``tuner check SPEC``).

1. loss at init is about ln(C) for C classes (within 20%): a badly scaled last layer shows here;
2. real inputs beat an input-independent baseline (the same model trained on zeroed inputs);
3. the model can overfit one small batch (32 examples) to near-zero loss within a few hundred steps.

Each check takes a model factory so that a test can hand it a deliberately broken model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import Dataset
from trainables.models import build_model, predict_proba
from trainables.train import resolve_config, seed_everything
from trainables.tricks import make_optimizer

INIT_LOSS_TOLERANCE = 0.20  # relative distance from ln(C) that still passes
BASELINE_STEPS = 150  # training steps for both the real and the zero-input model
BASELINE_MARGIN = 0.9  # real val loss must be below this fraction of the baseline's
OVERFIT_BATCH = 32
OVERFIT_STEPS = 500
OVERFIT_LOSS = 0.05

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    value: float  # the measured number
    target: str  # what it had to be, in words
    detail: str = ""


def model_factory(config: Mapping[str, Any], dataset: Dataset) -> ModelFactory:
    """Fresh, seeded models of a config, as the trainable builds them."""
    config = resolve_config(config)

    def make() -> nn.Module:
        seed_everything(config["seed"])
        return build_model(config, input_dim=dataset.input_dim, image_shape=dataset.image_shape,
                           num_classes=dataset.num_classes)

    return make


def check_init_loss(make_model: ModelFactory, dataset: Dataset) -> CheckResult:
    expected = math.log(dataset.num_classes)
    x, y = torch.from_numpy(dataset.x_val), torch.from_numpy(dataset.y_val)
    loss = float(F.nll_loss(predict_proba(make_model(), x).clamp_min(1e-12).log(), y))
    off = abs(loss - expected) / expected
    return CheckResult("loss at init ≈ ln(C)", off <= INIT_LOSS_TOLERANCE, loss,
                       f"{expected:.3f} ± {INIT_LOSS_TOLERANCE:.0%}", f"off by {off:.0%}")


def _train_steps(model: nn.Module, config: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor, steps: int,
                 batch_size: int) -> None:
    optimizer = make_optimizer(model.parameters(), config)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.nll_loss(predict_proba(model, x).clamp_min(1e-12).log(), y))


def check_baseline(make_model: ModelFactory, dataset: Dataset, config: Mapping[str, Any]) -> CheckResult:
    config = resolve_config(config)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    x_val, y_val = torch.from_numpy(dataset.x_val), torch.from_numpy(dataset.y_val)
    real, blind = make_model(), make_model()
    _train_steps(real, config, x, y, BASELINE_STEPS, config["batch_size"])
    _train_steps(blind, config, torch.zeros_like(x), y, BASELINE_STEPS, config["batch_size"])
    real_loss, blind_loss = _val_loss(real, x_val, y_val), _val_loss(blind, torch.zeros_like(x_val), y_val)
    return CheckResult("beats input-independent baseline", real_loss < BASELINE_MARGIN * blind_loss, real_loss,
                       f"< {BASELINE_MARGIN:g} × {blind_loss:.3f} (zeroed inputs)")


def check_overfit_batch(make_model: ModelFactory, dataset: Dataset, config: Mapping[str, Any]) -> CheckResult:
    """Regularisation off (dropout and weight decay 0), the config's optimizer and lr."""
    config = {**resolve_config(config), "weight_decay": 0.0}
    model = make_model()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
    x = torch.from_numpy(dataset.x_train[:OVERFIT_BATCH])
    y = torch.from_numpy(dataset.y_train[:OVERFIT_BATCH])
    optimizer = make_optimizer(model.parameters(), config)
    model.train()
    loss = math.inf
    for step in range(1, OVERFIT_STEPS + 1):
        out = F.cross_entropy(model(x), y)
        loss = out.item()
        if loss < OVERFIT_LOSS or not math.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        out.backward()
        optimizer.step()
    return CheckResult("overfits one batch", loss < OVERFIT_LOSS, loss,
                       f"< {OVERFIT_LOSS:g} within {OVERFIT_STEPS} steps", f"{step} steps on {len(x)} examples")


def run_checks(config: Mapping[str, Any], dataset: Dataset) -> list[CheckResult]:
    """All three checks on one config."""
    make = model_factory(config, dataset)
    return [check_init_loss(make, dataset), check_baseline(make, dataset, config),
            check_overfit_batch(make, dataset, config)]
