"""MLflow tracking: one parent run per job, one child run per trial, written only by the driver.

How it works:
- `start_parent_run` creates (or, on resume, reuses) the job's parent run before Ray starts.
- `TrackingCallback` (a Ray Tune callback) turns trial events into small JSON events and appends
  them to a journal on disk (``<run_dir>/tracking/events.jsonl``). It never talks to MLflow, so a
  slow or dead tracking server cannot stall Tune's event loop.
- `Tracker` owns a writer thread that delivers the journal to MLflow in order, grouping metrics into
  `log_batch` calls, and records how far it got (``delivered``). When the server is away it keeps
  the events and tries again; what is still undelivered when the job ends stays in the journal for
  `tuner sync`, which is the same delivery run again. A child run is looked up by its
  ``tuner.trial_id`` tag before it is created, so replays and resumes never duplicate a trial.

Credentials for a secured server come from MLflow's own environment variables
(MLFLOW_TRACKING_USERNAME / PASSWORD / TOKEN) and are never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ray.tune import Callback

from tuner.errors import UserError, describe, is_item_refusal
from tuner.folders import write_atomically
from tuner.settings import mlflow_settings

log = logging.getLogger(__name__)

TRIAL_TAG = "tuner.trial_id"
JOB_TAG = "tuner.job"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_OPS = frozenset({"trial_start", "metrics", "trial_end"})
# Keys Ray adds to every result; everything else a trial reports is logged as a metric.
RAY_RESULT_KEYS = frozenset({
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date", "pid", "hostname",
    "node_ip", "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
    "episodes_total", "done", "trial_id", "experiment_id", "experiment_tag", "config", "should_checkpoint",
    "checkpoint_dir_name", "warmup_time", "episodes_this_iter", "timesteps_this_iter",
})
_RETRY_WAIT_S = (1, 2, 4, 8)  # waits between delivery attempts while the server is away
_FLUSH_S = 2.0  # the writer delivers what accumulated this often



def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def trial_run_name(trial_id: str, experiment_tag: str | None = None) -> str:
    """``trial-007`` for the 7th trial Tune created: readable, and stable across resumes.

    Tune's experiment tag starts with the trial's index (``7_lr=0.01,...``); the id is a fallback.
    """
    index = (experiment_tag or "").split("_", 1)[0]
    return f"trial-{int(index):03d}" if index.isdigit() else f"trial-{trial_id}"


def trial_name(trial) -> str:
    """The readable name of a `ray.tune.experiment.Trial`."""
    return trial_run_name(trial.trial_id, trial.experiment_tag)


def _param_value(value: Any) -> str:
    return "null" if value is None else str(value)[:6000]


def _artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file. (MLflow's default
    is ./mlruns in whatever the current directory is; a server decides for itself.)"""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def start_parent_run(*, tracking_uri: str, experiment: str, job_name: str, params: Mapping[str, Any],
                     spec_yaml: str, tags: Mapping[str, str]) -> tuple[str, str]:
    """Create the job's parent run with the spec as params and artifact; return (experiment_id, run_id)."""
    from mlflow.entities import Param, RunTag

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=_artifact_root(tracking_uri))
    params, renamed = legal_names(params)
    run = client.create_run(experiment_id, run_name=job_name, tags={JOB_TAG: job_name, **tags, **renamed})
    items = [Param(k, _param_value(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    client.log_text(run.info.run_id, spec_yaml, "spec.yaml")
    client.log_batch(run.info.run_id, tags=[RunTag("tuner.status", "RUNNING")])
    return experiment_id, run.info.run_id


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


class JournalWriteError(UserError):
    """The journal could not be written (a full disk, a file-size limit): the job stops."""

    exit_code = 1


class Journal:
    """An append-only JSON-lines file of events and the count already delivered.

    Durable where the protocol needs it: an event that changes a run's state (a trial's start or end,
    the parent's results and end, an artifact) is fsync'd before `append` returns, so a power loss
    keeps every event `tuner resume` relies on; metric rows reach the disk with the next such event
    (a power loss can lose the last seconds of a running trial's metrics, never a trial). A write
    that fails (a full disk) is cut back to the last whole line and raises `JournalWriteError`; a
    damaged line found on opening is skipped and counted in ``damaged``.
    """

    DURABLE_OPS = frozenset({"trial_start", "trial_end", "parent", "parent_end", "artifact"})

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.events_path = folder / "events.jsonl"
        self.delivered_path = folder / "delivered"
        self.events: list[dict[str, Any]] = []
        self.damaged = 0
        if self.events_path.exists():
            data = self.events_path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) < len(data):
                # A line a crash cut short: cut it off, or the next event (a resumed job's) would run into it.
                with open(self.events_path, "r+b") as f:
                    f.truncate(len(complete))
            for line in complete.splitlines():
                if not line.strip():
                    continue
                event = _parse_event(line)
                if event is None:  # kept as a place-holder: `delivered` counts lines, damaged ones included
                    self.damaged += 1
                    event = {"op": "damaged"}
                self.events.append(event)
            if self.damaged:
                log.warning("%s: skipped %d damaged line(s)", self.events_path, self.damaged)
        self.delivered = self._read_delivered()
        self._fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def _read_delivered(self) -> int:
        if not self.delivered_path.exists():
            return 0
        text = self.delivered_path.read_text().strip()
        if text.isdigit() and int(text) <= len(self.events):
            return int(text)
        # Deliveries are idempotent (runs found by their trial tag, the same values again): replay all.
        log.warning("%s: damaged (%r); delivering the journal again from its start", self.delivered_path, text[:20])
        return 0

    def append(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, default=str) + "\n").encode()
        with self._lock:
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                written = 0
                while written < len(line):
                    written += os.write(self._fd, line[written:])
                if event["op"] in self.DURABLE_OPS:
                    os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)  # never leave a cut line for the next event to run into
                raise JournalWriteError(f"cannot write the tracking journal {self.events_path}: "
                                        f"{exc.strerror or exc}") from None
            self.events.append(event)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.events[self.delivered :]

    def mark_delivered(self, count: int) -> None:
        self.delivered += count
        write_atomically(self.delivered_path, str(self.delivered))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _parse_event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("op"), str) else None


