"""The stored Optuna study: where it lives, MLflow params read back into configs, trials left RUNNING."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from search_spaces import parse_space
from tuner.errors import NotFoundError
from tuner.folders import RunFolder
from tuner.study import close_unfinished, stored_study, typed_params

SPACE = parse_space({"optimizer": {"choice": ["adam", "momentum"]},
                     "momentum": {"uniform": [0.5, 0.99], "when": {"optimizer": ["momentum"]}},
                     "clip": {"choice": [None, 1.0]}, "batchnorm": {"choice": [False, True]},
                     "depth": {"randint": [1, 4]}})


def test_mlflow_params_read_back_into_a_config_typed_by_the_space():
    assert typed_params(SPACE, {"optimizer": "momentum", "momentum": "0.9", "clip": "null", "batchnorm": "True",
                                "depth": "3", "lr": "0.1"}) == {
        "optimizer": "momentum", "momentum": 0.9, "clip": None, "batchnorm": True, "depth": 3}
    # A conditional key the trial did not sample is absent, not missing.
    assert typed_params(SPACE, {"optimizer": "adam", "clip": "1.0", "batchnorm": "False", "depth": "1"}) == {
        "optimizer": "adam", "clip": 1.0, "batchnorm": False, "depth": 1}


@pytest.mark.parametrize("params", [
    {"optimizer": "sgd", "clip": "null", "batchnorm": "True", "depth": "3"},  # not a choice of this space
    {"optimizer": "momentum", "clip": "null", "batchnorm": "True", "depth": "3"},  # momentum missing
    {"optimizer": "adam", "clip": "null", "batchnorm": "True", "depth": "9"},  # out of range
    {"optimizer": "adam", "clip": "null", "batchnorm": "True", "depth": "2.5"},  # not an integer
])
def test_a_trial_that_does_not_fit_the_space_is_none(params):
    assert typed_params(SPACE, params) is None


def test_trials_left_running_are_ended_failed(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    done, forgotten = study.ask(), study.ask()
    study.tell(done, 0.5)
    close_unfinished(url, "s")
    states = {t.number: t.state for t in optuna.load_study(study_name="s", storage=url).trials}
    assert states == {done.number: optuna.trial.TrialState.COMPLETE, forgotten.number: optuna.trial.TrialState.FAIL}
    close_unfinished(url, "never-started")  # a job whose search never began: nothing to do


def test_the_dashboard_finds_a_runs_study_or_says_why_not(tmp_path: Path):
    folder = RunFolder(tmp_path)
    folder.write_state(tracking_uri="sqlite:///x.db", experiment_id="1", parent_run_id="p")
    with pytest.raises(NotFoundError, match="no stored study"):
        stored_study(folder)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    folder.write_state(study_storage=url, study_name="j-1")
    with pytest.raises(NotFoundError, match="no study j-1"):
        stored_study(folder)
    optuna.create_study(storage=url, study_name="j-1")
    assert stored_study(folder) == (url, "j-1")
    assert json.loads(folder.state.read_text())["study_name"] == "j-1"
