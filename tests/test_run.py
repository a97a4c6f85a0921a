"""Real Ray runs: each algorithm, the 12-trial tracking acceptance, divergence, user trainables,
export -> train, and the ensemble model loaded in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import DATA, small_spec
from tests.conftest import children as _children
from tuner.run import run_job
from tuner.spec import spec_from_mapping

pytestmark = pytest.mark.slow
USER_CODE = DATA / "user_trainables"


@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_two_trial_run_with_each_algorithm(ray_session, tmp_path, algorithm, monkeypatch):
    spec = small_spec(tmp_path, search={"algorithm": algorithm})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_job(spec, output_root=tmp_path / "out", check=True)
    assert not list(elsewhere.iterdir())  # nothing outside the output folder (MLflow defaults to ./mlruns)
    assert list((tmp_path / "out" / "mlartifacts").rglob("spec.yaml"))
    assert result.succeeded and result.statuses == {"trial-001": "FINISHED", "trial-002": "FINISHED"}
    client, parent, children = _children(result.tracking_uri, result.parent_run_id)
    assert sorted(r.info.run_name for r in children) == ["trial-001", "trial-002"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert parent.info.status == "FINISHED" and parent.data.params["algorithm"] == algorithm
    history = client.get_metric_history(children[0].info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    # No row per epoch for what the step already says (epoch) or what never changes (init_loss).
    assert "epoch" not in children[0].data.metrics
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "init_loss")] == [1]
    assert parent.data.metrics["best_val_loss"] == pytest.approx(result.best_value)
    assert parent.data.tags["check.overfits one batch"].startswith("pass")  # the sanity checks' results
    assert len([k for k in parent.data.tags if k.startswith("check.")]) == 3


def test_twelve_trials_some_fail_some_stopped_by_asha(ray_session, tmp_path):
    """Issue 4's acceptance: 1 parent, 12 children with the right statuses, history, plots, CSV."""
    spec = spec_from_mapping({
        "name": "mixed", "trainable": "toy_trainable:train", "code_dir": str(USER_CODE), "metric": "score",
        "mode": "min", "search": {"algorithm": "random", "num_samples": 12, "max_concurrent": 2, "seed": 3,
                                  "space": {"x": {"uniform": [0.0, 1.0]}}},
        "scheduler": {"name": "asha", "grace_period": 1, "max_t": 6, "reduction_factor": 2},
        "trial": {"epochs": 6}, "fixed": {"fail_above": 0.75, "epochs": 6}, "ensemble": {"top_k": 0}})
    result = run_job(spec, output_root=tmp_path)
    client, parent, children = _children(result.tracking_uri, result.parent_run_id)
    assert len(children) == 12 == len(result.statuses)
    by_name = {r.info.run_name: r for r in children}
    for name, status in result.statuses.items():
        assert by_name[name].info.status == status
    statuses = sorted(result.statuses.values())
    assert {"FAILED", "KILLED", "FINISHED"} <= set(statuses), statuses
    failed = [r for r in children if r.info.status == "FAILED"]
    assert all("out of range" in r.data.tags["error"] for r in failed)
    assert all(a.path == "error.txt" for r in failed for a in client.list_artifacts(r.info.run_id))
    killed = [r for r in children if r.info.status == "KILLED"]
    assert all(r.data.tags["tuner.end"] == "stopped early by the scheduler" for r in killed)
    finished = [r for r in children if r.info.status == "FINISHED"][0]
    assert len(client.get_metric_history(finished.info.run_id, "score")) == 6
    assert parent.data.metrics["trials_failed"] == statuses.count("FAILED")
    assert "best_score" in parent.data.metrics and json.loads(parent.data.tags["best_config"])["x"] <= 0.75
    # best so far against trials ended: one point per improvement, each at its own step (MLflow copies
    # a run's metrics at a step to a model logged on it, and refuses two points at the same step and time)
    best = client.get_metric_history(parent.info.run_id, "best_score")
    steps, values = [m.step for m in best], [m.value for m in best]
    assert steps == sorted(set(steps)) and 1 <= steps[0] and steps[-1] <= 12, steps
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values), values
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/trials.csv", "report/optimization_history.png", "report/parallel_coordinate.png",
            "report/param_importances.png"} <= report


def test_diverging_trial_fails_and_the_job_completes(ray_session, tmp_path):
    spec = small_spec(tmp_path, search={"num_samples": 1, "space": {"lr": {"choice": [1.0e6]}}},
                      fixed={"optimizer": "sgd", "width": 32})
    result = run_job(spec, output_root=tmp_path)
    assert result.statuses == {"trial-001": "FAILED"} and not result.succeeded
    _, parent, (child,) = _children(result.tracking_uri, result.parent_run_id)
    assert child.data.tags["tuner.end"] == "diverged" and child.data.metrics["diverged"] == 1
    assert parent.info.status == "FAILED"


