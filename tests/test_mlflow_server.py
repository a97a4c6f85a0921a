"""A job against a real `mlflow server` on PostgreSQL (the production backend).

The test creates and drops its own database; the server runs in its own process group on a free
loopback port and is stopped by that group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import DATA
from tuner.run import run_job
from tuner.spec import spec_from_mapping
from tuner.tracking import PARENT_TAG

pytestmark = pytest.mark.slow
PG = dict(host="127.0.0.1", port=5432, user="postgres")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_db():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True, **PG)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432: {exc}")
    name = f"tuner_test_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def mlflow_server(postgres_db, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_db, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not come up") from None
                time.sleep(0.5)
        yield url
    finally:
        try:  # the server and its workers, by its own process group
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        except ProcessLookupError:
            pass  # the group is already gone: the server exited by itself


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
