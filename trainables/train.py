"""The training loop shared by the built-in trainables, with and without Ray.

`fit` trains one config and hands each epoch's metrics (and, on a better epoch, a checkpoint folder)
to a `report` function. `builtin_trainable` is the Ray Tune function trainable that reports through
`ray.tune.report`; `tuner train` and `tuner check` call `fit` directly.

Each epoch reports: epoch, train_loss, val_loss, val_acc, lr (the rate used in that epoch) and
grad_norm (mean global gradient norm before clipping); the first also init_loss (val loss before
training, a constant).
A checkpoint holds model.pt, state.pt (optimizer, schedule, epoch) and the best epoch's class
probabilities on validation and test (val_probs.npy, test_probs.npy) for the ensemble.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data import Dataset
from trainables.knobs import DEFAULTS
from trainables.models import build_model, predict_proba
from trainables.tricks import clip_gradients, make_optimizer, make_schedule

Report = Callable[[dict[str, float], "str | None"], None]

_amp_warned = False


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the trial stops at once."""


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's full config: the knob defaults, then what the trial was given."""
    return {**DEFAULTS, "model": "mlp", "metric": "val_loss", "mode": "min", **config}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_for_trial() -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES per trial), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _use_amp(config: Mapping[str, Any], device: torch.device) -> bool:
    global _amp_warned
    if config["amp"] and device.type != "cuda":
        if not _amp_warned:
            warnings.warn("amp: true needs CUDA; training in full precision on the CPU", stacklevel=2)
            _amp_warned = True
        return False
    return bool(config["amp"])


def fit(config: Mapping[str, Any], dataset: Dataset, *, report: Report, restore: str | None = None) -> None:
    """Train one config on ``dataset``, calling ``report`` once per epoch.

    Raises `Diverged` as soon as a training loss is not finite.
    """
    config = resolve_config(config)
    seed_everything(config["seed"])
    device = device_for_trial()
    amp = _use_amp(config, device)
    model = build_model(config, input_dim=dataset.input_dim, image_shape=dataset.image_shape,
                        num_classes=dataset.num_classes).to(device)
    optimizer = make_optimizer(model.parameters(), config)
    schedule = make_schedule(optimizer, config)
    x_train, y_train = torch.from_numpy(dataset.x_train).to(device), torch.from_numpy(dataset.y_train).to(device)
    x_val, y_val = torch.from_numpy(dataset.x_val), torch.from_numpy(dataset.y_val)
    x_test = torch.from_numpy(dataset.x_test)
    generator = torch.Generator().manual_seed(config["seed"])
    sign = 1.0 if config["mode"] == "min" else -1.0

    init_loss = float(F.nll_loss(predict_proba(model, x_val).clamp_min(1e-12).log(), y_val))
    start_epoch, best, stale = 0, math.inf, 0
    if restore is not None:
        state = torch.load(Path(restore) / "state.pt", weights_only=False)
        model.load_state_dict(torch.load(Path(restore) / "model.pt", weights_only=True))
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, best, init_loss = state["epoch"], state["best"], state["init_loss"]

    for epoch in range(start_epoch, config["epochs"]):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        losses, norms = [], []
        for step, start in enumerate(range(0, len(order), config["batch_size"])):
            idx = order[start : start + config["batch_size"]]
            with torch.autocast(device.type, enabled=amp):
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"training loss became {value} at epoch {epoch + 1}, step {step + 1} "
                               f"(lr={config['lr']:g}, clip={config['clip']})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(clip_gradients(model.parameters(), config["clip"]))
            optimizer.step()
            losses.append(value)
        schedule.step()

        val_probs = predict_proba(model, x_val)
        val_loss = float(F.nll_loss(val_probs.clamp_min(1e-12).log(), y_val))
        metrics = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_acc": float((val_probs.argmax(1) == y_val).float().mean()),
            "lr": lr,
            "grad_norm": float(np.mean(norms)),
        }
        if epoch == start_epoch:  # a constant: reported once, with the trial's first epoch (or a restart's)
            metrics["init_loss"] = init_loss
        score = sign * metrics.get(config["metric"], val_loss)
        with tempfile.TemporaryDirectory(prefix="tuner-ckpt-") as folder:
            checkpoint = None
            if score < best:
                best, stale = score, 0
                _write_checkpoint(folder, model, optimizer, schedule, config, epoch + 1, best, init_loss,
                                  val_probs, predict_proba(model, x_test))
                checkpoint = folder
            else:
                stale += 1
            report(metrics, checkpoint)
        if config["patience"] is not None and stale >= config["patience"]:
            return


def _write_checkpoint(folder: str, model, optimizer, schedule, config, epoch, best, init_loss,
                      val_probs, test_probs) -> None:
    path = Path(folder)
    torch.save(model.state_dict(), path / "model.pt")
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "epoch": epoch,
                "best": best, "init_loss": init_loss}, path / "state.pt")
    np.save(path / "val_probs.npy", val_probs.numpy())
    np.save(path / "test_probs.npy", test_probs.numpy())
    (path / "config.json").write_text(json.dumps({"config": config, "epoch": epoch}, default=str))


def builtin_trainable(config: dict[str, Any], dataset: Any = None) -> None:
    """The Ray Tune function trainable behind ``trainable: mlp`` and ``trainable: cnn``.

    ``dataset`` arrives through `tune.with_parameters`, i.e. from Ray's object store, loaded once.
    """
    from ray import tune

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    checkpoint = tune.get_checkpoint()

    def report(metrics: dict[str, float], folder: str | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    if checkpoint is None:
        fit(config, dataset, report=report)
    else:
        with checkpoint.as_directory() as folder:
            fit(config, dataset, report=report, restore=folder)
