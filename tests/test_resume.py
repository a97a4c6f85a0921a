"""Crash and resume: kill -9 the driver mid-job; `tuner resume` finishes it under the same parent run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.conftest import DATA
from tuner.study import open_storage
from tuner.tracking import PARENT_TAG

pytestmark = pytest.mark.slow
NUM_SAMPLES = 6


def _ops(events_file: Path) -> list[str]:
    ops = []
    for line in events_file.read_text().splitlines():
        try:
            ops.append(json.loads(line)["op"])
        except json.JSONDecodeError:
            break  # a line being written
    return ops


def _study(folder: Path) -> tuple[str, str]:
    state = json.loads((folder / "job.json").read_text())
    return state["study_storage"], state["study_name"]


def _ended(events_file: Path) -> int:
    return _ops(events_file).count("trial_end") if events_file.exists() else 0


def _mid_training(events_file: Path) -> bool:
    """Two trials ended and the running ones have reported twice since the last trial started or ended."""
    ops = _ops(events_file)
    boundaries = [i for i, op in enumerate(ops) if op in ("trial_start", "trial_end")]
    return ops.count("trial_end") >= 2 and ops[boundaries[-1] + 1 :].count("metrics") >= 2


def _at_a_trial_end(events_file: Path) -> bool:
    """Two trials ended, the second just now: Tune is ending one trial and starting the next (the
    moment a background snapshot used to miss)."""
    return _ops(events_file).count("trial_end") >= 2


@pytest.mark.parametrize("moment", [_mid_training, _at_a_trial_end], ids=["mid-training", "at-a-trial-end"])
def test_kill_driver_then_resume_finishes_every_trial_once(tmp_path: Path, moment):
    (tmp_path / "job.yaml").write_text(
        f"name: crashy\ntrainable: toy_trainable:train\ncode_dir: {DATA / 'user_trainables'}\n"
        "metric: score\nmode: min\n"
        f"search: {{algorithm: tpe, num_samples: {NUM_SAMPLES}, max_concurrent: 2, space: {{x: {{uniform: [0, 1]}}}}}}\n"
        "fixed: {epochs: 4, sleep: 0.5}\nensemble: {top_k: 0}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cli = [sys.executable, "-m", "tuner.cli"]
    driver = subprocess.Popen([*cli, "run", "job.yaml"], cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        events = None
        while time.monotonic() < deadline:
            found = list((tmp_path / "tuner_runs" / "crashy").glob("*/tracking/events.jsonl"))
            events = found[0] if found else None
            if events and moment(events):
                break
            time.sleep(0.05)
        assert events is not None and moment(events), "the job did not get going"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, as a crash would
        driver.wait()
    ended_before = _ended(events)
    assert ended_before < NUM_SAMPLES
    folder = events.parent.parent
    storage, study_name = _study(folder)
    told_before = {t.number: t.value for t in optuna.load_study(study_name=study_name, storage=open_storage(storage)).trials
                   if t.state == optuna.trial.TrialState.COMPLETE}

    resumed = subprocess.run([*cli, "resume", str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=240, start_new_session=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"crashy: {NUM_SAMPLES} trials: {NUM_SAMPLES} finished" in resumed.stdout

    state = json.loads((folder / "job.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    parents = client.search_runs([state["experiment_id"]], filter_string="tags.`tuner.job` = 'crashy'")
    assert [p.info.run_id for p in parents] == [state["parent_run_id"]]  # the same parent, not a new one
    children = client.search_runs([state["experiment_id"]],
                                  filter_string=f"tags.`{PARENT_TAG}` = '{state['parent_run_id']}'")
    names = sorted(r.info.run_name for r in children)
    assert names == [f"trial-{i:03d}" for i in range(1, NUM_SAMPLES + 1)]  # none missing, none duplicated
    assert all(r.info.status == "FINISHED" for r in children)
    # Each trial ended once in the journal: one that ended before the crash was not journaled again,
    # whatever Tune re-ran; one Tune forgot (started after its last snapshot) is marked forgotten, its
    # run deleted, and the trial Tune ran in its place is the one counted.
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    forgotten = {e["trial"] for e in lines if e["op"] == "trial_forget"}
    ends = {}
    for event in lines:
        if event["op"] == "trial_end" and event["trial"] not in forgotten:
            ends[event["trial"]] = ends.get(event["trial"], 0) + 1
    assert all(count == 1 for count in ends.values()) and len(ends) == NUM_SAMPLES
    deleted = client.search_runs([state["experiment_id"]], run_view_type=ViewType.DELETED_ONLY,
                                 filter_string=f"tags.`{PARENT_TAG}` = '{state['parent_run_id']}'")
    assert {r.data.tags["tuner.trial_id"] for r in deleted} <= forgotten
    # The search went on from the stored study: what it was told before the crash is still there, and
    # each of the job's trials was told once (a re-run of a trial it already had is not told again; a
    # trial Tune forgot may have been told before the crash, a real evaluation the sampler keeps).
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    complete = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(complete.get(n) == value for n, value in told_before.items())
    assert NUM_SAMPLES <= len(complete) <= NUM_SAMPLES + len(forgotten)
