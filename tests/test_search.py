"""Algorithm and scheduler names -> Optuna samplers and Ray schedulers, as the spec asks."""

from __future__ import annotations

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from tuner.search import SAMPLERS, asha_max_t, make_scheduler, make_searcher
from tuner.spec import spec_from_mapping


def _spec(**fields):
    return spec_from_mapping({"name": "s", "search": {"space": {"lr": {"loguniform": [1e-4, 1.0]},
                                                                "optimizer": {"choice": ["sgd", "adam"]}}},
                              **fields})


@pytest.mark.parametrize("algorithm, sampler", [("tpe", optuna.samplers.TPESampler),
                                                ("random", optuna.samplers.RandomSampler)])
def test_each_algorithm_is_its_optuna_sampler_seeded(algorithm, sampler):
    spec = _spec(search={"algorithm": algorithm, "seed": 7, "space": "training_tricks"})
    assert isinstance(make_searcher(spec), OptunaSearch) and isinstance(SAMPLERS[algorithm](7), sampler)

    def suggestions(seed: int) -> list[dict]:
        searcher = make_searcher(spec.model_copy(update={"search": spec.search.model_copy(update={"seed": seed})}))
        return [searcher.suggest(f"t{i}") for i in range(3)]

    assert suggestions(7) == suggestions(7) and suggestions(7) != suggestions(8)
    assert set(suggestions(7)[0]) == set(spec.space)


def test_the_registry_is_what_the_spec_admits():
    from tuner.spec import SearchSpec

    assert set(SAMPLERS) == set(SearchSpec.model_fields["algorithm"].annotation.__args__)


def test_fifo_runs_every_trial_to_its_end():
    spec = _spec()
    assert isinstance(make_scheduler(spec), FIFOScheduler) and asha_max_t(spec) is None


def test_asha_stops_on_the_jobs_metric_with_its_rungs():
    spec = _spec(scheduler={"name": "asha", "grace_period": 2, "reduction_factor": 3}, trial={"epochs": 9})
    scheduler = make_scheduler(spec)
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler.metric == "val_loss"
    assert asha_max_t(spec) == 9
    assert asha_max_t(_spec(scheduler={"name": "asha", "max_t": 4}, trial={"epochs": 9})) == 4
