"""Delivery: journal events applied to MLflow, in order, idempotently.

`start_parent_run` creates the job's parent run before Ray starts; `Delivery` turns journal events
into child runs (one per trial, found again by its ``tuner.trial_id`` tag, so a replay or a resume
never makes a second one), `log_batch` calls and run ends. Permanent refusals of single items are
dropped with a warning; outages raise, and the journal keeps the events. `sync` is what
`tuner sync` runs: the same delivery over what a job left undelivered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from tuner.errors import describe, is_item_refusal
from tuner.settings import mlflow_settings
from tuner.tracking.journal import Journal
from tuner.tracking.names import JOB_TAG, PARENT_TAG, TRIAL_TAG, legal_names

log = logging.getLogger(__name__)

TRIAL_OPS = frozenset({"trial_start", "metrics", "trial_end", "trial_forget"})


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _param_value(value: Any) -> str:
    return "null" if value is None else str(value)[:6000]


def _artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file. (MLflow's default
    is ./mlruns in whatever the current directory is; a server decides for itself.)"""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


# MLflow 3's UI opens a new experiment in its GenAI view (traces, prompts) unless this tag says it
# holds model training; the tag is the UI's own switch.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
VIEW_TAG = "mlflow.sharedViewState."  # + a key: a saved runs-table view the UI opens by that key


