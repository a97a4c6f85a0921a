"""How a job starts: MLflow's parent run is made while Ray starts (tuner.job.Job.fit), Tune may start
before it exists, and either failing is told the way it was when they ran one after the other. Ray is
replaced by a stand-in session here; the real one runs in every other job test."""

from __future__ import annotations

import contextlib
import json
import socket
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import DATA
from tuner import job as job_module
from tuner.errors import UserError
from tuner.job import JobFailed
from tuner.run import run_job
from tuner.spec import spec_from_mapping


def _spec(tracking_uri: str):
    return spec_from_mapping({
        "name": "starts", "trainable": "toy_trainable:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "score", "mode": "min", "search": {"num_samples": 1, "space": {"x": {"uniform": [0, 1]}}},
        "ensemble": {"top_k": 0}, "mlflow": {"tracking_uri": tracking_uri}})


@pytest.fixture(autouse=True)
def _the_job_starts_ray(monkeypatch):
    """The stand-in Ray below is one the job starts, so its parent run is made beside that start, at
    once; the suite's in-process Ray (the `ray_session` fixture of other files) may be up meanwhile,
    and a job on a Ray already up leaves its parent run for the first trial's start."""
    monkeypatch.setattr(job_module, "_ray_is_up", lambda spec, service: False)


class StandInRay:
    """A Ray session that records its start and end, or fails to start."""

    def __init__(self, fails: BaseException | None = None) -> None:
        self.fails, self.entered, self.exited = fails, 0, 0

    @contextlib.contextmanager
    def __call__(self, spec, folder, *, verbose, service=None):
        self.entered += 1
        if self.fails is not None:
            raise self.fails
        try:
            yield
        finally:
            self.exited += 1


def test_ray_failing_to_start_fails_the_job_with_the_reason_on_its_parent_run(tmp_path, monkeypatch):
    ray = StandInRay(fails=ConnectionError("no Ray cluster answers at 10.9.9.9:6379"))
    monkeypatch.setattr(job_module, "ray_session", ray)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(JobFailed, match=r"the job failed: ConnectionError: no Ray cluster answers at 10\.9\.9\.9:6379"):
        run_job(_spec(store), output_root=tmp_path / "runs")
    assert ray.entered == 1
    (folder,) = (tmp_path / "runs" / "starts").iterdir()
    state = json.loads((folder / "job.json").read_text())
    parent = MlflowClient(store).get_run(state["parent_run_id"])  # the parent run was made meanwhile, then failed
    assert parent.info.status == "FAILED"
    assert "no Ray cluster answers" in parent.data.tags["error"]
    assert state["status"] == "failed"


def test_sigterm_before_tunes_loop_ends_the_parent_run_killed_not_failed(tmp_path, monkeypatch, caplog):
    """Ray's SIGTERM handler in the driver raises SystemExit(15); before Tune's loop (here: while the
    job builds its factories) that is the job being stopped, not failing: its parent run ends KILLED.
    It ended FAILED with 'SystemExit: 15' (tried on 2026-12-07, SIGTERM 9 and 12 s into a job), and
    then printed nothing and exited 15. It says what happened and what to run, and exits 143, as a
    SIGTERM in Tune's loop does."""
    ray = StandInRay()
    monkeypatch.setattr(job_module, "ray_session", ray)

    def sigterm_meanwhile(spec):
        raise SystemExit(15)

    monkeypatch.setattr(job_module, "factories", sigterm_meanwhile)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(SystemExit) as raised:
        run_job(_spec(store), output_root=tmp_path / "runs")
    assert raised.value.code == 143
    (folder,) = (tmp_path / "runs" / "starts").iterdir()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tuner.job"]
    assert line == f"starts: stopped (SIGTERM, e.g. tuner stop); parent run KILLED; no trial started; run it again: tuner run {folder / 'spec.yaml'}"
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == "killed" and not (folder / "error.txt").exists()
    assert MlflowClient(store).get_run(state["parent_run_id"]).info.status == "KILLED"
    assert (ray.entered, ray.exited) == (1, 1)