def test_ensemble_model_and_export_train_reproduce(ray_session, tmp_path):
    spec = small_spec(tmp_path, search={"num_samples": 3}, ensemble={"top_k": 2})
    uri_before = os.environ.get("MLFLOW_TRACKING_URI")
    result = run_job(spec, output_root=tmp_path)
    ensemble = result.ensemble
    assert ensemble and len(ensemble["members"]) == 2 and ensemble["model_uri"].startswith("models:/")
    # Logging the model must not repoint the process (MLflow's set_tracking_uri sets the variable).
    assert os.environ.get("MLFLOW_TRACKING_URI") == uri_before
    _, parent, _ = _children(result.tracking_uri, result.parent_run_id)
    assert parent.data.metrics["ensemble_test_acc"] == pytest.approx(ensemble["ensemble_test_acc"])
    registry = MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)
    (version,) = registry.search_model_versions(f"name = '{spec.name}'")  # registered in the job's own store
    assert version.source == ensemble["model_uri"] and version.run_id == result.parent_run_id
    # The pyfunc model, loaded in a fresh process on raw digits, reproduces the logged test accuracy.
    script = (
        "import sys, mlflow, numpy as np\n"
        "from sklearn.datasets import load_digits\n"
        "from trainables.data import make_dataset\n"
        "b = load_digits(); raw = b.data.astype('float32')\n"
        "order = np.random.default_rng(0).permutation(len(raw)); test = order[:round(len(raw) * 0.15)]\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "probs = mlflow.pyfunc.load_model(sys.argv[2]).predict(raw[test])\n"
        "assert np.allclose(probs.sum(1), 1, atol=1e-5)\n"
        "print(repr(float((probs.argmax(1) == b.target[test]).mean())))\n")
    out = subprocess.run([sys.executable, "-c", script, result.tracking_uri, ensemble["model_uri"]],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) == ensemble["ensemble_test_acc"]
    # export -> train reproduces the best trial's validation metric exactly (CPU, same seed).
    cli = [sys.executable, "-m", "tuner.cli"]
    best = tmp_path / "best.yaml"
    export = subprocess.run([*cli, "export", "t", "-o", str(best), "--tracking-uri", result.tracking_uri],
                            capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    again = subprocess.run([*cli, "export", "t", "-o", str(best), "--tracking-uri", result.tracking_uri],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr
    train = subprocess.run([*cli, "train", str(best)], capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    assert train.stdout.strip().splitlines()[-1] == f"best val_loss={result.best_value!r}"


MONITOR_SCRIPT = r'''
import json, os
from pathlib import Path
import ray
from tuner.engine import ray_session
from tuner.spec import spec_from_mapping

def monitors():
    """This process's children running Ray's autoscaler monitor (Linux /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone since the listing, or not readable
        if ppid == os.getpid() and any(part.endswith(b"autoscaler/_private/monitor.py") for part in cmdline):
            found.append(proc.name)
    return found

seen = {}
shutdown = ray.shutdown
def watched_shutdown(*args, **kwargs):
    seen["monitors_at_shutdown"] = len(monitors())
    return shutdown(*args, **kwargs)
ray.shutdown = watched_shutdown
with ray_session(spec_from_mapping({"name": "m"}), None, verbose=False):
    seen["monitors_while_running"] = len(monitors())
seen["ray_running_after"] = ray.is_initialized()
print(json.dumps(seen))
'''


def test_a_local_rays_monitor_is_stopped_before_ray_shutdown():
    """Pins Ray's private `Node.kill_monitor` (README, tuner/engine.py `_stop_monitor_first`): Ray's
    own shutdown stops the GCS first and the monitor then hangs a second on it. In a fresh process,
    because the suite's shared Ray would make `ray_session` attach instead of start one."""
    out = subprocess.run([sys.executable, "-c", MONITOR_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import ray

    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"monitors_while_running": 1, "monitors_at_shutdown": 0, "ray_running_after": False}, (
        f"ray {ray.__version__}: {seen}; see tuner/engine.py _stop_monitor_first")


SIGTERM_SCRIPT = r"""
import os, signal, time
from tuner.engine import ray_session
from tuner.spec import spec_from_mapping

with ray_session(spec_from_mapping({"name": "t"}), None, verbose=False):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here
    except SystemExit as stop:  # Ray's Python handler: sys.exit(15)
        print("SystemExit", stop.code, flush=True)
    time.sleep(4)  # abseil's alarm, where it was armed, aborts the process 3 s after the signal
    print("alive", flush=True)
"""


def test_a_sigterm_before_tunes_loop_does_not_abort_the_driver_3_s_later():
    """Ray's driver registers SIGTERM with abseil's failure-signal handler, which arms a 3 s alarm that
    aborts the process (SIGABRT and a core dump) when it has not exited by then (ray-project/ray#64830).
    A job stopped before Tune's loop ends its parent run and shuts Ray down, which takes longer: seen on
    2026-12-07 as exit -6 after `tuner run` was sent SIGTERM 9 s in. `ray_session` takes SIGTERM back
    for Ray's own Python handler. In a fresh process, for the reason the test above gives."""
    out = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["SystemExit", "15", "alive"], (
        f"exit {out.returncode}: {out.stdout} {out.stderr[-1500:]}")


def _signal_mid_search(tmp_path, name: str, env: dict, send) -> tuple[subprocess.Popen, str]:
    """`tuner run` of 4 toy trials (12 epochs of 0.3 s, 2 at a time) in a session of its own; ``send``
    gets its pid once a trial has reported (Tune's loop runs). Its process and its output."""
    import signal
    import time

    (tmp_path / "job.yaml").write_text(json.dumps({
        "name": name, "trainable": "toy_trainable:train", "code_dir": str(USER_CODE), "metric": "score",
        "mode": "min", "ensemble": {"top_k": 0}, "fixed": {"epochs": 12, "sleep": 0.3},
        "search": {"algorithm": "random", "num_samples": 4, "max_concurrent": 2, "seed": 0,
                   "space": {"x": {"uniform": [0.0, 0.5]}}}}))
    # As a terminal's foreground command: Ctrl-C not ignored (a suite started in the background of a
    # shell ignores it, and its children inherit that).
    proc = subprocess.Popen([sys.executable, "-m", "tuner.cli", "run", "job.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        journals = (tmp_path / "tuner_runs" / name).glob
        while not any(b'"op": "metrics"' in p.read_bytes() for p in journals("*/tracking/events.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, "no trial reported"
            time.sleep(0.5)
        send(proc.pid)
        return proc, proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_mid_search_ends_the_job_killed_with_its_running_trials_killed_and_charged(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the command's process group) while trials run: Tune stops them,
    the job records them KILLED (with Ctrl-C as the reason) and charges their time, the parent run ends
    KILLED, and the command exits 130. Tune's own Ctrl-C handler ended such a job FINISHED."""
    import signal

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc, output = _signal_mid_search(tmp_path, "ctrlc", env, lambda pid: os.killpg(pid, signal.SIGINT))

    def ops() -> list[str]:  # read, not opened as a Journal: that would cut a line being written
        lines = b"".join(p.read_bytes() for p in tmp_path.glob("tuner_runs/ctrlc/*/tracking/events.jsonl"))
        return [json.loads(line)["op"] for line in lines.split(b"\n")[:-1]]

    assert proc.returncode == 130, output
    assert "(the job was stopped: running trials recorded as KILLED)" in output
    folder = next(tmp_path.glob("tuner_runs/ctrlc/*/"))
    assert f"resume: tuner resume {folder}" in output.splitlines(), output
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == "killed", state
    _, parent, runs = _children(f"sqlite:///{tmp_path / 'tuner_runs' / 'mlflow.db'}", state["parent_run_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["tuner.status"] == "KILLED"
    assert len(runs) == ops().count("trial_start") < 4  # each trial that started, once; the pending ones never ran
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all(r.data.tags["tuner.end"] == "stopped: the job was stopped (Ctrl-C)" for r in killed)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    # Charged the training time Ray last reported: one that had reported is > 0 (one that had not, 0).
    assert parent.data.metrics["trial_hours"] > 0 and any(r.data.metrics["trial_wall_s"] > 0 for r in killed)
    killed_s = {r.info.run_name: r.data.metrics["trial_wall_s"] for r in killed}

    # `tuner resume` (the command it printed) runs the stopped trials again and the pending ones: each once.
    resumed = subprocess.run([sys.executable, "-m", "tuner.cli", "resume", str(folder)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _, parent, runs = _children(f"sqlite:///{tmp_path / 'tuner_runs' / 'mlflow.db'}", state["parent_run_id"])
    assert parent.info.status == "FINISHED" and sorted(r.info.run_name for r in runs) == [
        f"trial-00{i}" for i in range(1, 5)]
    assert all(r.info.status == "FINISHED" for r in runs)
    # A stopped trial runs again from its start (it saves no checkpoint: 12 epochs of 0.3 s): charged
    # for both runs. The job's cost is its trials' sum.
    wall = {r.info.run_name: r.data.metrics["trial_wall_s"] for r in runs}
    assert all(wall[name] >= before + 12 * 0.3 for name, before in killed_s.items()), (killed_s, wall)
    assert parent.data.metrics["trial_hours"] == pytest.approx(sum(wall.values()) / 3600)


def test_a_sigterm_after_the_jobs_end_is_recorded_leaves_that_end(ray_session, tmp_path, monkeypatch, caplog):
    """A SIGTERM (Ray's handler: SystemExit(15)) once the journal has the parent run's end, while the
    job hands it to MLflow and writes job.json: the job had ended it KILLED again, over FINISHED. Now
    the end stands, the line says so, and the command exits 143."""
    from tuner.tracking.writer import Tracker

    close = Tracker.close

    def close_then_sigterm(self, **kwargs):
        close(self, **kwargs)
        raise SystemExit(15)

    monkeypatch.setattr(Tracker, "close", close_then_sigterm)
    spec = spec_from_mapping({
        "name": "late", "trainable": "toy_trainable:train", "code_dir": str(USER_CODE), "metric": "score",
        "mode": "min", "search": {"algorithm": "random", "num_samples": 1, "space": {"x": {"uniform": [0.0, 1.0]}}},
        "fixed": {"epochs": 1}, "ensemble": {"top_k": 0}})
    with pytest.raises(SystemExit) as raised:
        run_job(spec, output_root=tmp_path)
    assert raised.value.code == 143
    (folder,) = (tmp_path / "late").iterdir()
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == "finished"
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(state["parent_run_id"]).info.status == "FINISHED"
    assert [r.getMessage() for r in caplog.records if r.name == "tuner.job"] == [
        f"late: stopped (SIGTERM, e.g. tuner stop) while MLflow was being sent the job's end (parent run FINISHED); "
        f"what it did not get is in the journal: tuner sync {folder}"]


def test_a_store_that_refuses_the_job_once_its_trials_started_stops_them_and_leaves_nothing(ray_session, tmp_path):
    """Tune starts before the parent run exists; on a Ray that is up already (here the suite's) the run
    is made once the first trial has started. A store that refuses it then stops Tune's loop: the one
    line, exit 2 (a UserError, not a failed job), no run folder, and the trials (100 s each) cut short."""
    import socket
    import time

    from tuner.errors import UserError
    from tuner.job import JobFailed

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    spec = spec_from_mapping({
        "name": "refused", "trainable": "toy_trainable:train", "code_dir": str(USER_CODE), "metric": "score",
        "mode": "min", "search": {"algorithm": "random", "num_samples": 2, "space": {"x": {"uniform": [0.0, 1.0]}}},
        "fixed": {"epochs": 100, "sleep": 1.0}, "ensemble": {"top_k": 0},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{closed}"}})
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        run_job(spec, output_root=tmp_path)
    assert time.monotonic() - started < 60
    assert not isinstance(raised.value, JobFailed)
    assert f"127.0.0.1:{closed}" in str(raised.value) and "\n" not in str(raised.value)
    assert list((tmp_path / "refused").iterdir()) == []


def test_a_sigusr1_to_the_driver_ends_the_job_as_a_stopped_one(tmp_path):
    """SIGUSR1 is Ray Tune's own stop signal: its handler ends Tune's loop and says nothing. The job
    read that as a normal end: parent run FINISHED, the cut-short trials FINISHED. Now it ends as a
    stopped job: trials KILLED with the reason, parent run KILLED, exit 128 + 10."""
    import signal

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # To the driver only, as `kill -USR1 <pid>`.
    proc, output = _signal_mid_search(tmp_path, "usr1", env, lambda pid: os.kill(pid, signal.SIGUSR1))
    assert proc.returncode == 128 + signal.SIGUSR1, output
    folder = next((tmp_path / "tuner_runs" / "usr1").glob("*/"))
    state = json.loads((folder / "job.json").read_text())
    assert state["status"] == "killed", state
    _, parent, runs = _children(f"sqlite:///{tmp_path / 'tuner_runs' / 'mlflow.db'}", state["parent_run_id"])
    assert parent.info.status == "KILLED"
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all(r.data.tags["tuner.end"] == "stopped: the job was stopped (SIGUSR1, Ray Tune's own stop signal)"
                          for r in killed), [(r.info.status, r.data.tags.get("tuner.end")) for r in runs]