def start_parent_run(*, tracking_uri: str, experiment: str, job_name: str, params: Mapping[str, Any],
                     spec_yaml: str, tags: Mapping[str, str]) -> tuple[str, str]:
    """Create the job's parent run with the spec as params and artifact; return (experiment_id, run_id)."""
    from mlflow.entities import Param, RunTag

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=_artifact_root(tracking_uri), tags=EXPERIMENT_TAGS)
    for key, value in EXPERIMENT_TAGS.items():
        if found is not None and found.tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
    params, renamed = legal_names(params)
    run = client.create_run(experiment_id, run_name=job_name, tags={JOB_TAG: job_name, **tags, **renamed})
    items = [Param(k, _param_value(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    client.log_text(run.info.run_id, spec_yaml, "spec.yaml")
    client.log_batch(run.info.run_id, tags=[RunTag("tuner.status", "RUNNING")])
    return experiment_id, run.info.run_id


def share_trials_view(tracking_uri: str, experiment_id: str, parent_run_id: str, *, metrics: list[str],
                      modes: list[str], params: list[str]) -> str:
    """Save a runs-table view of the job's trials (its child runs, the metrics and searched params as
    columns, sorted by the first metric) and return the UI's URL fragment that opens it."""
    view = {"searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            "orderByKey": f"metrics.`{metrics[0]}`", "orderByAsc": modes[0] == "min",
            "selectedColumns": [f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]}
    _client(tracking_uri).set_experiment_tag(experiment_id, VIEW_TAG + parent_run_id, json.dumps(view))
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={parent_run_id}&workflowType=machine_learning"


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for a block; `mlflow.set_tracking_uri` also sets
    $MLFLOW_TRACKING_URI, which would send the process's next job to this job's store."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


# ------------------------------------------------------------------------------------------ journal



class Delivery:
    """Applies journal events to MLflow. Stateless apart from the trial -> child run map."""

    def __init__(self, *, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.client = _client(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.runs: dict[str, str] | None = None  # trial id -> child run id, read from MLflow on first use
        self.progress = 0

    def _children(self) -> dict[str, str]:
        """The parent's child runs by trial id: one search per delivery, not one per trial."""
        if self.runs is None:
            runs, token = {}, None
            while True:
                page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token,
                                               filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
                runs.update({r.data.tags[TRIAL_TAG]: r.info.run_id for r in page if TRIAL_TAG in r.data.tags})
                token = page.token
                if not token:
                    break
            self.runs = runs
        return self.runs

    def _child(self, trial_id: str, name: str | None = None) -> str:
        runs = self._children()
        if trial_id not in runs:
            run = self.client.create_run(self.experiment_id, run_name=name or f"trial-{trial_id}", tags={
                PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id})
            runs[trial_id] = run.info.run_id
        return runs[trial_id]

    def apply(self, events: list[dict[str, Any]]) -> int:
        """Deliver events in order; return how many were delivered.

        A stretch of consecutive trial events (starts, metrics, ends, of any trials) goes out as one
        `log_batch` per trial (params, metrics and tags together), then the ends. Stops at the first
        failing call by raising; `progress` then says how many events went through. A stretch counts
        only when all of it went through: replaying one is harmless (a child run is found by its
        trial tag, MLflow ignores metric points it already has, params and tags get the same values).
        """
        done = self.progress = 0
        try:
            while done < len(events):
                end = done + 1
                if events[done]["op"] in TRIAL_OPS:
                    while end < len(events) and events[end]["op"] in TRIAL_OPS:
                        end += 1
                    self._apply_trials(events[done:end])
                else:
                    self._apply_job(events[done])
                done = self.progress = end
        except Exception:
            # A create_run whose answer was lost may still have made the run: look the children up
            # again (by their trial tag) before creating any, so a retry never makes a second one.
            self.runs = None
            raise
        return done

    def _log_batch(self, run_id: str, *, params=(), metrics=(), tags=()) -> None:
        """`log_batch` within MLflow's limits per call. An item the store refuses for good (a 4xx:
        a name or value it never takes) is dropped with one warning and noted on the run; the rest
        goes through. Outages raise: the journal keeps the events and the writer tries again."""
        params, metrics, tags = list(params), list(metrics), list(tags)
        while params or tags or metrics:  # MLflow's limits per call: 100 params, 100 tags, 1000 metrics
            try:
                self.client.log_batch(run_id, params=params[:100], tags=tags[:100], metrics=metrics[:1000])
            except Exception as exc:
                if not is_item_refusal(exc):
                    raise
                self._one_by_one(run_id, params[:100], metrics[:1000], tags[:100])
            params, tags, metrics = params[100:], tags[100:], metrics[1000:]

    def _one_by_one(self, run_id: str, params: list, metrics: list, tags: list) -> None:
        """After a refused batch: each name's items on their own, dropping the names refused."""
        from mlflow.entities import RunTag

        dropped = []
        for kind, items in (("params", params), ("metrics", metrics), ("tags", tags)):
            by_name: dict[str, list] = {}
            for item in items:
                by_name.setdefault(item.key, []).append(item)
            for name, group in by_name.items():
                try:
                    self.client.log_batch(run_id, **{kind: group})
                except Exception as exc:
                    if not is_item_refusal(exc):
                        raise
                    dropped.append(name)
                    log.warning("MLflow refused %s %r of run %s, dropped: %s", kind[:-1], name, run_id, describe(exc))
        if dropped:
            self.client.log_batch(run_id, tags=[RunTag("tuner.dropped", ", ".join(sorted(dropped))[:5000])])

    def _apply_trials(self, events: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        batches: dict[str, dict[str, Any]] = {}
        for e in events:
            b = batches.setdefault(e["trial"], {"name": None, "params": {}, "metrics": [], "tags": {}, "end": None,
                                                "reopen": False, "forget": False})
            if e["op"] == "trial_start":
                b["name"] = e["name"]
                b["params"].update(e["params"])
                b["tags"].update(e.get("tags", {}))
                b["reopen"] = b["reopen"] or b["end"] is not None or e["trial"] in self._children()
                b["end"] = None  # a trial Ray restarted after an end runs again
            elif e["op"] == "metrics":
                b["metrics"] += [Metric(k, float(v), e["time"], e["step"]) for k, v in e["values"].items()]
                b["tags"].update(e.get("tags", {}))
            elif e["op"] == "trial_forget":  # see tuner.tracking.callback: Ray ran it again under a new id
                b["forget"] = True
                b["tags"].update(e.get("tags", {}))
            else:
                b["end"] = e
                b["tags"].update(e.get("tags", {}))
                b["metrics"] += [Metric(k, float(v), e["time"], 0) for k, v in e.get("metrics", {}).items()]
        for trial, b in batches.items():
            if b["forget"] and trial not in self._children():
                continue  # never delivered: nothing to take back
            run_id = self._child(trial, b["name"])  # a new run starts as RUNNING
            if b["reopen"]:
                logged = self.client.get_run(run_id).data.params
                b["params"] = {k: v for k, v in b["params"].items() if k not in logged}
                self.client.update_run(run_id, status="RUNNING")
            self._log_batch(run_id, params=[Param(k, _param_value(v)) for k, v in b["params"].items()],
                            tags=[RunTag(k, str(v)[:5000]) for k, v in b["tags"].items()], metrics=b["metrics"])
            if b["end"] is not None:
                if b["end"].get("traceback"):
                    self.client.log_text(run_id, b["end"]["traceback"], "error.txt")
                self.client.set_terminated(run_id, status=b["end"]["status"], end_time=b["end"]["time"])
            if b["forget"]:
                self.client.set_terminated(run_id, status="KILLED")
                self.client.delete_run(run_id)  # deleted runs stay in the store, out of the UI's and searches' way

    def _apply_job(self, event: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        op = event["op"]
        if op == "parent":
            metrics = [Metric(k, float(v), event["time"], event.get("step", 0))
                       for k, v in event.get("metrics", {}).items()]
            tags = [RunTag(k, str(v)[:5000]) for k, v in event.get("tags", {}).items()]
            self._log_batch(self.parent_run_id, metrics=metrics, tags=tags)
        elif op == "artifact":
            if Path(event["path"]).exists():
                self.client.log_artifact(self.parent_run_id, event["path"], event.get("artifact_path"))
        elif op == "parent_end":
            self.client.set_terminated(self.parent_run_id, status=event["status"], end_time=event["time"])
        elif op == "damaged":
            pass  # a line a crash or power loss damaged: reported when the journal was opened
        else:
            raise ValueError(f"unknown tracking event {op!r}")


def sync(folder: Path, *, tracking_uri: str, experiment_id: str, parent_run_id: str) -> tuple[int, int]:
    """Deliver what a job left in its journal (``tuner sync``); return (delivered, left)."""
    journal = Journal(folder)
    pending = journal.pending()
    delivery = Delivery(tracking_uri=tracking_uri, experiment_id=experiment_id, parent_run_id=parent_run_id)
    try:
        with mlflow_settings():
            delivery.apply(pending)
    finally:
        journal.mark_delivered(delivery.progress)
        journal.close()
    return delivery.progress, len(pending) - delivery.progress
