"""The best config out of MLflow, as a spec that `tuner train` replays.

Everything is read from the tracking store (the parent run's ``spec.yaml`` artifact and its
``best_config`` tag), so export works from any machine that sees the tracking server. The exported
spec pins each searched knob to the best trial's value (a one-value ``choice``), so it passes the same
validation as any spec and `tuner train` trains exactly that config.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import NotFoundError, UserError, redact
from tuner.spec import NAME_PATTERN
from tuner.tracking import JOB_TAG

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def find_parent_run(tracking_uri: str, job: str):
    """The newest parent run of a job (by name), or the run with that id."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if RUN_ID.match(job):
        try:
            return client.get_run(job)
        except MlflowException:
            raise NotFoundError(f"{job}: no run with this id in {redact(tracking_uri)}") from None
    if not NAME_PATTERN.fullmatch(job):  # never built into a filter string unchecked
        raise NotFoundError(f"{job!r}: not a job name ({NAME_PATTERN.pattern}) or a 32-hex run id")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{JOB_TAG}` = '{job}'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not runs:
        raise NotFoundError(f"{job}: no job of this name in {redact(tracking_uri)}")
    return runs[0]


def best_spec(tracking_uri: str, job: str, *, pick: str | None = None) -> dict[str, Any]:
    """The job's spec with every searched knob pinned to the best trial's value, or to trial ``pick``'s
    (``trial-007``: a multi-objective job's Pareto front has several). The best trial is the best on the
    first metric, which is the front's member best on that metric. A conditional key the trial did not
    sample is left out (the trial ran with its default)."""
    import mlflow.artifacts

    run = find_parent_run(tracking_uri, job)
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="spec.yaml", dst_path=folder,
                                                    tracking_uri=tracking_uri)
        spec = yaml.safe_load(Path(local).read_text())
    if pick is not None:
        best, trial = _picked(tracking_uri, run, pick, spec["search"]["space"]), pick
    elif "best_config" in run.data.tags:
        best, trial = json.loads(run.data.tags["best_config"]), run.data.tags.get("best_trial")
    else:
        raise NotFoundError(f"{job}: run {run.info.run_id} has no finished trial to export")
    spec["search"]["space"] = {key: {"choice": [best[key]]} for key in spec["search"]["space"] if key in best}
    spec["search"].update(num_samples=1, max_concurrent=1, algorithm="random", start_from=[], warm_start=None)
    spec["search"].pop("tpe_history", None)  # a TPE setting; the replay draws its one config at random
    spec["ensemble"] = {"top_k": 0}
    spec["_exported"] = {"from_run": run.info.run_id, "trial": trial,
                         "model_uri": run.data.tags.get("ensemble_model_uri")}
    return spec


def _picked(tracking_uri: str, parent, name: str, space: dict[str, Any]) -> dict[str, Any]:
    """Trial ``name``'s config, from its child run's params typed by the job's space."""
    from mlflow.tracking import MlflowClient

    from search_spaces import parse_space
    from tuner.study import typed_params
    from tuner.tracking import PARENT_TAG

    if not re.fullmatch(r"trial-[0-9a-z_]{1,40}", name):
        raise UserError(f"--pick: must be a trial's name, like trial-007 (got {name!r})")
    children = MlflowClient(tracking_uri).search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and "
                                                   f"attributes.run_name = '{name}'")
    if not children:
        raise NotFoundError(f"--pick: run {parent.info.run_id} has no trial {name}")
    config = typed_params(parse_space(space), children[0].data.params)
    if config is None:
        raise NotFoundError(f"--pick: {name}'s params do not fit the job's space")
    return config


def write_spec(spec: dict[str, Any], path: Path, *, fmt: str, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"{path}: exists; pass --force to overwrite it")
    origin = spec.pop("_exported")
    if fmt == "json":
        text = json.dumps(spec, indent=2) + "\n"
    else:
        header = (f"# The best trial ({origin['trial']}) of MLflow run {origin['from_run']}, exported by `tuner export`.\n"
                  f"# Retrain it with `tuner train {path.name}`.\n")
        text = header + yaml.safe_dump(spec, sort_keys=False)
    path.write_text(text)
    spec["_exported"] = origin
