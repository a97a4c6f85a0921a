"""Shared fixtures: one in-process Ray for the tests that can share it, example specs, data paths."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist10k"
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
PG = dict(host="127.0.0.1", port=5432, user="postgres")

sys.path.insert(0, str(ROOT / "docs"))
# Process-group helpers shared with the screenshot script: stop a server and its children, wait for it.
from screenshot import stop as stop_group, wait_for_http  # noqa: E402


@pytest.fixture(autouse=True)
def _mlflow_logging_level_as_it_was(monkeypatch):
    """`tuner run` and `tuner resume` set MLFLOW_LOGGING_LEVEL in their process (tuner.cli._quiet): a
    test that runs them in this process must not hand it to later tests' subprocesses, whose quiet
    output would then prove nothing about their own."""
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session (starting one costs ~5 s); address='local' never joins a stale cluster."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def children(uri: str, parent_run_id: str):
    """(client, parent run, child runs) of a job's parent run."""
    from mlflow.tracking import MlflowClient

    from tuner.tracking import PARENT_TAG

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    return client, parent, runs


def small_spec(tmp_path: Path, **sections) -> "JobSpec":  # noqa: F821
    """A fast built-in job on digits, with sections overridden."""
    from tuner.spec import spec_from_mapping

    raw = {"name": "t", "model": "mlp", "data": "digits",
           "search": {"algorithm": "tpe", "num_samples": 2, "max_concurrent": 2, "seed": 0,
                      "space": {"lr": {"loguniform": [0.01, 0.1]}}},
           "trial": {"epochs": 3}, "fixed": {"width": 32}, "ensemble": {"top_k": 0}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return spec_from_mapping(raw, base_dir=tmp_path)


# Workers of the shared in-process Ray import the tests' user trainables and models from here.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DATA / "user_trainables"), str(DATA / "user_models"),
                                                         str(EXAMPLES / "diabetes-regression"), os.environ.get("PYTHONPATH")]))


# ----------------------------------------------------------------------------- real servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database on 127.0.0.1:5432; its URL. Skips the test without PostgreSQL."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True, **PG)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432: {exc}")
    name = f"tuner_test_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def postgres_db():
    with postgres_database() as url:
        yield url


class MlflowServer:
    """`mlflow server` in its own process group on a fixed loopback port; restartable."""

    def __init__(self, backend: str, artifacts: Path, command: list[str] | None = None, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.command = command or [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1", "--artifacts-destination", str(artifacts)]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> None:
        """Start the server; with ``wait=False`` return at once (`ready` waits), so that something
        else can start beside it."""
        self.process = subprocess.Popen(self.command, start_new_session=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env=self.env)
        if wait:
            self.ready()

    def ready(self) -> None:
        wait_for_http(f"{self.url}/health", self.process, what="mlflow server")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None


@pytest.fixture
def server(postgres_db, tmp_path):
    server = MlflowServer(postgres_db, tmp_path / "artifacts")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """The URL of an `mlflow server` on a PostgreSQL database, one per test module, for tests that only
    talk to it (each checks its own parent run); `server` is a test's own, to stop and start."""
    with postgres_database() as backend:
        shared = MlflowServer(backend, tmp_path_factory.mktemp("artifacts"))
        shared.start()
        try:
            yield shared.url
        finally:
            shared.stop()
