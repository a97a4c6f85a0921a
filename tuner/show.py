"""Jobs and trials as the terminal shows them (``tuner runs``, ``tuner show``), read from MLflow."""

from __future__ import annotations

import time

from tuner.export import find_parent_run
from tuner.tracking import JOB_TAG, PARENT_TAG


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else "-"


def job_runs(tracking_uri: str) -> list[tuple[str, ...]]:
    """(job, parent run id, started, status, best metric) for every job in the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    rows = []
    for run in client.search_runs(experiments, filter_string=f"tags.`{JOB_TAG}` != ''",
                                  order_by=["attributes.start_time DESC"]):
        best = next(((k, v) for k, v in run.data.metrics.items() if k.startswith("best_")), None)
        rows.append((run.data.tags[JOB_TAG], run.info.run_id, _when(run.info.start_time), run.info.status,
                     f"{best[0][5:]}={best[1]:.4f}" if best else "-"))
    return rows


def job_trials(tracking_uri: str, job: str) -> tuple[str, list[str], list[tuple[str, ...]]]:
    """A title, column names and one row per trial of a job's newest run (or of a parent run id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = find_parent_run(tracking_uri, job)
    metric = parent.data.params.get("metric", "val_loss").split(",")[0]  # a multi-objective job's first
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                  order_by=["attributes.run_name ASC"])
    searched = [k for k in parent.data.params.get("space", "").split(",") if k]
    rows = []
    for child in children:
        value = child.data.metrics.get(metric)
        rows.append((child.info.run_name, child.info.status, f"{value:.4f}" if value is not None else "-",
                     child.data.tags.get("tuner.end", ""), *[child.data.params.get(k, "-") for k in searched]))
    title = f"{parent.data.tags.get(JOB_TAG, job)}: run {parent.info.run_id} ({parent.info.status}), {len(rows)} trials"
    return title, ["trial", "status", f"last {metric}", "end", *searched], rows