def test_sigterm_while_the_parent_run_is_made_ends_it_killed(tmp_path, monkeypatch, caplog):
    """A SIGTERM while the parent run is made (in a thread beside Ray's start; the job goes on
    towards Tune meanwhile) let Ray's SystemExit(15) past the job: the run, made all the same, stayed
    RUNNING. Now the stopped job waits for the run and ends it KILLED, with the one line, exit 143."""
    import os
    import signal
    import time

    monkeypatch.setattr(job_module, "ray_session", StandInRay())
    make_parent, make_factories = job_module.Job._start_parent_run, job_module.factories

    def slow_parent(self, checks):
        time.sleep(0.3)  # the main thread waits for the slow factories below by then
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread
        time.sleep(1.0)
        return make_parent(self, checks)

    def slow_factories(spec):
        time.sleep(1.5)
        return make_factories(spec)

    monkeypatch.setattr(job_module.Job, "_start_parent_run", slow_parent)
    monkeypatch.setattr(job_module, "factories", slow_factories)
    rays_handler = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as Ray's driver has
    store = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        with pytest.raises(SystemExit) as raised:
            run_job(_spec(store), output_root=tmp_path / "runs")
    finally:
        signal.signal(signal.SIGTERM, rays_handler)
    assert raised.value.code == 143
    (folder,) = (tmp_path / "runs" / "starts").iterdir()
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == "killed"
    assert MlflowClient(store).get_run(state["parent_run_id"]).info.status == "KILLED"
    assert [r.getMessage() for r in caplog.records if r.name == "tuner.job"] == [
        f"starts: stopped (SIGTERM, e.g. tuner stop); parent run KILLED; no trial started; run it again: tuner run {folder / 'spec.yaml'}"]


class StandInTune:
    """`make_tuner`'s stand-in: its loop calls the callbacks' `on_step_begin` as Tune's does, until one
    raises (at most 30 s), so that no Ray starts in this process."""

    def __init__(self, spec, folder, callbacks, made, *, searcher, verbose) -> None:
        self.callbacks = callbacks

    def fit(self):
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for callback in self.callbacks:
                callback.on_step_begin(0, [])
            time.sleep(0.05)
        raise AssertionError("no callback stopped the stand-in Tune's loop")


