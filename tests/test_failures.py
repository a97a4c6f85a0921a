"""Failing trials are recorded and the search goes on: retries from a checkpoint, out of memory."""

from __future__ import annotations

import pytest

from tests.conftest import DATA, children
from tuner.run import run_job
from tuner.spec import spec_from_mapping

pytestmark = pytest.mark.slow
USER_CODE = DATA / "user_trainables"


def _spec(trainable: str, fixed: dict, *, num_samples: int, max_failures: int = 0, values=None):
    space = {"x": {"choice": values}} if values else {"x": {"uniform": [0.0, 1.0]}}
    return spec_from_mapping({
        "name": "fails", "trainable": trainable, "code_dir": str(USER_CODE), "metric": "score", "mode": "min",
        "search": {"algorithm": "random", "num_samples": num_samples, "max_concurrent": 2, "seed": 5, "space": space},
        "trial": {"max_failures": max_failures}, "fixed": fixed, "ensemble": {"top_k": 0}})


def _run_flaky(tmp_path, *, die_after: int, max_failures: int):
    """One 5-epoch trial whose worker kills itself after ``die_after`` epochs the first time; (result, marker dir)."""
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    spec = _spec("flaky_trainable:train", {"epochs": 5, "die_after": die_after, "marker_dir": str(marker_dir)},
                 num_samples=1, max_failures=max_failures, values=[0.5])
    return run_job(spec, output_root=tmp_path / "runs"), marker_dir


def test_max_failures_retries_a_dead_worker_from_its_last_checkpoint(ray_session, tmp_path):
    result, marker_dir = _run_flaky(tmp_path, die_after=3, max_failures=1)
    assert list(marker_dir.iterdir()), "the worker never died: the test proves nothing"
    assert result.statuses == {"trial-001": "FINISHED"}
    client, _, (child,) = children(result.tracking_uri, result.parent_run_id)  # one run, not one per attempt
    assert child.info.status == "FINISHED"
    started = client.get_metric_history(child.info.run_id, "started_at_epoch")
    assert sorted({m.value for m in started}) == [0.0, 3.0]  # the retry resumed after epoch 3, not from 0
    assert max(m.step for m in client.get_metric_history(child.info.run_id, "score")) == 5


def test_without_retries_a_dead_worker_fails_the_trial(ray_session, tmp_path):
    result, _ = _run_flaky(tmp_path, die_after=2, max_failures=0)
    assert result.statuses == {"trial-001": "FAILED"} and not result.succeeded
    _, parent, (child,) = children(result.tracking_uri, result.parent_run_id)
    assert child.info.status == "FAILED" and child.data.tags["error"]
    assert parent.info.status == "FAILED"


def test_out_of_memory_fails_the_trial_with_the_reason_and_the_search_goes_on(ray_session, tmp_path):
    spec = _spec("toy_trainable:train", {"epochs": 2, "oom_above": 0.5}, num_samples=4, values=[0.1, 0.9])
    result = run_job(spec, output_root=tmp_path)
    assert result.succeeded
    client, _, runs = children(result.tracking_uri, result.parent_run_id)
    assert len(runs) == 4
    by_status = {status: [r for r in runs if r.info.status == status] for status in ("FAILED", "FINISHED")}
    assert by_status["FAILED"] and by_status["FINISHED"]
    for run in by_status["FAILED"]:
        assert run.data.params["x"] == "0.9"
        assert "memory" in run.data.tags["error"].lower(), run.data.tags["error"]
    assert all(r.data.params["x"] == "0.1" for r in by_status["FINISHED"])
