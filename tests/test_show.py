"""`tuner runs` and `tuner show`: jobs and trials read back from a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.errors import NotFoundError
from tuner.show import job_runs, job_trials
from tuner.tracking import start_parent_run, sync
from tuner.tracking.journal import Journal


def make_job(tmp_path: Path, name: str = "j") -> tuple[str, str, str]:
    """A store holding one job: a parent run and two child trials delivered from a journal."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(tracking_uri=store, experiment=name, job_name=name,
                                             params={"metric": "val_loss", "space": "lr,clip"},
                                             spec_yaml=f"name: {name}\n", tags={})
    journal = Journal(tmp_path / name)
    for n, (lr, loss, status) in enumerate([(0.1, 0.5, "FINISHED"), (0.01, 0.3, "FAILED")], start=1):
        journal.append({"op": "trial_start", "time": n, "trial": f"t{n}", "name": f"trial-00{n}",
                        "params": {"lr": lr, "clip": None}})
        journal.append({"op": "metrics", "time": n, "trial": f"t{n}", "step": 1, "values": {"val_loss": loss}})
        journal.append({"op": "trial_end", "time": n, "trial": f"t{n}", "status": status,
                        "tags": {"tuner.end": status.lower()}})
    journal.append({"op": "parent", "time": 9, "metrics": {"best_val_loss": 0.3}, "tags": {"best_trial": "trial-002"}})
    journal.close()
    assert sync(tmp_path / name, tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent) == (7, 0)
    return store, experiment_id, parent


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[str, str, str]:
    return make_job(tmp_path_factory.mktemp("show"))


def test_runs_lists_each_job_with_its_best_value(job):
    store, _, parent = job
    (row,) = job_runs(store)
    assert row[0] == "j" and row[1] == parent and row[3] == "RUNNING" and row[4] == "val_loss=0.3000"


def test_show_lists_the_trials_with_status_metric_end_and_searched_params(job):
    store, _, parent = job
    for name in ("j", parent):  # by name or by parent run id
        title, columns, rows = job_trials(store, name)
        assert title.startswith(f"j: run {parent}") and title.endswith("2 trials")
        assert columns == ["trial", "status", "last val_loss", "end", "lr", "clip"]
        assert rows == [("trial-001", "FINISHED", "0.5000", "finished", "0.1", "null"),
                        ("trial-002", "FAILED", "0.3000", "failed", "0.01", "null")]


@pytest.mark.parametrize("name", ["nope", "a' OR '1'='1", "0" * 32])
def test_show_of_an_unknown_job_or_a_filter_injection_is_not_found(job, name: str):
    with pytest.raises(NotFoundError):
        job_trials(job[0], name)


def test_runs_on_an_empty_store_is_empty(tmp_path: Path):
    assert job_runs(f"sqlite:///{tmp_path / 'empty.db'}") == []
