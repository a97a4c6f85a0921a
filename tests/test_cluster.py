"""A real two-node Ray cluster with token auth, started from docker/compose.yaml's own command lines.

No Docker engine runs here, so the test reads compose.yaml, fills in its ${VAR:-default} variables
with loopback addresses and free ports (as `docker compose` fills them from the environment), and
runs the services' command lines as local processes, each in its own process group: the Ray head,
a Ray worker, `mlflow server` on a throwaway PostgreSQL database, and the submitter (`tuner submit
--wait`). Everything is stopped at the end through its own process group, by process id.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import DATA, ROOT, MlflowServer, free_port, postgres_database, stop_group, wait_for_http
from tuner.tracking import PARENT_TAG

pytestmark = pytest.mark.slow
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
TUNER = [sys.executable, "-m", "tuner.cli"]


def interpolate(command: str, values: dict[str, str]) -> list[str]:
    """A compose command line with ${VAR}, ${VAR:-default} and ${VAR:?error} filled in, split as sh would."""

    def fill(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if values.get(name):
            return values[name]
        if op == ":-":
            return arg
        raise KeyError(f"{name} is not set")

    return shlex.split(re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", fill, command))


def _service_env(service: str, values: dict[str, str]) -> dict[str, str]:
    env = {k: str(v) for k, v in (COMPOSE["services"][service].get("environment") or {}).items()}
    return {k: interpolate(v, values)[0] if "${" in v else v for k, v in env.items()}


class Cluster:
    def __init__(self, tmp: Path, backend: str) -> None:
        self.token = secrets.token_hex(32)
        self.values = {
            "RAY_AUTH_TOKEN": self.token, "RAY_HEAD_IP": "127.0.0.1", "RAY_WORKER_IP": "127.0.0.1",
            "RAY_GCS_PORT": str(free_port()), "RAY_DASHBOARD_HOST": "127.0.0.1", "RAY_DASHBOARD_PORT": str(free_port()),
            "RAY_HEAD_AGENT_PORT": str(free_port()), "RAY_WORKER_AGENT_PORT": str(free_port()),
            "RAY_HEAD_CPUS": "1", "RAY_WORKER_CPUS": "1", "RAY_WORKER_GPUS": "0",
            "MLFLOW_BACKEND_STORE": backend, "MLFLOW_ARTIFACTS": str(tmp / "artifacts"), "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(free_port())}
        self.values["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{self.values['MLFLOW_PORT']}"
        self.address = f"http://127.0.0.1:{self.values['RAY_DASHBOARD_PORT']}"
        self.tmp = tmp
        self.processes: list[subprocess.Popen] = []
        # `ray`, `mlflow` and `tuner` from this interpreter's environment, as in the image.
        self.base_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.base_env.pop("RAY_ADDRESS", None)

    def env(self, service: str, **extra: str) -> dict[str, str]:
        return {**self.base_env, **_service_env(service, self.values), **extra}

    def start(self, service: str) -> subprocess.Popen:
        log = open(self.tmp / f"{service}.log", "w")
        process = subprocess.Popen(interpolate(COMPOSE["services"][service]["command"], self.values), cwd=self.tmp,
                                   env=self.env(service), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def nodes_alive(self) -> int:
        request = urllib.request.Request(f"{self.address}/api/v0/nodes?limit=100",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return sum(1 for n in nodes if n["state"] == "ALIVE")

    def actor_nodes(self, class_name: str) -> set[str]:
        """The node ids that ran actors of ``class_name`` (Ray's state API keeps dead actors too). The API
        names a class by its qualified name or by its plain one: the same job's trial actors showed as
        ``wrap_function.<locals>.ImplicitFunc`` in some runs and ``ImplicitFunc`` in others, so the
        last part of the name is compared (a filter on the exact name found none in the first case)."""
        request = urllib.request.Request(f"{self.address}/api/v0/actors?limit=1000&detail=1",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            actors = json.load(response)["data"]["result"]["result"]
        return {a["node_id"] for a in actors if str(a.get("class_name")).rsplit(".", 1)[-1] == class_name}

    def tuner(self, *args: str, token: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        env = self.env("submitter", RAY_AUTH_TOKEN=token or self.token)
        return subprocess.run([*TUNER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        stop_group(*self.processes)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    marker = Path("/tmp/ray/ray_current_cluster")
    marker_before = marker.read_text() if marker.exists() else None
    with postgres_database() as backend:
        cluster = Cluster(tmp, backend)
        server = MlflowServer(backend, tmp / "artifacts", port=int(cluster.values["MLFLOW_PORT"]),
                              command=interpolate(COMPOSE["services"]["mlflow"]["command"], cluster.values),
                              env=cluster.env("mlflow"))
        try:
            server.start(wait=False)  # the server and the Ray head start side by side (each takes seconds)
            head = cluster.start("ray-head")
            server.ready()
            wait_for_http(f"{cluster.address}/api/gcs_healthz", head, what="the Ray head's dashboard", timeout_s=120)
            worker = cluster.start("ray-worker")
            deadline = time.monotonic() + 120
            while cluster.nodes_alive() < 2:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker did not join: {(tmp / 'ray-worker.log').read_text()[-2000:]}")
                time.sleep(1)
            yield cluster
        finally:
            cluster.stop()
            server.stop()
            if marker.exists() and marker.read_text() != marker_before:  # `ray start --head` wrote it
                if marker_before is None:
                    marker.unlink()
                else:
                    marker.write_text(marker_before)


def _children(cluster: Cluster, job: str):
    client = MlflowClient(cluster.values["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return None, []
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`tuner.job` = '{job}'")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    return parent, runs


def test_a_wrong_token_is_refused_fast_in_one_line(cluster):
    started = time.monotonic()
    refused = cluster.tuner("list", "--address", cluster.address, token="not-the-token", timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert time.monotonic() - started < 30
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --address") and "Traceback" not in refused.stderr
    assert cluster.tuner("list", "--address", cluster.address).returncode == 0


def test_submit_wait_runs_trials_on_both_nodes_and_every_trial_reaches_mlflow(cluster):
    """The compose file's submitter, word for word, with a smaller job appended."""
    command = interpolate(COMPOSE["services"]["submitter"]["command"], cluster.values)
    assert command[:2] == ["tuner", "submit"]
    done = cluster.tuner(*command[1:], "--set", "search.num_samples=6", "--set", "trial.epochs=4",
                         "--set", "ensemble.top_k=2", "--set", "name=cluster-demo",
                         "--remote-output-dir", str(cluster.tmp / "runs"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    submission_id = done.stdout.splitlines()[0]
    assert submission_id.startswith("tuner-cluster-demo-")
    assert "6/6 trials done" in done.stdout  # the followed log of the job's `tuner run`
    assert cluster.tuner("status", submission_id, "--address", cluster.address).stdout.startswith(
        f"{submission_id}: SUCCEEDED")
    assert len(cluster.actor_nodes("ImplicitFunc")) == 2  # the trials' actors ran on both nodes
    parent, runs = _children(cluster, "cluster-demo")
    assert parent.info.status == "FINISHED" and len(runs) == 6
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "ensemble_test_acc" in parent.data.metrics


def test_logs_follow_streams_and_stop_ends_running_trials_as_killed(cluster, tmp_path):
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "cluster-stop", "trainable": "toy_trainable:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "score", "mode": "min",
        "search": {"algorithm": "random", "num_samples": 8, "seed": 0, "space": {"x": {"uniform": [0.0, 0.5]}}},
        "fixed": {"epochs": 40, "sleep": 0.5}, "ensemble": {"top_k": 0}}))
    submitted = cluster.tuner("submit", str(spec), "--address", cluster.address, "--remote-output-dir",
                              str(tmp_path / "runs"), "--set", f"mlflow.tracking_uri={cluster.values['MLFLOW_TRACKING_URI']}")
    assert submitted.returncode == 0, submitted.stderr
    submission_id = submitted.stdout.strip()
    follow = subprocess.Popen([*TUNER, "logs", submission_id, "--follow", "--address", cluster.address], cwd=ROOT,
                              env=cluster.env("submitter"), stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for _ in range(100):  # the progress line arrives while the job runs: the log streams
            if "trials done" in follow.stdout.readline():
                break
        else:
            pytest.fail("no progress line in the followed log")
        deadline = time.monotonic() + 180
        while not any(r.info.status == "RUNNING" for r in _children(cluster, "cluster-stop")[1]):
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(1)
        stopped = cluster.tuner("stop", submission_id, "--address", cluster.address)
        assert stopped.returncode == 0 and stopped.stdout.strip() == f"{submission_id}: STOPPED", stopped.stdout
        rest = follow.communicate(timeout=60)[0]  # --follow ends when the job does
    finally:
        stop_group(follow)
    assert "trials done" in rest
    parent, runs = _children(cluster, "cluster-stop")
    assert parent.info.status == "KILLED"
    assert runs and all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all(r.data.tags["tuner.end"].startswith("stopped") for r in killed)


def test_submit_without_a_usable_address_is_one_line_exit_2(tmp_path):
    """No cluster needed: the address is checked before anything is sent."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    spec = ROOT / "examples" / "digits-mlp.yaml"
    for extra, expected in ([], "--address: no cluster given"), (["--set", "ray.address=auto"], "--address: 'auto'"):
        done = subprocess.run([*TUNER, "submit", str(spec), *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.startswith(f"error: {expected}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
