"""A job against a real `mlflow server` on PostgreSQL (the production backend).

Each server has a database of its own, created and dropped around it: one shared by the tests that
only talk to it, one for each outage test (which stops and starts its server). A server runs in its
own process group on a free loopback port and is stopped by that group.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import DATA, MlflowServer
from tuner.run import run_job
from tuner.spec import spec_from_mapping
from tuner.tracking import PARENT_TAG

pytestmark = pytest.mark.slow
def test_job_against_mlflow_server_on_postgresql(ray_session, mlflow_server, tmp_path):
    spec = spec_from_mapping({
        "name": "pg-job", "trainable": "toy_trainable:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "score", "mode": "min",
        "search": {"algorithm": "random", "num_samples": 4, "seed": 1, "space": {"x": {"uniform": [0.0, 1.0]}}},
        "fixed": {"epochs": 3, "fail_above": 0.6}, "ensemble": {"top_k": 0},
        "mlflow": {"tracking_uri": mlflow_server}})
    result = run_job(spec, output_root=tmp_path)
    assert result.undelivered == 0
    client = MlflowClient(mlflow_server)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert len(children) == 4 == len(result.statuses)
    assert {r.info.run_name: r.info.status for r in children} == result.statuses
    assert "FAILED" in result.statuses.values() and "FINISHED" in result.statuses.values()
    done = next(r for r in children if r.info.status == "FINISHED")
    assert [m.step for m in client.get_metric_history(done.info.run_id, "score")] == [1, 2, 3]
    assert "best_score" in parent.data.metrics
    assert "report/trials.csv" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}


def _outage_spec(url: str, *, num_samples: int, flush_timeout_s: float = 30):
    return spec_from_mapping({
        "name": "outage", "trainable": "toy_trainable:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "score", "mode": "min",
        "search": {"algorithm": "random", "num_samples": num_samples, "seed": 2,
                   "space": {"x": {"uniform": [0.0, 1.0]}}},
        "fixed": {"epochs": 6, "sleep": 0.6, "fail_above": 0.8}, "ensemble": {"top_k": 0},
        "mlflow": {"tracking_uri": url, "flush_timeout_s": flush_timeout_s}})


def _stop_after_first_delivery(server: MlflowServer, output_root: Path, *, restart_after_s: float | None) -> dict:
    """In a thread: stop the server once the job delivered something; maybe start it again later."""
    seen: dict = {}

    def outage() -> None:
        deadline = time.monotonic() + 120
        while not list(output_root.glob("outage/*/tracking/delivered")) and time.monotonic() < deadline:
            time.sleep(0.2)
        server.stop()
        seen["stopped"] = time.monotonic()
        seen["journal"] = next(output_root.glob("outage/*/tracking/events.jsonl"))
        seen["events_at_stop"] = len(seen["journal"].read_text().splitlines())
        if restart_after_s is not None:
            time.sleep(restart_after_s)
            seen["events_at_restart"] = len(seen["journal"].read_text().splitlines())
            server.start()
            seen["restarted"] = time.monotonic()

    seen["thread"] = threading.Thread(target=outage, daemon=True)
    seen["thread"].start()
    return seen


def _assert_all_delivered(url: str, result, *, trials: int, epochs: int) -> None:
    client = MlflowClient(url)
    parent = client.get_run(result.parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert len(runs) == trials == len(result.statuses)
    assert {r.info.run_name: r.info.status for r in runs} == result.statuses
    for run in runs:
        assert "x" in run.data.params
        if run.info.status == "FINISHED":
            assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == list(range(1, epochs + 1))
    assert parent.info.status == "FINISHED" and "best_score" in parent.data.metrics


def test_server_stopped_mid_job_and_back_20s_later_loses_nothing(ray_session, server, tmp_path):
    """Issue 6.3: stop `mlflow server` mid-job, start it 20 s later: the job goes on, nothing is lost."""
    spec = _outage_spec(server.url, num_samples=10)
    seen = _stop_after_first_delivery(server, tmp_path, restart_after_s=20)
    result = run_job(spec, output_root=tmp_path)
    finished = time.monotonic()
    seen["thread"].join(timeout=120)
    # Mid-job means: stopped and started again while run_job was still running (how many seconds in
    # depends on the machine; CI's 2 busy cores took 16 s to the first delivery).
    assert "restarted" in seen and seen["restarted"] < finished, seen
    assert seen["events_at_restart"] > seen["events_at_stop"], "no event was journaled during the outage"
    assert result.succeeded and result.undelivered == 0
    _assert_all_delivered(server.url, result, trials=10, epochs=6)


def test_server_that_never_returns_leaves_events_for_tuner_sync(ray_session, server, tmp_path):
    from typer.testing import CliRunner

    from tuner.cli import _print_result, app

    spec = _outage_spec(server.url, num_samples=4, flush_timeout_s=2)
    seen = _stop_after_first_delivery(server, tmp_path, restart_after_s=None)
    result = run_job(spec, output_root=tmp_path)
    seen["thread"].join(timeout=120)
    assert result.succeeded and result.undelivered > 0
    folder = result.run_folder
    assert json.loads((folder / "job.json").read_text())["undelivered"] == result.undelivered

    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        _print_result(result, spec)
    lines = [line for line in console.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and f"{result.undelivered} tracking events were not delivered" in lines[0]
    assert f"tuner sync {folder}" in lines[0]

    server.start()
    synced = CliRunner().invoke(app, ["sync", str(folder)])
    assert synced.exit_code == 0, synced.output
    assert "; 0 left" in synced.output
    _assert_all_delivered(server.url, result, trials=4, epochs=6)


def test_credentials_from_the_environment_are_never_logged(ray_session, mlflow_server, tmp_path, monkeypatch):
    secrets = {"MLFLOW_TRACKING_USERNAME": "user-8c1f2e", "MLFLOW_TRACKING_PASSWORD": "pw-5d7a9b31",
               "MLFLOW_TRACKING_TOKEN": "tok-0e4c6f77"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    spec = _outage_spec(mlflow_server, num_samples=2)
    result = run_job(spec, output_root=tmp_path)
    assert result.undelivered == 0
    client = MlflowClient(mlflow_server)
    parent = client.get_run(result.parent_run_id)
    runs = [parent, *client.search_runs([parent.info.experiment_id],
                                        filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")]
    assert len(runs) == 3
    logged = []
    for run in runs:
        logged += [*run.data.params.items(), *run.data.tags.items()]
    logged.append(client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path / "dl")))
    text = "\n".join(f"{k}={v}" for k, v in logged[:-1]) + Path(logged[-1]).read_text()
    text += "".join(p.read_text() for p in (tmp_path / "outage").rglob("*.jsonl"))
    assert "x=" in text  # the scan saw the trials' params
    for key, value in secrets.items():
        assert value not in text and key not in text


def test_a_password_in_the_tracking_uri_is_in_no_file_and_no_message(ray_session, mlflow_server, tmp_path,
                                                                       monkeypatch):
    """$MLFLOW_TRACKING_URI with user:password: the job runs, and nothing it writes holds the password
    (job.json, the journal, Tune's pickled experiment, the spec); `tuner sync` gets it back from the
    variable."""
    from typer.testing import CliRunner

    from tuner.cli import _print_result, app

    password = "pw-3f9a1c77"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.replace("http://", f"http://alice:{password}@"))
    spec = _outage_spec(mlflow_server, num_samples=2)
    spec = spec.model_copy(update={"mlflow": spec.mlflow.model_copy(update={"tracking_uri": None})})
    result = run_job(spec, output_root=tmp_path)
    assert result.succeeded and result.undelivered == 0
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        _print_result(result, spec)
    assert "alice:***@" in console.getvalue() and password not in console.getvalue()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "tuner.pkl" for p in written) and any(p.name == "job.json" for p in written)
    assert not [p for p in written if password.encode() in p.read_bytes()]
    synced = CliRunner().invoke(app, ["sync", str(result.run_folder)])
    assert synced.exit_code == 0 and password not in synced.output, synced.output
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    refused = CliRunner().invoke(app, ["sync", str(result.run_folder)])
    assert refused.exit_code == 2 and "needs its password" in refused.output
