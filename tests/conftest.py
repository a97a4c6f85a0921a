"""Shared fixtures: one in-process Ray for the tests that can share it, example specs, data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist10k"
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


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

    raw = {"name": "t", "trainable": "mlp", "data": "digits",
           "search": {"algorithm": "tpe", "num_samples": 2, "max_concurrent": 2, "seed": 0,
                      "space": {"lr": {"loguniform": [0.01, 0.1]}}},
           "trial": {"epochs": 3}, "fixed": {"width": 32}, "ensemble": {"top_k": 0}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return spec_from_mapping(raw, base_dir=tmp_path)


# Workers of the shared in-process Ray import the test's user trainable from here.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DATA / "user_trainables"), os.environ.get("PYTHONPATH")]))
