"""The service's training loop: any model factory on any data factory, with every knob applied.

`fit` trains one config and hands each epoch's metrics (and, on a better epoch, a checkpoint folder)
to a `report` function. `service_trainable` is the Ray Tune function trainable that reports through
`ray.tune.report`; `tuner train` and `tuner check` call `fit` and the helpers directly.

    fit(config, model=trainables.models.mlp, data=load_dataset({"name": "digits"}), report=print)

Each epoch reports: epoch, train_loss, val_loss, then val_acc (classification) or val_rmse
(regression), lr (the rate used in that epoch), grad_norm (mean global gradient norm before
clipping), num_params (the model's size) and epoch_time_s (the epoch's wall time, evaluation
included): objectives for a multi-objective search; the first also init_loss (val loss before
training, a constant).
A checkpoint holds model.pt (the weights), state.pt (optimizer, schedule, epoch) and meta.json
(the config, the example shape, the output size, the task), all the ensemble needs to rebuild it.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainables.factories import DataFactory, ModelFactory
from trainables.knobs import DEFAULTS
from trainables.tricks import apply_model_knobs, clip_gradients, make_optimizer, make_schedule

Report = Callable[[dict[str, float], "str | None"], None]
EVAL_BATCH = 1024  # examples per forward pass when evaluating


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the trial stops at once."""


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's full config: the knob defaults, then what the trial was given."""
    return {**DEFAULTS, "metric": "val_loss", "mode": "min", **config}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_for_trial() -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES per trial), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _use_amp(config: Mapping[str, Any], device: torch.device) -> bool:
    if config["amp"] and device.type != "cuda":
        # Python's default warning filter shows this once per process, however many epochs ask.
        warnings.warn("amp: true needs CUDA; training in full precision on the CPU", stacklevel=2)
        return False
    return bool(config["amp"])


# ------------------------------------------------------------------------------------ data and model


def targets(dataset) -> torch.Tensor:
    """All of a dataset's y, without its x where the dataset keeps them apart."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if hasattr(dataset, "targets"):  # torchvision's convention
        return torch.as_tensor(dataset.targets)
    return torch.stack([torch.as_tensor(y) for _, y in dataset])


def splits(data: DataFactory, config: Mapping[str, Any]) -> tuple:
    """(train, val, test) from a data factory, checked: a factory that returns anything else is told so."""
    out = data(dict(config))
    if not isinstance(out, (tuple, list)) or len(out) != 3 or any(len(d) == 0 for d in out[:2]):
        got = f"{type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise TypeError(f"the data factory must return (train, val, test), train and val not empty; got {got}")
    return tuple(out)


def shapes(train, val, task: str, *, num_classes: int | None = None) -> tuple[tuple[int, ...], int]:
    """(one example's shape, output size): for classification ``num_classes`` where the data set knows
    it (the built-ins count every split), else the largest label of train and validation + 1; for
    regression the size of one target."""
    x, y = train[0]
    input_shape = tuple(torch.as_tensor(x).shape)
    if task == "classification":
        return input_shape, num_classes or int(max(targets(train).max(), targets(val).max())) + 1
    return input_shape, int(torch.as_tensor(y).numel())


def build(model: ModelFactory, config: Mapping[str, Any], input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    """A seeded model from its factory, with the knobs that act from outside applied (init, dropout)."""
    seed_everything(config["seed"])
    net = model(dict(config), input_shape, output_dim)
    if not isinstance(net, nn.Module):
        raise TypeError(f"the model factory returned {type(net).__name__}, not a torch.nn.Module")
    apply_model_knobs(net, config)
    return net


def batches(dataset, batch_size: int, generator: torch.Generator, device: torch.device,
            resident: tuple[torch.Tensor, torch.Tensor] | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled training batches on ``device``.

    ``resident``: the data set's tensors already on the device (an in-memory ``TensorDataset``),
    indexed directly; anything else goes through a ``DataLoader`` in this process.
    """
    if resident is not None:
        x, y = resident
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        pin_memory=device.type == "cuda")
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def outputs(model: nn.Module, dataset, task: str, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, targets) on the CPU in eval mode: class probabilities, or predictions shaped like the targets."""
    model.eval()
    device = device or next(model.parameters()).device
    if isinstance(dataset, TensorDataset):
        inputs, labels = dataset.tensors  # names of their own: the generator reads them lazily, after the loop's x, y
        chunks = ((inputs[i : i + EVAL_BATCH], labels[i : i + EVAL_BATCH]) for i in range(0, len(inputs), EVAL_BATCH))
    else:
        chunks = iter(DataLoader(dataset, batch_size=EVAL_BATCH))
    outs, ys = [], []
    for x, y in chunks:
        out = model(x.to(device)).float()
        outs.append(torch.softmax(out, dim=1).cpu() if task == "classification" else out.cpu().reshape(y.shape))
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def train_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy on logits, or mean squared error."""
    if task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out.reshape(y.shape).float(), y.float())


