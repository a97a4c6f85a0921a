"""`tuner up` / `tuner down`: a local Ray head and the MLflow UI kept between jobs, and jobs that attach.

The end-to-end test starts real processes (`ray start --head`, `mlflow ui`) in their own process
groups through the CLI, runs a user's trainable that lives next to its spec through `tuner run`
(attached), and checks `tuner down` leaves none of them; the rest run without Ray.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DATA, free_port
from tuner.errors import UserError
from tuner.service import RAY_MARKER, STATE_FILE, _free, running

CLI = [sys.executable, "-m", "tuner.cli"]
USER_CODE = DATA / "user_trainables"


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _tuner(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_up_run_attaches_down_stops_everything(tmp_path):
    if RAY_MARKER.exists():
        pytest.skip(f"{RAY_MARKER} names another Ray cluster on this machine")
    # The UI's port from below the ephemeral range, where Ray picks its own ports at random (a UI port
    # drawn from that range once went to one of the head's gRPC servers before the UI bound it).
    root, port = tmp_path / "runs", _free_port_below_ephemeral()
    # The user's module next to the spec, nothing on PYTHONPATH: the head's workers (started by its
    # raylet, not by this driver) get the code folder only through the job's runtime_env.
    (tmp_path / "my_model.py").write_text((USER_CODE / "toy_trainable.py").read_text())
    (tmp_path / "job.yaml").write_text(
        "name: warm-job\ntrainable: my_model:train\nmetric: score\nmode: min\n"
        "search: {algorithm: tpe, num_samples: 3, max_concurrent: 2, space: {x: {uniform: [0, 1]}}}\n"
        "fixed: {epochs: 2}\nensemble: {top_k: 0}\n")
    started = _tuner("up", "--output-dir", str(root), "--ui-port", str(port), "--num-cpus", "2", cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads((root / STATE_FILE).read_text())
        assert started.stdout.startswith(f"up: Ray head at {state['ray_address']}, MLflow UI at http://127.0.0.1:{port}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
        again = _tuner("up", "--output-dir", str(root), "--ui-port", str(port), cwd=tmp_path)
        assert again.returncode == 0 and again.stdout.startswith("already up (since ")
        assert json.loads((root / STATE_FILE).read_text()) == state  # nothing new was started

        job = _tuner("run", "job.yaml", "--output-dir", str(root), cwd=tmp_path,
                     env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert job.returncode == 0, job.stdout + job.stderr
        assert "warm-job: 3 trials: 3 finished" in job.stdout
        assert "best trial: trial-00" in job.stdout
        assert "\x1b[" not in job.stdout  # a pipe gets no escape codes
        assert f"Ray: the local service's head at {state['ray_address']}" in job.stdout
        assert f"MLflow UI: http://127.0.0.1:{port}/#/experiments/" in job.stdout  # the service's UI, no hint
        # The head outlived the job: a second job attaches to the same one.
        assert running(root) is not None
    finally:
        stopped = _tuner("down", "--output-dir", str(root), cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith(f"stopped: Ray head at {state['ray_address']}")
    assert not (root / STATE_FILE).exists() and not RAY_MARKER.exists()
    for pgid in (state["ray_pgid"], state["ui_pgid"]):
        leftovers = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(int(p.name)) == pgid]
        assert leftovers == [], f"process group {pgid} left {leftovers}"
    with socket.socket() as s:  # the UI's port is free again for a server (TIME_WAIT left by its last replies aside)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    nothing = _tuner("down", "--output-dir", str(root), cwd=tmp_path)
    assert nothing.returncode == 0 and nothing.stdout.startswith("nothing is up for")


def _free_port_below_ephemeral() -> int:
    port = next((p for p in range(23000, 23500) if _free(p)), None)  # `tuner up`'s own check of a UI port
    if port is None:
        raise RuntimeError("no free port in 23000-23499")
    return port


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid) if _alive(pid) else None
    except (ProcessLookupError, FileNotFoundError):
        return None


def test_up_refuses_a_taken_ui_port_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _tuner("up", "--output-dir", str(tmp_path), "--ui-port", str(port), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --ui-port {port}: already in use on 127.0.0.1; pick another or --no-ui"
    assert not (tmp_path / STATE_FILE).exists() and not (tmp_path / "service").exists()


def test_a_service_file_whose_processes_are_gone_is_not_attached_to(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id no process holds now
    (tmp_path / STATE_FILE).write_text(json.dumps({
        "ray_address": f"127.0.0.1:{free_port()}", "ray_pgid": dead.pid, "ui_url": None, "ui_pgid": None,
        "started": "2026-11-25 00:00:00", "from_a_newer_tuner": 1}))
    assert running(tmp_path) is None
    proc = _tuner("down", "--output-dir", str(tmp_path), cwd=tmp_path, timeout=120)  # cleans up, kills nothing
    assert proc.returncode == 0 and proc.stdout.startswith("nothing was running: the service of"), proc.stdout
    assert not (tmp_path / STATE_FILE).exists()


def test_a_garbled_service_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(UserError, match=r"service.json: not a service description"):
        running(tmp_path)
    proc = _tuner("down", "--output-dir", str(tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not a service description" in proc.stderr and (tmp_path / STATE_FILE).exists()  # kept for the user


def test_down_refuses_while_a_job_runs_in_the_folder_unless_forced(tmp_path):
    from tuner.folders import run_folder_lock

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / STATE_FILE).write_text(json.dumps({
        "ray_address": f"127.0.0.1:{free_port()}", "ray_pgid": dead.pid, "ui_url": None, "ui_pgid": None,
        "started": "2026-11-25 00:00:00"}))
    folder = tmp_path / "some-job" / "20261125-000000"
    folder.mkdir(parents=True)
    with run_folder_lock(folder, "tuner run some-job"):  # a job running in this output folder
        refused = _tuner("down", "--output-dir", str(tmp_path), cwd=tmp_path, timeout=120)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "1 job(s) running here" in refused.stderr and "`tuner run some-job` (pid " in refused.stderr
        assert (tmp_path / STATE_FILE).exists()  # nothing stopped
        forced = _tuner("down", "--output-dir", str(tmp_path), "--force", cwd=tmp_path, timeout=120)
        assert forced.returncode == 0 and forced.stdout.startswith("nothing was running"), forced.stdout  # stand-ins
    assert not (tmp_path / STATE_FILE).exists()
