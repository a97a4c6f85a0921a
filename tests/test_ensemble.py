"""The ensemble of the best trials: scores, members, and the reasons it can be absent."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tuner.ensemble import _scores, build_ensemble, code_paths
from tuner.spec import spec_from_mapping
from tuner.tracking import RankedTrial


class Recorder:
    """A stand-in for the job's tracking writer: the events the ensemble would journal."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit(self, op: str, **fields) -> None:
        self.events.append((op, fields))

    def tags(self) -> dict:
        return {k: v for op, f in self.events if op == "parent" for k, v in f.get("tags", {}).items()}

    def metrics(self) -> dict:
        return {k: v for op, f in self.events if op == "parent" for k, v in f.get("metrics", {}).items()}


def test_classification_scores_are_accuracy_and_log_loss():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    scores = _scores(probs, np.array([0, 1, 1]), "classification")
    assert scores["acc"] == pytest.approx(2 / 3)
    assert scores["loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)


def test_regression_scores_are_rmse_and_mse():
    scores = _scores(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]), "regression")
    assert scores["loss"] == pytest.approx(5 / 3) and scores["rmse"] == pytest.approx(math.sqrt(5 / 3))


def _trainable_job(top_k: int):
    return spec_from_mapping({"name": "e", "trainable": "toy_trainable:train", "metric": "score", "mode": "min",
                              "search": {"space": {"x": {"uniform": [0, 1]}}}, "ensemble": {"top_k": top_k}},
                             base_dir=Path(__file__).parent / "data" / "user_trainables")


def _members(tmp_path: Path, probs: list[np.ndarray], labels: np.ndarray) -> list[RankedTrial]:
    ranked = []
    for i, p in enumerate(probs):
        folder = tmp_path / f"t{i}"
        folder.mkdir()
        np.save(folder / "test_probs.npy", p)
        np.save(folder / "test_labels.npy", labels)
        ranked.append(RankedTrial(trial=f"trial-00{i + 1}", trial_id=f"t{i}", value=0.1 * i, epochs=3, config={},
                                  checkpoint=str(folder)))
    return ranked


def test_a_trainables_ensemble_averages_the_top_k_members_probabilities(tmp_path: Path):
    labels = np.array([0, 1, 0, 1])
    # Each member is wrong on a different example; the average of the first three is right on all four.
    probs = [np.array([[0.4, 0.6], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]]),
             np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.2, 0.8]]),
             np.array([[0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.1, 0.9]]),
             np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])]  # the worst, left out by top_k=3
    tracker = Recorder()
    result = build_ensemble(_trainable_job(3), _members(tmp_path, probs, labels), folder=None, tracker=tracker)
    assert result["members"] == ["trial-001", "trial-002", "trial-003"]
    assert result["ensemble_test_acc"] == 1.0 and result["best_single_test_acc"] == 0.75
    assert tracker.metrics()["ensemble_test_acc"] == 1.0
    assert tracker.tags()["ensemble_members"] == "trial-001,trial-002,trial-003"


def test_no_checkpoints_means_no_ensemble_with_the_reason_tagged(tmp_path: Path):
    tracker = Recorder()
    ranked = [RankedTrial("trial-001", "t0", 0.1, 3, {}, None)]
    assert build_ensemble(_trainable_job(2), ranked, folder=None, tracker=tracker) is None
    assert tracker.tags()["ensemble"].startswith("none: no trial checkpoint holds test_probs.npy")


def test_a_failure_inside_is_the_reason_and_never_fails_the_job(tmp_path: Path):
    labels = np.array([0, 1])
    ranked = _members(tmp_path, [np.ones((2, 2)) / 2, np.ones((3, 2)) / 2], labels)  # shapes disagree
    tracker = Recorder()
    assert build_ensemble(_trainable_job(2), ranked, folder=None, tracker=tracker) is None
    assert tracker.tags()["ensemble"].startswith("none: the ensemble could not be built")


def test_the_model_carries_the_top_level_modules_of_your_code_dir_only(tmp_path: Path):
    (tmp_path / "ensemble_nets.py").write_text("def build(config, input_shape, output_dim): ...\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "data").mkdir()  # not a package
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".hidden.py").write_text("")
    spec = spec_from_mapping({"name": "c", "model": "ensemble_nets:build"}, base_dir=tmp_path)
    paths = [Path(p).name for p in code_paths(spec)]
    assert paths == ["trainables", "ensemble_nets.py", "pkg"]
    assert [Path(p).name for p in code_paths(spec_from_mapping({"name": "c"}))] == ["trainables"]


def test_the_served_model_answers_every_row_of_a_large_input_scaled_as_in_training():
    """What `mlflow models serve` and `pyfunc.predict` return: one row per input row past one
    evaluation batch (only the first 1,024 came back before a fix), the members' mean."""
    import torch

    from trainables.pyfunc import predict_members
    from trainables.train import EVAL_BATCH

    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
    meta = {"task": "classification", "input_shape": [4], "output_dim": 3, "input_scaling": [1.0, 2.0]}
    rows = np.random.default_rng(0).normal(size=(2 * EVAL_BATCH + 7, 4)).astype(np.float32)
    got = predict_members(meta, members, rows)
    x = torch.from_numpy((rows - 1.0) / 2.0)
    expected = np.mean([torch.softmax(m(x), dim=1).detach().numpy() for m in members], axis=0)
    assert got.shape == (len(rows), 3) and np.allclose(got, expected, atol=1e-6)