def test_a_store_that_refuses_the_job_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Tune starts while the parent run is made: the refusal stops its loop and leaves nothing."""
    ray = StandInRay()
    monkeypatch.setattr(job_module, "ray_session", ray)
    monkeypatch.setattr(job_module, "make_tuner", StandInTune)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(UserError) as raised:
        run_job(_spec(f"http://127.0.0.1:{closed}"), output_root=tmp_path / "runs")
    assert not isinstance(raised.value, JobFailed)  # no parent run exists to fail
    assert f"127.0.0.1:{closed}" in str(raised.value) and "\n" not in str(raised.value)
    assert (ray.entered, ray.exited) == (1, 1)  # Ray started beside the store and was stopped
    assert list((tmp_path / "runs" / "starts").iterdir()) == []  # no run folder left


def test_a_store_that_refuses_while_ray_fails_too_names_both_in_one_line(tmp_path, monkeypatch):
    ray = StandInRay(fails=ConnectionError("no Ray cluster answers at 10.9.9.9:6379"))
    monkeypatch.setattr(job_module, "ray_session", ray)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(UserError) as raised:
        run_job(_spec(f"http://127.0.0.1:{closed}"), output_root=tmp_path / "runs")
    message = str(raised.value)
    assert f"127.0.0.1:{closed}" in message and "\n" not in message
    assert "Ray did not start either: ConnectionError: no Ray cluster answers at 10.9.9.9:6379" in message
    assert list((tmp_path / "runs" / "starts").iterdir()) == []


def test_ctrl_c_and_sigterm_ask_tunes_loop_to_stop_and_a_second_ctrl_c_does_not_wait(monkeypatch):
    """`stop_on_signals` around Tune's loop: the first Ctrl-C or SIGTERM is recorded and handed to
    Tune's SIGUSR1 handler (a stand-in for it here, installed as tune.run installs it); before Tune's
    handler is there, or on a second Ctrl-C, KeyboardInterrupt. Everything is put back afterwards."""
    import signal

    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    # Python's own Ctrl-C handler, as in a terminal (a suite started in a shell's background ignores it).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ask_tune_to_stop()
    finally:
        signal.signal(signal.SIGINT, outer)


def _ask_tune_to_stop() -> None:
    import os
    import signal

    from tuner.engine import stop_on_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    with stop_on_signals() as early:
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune's own handler would tell no one
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # Tune's loop has not started: nothing to stop gently
    assert early.signal == "SIGINT"
    assert {s: signal.getsignal(s) for s in before} == before and "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    with stop_on_signals() as early:
        with pytest.raises(SystemExit) as raised:
            signal.raise_signal(signal.SIGTERM)  # a SIGTERM there is Ray's SystemExit(15), not a Ctrl-C
    assert raised.value.code == signal.SIGTERM and early.signal == "SIGTERM"

    for first in (signal.SIGINT, signal.SIGTERM):
        told = []
        with stop_on_signals() as request:
            signal.signal(signal.SIGUSR1, lambda signum, frame: told.append(signum))  # tune.run's handler
            signal.raise_signal(first)
            assert request.is_set() and request.signal == first.name and told == [signal.SIGUSR1]
            signal.raise_signal(signal.SIGTERM)  # told once
            assert told == [signal.SIGUSR1]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert {s: signal.getsignal(s) for s in before} == before

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell's background job ignores Ctrl-C
    try:
        with stop_on_signals() as ignored:
            signal.raise_signal(signal.SIGINT)
        assert not ignored.is_set() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_job_killed_before_its_parent_run_was_made_is_found_and_says_to_run_it_again(tmp_path):
    """Tune starts before the parent run exists: a job killed (kill -9) in between leaves its spec,
    Tune's experiment and no job.json. `tuner resume`, `sync` and `dashboard`, given the job's name or
    the folder, find that run (not the job's previous one) and say so in one line, exit 2."""
    from typer.testing import CliRunner

    from tuner.cli import app
    from tuner.folders import new_run_folder

    spec = _spec(f"sqlite:///{tmp_path}/mlflow.db")
    earlier = new_run_folder(spec, tmp_path / "runs")  # a finished run of the same job, named in job.json
    earlier.spec.write_text(spec.to_yaml())
    earlier.write_state(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_id="1", parent_run_id="abc")
    folder = new_run_folder(spec, tmp_path / "runs")
    folder.spec.write_text(spec.to_yaml())
    folder.ray.mkdir(parents=True)
    (folder.ray / "tuner.pkl").write_bytes(b"")
    assert folder.path.name > earlier.path.name
    for command in (["resume", "starts"], ["resume", str(folder.path)], ["sync", "starts"], ["sync", str(folder.path)],
                    ["dashboard", "starts"]):
        result = CliRunner().invoke(app, [*command, "--output-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2, (command, result.output)
        line = " ".join(result.output.split())  # the console wraps long lines
        assert f"{folder.path.name}: no MLflow parent run (the job stopped before it was made" in line, command
        assert f"run it again: tuner run {folder.spec}" in line, command
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started: no store opened


def test_a_parent_run_left_for_the_first_trial_is_made_after_a_while_without_one(monkeypatch):
    """On a Ray already up the parent run waits for the first trial's start (its worker gets the cores
    first), but not for ever: a trial waiting for resources must not keep the job out of MLflow."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(job_module, "_PARENT_RUN_WAITS_S", 0.3)
    made = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        parent = job_module._ParentRun(pool, made.set, now=False)
        assert not made.wait(0.1)  # left for the first trial's start
        assert made.wait(5)  # made without it
        assert parent.result() is None


def test_a_failed_sanity_check_in_tuner_run_leaves_nothing(tmp_path, monkeypatch):
    """`tuner run` makes the sanity checks beside Ray's start, and the parent run, which records
    them, waits for them. One that fails prints the table and one line, exits 1, and leaves no run
    folder, no MLflow store and no parent run: as when the checks ran before the job."""
    from typer.testing import CliRunner

    from tests.conftest import EXAMPLES
    from tuner.cli import app

    ray = StandInRay()
    monkeypatch.setattr(job_module, "ray_session", ray)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(EXAMPLES / "digits-mlp.yaml"), "--output-dir", str(out),
                                      "--set", "search.space={dropout: {uniform: [0, 0.3]}}", "--set", "fixed.lr=0.0"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "a sanity check failed: fix the model or data first" in result.output
    assert (ray.entered, ray.exited) == (1, 1)  # Ray was started beside the checks, and shut down
    assert not [p for p in out.rglob("*") if p.is_file()]  # no run folder, journal or store left
