"""A finished job's report: trials ranked by their best epoch, trials.csv and Optuna's plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuner.report import rank_trials, write_report
from tuner.spec import spec_from_mapping


@dataclass
class Result:
    """The parts of a `ray.tune.Result` the report reads."""

    trial_id: str
    index: int
    losses: list[float]
    config: dict
    error: Exception | None = None
    best_checkpoints: list = field(default_factory=list)
    path: str = "/nowhere"

    @property
    def metrics(self) -> dict:
        if self.index == 0:  # Ray's result of a trial that never reported: no metrics, so no config
            return {}
        return {"trial_id": self.trial_id, "experiment_tag": f"{self.index}_lr={self.config['lr']}",
                "training_iteration": len(self.losses)}

    @property
    def metrics_dataframe(self):
        if self.index == 0:
            return None
        return pd.DataFrame({"val_loss": self.losses}) if self.losses else None


SPEC = spec_from_mapping({"name": "r", "search": {"space": {"lr": {"loguniform": [1e-4, 1.0]},
                                                            "optimizer": {"choice": ["sgd", "adam"]}}}})
RESULTS = [
    Result("a", 1, [0.9, 0.5, 0.7], {"lr": 0.1, "optimizer": "sgd"}),  # best epoch 0.5, not the last
    Result("b", 2, [0.8, 0.3], {"lr": 0.01, "optimizer": "adam"}),
    Result("c", 3, [float("nan")], {"lr": 1.0, "optimizer": "sgd"}),  # never a finite value
    Result("d", 4, [0.1], {"lr": 0.001, "optimizer": "adam"}, error=RuntimeError("boom")),  # failed
    Result("e", 5, [], {"lr": 0.02, "optimizer": "sgd"}),  # reported nothing
]


def test_trials_rank_by_their_best_epoch_and_failed_or_empty_ones_are_left_out():
    ranked = rank_trials(RESULTS, metric="val_loss", mode="min")
    assert [(r.trial, r.value, r.epochs) for r in ranked] == [("trial-002", 0.3, 2), ("trial-001", 0.5, 3)]
    assert ranked[0].config == {"lr": 0.01, "optimizer": "adam"} and ranked[0].checkpoint is None
    assert [r.trial for r in rank_trials(RESULTS, metric="val_loss", mode="max")] == ["trial-001", "trial-002"]


def test_the_report_writes_every_trial_to_csv_and_draws_the_plots(tmp_path: Path):
    ranked = rank_trials(RESULTS, metric="val_loss", mode="min")
    statuses = {"trial-001": "FINISHED", "trial-002": "FINISHED", "trial-003": "FINISHED", "trial-004": "FAILED",
                "trial-005": "KILLED"}
    written = write_report(SPEC, RESULTS, ranked, statuses, tmp_path)
    assert {p.name for p in written} == {"trials.csv", "optimization_history.png", "parallel_coordinate.png",
                                         "param_importances.png"}
    assert all(p.stat().st_size > 0 for p in written)
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert list(rows["trial"]) == [f"trial-00{i}" for i in range(1, 6)]
    assert list(rows["status"]) == ["FINISHED", "FINISHED", "FINISHED", "FAILED", "KILLED"]
    assert rows["best_val_loss"].tolist()[:2] == [0.5, 0.3] and list(rows.columns)[-2:] == ["lr", "optimizer"]


def test_one_finished_trial_makes_a_csv_and_no_plots(tmp_path: Path):
    written = write_report(SPEC, RESULTS[:1], rank_trials(RESULTS[:1], metric="val_loss", mode="min"),
                           {"trial-001": "FINISHED"}, tmp_path)
    assert [p.name for p in written] == ["trials.csv"]


def test_a_stopped_jobs_trials_that_never_reported_are_rows_only_if_they_started(tmp_path: Path):
    """`tuner stop` can end a trial before its first epoch (Ray's result has no metrics and no config)
    and leave others pending (never started: no trial of the job's, in no row)."""
    results = RESULTS[:2] + [Result("f", 0, [], None, path="/runs/ray/trial-006"),  # type: ignore[arg-type]
                             Result("g", 0, [], None, path="/runs/ray/trial-007")]  # type: ignore[arg-type]
    statuses = {"trial-001": "FINISHED", "trial-002": "FINISHED", "trial-006": "KILLED"}
    written = write_report(SPEC, results, rank_trials(results, metric="val_loss", mode="min"), statuses, tmp_path)
    assert "parallel_coordinate.png" in {p.name for p in written}
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert list(rows["trial"]) == ["trial-001", "trial-002", "trial-006"]
    assert list(rows["status"]) == ["FINISHED", "FINISHED", "KILLED"]
    assert rows["lr"].isna().tolist() == [False, False, True]
