"""The recipe's sanity checks, run before a sweep burns compute (``tuner check SPEC``).

1. the loss at init is about what knowing nothing costs (within 20%): ln(C) for C classes, the
   targets' variance for regression (the mean squared error of predicting their mean); a badly
   scaled output layer shows here;
2. real inputs beat an input-independent baseline (the same model trained on zeroed inputs);
3. the model can overfit one small batch (32 examples) to near-zero loss within a few hundred steps
   (regression: below 5% of the batch's target variance).

They run on any model and data factory, built-in or your own, on at most a few thousand examples.
Each check takes a zero-argument model maker so that a test can hand it a deliberately broken model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainables.factories import DataFactory, ModelFactory
from trainables.train import build, outputs, resolve_config, scores, shapes, splits, train_loss
from trainables.tricks import DROPOUTS, make_optimizer

INIT_LOSS_TOLERANCE = 0.20  # relative distance from ln(C) (or the targets' variance) that still passes
BASELINE_STEPS = 150  # training steps for both the real and the zero-input model
BASELINE_MARGIN = 0.9  # real val loss must be below this fraction of the baseline's
OVERFIT_BATCH = 32
OVERFIT_STEPS = 500
OVERFIT_LOSS = 0.05  # classification: cross-entropy; regression: fraction of the batch's target variance
MAX_EXAMPLES = 2048  # the checks read at most this many examples of each split

MakeModel = Callable[[], nn.Module]


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    value: float  # the measured number
    target: str  # what it had to be, in words
    detail: str = ""


@dataclass(frozen=True)
class Sample:
    """The first examples of the train and validation splits, as tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    task: str


def take(dataset, n: int = MAX_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of a dataset as (x, y) tensors."""
    x, y = next(iter(DataLoader(dataset, batch_size=min(n, len(dataset)))))
    return x, y


def sample_and_maker(config: Mapping[str, Any], model: ModelFactory, data: DataFactory,
                     task: str) -> tuple[Sample, MakeModel]:
    """The checks' data and a maker of fresh, seeded models of ``config``, as the trainable builds them."""
    config = resolve_config(config)
    train, val, _ = splits(data, config)
    input_shape, output_dim = shapes(train, val, task, num_classes=getattr(data, "num_classes", None))
    sample = Sample(*take(train), *take(val), task=task)
    return sample, lambda: build(model, config, input_shape, output_dim)


def _val_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    return scores(*outputs(net, TensorDataset(x, y), task), task)["val_loss"]


def check_init_loss(make_model: MakeModel, sample: Sample) -> CheckResult:
    if sample.task == "classification":
        classes = int(max(sample.y_train.max(), sample.y_val.max())) + 1
        expected, what = math.log(classes), "ln(C)"
    else:
        expected, what = float(sample.y_val.float().var(unbiased=False)), "var(y)"
    loss = _val_loss(make_model(), sample.x_val, sample.y_val, sample.task)
    off = abs(loss - expected) / expected if expected > 0 else math.inf
    return CheckResult(f"loss at init ≈ {what}", off <= INIT_LOSS_TOLERANCE, loss,
                       f"{expected:.3f} ± {INIT_LOSS_TOLERANCE:.0%}", f"off by {off:.0%}")


def _train_steps(net: nn.Module, config: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor, task: str,
                 steps: int) -> None:
    optimizer = make_optimizer(net.parameters(), config)
    generator = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(config["batch_size"], len(x)),), generator=generator)
        loss = train_loss(net(x[idx]), y[idx], task)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def check_baseline(make_model: MakeModel, sample: Sample, config: Mapping[str, Any]) -> CheckResult:
    config = resolve_config(config)
    real, blind = make_model(), make_model()
    _train_steps(real, config, sample.x_train, sample.y_train, sample.task, BASELINE_STEPS)
    _train_steps(blind, config, torch.zeros_like(sample.x_train), sample.y_train, sample.task, BASELINE_STEPS)
    real_loss = _val_loss(real, sample.x_val, sample.y_val, sample.task)
    blind_loss = _val_loss(blind, torch.zeros_like(sample.x_val), sample.y_val, sample.task)
    return CheckResult("beats input-independent baseline", real_loss < BASELINE_MARGIN * blind_loss, real_loss,
                       f"< {BASELINE_MARGIN:g} × {blind_loss:.3f} (zeroed inputs)")


def check_overfit_batch(make_model: MakeModel, sample: Sample, config: Mapping[str, Any]) -> CheckResult:
    """Regularisation off (dropout and weight decay 0), the config's optimizer and lr."""
    config = {**resolve_config(config), "weight_decay": 0.0}
    net = make_model()
    for module in net.modules():
        if isinstance(module, DROPOUTS):
            module.p = 0.0
    x, y = sample.x_train[:OVERFIT_BATCH], sample.y_train[:OVERFIT_BATCH]
    goal = OVERFIT_LOSS if sample.task == "classification" else OVERFIT_LOSS * float(y.float().var(unbiased=False))
    optimizer = make_optimizer(net.parameters(), config)
    net.train()
    loss, step = math.inf, 0
    for step in range(1, OVERFIT_STEPS + 1):
        out = train_loss(net(x), y, sample.task)
        loss = out.item()
        if loss < goal or not math.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        out.backward()
        optimizer.step()
    return CheckResult("overfits one batch", loss < goal, loss,
                       f"< {goal:.3g} within {OVERFIT_STEPS} steps", f"{step} steps on {len(x)} examples")


def run_checks(config: Mapping[str, Any], *, model: ModelFactory, data: DataFactory,
               task: str = "classification") -> list[CheckResult]:
    """All three checks on one config."""
    sample, make = sample_and_maker(config, model, data, task)
    return [check_init_loss(make, sample), check_baseline(make, sample, config),
            check_overfit_batch(make, sample, config)]
