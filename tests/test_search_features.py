"""The search features through real jobs on the built-in loop (1-epoch trials on digits): multi-objective,
conditional keys, warm starts, the grid, reproducible parallel search, the stored study, the MLflow UI's
view. Each test asserts on what MLflow and the stored Optuna study hold."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import children, small_spec
from tuner.errors import NotFoundError
from tuner.export import best_spec
from tuner.run import run_job
from tuner.spec import spec_from_mapping
from tuner.study import open_storage, stored_study

pytestmark = pytest.mark.slow


def study_of(result) -> optuna.Study:
    from tuner.folders import RunFolder

    storage, name = stored_study(RunFolder(result.run_folder))
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def test_multi_objective_finds_a_pareto_front_of_loss_against_size(ray_session, tmp_path: Path):
    spec = small_spec(tmp_path, name="mo", metric=["val_loss", "num_params"], mode=["min", "min"], trial={"epochs": 1},
                      search={"num_samples": 6, "algorithm": "random",
                              "space": {"depth": {"choice": [1, 2, 3]}, "lr": {"loguniform": [0.001, 0.1]}}})
    result = run_job(spec, output_root=tmp_path / "out")
    study = study_of(result)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 and all(len(t.values) == 2 for t in complete)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    client, parent, runs = children(result.tracking_uri, result.parent_run_id)
    front = parent.data.tags["pareto_front"].split(",")
    assert front == result.pareto_front and set(front) <= {r.info.run_name for r in runs}
    # The front is what Optuna's own best_trials says of the stored study (same values, same trials).
    by_values = {tuple(t.values) for t in study.best_trials}
    metrics = {r.info.run_name: (r.data.metrics["val_loss"], r.data.metrics["num_params"]) for r in runs}
    assert {metrics[name] for name in front} == by_values
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/pareto_front.csv", "report/pareto_front.png"} <= artifacts
    # Export: by default the front's member best on the first metric; --pick another member.
    exported = best_spec(result.tracking_uri, "mo")
    assert exported["_exported"]["trial"] == front[0] == result.best_trial
    other = front[-1]
    picked = best_spec(result.tracking_uri, "mo", pick=other)
    child = next(r for r in runs if r.info.run_name == other)
    assert picked["search"]["space"]["depth"] == {"choice": [int(child.data.params["depth"])]}
    with pytest.raises(NotFoundError):
        best_spec(result.tracking_uri, "mo", pick="trial-999")


def test_conditional_keys_are_absent_from_a_trial_whose_condition_does_not_hold(ray_session, tmp_path: Path):
    spec = small_spec(tmp_path, name="cond", trial={"epochs": 1},
                      search={"num_samples": 6, "algorithm": "random", "seed": 3, "space": {
                          "optimizer": {"choice": ["adam", "momentum", "nesterov"]},
                          "momentum": {"uniform": [0.5, 0.99], "when": {"optimizer": ["momentum", "nesterov"]}},
                          "lr": {"loguniform": [0.01, 0.1]}}})
    result = run_job(spec, output_root=tmp_path / "out")
    _, _, runs = children(result.tracking_uri, result.parent_run_id)
    assert len(runs) == 6
    kinds = set()
    for run in runs:
        with_momentum = run.data.params["optimizer"] in ("momentum", "nesterov")
        assert ("momentum" in run.data.params) == with_momentum
        kinds.add(with_momentum)
    assert kinds == {True, False}  # both kinds of trial ran
    for trial in study_of(result).trials:
        assert ("momentum" in trial.params) == (trial.params["optimizer"] != "adam")


def test_warm_start_continues_an_earlier_job_and_start_from_runs_first(ray_session, tmp_path: Path):
    space = {"lr": {"loguniform": [0.001, 0.3]}, "optimizer": {"choice": ["adam", "sgd"]}}
    first = run_job(small_spec(tmp_path, name="first", trial={"epochs": 1},
                               search={"num_samples": 4, "space": space}), output_root=tmp_path / "out")
    with pytest.raises(NotFoundError, match="no job of this name"):
        run_job(small_spec(tmp_path, name="second", search={"space": space, "warm_start": {"job": "nope"}}),
                output_root=tmp_path / "out")
    assert not (tmp_path / "out" / "second").exists() or not list((tmp_path / "out" / "second").iterdir())
    second = run_job(small_spec(tmp_path, name="second", trial={"epochs": 1}, search={
        "num_samples": 2, "max_concurrent": 1, "space": space, "warm_start": {"job": "first"},
        "start_from": [{"lr": 0.05, "optimizer": "sgd"}]}), output_root=tmp_path / "out")
    trials = study_of(second).trials
    seeded = [t for t in trials if "warm_start" in t.user_attrs]
    assert len(seeded) == 4 and len(trials) == 6  # the first job's 4, then this job's 2
    _, _, first_runs = children(first.tracking_uri, first.parent_run_id)
    assert sorted(t.value for t in seeded) == sorted(r.data.metrics["val_loss"] for r in first_runs)
    _, _, runs = children(second.tracking_uri, second.parent_run_id)
    one = next(r for r in runs if r.info.run_name == "trial-001")
    assert one.data.params["lr"] == "0.05" and one.data.params["optimizer"] == "sgd"


def test_grid_runs_each_point_once_and_sizes_the_job(ray_session, tmp_path: Path):
    spec = small_spec(tmp_path, name="grid", trial={"epochs": 1}, search={
        "algorithm": "grid", "num_samples": None, "space": {"optimizer": {"choice": ["adam", "sgd"]},
                                                            "batchnorm": {"choice": [False, True]}}})
    assert spec.search.num_samples == 4
    result = run_job(spec, output_root=tmp_path / "out")
    _, _, runs = children(result.tracking_uri, result.parent_run_id)
    assert sorted((r.data.params["optimizer"], r.data.params["batchnorm"]) for r in runs) == [
        ("adam", "False"), ("adam", "True"), ("sgd", "False"), ("sgd", "True")]


def _trials(result) -> list[tuple]:
    _, _, runs = children(result.tracking_uri, result.parent_run_id)
    metric = "val_loss" if "val_loss" in runs[0].data.metrics else "score"
    params = sorted((r.info.run_name, json.dumps(r.data.params, sort_keys=True), r.data.metrics[metric])
                    for r in runs)
    return params


def test_trials_ending_in_a_random_order_get_the_same_suggestions_when_reproducible(ray_session, tmp_path: Path):
    """16 trials, 3 at a time, each lasting a random time: past TPE's 10 random start-up trials, so later
    suggestions depend on which results came back first; run twice, the same configs and metrics."""
    from tests.conftest import DATA

    spec = spec_from_mapping({
        "name": "order", "trainable": "toy_trainable:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "score", "mode": "min", "fixed": {"epochs": 1, "sleep": 0.02, "jitter": 0.25},
        "search": {"algorithm": "tpe", "num_samples": 16, "max_concurrent": 3, "seed": 1,
                   "reproducible": True, "space": {"x": {"uniform": [0, 1]}}},
        "ensemble": {"top_k": 0}})
    runs = [_trials(run_job(spec, output_root=tmp_path / f"out{i}")) for i in (1, 2)]
    assert runs[0] == runs[1] and len(runs[0]) == 16


def test_the_experiment_opens_in_the_model_training_view_with_the_trials_table(ray_session, tmp_path: Path):
    result = run_job(small_spec(tmp_path, name="view", trial={"epochs": 1}), output_root=tmp_path / "out")
    experiment = MlflowClient(result.tracking_uri).get_experiment(result.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{result.parent_run_id}"])
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    assert view["orderByKey"] == "metrics.`val_loss`" and "params.`lr`" in view["selectedColumns"]
    assert result.view.endswith(f"viewStateShareKey={result.parent_run_id}&workflowType=machine_learning")


def test_cost_is_counted_and_a_wall_budget_stops_new_trials(ray_session, tmp_path: Path):
    from tests.conftest import DATA

    spec = spec_from_mapping({
        "name": "budget", "trainable": "toy_trainable:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "score", "mode": "min", "fixed": {"epochs": 2, "sleep": 0.4},
        "search": {"algorithm": "random", "num_samples": 40, "max_concurrent": 2,
                   "space": {"x": {"uniform": [0, 1]}}, "budget": {"wall_s": 4}},
        "trial": {"resources": {"cpu": 0.5}}, "ensemble": {"top_k": 0}})
    result = run_job(spec, output_root=tmp_path / "out")
    _, parent, runs = children(result.tracking_uri, result.parent_run_id)
    assert 2 <= len(runs) < 40 and parent.data.tags["tuner.budget"].startswith("spent: wall_s 4;")
    assert result.budget_spent == parent.data.tags["tuner.budget"]
    for run in runs:  # each trial's cost: its training wall time, times the CPUs it held
        assert run.data.metrics["trial_wall_s"] >= 0.8
        assert run.data.metrics["cpu_s"] == pytest.approx(run.data.metrics["trial_wall_s"] * 0.5)
        assert run.data.metrics["gpu_s"] == 0
    total = sum(r.data.metrics["trial_wall_s"] for r in runs) / 3600
    assert parent.data.metrics["trial_hours"] == pytest.approx(total) and parent.data.metrics["gpu_hours"] == 0


def test_a_study_in_a_postgresql_database_of_its_own(ray_session, tmp_path: Path, postgres_db: str):
    spec = small_spec(tmp_path, name="pg", trial={"epochs": 1}, search={"num_samples": 2, "storage": postgres_db})
    result = run_job(spec, output_root=tmp_path / "out")
    from tuner.folders import RunFolder

    assert stored_study(RunFolder(result.run_folder))[0] == postgres_db
    study = study_of(result)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert not (result.run_folder / "study.log").exists()  # nothing of the study in the run folder
