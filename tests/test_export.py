"""`tuner export`: the best trial's config out of MLflow, as a spec that validates and replays it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import EXAMPLES
from tuner.errors import NotFoundError, UserError
from tuner.export import best_spec, write_spec
from tuner.run import trial_config
from tuner.spec import load_spec
from tuner.tracking import start_parent_run

BEST = {"lr": 0.0123, "optimizer": "nesterov", "init": "kaiming", "dropout": 0.25, "clip": None,
        "lr_decay": 0.95, "weight_decay": 1e-5, "batchnorm": True, "momentum": 0.9}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str, str]:
    """A store with two runs of digits-mlp: the older has a best trial, the newer has none yet."""
    folder = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    spec = load_spec(EXAMPLES / "digits-mlp.yaml")
    _, finished = start_parent_run(tracking_uri=uri, experiment="digits-mlp", job_name="digits-mlp", params={},
                                   spec_yaml=spec.to_yaml(), tags={})
    config = {**spec.trial_config(), **{k: v for k, v in BEST.items() if k in spec.space}}
    MlflowClient(uri).set_tag(finished, "best_config", json.dumps(config))
    MlflowClient(uri).set_tag(finished, "best_trial", "trial-007")
    _, running = start_parent_run(tracking_uri=uri, experiment="digits-mlp", job_name="digits-mlp", params={},
                                  spec_yaml=spec.to_yaml(), tags={})
    return uri, finished, running


def test_the_exported_spec_validates_and_its_config_is_the_best_trials(store, tmp_path: Path):
    uri, finished, _ = store
    spec = best_spec(uri, finished)
    path = tmp_path / "best.yaml"
    write_spec(spec, path, fmt="yaml", force=False)
    assert path.read_text().startswith(f"# The best trial (trial-007) of MLflow run {finished}")
    exported = load_spec(path)
    assert exported.search.num_samples == 1 and exported.ensemble.top_k == 0
    config = trial_config(exported)
    assert {k: config[k] for k in exported.space} == {k: v for k, v in BEST.items() if k in exported.space}


def test_json_export_is_the_same_spec(store, tmp_path: Path):
    uri, finished, _ = store
    write_spec(best_spec(uri, finished), tmp_path / "best.yaml", fmt="yaml", force=False)
    write_spec(best_spec(uri, finished), tmp_path / "best.json", fmt="json", force=False)
    assert load_spec(tmp_path / "best.json") == load_spec(tmp_path / "best.yaml")


def test_a_job_name_exports_its_newest_run_which_has_no_best_trial_yet(store):
    uri, _, running = store
    with pytest.raises(NotFoundError, match=f"run {running} has no finished trial"):
        best_spec(uri, "digits-mlp")


def test_an_existing_file_needs_force(store, tmp_path: Path):
    uri, finished, _ = store
    path = tmp_path / "best.yaml"
    path.write_text("mine\n")
    with pytest.raises(UserError, match="exists; pass --force"):
        write_spec(best_spec(uri, finished), path, fmt="yaml", force=False)
    assert path.read_text() == "mine\n"
    write_spec(best_spec(uri, finished), path, fmt="yaml", force=True)
    assert load_spec(path).search.num_samples == 1


@pytest.mark.parametrize("job", ["no-such-job", "x'; drop", "f" * 32])
def test_unknown_jobs_are_not_found(store, job: str):
    with pytest.raises(NotFoundError):
        best_spec(store[0], job)


@pytest.mark.parametrize("history", [None, 500])
def test_an_exported_tpe_job_with_any_history_setting_loads(tmp_path: Path, history):
    """The replay draws its one config at random: a TPE job's tpe_history must not come along (a
    random search refuses a non-default one)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_spec(EXAMPLES / "digits-mlp.yaml")
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"tpe_history": history})})
    _, run = start_parent_run(tracking_uri=uri, experiment="digits-mlp", job_name="digits-mlp", params={},
                              spec_yaml=spec.to_yaml(), tags={})
    MlflowClient(uri).set_tag(run, "best_config", json.dumps({**spec.trial_config(), "lr": 0.01}))
    write_spec(best_spec(uri, run), tmp_path / "best.yaml", fmt="yaml", force=False)
    exported = load_spec(tmp_path / "best.yaml")
    assert exported.search.algorithm == "random" and exported.search.tpe_history == 1000
