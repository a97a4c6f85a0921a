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
    assert isinstance(make_searcher(spec), OptunaSearch) and isinstance(SAMPLERS[algorithm](spec), sampler)

    def suggestions(seed: int) -> list[dict]:
        searcher = make_searcher(spec.model_copy(update={"search": spec.search.model_copy(update={"seed": seed})}))
        return [searcher.suggest(f"t{i}") for i in range(3)]

    assert suggestions(7) == suggestions(7) and suggestions(7) != suggestions(8)
    always = {k for k, entry in spec.space.items() if "when" not in entry}
    assert all(always <= set(config) <= set(spec.space) for config in suggestions(7))


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


def test_a_conditional_key_is_sampled_exactly_when_its_condition_holds():
    spec = _spec(search={"algorithm": "random", "space": "training_tricks"})
    searcher = make_searcher(spec)
    configs = [searcher.suggest(f"t{i}") for i in range(60)]
    for config in configs:
        assert ("momentum" in config) == (config["optimizer"] in ("momentum", "nesterov"))
        assert ("lr_step_size" in config) == (config["lr_schedule"] == "step")
        assert ("warmup_epochs" in config) == (config["lr_schedule"] == "cosine")
        assert ("lr_decay" in config) == (config["lr_schedule"] in ("exponential", "step"))
    assert {c["optimizer"] for c in configs} >= {"adam", "momentum"}  # both sides were drawn


def test_start_from_runs_first_and_the_sampler_completes_a_partial_config():
    spec = _spec(search={"algorithm": "tpe", "space": "training_tricks",
                         "start_from": [{"lr": 0.01, "optimizer": "nesterov"}, {"lr": 0.5}]})
    searcher = make_searcher(spec)
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    assert first["lr"] == 0.01 and first["optimizer"] == "nesterov" and 0.5 <= first["momentum"] <= 0.99
    assert second["lr"] == 0.5 and {"init", "dropout", "optimizer"} <= set(second)
    assert third["lr"] not in (0.01, 0.5)


def test_grid_walks_every_point_once():
    spec = _spec(search={"algorithm": "grid", "space": {"optimizer": {"choice": ["sgd", "adam", "nesterov"]},
                                                        "batchnorm": {"choice": [False, True]}}})
    assert spec.search.num_samples == 6
    searcher = make_searcher(spec)
    points = {(c["optimizer"], c["batchnorm"]) for c in (searcher.suggest(f"t{i}") for i in range(6))}
    assert len(points) == 6


def test_a_gpu_hours_budget_stops_suggestions_once_ended_trials_used_it():
    import pickle

    spec = _spec(search={"algorithm": "random", "budget": {"gpu_hours": 1.0}},
                 trial={"resources": {"cpu": 1, "gpu": 0.5}})
    searcher = make_searcher(spec)
    assert isinstance(searcher.suggest("a"), dict) and isinstance(searcher.suggest("b"), dict)
    searcher.on_trial_complete("a", _ray_result(1, 3600.0))  # 0.5 GPU-hours
    assert isinstance(searcher.suggest("c"), dict) and searcher.spent() is None
    # b ran 1,800 s, was restored (a retry, or `tuner stop` and `tuner resume`: the searcher comes back
    # from Tune's snapshot) and ran 1,800 s again from its start: 1.0 GPU-hours with a's, so spent.
    searcher.on_trial_result("b", _ray_result(1, 1800.0))
    searcher = pickle.loads(pickle.dumps(searcher))
    searcher.on_trial_result("b", _ray_result(1, 900.0))
    searcher.on_trial_complete("b", _ray_result(2, 1800.0))
    assert searcher.suggest("d") == searcher.FINISHED and searcher.spent() == "gpu_hours 1"


def _ray_result(iterations: int, seconds: float) -> dict:
    """A result as Ray gives it: ``time_total_s`` starts again at 0 for a trial restored without a checkpoint."""
    return {"val_loss": 0.5, "training_iteration": iterations, "iterations_since_restore": iterations,
            "time_since_restore": seconds, "time_total_s": seconds}


def test_a_wall_budget_counts_the_time_the_search_ran_not_the_time_it_was_down():
    import os
    import pickle

    searcher = make_searcher(_spec(search={"algorithm": "random", "budget": {"wall_s": 100.0}}))
    assert isinstance(searcher.suggest("a"), dict)
    searcher.ran_s = 90.0  # as a snapshot would hold it after 90 s of search
    searcher.clock = (os.getpid() + 1, 0.0, 90.0)  # taken in another process: the driver that crashed
    restored = pickle.loads(pickle.dumps(searcher))
    assert isinstance(restored.suggest("b"), dict) and 90.0 <= restored.ran_s < 91.0
    restored.clock = (os.getpid(), restored.clock[1] - 10.0, 90.0)  # 10 s later in this process
    assert restored.suggest("c") == restored.FINISHED and restored.spent() == "wall_s 100"


def test_tpe_groups_keys_only_for_a_conditional_space_and_suggests_the_same_without():
    """`group` reads every trial again at every suggestion; on a space without conditions it is one group,
    and TPE must then suggest exactly what it suggests with the option on."""
    import warnings

    flat = _spec(search={"algorithm": "tpe", "seed": 3, "space": {"lr": {"loguniform": [1e-4, 1.0]}}})
    assert SAMPLERS["tpe"](flat)._group is False
    assert SAMPLERS["tpe"](_spec(search={"algorithm": "tpe", "space": "training_tricks"}))._group is True

    def suggested(group: bool) -> list[dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=3, multivariate=True, constant_liar=True, group=group)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("lr", 1e-4, 1.0, log=True) - 0.01) ** 2
                       + (t.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd"), n_trials=40)
        return [t.params for t in study.trials]

    assert suggested(True) == suggested(False)