# ----------------------------------------------------------------------------------------- delivery


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
                                                "reopen": False})
            if e["op"] == "trial_start":
                b["name"] = e["name"]
                b["params"].update(e["params"])
                b["tags"].update(e.get("tags", {}))
                b["reopen"] = b["reopen"] or b["end"] is not None or e["trial"] in self._children()
                b["end"] = None  # a trial Ray restarted after an end runs again
            elif e["op"] == "metrics":
                b["metrics"] += [Metric(k, float(v), e["time"], e["step"]) for k, v in e["values"].items()]
                b["tags"].update(e.get("tags", {}))
            else:
                b["end"] = e
                b["tags"].update(e.get("tags", {}))
                b["metrics"] += [Metric(k, float(v), e["time"], 0) for k, v in e.get("metrics", {}).items()]
        for trial, b in batches.items():
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


# ---------------------------------------------------------------------------------------- the writer


class Tracker:
    """The job's one MLflow writer: a journal plus a thread that delivers it.

    One per run folder in a process (`Tracker.for_run`), shared by the Tune callback and the code
    that logs the job's results after `Tuner.fit`.
    """

    _open: dict[Path, Tracker] = {}

    def __init__(self, folder: Path, *, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.journal = Journal(folder)
        self.delivery = Delivery(tracking_uri=tracking_uri, experiment_id=experiment_id, parent_run_id=parent_run_id)
        self.tracking_uri = tracking_uri
        self._stop = threading.Event()
        self._failures = 0
        self.last_error: str | None = None
        self.delivery_cpu_s = 0.0  # CPU seconds spent delivering, for bench/ (what tracking costs the machine)
        self._thread = threading.Thread(target=self._run, name="tuner-mlflow-writer", daemon=True)
        self._thread.start()

    @classmethod
    def for_run(cls, folder: Path, **kwargs: Any) -> Tracker:
        folder = folder.resolve()
        if folder not in cls._open:
            cls._open[folder] = cls(folder, **kwargs)
        return cls._open[folder]

    def emit(self, op: str, **fields: Any) -> None:
        """Journal one event; ``time`` (ms) defaults to now."""
        self.journal.append({"op": op, "time": _now_ms(), **fields})

    def _deliver_once(self) -> bool:
        """Try to deliver everything pending; True when nothing is left."""
        started = time.thread_time()
        try:
            with mlflow_settings():  # short HTTP retries: a dead server must not hold the writer for minutes
                return self._deliver_pending()
        finally:
            self.delivery_cpu_s += time.thread_time() - started

    def _deliver_pending(self) -> bool:
        pending = self.journal.pending()
        if not pending:
            return True
        delivered = 0
        try:
            delivered = self.delivery.apply(pending)
        except Exception as exc:  # noqa: BLE001 - an outage (refused items were dropped in Delivery): keep, retry
            self._failures += 1
            self.last_error = describe(exc)
            if self._failures == 1:
                log.warning("tracking server unreachable (%s); buffering events on disk", self.last_error)
            delivered = self.delivery.progress
        else:
            if self._failures:
                log.warning("tracking server is back; delivered the buffered events")
            self._failures = 0
        if delivered:
            self.journal.mark_delivered(delivered)
        return delivered == len(pending)

    def _run(self) -> None:
        # Deliver every _FLUSH_S, not on every event: fewer, larger batches cost the trials (which
        # share the machine's cores with this thread) much less than one call per event.
        while not self._stop.wait(_FLUSH_S):
            if not self._deliver_once():
                self._stop.wait(_RETRY_WAIT_S[min(self._failures, len(_RETRY_WAIT_S)) - 1])

    def close(self, *, timeout_s: float = 30.0) -> int:
        """Stop the writer, then keep delivering until done or ``timeout_s``; return events left undelivered."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + timeout_s
        while not self._deliver_once() and time.monotonic() < deadline:
            time.sleep(_RETRY_WAIT_S[min(self._failures, len(_RETRY_WAIT_S)) - 1])
        left = len(self.journal.pending())
        self.journal.close()
        Tracker._open.pop(self.journal.events_path.parent.resolve(), None)
        return left


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


# --------------------------------------------------------------------------------------- the callback


class TrackingCallback(Callback):
    """Ray Tune callback: trial events -> journal. Picklable (Tune saves it with the experiment)."""

    def __init__(self, *, folder: Path, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 metric: str, mode: str, max_t: int | None = None) -> None:
        self.settings = dict(folder=Path(folder), tracking_uri=tracking_uri, experiment_id=experiment_id,
                             parent_run_id=parent_run_id)
        self.metric, self.mode, self.max_t = metric, mode, max_t
        self.best: float | None = None
        self.stopped: set[str] = set()
        self.renamed: set[tuple[str, str]] = set()  # (trial, tag) of name mappings already journaled
        # Events held back until a Tune snapshot covers them (see _journal): a started trial's events
        # by trial id, and trial ends; each with the snapshot count when it was queued.
        self.starting: dict[str, tuple[int, list[tuple[str, dict[str, Any]]]]] = {}
        self.ending: list[tuple[int, str, dict[str, Any]]] = []

    @property
    def tracker(self) -> Tracker:
        settings = dict(self.settings)
        return Tracker.for_run(settings.pop("folder"), **settings)

    def setup(self, **info: Any) -> None:
        self.tracker  # start the writer before the first trial  # noqa: B018

    # The journal follows Tune's snapshots (Tune saves its experiment state inside a step, after the
    # callbacks ran, at most every TUNE_GLOBAL_CHECKPOINT_S): a trial's start, and its results until
    # then, are journaled once a snapshot that knows the trial is on disk; its end once a snapshot
    # that knows the end is. Journaled earlier, a driver killed in between would leave the journal
    # with a trial `Tuner.restore` never heard of (an extra child run), or saying "finished" while
    # `Tuner.restore` runs the trial again.

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        params, renamed = legal_names(_flat(trial.config))
        self.starting[trial.trial_id] = (_snapshots, [("trial_start", dict(
            trial=trial.trial_id, name=trial_name(trial), params=params, tags=renamed))])

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if stopped_early(result, self.max_t):
            self.stopped.add(trial.trial_id)
        step = int(result.get("training_iteration", 0))
        values = {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS and _is_number(v)}
        if values.get("epoch") == step:  # the step already says it; a row per epoch costs the writer
            del values["epoch"]
        values, renamed = legal_names(values)
        event = dict(trial=trial.trial_id, step=step, values=values, time=_now_ms())
        new = {k: v for k, v in renamed.items() if (trial.trial_id, k) not in self.renamed}
        if new:  # tagged once per trial
            event["tags"] = new
            self.renamed |= {(trial.trial_id, k) for k in new}
        if trial.trial_id in self.starting:
            self.starting[trial.trial_id][1].append(("metrics", event))
        else:
            self.tracker.emit("metrics", **event)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        result = trial.last_result or {}
        finished = trial.trial_id not in self.stopped
        tags = {"tuner.end": "finished" if finished else "stopped early by the scheduler"}
        now = _now_ms()
        self.ending.append((_snapshots, "trial_end", dict(trial=trial.trial_id, time=now,
                                                          status="FINISHED" if finished else "KILLED", tags=tags)))
        value = result.get(self.metric)
        if improves(value, self.best, self.mode):
            self.best = value
            # Step: how many trials have ended, so the parent's chart is "best so far against trials",
            # and no two points share (key, time, step): MLflow copies a run's step-0 metrics to a
            # model logged on it and refuses duplicates (the ensemble went unlogged when two
            # improvements were journaled in the same millisecond at step 0).
            ended = sum(1 for t in trials if t is trial or t.is_finished())
            best = {"best_trial": trial_name(trial), "best_config": json.dumps(_flat(trial.config), default=str)}
            metrics, renamed = legal_names({f"best_{self.metric}": value})
            self.ending.append((_snapshots, "parent", dict(time=now, step=ended, tags={**best, **renamed},
                                                           metrics=metrics)))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        message, trace = _trial_error(trial)
        diverged = "Diverged" in message
        tags = {"tuner.end": "diverged" if diverged else "failed", "error": message}
        self.ending.append((_snapshots, "trial_end", dict(trial=trial.trial_id, time=_now_ms(), status="FAILED",
                                                          traceback=trace, tags=tags,
                                                          metrics={"diverged": 1} if diverged else {})))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._journal(everything=False)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._journal(everything=True)  # after Tune's final snapshot

    def _journal(self, *, everything: bool) -> None:
        """Journal what a snapshot written since it was queued now covers (all of it at the end)."""
        for trial_id, (queued_at, events) in list(self.starting.items()):
            if everything or queued_at < _snapshots:
                for op, fields in events:
                    self.tracker.emit(op, **fields)
                del self.starting[trial_id]
        keep = []
        for queued_at, op, fields in self.ending:
            if everything or queued_at < _snapshots:
                self.tracker.emit(op, **fields)
            else:
                keep.append((queued_at, op, fields))
        self.ending = keep

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "best": None, "stopped": set(), "starting": {}, "ending": [], "renamed": set()}


# How many experiment snapshots Tune has written to the run folder in this process
# (counted by tuner.run.synchronous_snapshots).
_snapshots = 0


def snapshot_taken() -> None:
    global _snapshots
    _snapshots += 1


_ILLEGAL = re.compile(r"[^\w\-. :/]")  # MLflow takes alphanumerics, _ - . : / and spaces in names
MAX_NAME = 250  # MLflow's longest param, metric or tag key


def legal_name(name: str) -> str:
    """``name`` as MLflow takes it: other characters become _, and a name that would read as another
    path (``a//b``, ``../x``, ``/x``) has its slashes replaced too."""
    legal = _ILLEGAL.sub("_", name)[:MAX_NAME] or "_"
    if posixpath.normpath(legal) != legal or legal.startswith(("/", "..")) or legal == ".":
        legal = legal.replace("/", "_").replace("..", "__").lstrip(".") or "_"
    return legal


def legal_names(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values under legal names, {"tuner.renamed.<legal>": original} for each name that changed)."""
    out, renamed = {}, {}
    for name, value in values.items():
        legal = legal_name(name)
        if legal != name:
            while legal in out or legal in values:  # two names mapped alike keep apart
                legal = f"{legal}_"[-MAX_NAME:]
            renamed[f"tuner.renamed.{legal}"] = name
        out[legal] = value
    return out, renamed


def _now_ms() -> int:
    return int(time.time() * 1000)


def improves(value: Any, best: float | None, mode: str) -> bool:
    """Whether a reported ``value`` beats ``best`` (None: nothing yet) in direction ``mode``."""
    return _is_number(value) and (best is None or (value < best if mode == "min" else value > best))


def stopped_early(result: Mapping[str, Any], max_t: int | None) -> bool:
    """Whether a trial's result says a scheduler stopped it before its end.

    Tune marks a result done=True before callbacks see it only when a scheduler (or stopper) decided
    to stop the trial; a trainable that returns ends with a result callbacks never see. ASHA also
    "stops" a trial that reached max_t: that one finished.
    """
    return bool(result.get("done")) and (max_t is None or result.get("training_iteration", 0) < max_t)


def _trial_error(trial) -> tuple[str, str]:
    """(one-line message, full text) of a failed trial's error."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        text = Path(path).read_text()
    elif getattr(trial, "error_message", None):
        text = str(trial.error_message)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if ("Error" in line or "Exception" in line or "Diverged" in line)
                  and not line.startswith("File ")), lines[-1] if lines else "unknown error")
    return cause[:500], text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config as MLflow params see it (nested keys joined with '/')."""
    return _flat(config)
