"""The shared training loop and the recipe's sanity checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.checks import check_baseline, check_init_loss, check_overfit_batch, run_checks, sample_and_maker
from trainables.data import load_dataset
from trainables.models import cnn, mlp
from trainables.train import EVAL_BATCH, Diverged, fit, outputs


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits"})


def _history(config, dataset, model=mlp):
    history = []
    fit(config, model=model, data=dataset, report=lambda metrics, checkpoint: history.append((metrics, checkpoint)))
    return history


def test_same_config_and_seed_give_identical_metrics(digits):
    config = {"epochs": 3, "width": 32, "dropout": 0.2, "seed": 7}
    def metrics(history):  # epoch_time_s is a clock reading, the rest is arithmetic
        return [{k: v for k, v in m.items() if k != "epoch_time_s"} for m, _ in history]

    first, second = _history(config, digits), _history(config, digits)
    assert metrics(first) == metrics(second)
    assert metrics(_history({**config, "seed": 8}, digits)) != metrics(first)
    assert all(m["num_params"] > 0 and m["epoch_time_s"] > 0 for m, _ in first)


@pytest.mark.parametrize("wrap", [lambda x, y: torch.utils.data.TensorDataset(x, y), lambda x, y: list(zip(x, y))],
                         ids=["tensors", "any dataset"])
def test_outputs_cover_every_example_past_one_eval_batch(wrap):
    """Validation scores, the ensemble's test score and the served model's predictions all come from
    here: every example, in order (the first EVAL_BATCH only, before a fix)."""
    n = 2 * EVAL_BATCH + 5
    x, y = torch.arange(n, dtype=torch.float32).reshape(n, 1), torch.arange(n) % 3
    net = nn.Linear(1, 3)
    out, targets = outputs(net, wrap(x, y), "classification")
    assert out.shape == (n, 3) and torch.equal(targets, y)
    assert torch.allclose(out, torch.softmax(net(x), dim=1))


def test_reports_every_epoch_with_the_named_metrics(digits):
    history = _history({"epochs": 4, "width": 32, "lr_decay": 0.5}, digits)
    assert [m["epoch"] for m, _ in history] == [1, 2, 3, 4]
    assert set(history[0][0]) >= {"train_loss", "val_loss", "val_acc", "lr", "grad_norm", "init_loss"}
    assert [m["lr"] for m, _ in history] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    assert history[0][0]["init_loss"] == pytest.approx(math.log(10), rel=0.2)
    assert history[0][1] is not None  # the first epoch is always the best so far: checkpointed


def test_patience_stops_early(digits):
    history = _history({"epochs": 30, "width": 32, "lr": 0.0, "patience": 2}, digits)
    assert len(history) == 3  # epoch 1 sets the best, two epochs without improvement stop


def test_nan_loss_raises_diverged(digits):
    with pytest.raises(Diverged, match="training loss became"):
        _history({"epochs": 3, "lr": 1e6, "optimizer": "sgd", "clip": None, "init": "kaiming"}, digits)


@pytest.mark.parametrize("model", [mlp, cnn])
def test_checks_pass_with_sane_settings(digits, model):
    results = run_checks({"width": 64, "channels": 8}, model=model, data=digits)
    assert [r.passed for r in results] == [True, True, True], results


def test_init_loss_check_fails_on_a_huge_last_layer(digits):
    sample, make = sample_and_maker({}, mlp, digits, "classification")

    def broken():
        model = make()
        with torch.no_grad():
            model[-1].weight.mul_(1000)
        return model

    assert not check_init_loss(broken, sample).passed
    assert check_init_loss(make, sample).passed


class _IgnoresInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(10))
        self.out = nn.Linear(1, 10)

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * self.out(x.flatten(1)[:, :1])


def test_baseline_check_fails_on_a_model_that_ignores_its_input(digits):
    sample, _ = sample_and_maker({}, mlp, digits, "classification")
    assert not check_baseline(_IgnoresInput, sample, {"lr": 0.05}).passed


def test_overfit_check_fails_with_lr_zero(digits):
    sample, make = sample_and_maker({}, mlp, digits, "classification")
    assert not check_overfit_batch(make, sample, {"lr": 0.0}).passed
    assert check_overfit_batch(make, sample, {"lr": 0.01}).passed


def test_amp_on_cpu_warns_once_and_trains(digits, recwarn):
    import trainables.train as train

    train._amp_warned = False
    _history({"epochs": 1, "width": 16, "amp": True}, digits)
    _history({"epochs": 1, "width": 16, "amp": True}, digits)
    messages = [str(w.message) for w in recwarn if "amp: true needs CUDA" in str(w.message)]
    assert len(messages) == 1


def test_tuner_check_exit_codes():
    from typer.testing import CliRunner

    from tests.conftest import EXAMPLES
    from tuner.cli import app

    ok = CliRunner().invoke(app, ["check", str(EXAMPLES / "digits-mlp.yaml")])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("pass") == 3
    broken = CliRunner().invoke(app, ["check", str(EXAMPLES / "digits-mlp.yaml"),
                                      "--set", "search.space={dropout: {uniform: [0, 0.3]}}", "--set", "fixed.lr=0.0"])
    assert broken.exit_code == 1 and "FAIL" in broken.output
