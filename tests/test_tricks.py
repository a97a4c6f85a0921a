"""Each training knob does what it names."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.knobs import DEFAULTS
from trainables.models import cnn, mlp
from trainables.tricks import clip_gradients, init_weights, lr_factor, make_optimizer, make_schedule

N_IN, N_OUT = 400, 300


def _layer_std(scheme: str) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N_IN, N_OUT), nn.ReLU(), nn.Linear(N_OUT, 10))
    init_weights(model, scheme)
    assert float(model[0].bias.detach().abs().max()) == 0.0  # biases start at zero
    return float(model[0].weight.detach().std())


@pytest.mark.parametrize("scheme, expected", [
    ("uniform", 1 / math.sqrt(3 * N_IN)),
    ("gaussian", 1 / N_IN),
    ("lecun", 1 / math.sqrt(N_IN)),
    ("xavier", math.sqrt(2 / (N_IN + N_OUT))),
    ("kaiming", math.sqrt(2 / N_IN)),
])
def test_init_weight_std_matches_formula(scheme: str, expected: float):
    assert _layer_std(scheme) == pytest.approx(expected, rel=0.05)


def test_schemes_differ_and_last_layer_is_scaled_down():
    stds = {s: _layer_std(s) for s in ("uniform", "gaussian", "lecun", "xavier", "kaiming")}
    assert len({round(v, 5) for v in stds.values()}) == 5
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N_IN, N_OUT), nn.ReLU(), nn.Linear(N_OUT, 10))
    init_weights(model, "kaiming")
    assert float(model[2].weight.detach().std()) == pytest.approx(0.1 * math.sqrt(2 / N_OUT), rel=0.1)


def _config(**kw):
    return {**DEFAULTS, **kw}


@pytest.mark.parametrize("epoch", [0, 1, 5, 19])
def test_exponential_schedule_is_lr_times_gamma_to_the_k(epoch: int):
    config = _config(lr=0.1, lr_decay=0.9, lr_schedule="exponential", epochs=20)
    model = nn.Linear(2, 2)
    optimizer = make_optimizer(model.parameters(), config)
    schedule = make_schedule(optimizer, config)
    for _ in range(epoch):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9**epoch)


def test_step_cosine_none_and_warmup_closed_forms():
    step = _config(lr_schedule="step", lr_decay=0.5, lr_step_size=3, epochs=10)
    assert [lr_factor(k, step) for k in (0, 2, 3, 5, 6)] == [1, 1, 0.5, 0.5, 0.25]
    cosine = _config(lr_schedule="cosine", epochs=10)
    assert lr_factor(0, cosine) == 1 and lr_factor(5, cosine) == pytest.approx(0.5)
    assert lr_factor(10, cosine) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(7, _config(lr_schedule="none")) == 1
    warm = _config(lr_schedule="none", warmup_epochs=4)
    assert [lr_factor(k, warm) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_clip_bounds_the_global_norm_applied_and_returns_the_norm_before():
    model = nn.Linear(50, 50)
    (model(torch.randn(8, 50)).pow(2).sum() * 1000).backward()
    before = clip_gradients(model.parameters(), None)
    assert before > 10
    reported = clip_gradients(model.parameters(), 1.0)
    assert reported == pytest.approx(before, rel=1e-5)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(after) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("name, cls, momentum, nesterov", [
    ("sgd", torch.optim.SGD, 0, False), ("momentum", torch.optim.SGD, 0.8, False),
    ("nesterov", torch.optim.SGD, 0.8, True), ("adam", torch.optim.Adam, None, None),
    ("adagrad", torch.optim.Adagrad, None, None), ("rmsprop", torch.optim.RMSprop, None, None),
])
def test_optimizer_class_and_flags(name, cls, momentum, nesterov):
    optimizer = make_optimizer(nn.Linear(2, 2).parameters(), _config(optimizer=name, momentum=0.8, weight_decay=1e-3))
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 1e-3
    if momentum is not None:
        assert group["momentum"] == momentum and group["nesterov"] is nesterov


@pytest.mark.parametrize("batchnorm", [True, False])
def test_batchnorm_present_or_absent(batchnorm: bool):
    config = _config(width=16, depth=2, channels=4, batchnorm=batchnorm)
    for model in (mlp(config, (64,), 10), cnn(config, (1, 8, 8), 10)):
        has = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
        assert has is batchnorm


def test_dropout_active_in_train_inactive_in_eval():
    model = mlp(_config(dropout=0.5, width=64), (64,), 10)
    x = torch.rand(16, 64)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
    conv = cnn(_config(dropout=0.3, channels=4), (1, 8, 8), 10)
    assert [m.p for m in conv.modules() if isinstance(m, nn.Dropout2d)] == [0.3, 0.3]


def test_the_cnn_refuses_flat_examples():
    with pytest.raises(ValueError, match="image-shaped"):
        cnn(_config(), (64,), 10)