def scores(out: torch.Tensor, y: torch.Tensor, task: str) -> dict[str, float]:
    """val_loss and val_acc (classification: ``out`` are probabilities) or val_loss and val_rmse."""
    if task == "classification":
        return {"val_loss": float(F.nll_loss(out.clamp_min(1e-12).log(), y)),
                "val_acc": float((out.argmax(1) == y).float().mean())}
    mse = float(F.mse_loss(out, y.float()))
    return {"val_loss": mse, "val_rmse": math.sqrt(mse)}


# ------------------------------------------------------------------------------------------ the loop


def fit(config: Mapping[str, Any], *, model: ModelFactory, data: DataFactory, task: str = "classification",
        report: Report, restore: str | None = None) -> None:
    """Train one config of ``model`` on ``data``, calling ``report`` once per epoch.

    Raises `Diverged` as soon as a training loss is not finite.
    """
    config = resolve_config(config)
    train, val, _ = splits(data, config)
    input_shape, output_dim = shapes(train, val, task, num_classes=getattr(data, "num_classes", None))
    device = device_for_trial()
    amp = _use_amp(config, device)
    net = build(model, config, input_shape, output_dim).to(device)
    optimizer = make_optimizer(net.parameters(), config)
    schedule = make_schedule(optimizer, config)
    resident = tuple(t.to(device) for t in train.tensors) if isinstance(train, TensorDataset) else None
    generator = torch.Generator().manual_seed(config["seed"])
    sign = 1.0 if config["mode"] == "min" else -1.0
    meta = {"config": config, "task": task, "input_shape": list(input_shape), "output_dim": output_dim,
            "input_scaling": getattr(data, "input_scaling", None),
            "target_scaling": getattr(data, "target_scaling", None)}

    init_loss = scores(*outputs(net, val, task), task)["val_loss"]
    num_params = sum(p.numel() for p in net.parameters())
    start_epoch, best, stale = 0, math.inf, 0
    if restore is not None:
        state = torch.load(Path(restore) / "state.pt", weights_only=False)
        net.load_state_dict(torch.load(Path(restore) / "model.pt", weights_only=True))
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, best, init_loss = state["epoch"], state["best"], state["init_loss"]

    for epoch in range(start_epoch, config["epochs"]):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        net.train()
        losses, norms = [], []
        for step, (x, y) in enumerate(batches(train, config["batch_size"], generator, device, resident)):
            with torch.autocast(device.type, enabled=amp):
                loss = train_loss(net(x), y, task)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"training loss became {value} at epoch {epoch + 1}, step {step + 1} "
                               f"(lr={config['lr']:g}, clip={config['clip']})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(clip_gradients(net.parameters(), config["clip"]))
            optimizer.step()
            losses.append(value)
        schedule.step()

        metrics = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                   **scores(*outputs(net, val, task), task), "lr": lr, "grad_norm": float(np.mean(norms)),
                   "num_params": num_params, "epoch_time_s": time.perf_counter() - started}
        if epoch == start_epoch:  # a constant: reported once, with the trial's first epoch (or a restart's)
            metrics["init_loss"] = init_loss
        score = sign * metrics.get(config["metric"], metrics["val_loss"])
        with tempfile.TemporaryDirectory(prefix="tuner-ckpt-") as folder:
            checkpoint = None
            if score < best:
                best, stale = score, 0
                _write_checkpoint(Path(folder), net, optimizer, schedule, meta, epoch + 1, best, init_loss)
                checkpoint = folder
            else:
                stale += 1
            report(metrics, checkpoint)
        if config["patience"] is not None and stale >= config["patience"]:
            return


def _write_checkpoint(folder: Path, net, optimizer, schedule, meta, epoch, best, init_loss) -> None:
    torch.save(net.state_dict(), folder / "model.pt")
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "epoch": epoch,
                "best": best, "init_loss": init_loss}, folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps({**meta, "epoch": epoch}, default=str))


def load_checkpoint(folder: str | Path, model: ModelFactory) -> tuple[nn.Module, dict[str, Any]]:
    """The model a checkpoint holds, rebuilt by its factory, in eval mode; and its meta.json."""
    meta = json.loads(Path(folder, "meta.json").read_text())
    net = model(dict(meta["config"]), tuple(meta["input_shape"]), meta["output_dim"])
    net.load_state_dict(torch.load(Path(folder, "model.pt"), weights_only=True, map_location="cpu"))
    return net.eval(), meta


def service_trainable(config: dict[str, Any], model: ModelFactory = None, data: DataFactory = None,
                      task: str = "classification") -> None:
    """The Ray Tune function trainable of every ``model:`` job, built-in or your own.

    ``model``, ``data`` and ``task`` arrive through `tune.with_parameters` (Ray's object store): a
    built-in data set travels loaded, a user's factories by reference to their module.
    """
    from ray import tune

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    checkpoint = tune.get_checkpoint()

    def report(metrics: dict[str, float], folder: str | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    if checkpoint is None:
        fit(config, model=model, data=data, task=task, report=report)
    else:
        with checkpoint.as_directory() as folder:
            fit(config, model=model, data=data, task=task, report=report, restore=folder)
