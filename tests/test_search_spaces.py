"""Declarative spaces convert to the right Optuna distributions."""

from __future__ import annotations

import optuna.distributions as od
import pytest

from search_spaces import load_preset, midpoint, parse_space, to_optuna
from tuner.errors import SpecError


def test_inline_space_to_optuna():
    space = parse_space({"lr": {"loguniform": [1e-4, 1.0]}, "dropout": {"uniform": [0, 0.5]},
                         "init": {"choice": ["uniform", "gaussian", "lecun", "xavier", "kaiming"]},
                         "width": {"randint": [32, 256]}, "batch": {"lograndint": [16, 256]},
                         "clip": {"choice": [None, 1.0, 10.0]}})
    dists = to_optuna(space)
    assert dists["lr"] == od.FloatDistribution(1e-4, 1.0, log=True)
    assert dists["dropout"] == od.FloatDistribution(0.0, 0.5)
    assert dists["width"] == od.IntDistribution(32, 256)
    assert dists["batch"] == od.IntDistribution(16, 256, log=True)
    assert dists["init"] == od.CategoricalDistribution(["uniform", "gaussian", "lecun", "xavier", "kaiming"])
    assert dists["clip"].choices == (None, 1.0, 10.0)


def test_training_tricks_preset_covers_the_mission_knobs():
    dists = to_optuna(load_preset("training_tricks"))
    assert set(dists) >= {"lr", "init", "dropout", "clip", "lr_decay", "weight_decay", "optimizer", "batchnorm"}
    assert dists["lr"].log and dists["weight_decay"].log
    assert None in dists["clip"].choices
    assert set(dists["init"].choices) == {"uniform", "gaussian", "lecun", "xavier", "kaiming"}
    assert 0.9 <= dists["lr_decay"].low < dists["lr_decay"].high <= 1.0


@pytest.mark.parametrize("raw, match", [
    ({"lr": {"loguniform": [0, 1]}}, "low must be > 0"),
    ({"lr": {"uniform": [1, 1]}}, "low must be smaller than high"),
    ({"lr": {"uniform": [0, float("inf")]}}, "finite"),
    ({"k": {"choice": ["a", "a"]}}, "distinct"),
    ({"k": {"choice": [[1, 2]]}}, "null, booleans, numbers or strings"),
    ({"k": {"uniform": [0, 1], "choice": [1]}}, "must be one of"),
])
def test_bad_domains(raw, match):
    with pytest.raises(SpecError, match=match):
        parse_space(raw)


def test_midpoints():
    assert midpoint({"loguniform": [1e-4, 1.0]}) == pytest.approx(1e-2)
    assert midpoint({"uniform": [0, 0.5]}) == 0.25
    assert midpoint({"randint": [32, 256]}) == 144
    assert midpoint({"choice": ["a", "b"]}, "b") == "b"
    assert midpoint({"uniform": [0.9, 1.0]}, 1.0) == 1.0
