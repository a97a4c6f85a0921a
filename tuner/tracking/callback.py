"""The Tune callback: trial events -> journal events, and each trial's final status.

`TrackingCallback` runs on Tune's event loop, so it never talks to MLflow: it journals and returns.
`trial_statuses` closes, after Tune, every trial the journal saw start and not end.

Every event is journaled as it happens. A driver killed between two of Tune's snapshots leaves a
journal that knows more than the snapshot `Tuner.restore` resumes from, in two ways, and the resumed
job's callback squares them with Tune from what Tune tells every callback (public hooks only):

- a trial the journal saw end, which the snapshot still holds as running: Tune runs it again from
  its checkpoint; its events are not journaled again (the trial stays ended once, as it was);
- a trial the journal saw start, which the snapshot never held: Tune has forgotten it and starts a
  new trial in its place (same index, so the same name ``trial-NNN``, with the config its restored
  searcher suggests). At the first step of the resumed job, the forgotten trial is journaled as
  forgotten: its child run is tagged and deleted, so each trial shows once, as the one Tune ran.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from tuner.tracking.names import (TrainingTime, TrialEnd, charged, flat, improves, is_number, legal_name,
                                  legal_names, stopped_early, trial_name, what_stopped)
from tuner.tracking.writer import Tracker, writer_for

# Keys Ray adds to every result; everything else a trial reports is logged as a metric.
RAY_RESULT_KEYS = frozenset({
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date", "pid", "hostname",
    "node_ip", "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
    "episodes_total", "done", "trial_id", "experiment_id", "experiment_tag", "config", "should_checkpoint",
    "checkpoint_dir_name", "warmup_time", "episodes_this_iter", "timesteps_this_iter",
})


class TrackingCallback(Callback):
    """Ray Tune callback: trial events -> journal. Picklable (Tune saves it with the experiment); the
    journal's writer is found by the run folder (`writer_for`) when Tune sets the callback up."""

    def __init__(self, *, folder: Path, metric: str, mode: str, max_t: int | None = None,
                 resources: dict[str, float] | None = None) -> None:
        self.folder = Path(folder)
        self.metric, self.mode, self.max_t = metric, mode, max_t
        self.resources = dict(resources or {"cpu": 1.0, "gpu": 0.0})  # a trial's, for its cost
        self._reset()

    def _reset(self) -> None:
        """The state of one driver process (none of it is pickled)."""
        self.tracker: Tracker | None = None
        self.best: float | None = None
        self.stopped: set[str] = set()  # trials a scheduler stopped early
        self.renamed: set[tuple[str, str]] = set()  # (trial, tag) of name mappings already journaled
        self.ended: set[str] = set()  # trials the journal saw end before this process: not journaled again
        self.unended: set[str] = set()  # trials the journal saw start and not end before this process
        self.squared = False  # whether the journal was squared with Tune's restored trials
        self.time = TrainingTime()  # each trial's training seconds, its runs in earlier processes included

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "metric": self.metric, "mode": self.mode, "max_t": self.max_t,
                "resources": self.resources}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A run folder from before this layout pickled its folder inside ``settings``.
        state = {"folder": state.get("folder") or state.get("settings", {}).get("folder"),
                 "resources": state.get("resources") or {"cpu": 1.0, "gpu": 0.0},
                 **{k: state.get(k) for k in ("metric", "mode", "max_t")}}
        self.__dict__.update(state)
        self._reset()

    def setup(self, **info: Any) -> None:
        self.tracker = writer_for(self.folder)
        best_key = legal_name(f"best_{self.metric}")
        self.time.earlier = trained_seconds(self.tracker.journal.events)  # empty for a new job
        for event in self.tracker.journal.events:
            if event["op"] == "parent" and best_key in event.get("metrics", {}):
                self.best = event["metrics"][best_key]  # the best so far goes on from where it was
            elif event["op"] == "trial_start" or _closed_by_the_job(event):
                self.unended.add(event["trial"])  # a trial `tuner stop` ended runs on when the job resumes
            elif event["op"] in ("trial_end", "trial_forget"):
                self.unended.discard(event["trial"])
                self.ended.add(event["trial"])

    def _emit(self, op: str, **fields: Any) -> None:
        self.tracker.emit(op, **fields)  # type: ignore[union-attr]  # set up by Tune before any event

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.squared:
            return
        self.squared = True  # the first step: Tune's restored trials are all in ``trials``
        known = {t.trial_id for t in trials}
        for trial_id in sorted(self.unended - known):
            self._emit("trial_forget", trial=trial_id, tags={
                "tuner.end": "forgotten: the driver stopped before Ray saved this trial; Ray ran it again "
                             "as a new trial of the same name"})
            self.ended.add(trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if trial.trial_id in self.ended:
            return
        params, renamed = legal_names(flat(trial.config))
        self._emit("trial_start", trial=trial.trial_id, name=trial_name(trial), params=params, tags=renamed)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if trial.trial_id in self.ended:
            return
        self.time.add(trial.trial_id, result)
        if stopped_early(result, self.max_t):
            self.stopped.add(trial.trial_id)
        step = int(result.get("training_iteration", 0))
        values = {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS and is_number(v)}
        if values.get("epoch") == step:  # the step already says it; a row per epoch costs the writer
            del values["epoch"]
        values, renamed = legal_names(values)
        # ``seconds``: the trial's training time so far, for its cost however its runs end (not delivered).
        event: dict[str, Any] = dict(trial=trial.trial_id, step=step, values=values,
                                     seconds=round(self.time.seconds(trial.trial_id), 3))
        new = {k: v for k, v in renamed.items() if (trial.trial_id, k) not in self.renamed}
        if new:  # tagged once per trial
            event["tags"] = new
            self.renamed |= {(trial.trial_id, k) for k in new}
        self._emit("metrics", **event)

    def _cost(self, trial) -> dict[str, float]:
        return trial_cost(charged(self.time.seconds(trial.trial_id), trial.last_result), self.resources)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if trial.trial_id in self.ended:
            return
        finished = trial.trial_id not in self.stopped
        end = TrialEnd(trial=trial.trial_id, status="FINISHED" if finished else "KILLED",
                       tags={"tuner.end": "finished" if finished else "stopped early by the scheduler"},
                       metrics=self._cost(trial))
        self._emit(**end.event())
        value = (trial.last_result or {}).get(self.metric)
        if improves(value, self.best, self.mode):
            self.best = value
            # Step: how many trials have ended, so the parent's chart is "best so far against trials",
            # and no two points share (key, time, step): MLflow copies a run's step-0 metrics to a
            # model logged on it and refuses duplicates.
            ended = sum(1 for t in trials if t is trial or t.is_finished())
            best = {"best_trial": trial_name(trial), "best_config": json.dumps(flat(trial.config), default=str)}
            metrics, renamed = legal_names({f"best_{self.metric}": value})
            self._emit("parent", time=end.time, step=ended, tags={**best, **renamed}, metrics=metrics)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if trial.trial_id in self.ended:
            return
        message, trace = _trial_error(trial)
        diverged = "Diverged" in message
        end = TrialEnd(trial=trial.trial_id, status="FAILED", traceback=trace,
                       tags={"tuner.end": "diverged" if diverged else "failed", "error": message},
                       metrics={**self._cost(trial),
                                **({"diverged": 1} if diverged else {})})
        self._emit(**end.event())


# How `trial_statuses` closes a trial it never saw end (the job was stopped, or Ray lost the trial):
# such an end is the job's, not the trial's, and a resumed job that runs the trial again journals it.
CLOSED_BY_THE_JOB = ("stopped:", "lost:")


def _closed_by_the_job(event: dict[str, Any]) -> bool:
    return event["op"] == "trial_end" and event.get("tags", {}).get("tuner.end", "").startswith(CLOSED_BY_THE_JOB)


def trial_cost(seconds: float, resources: dict[str, float]) -> dict[str, float]:
    """What a trial used: its training wall seconds over all its runs (`TrainingTime`) and
    resource-seconds (times the CPUs and GPUs it held)."""
    return {"trial_wall_s": seconds, "cpu_s": seconds * resources["cpu"], "gpu_s": seconds * resources["gpu"]}


def trained_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    """Each trial's training seconds as the journal last saw them (its last result's, or the cost its
    end was charged; a trial run again after its end was journaled is charged from there on)."""
    seconds: dict[str, float] = {}
    for event in events:
        if event["op"] == "metrics" and "seconds" in event:
            seconds[event["trial"]] = event["seconds"]
        elif event["op"] == "trial_end" and "trial_wall_s" in event.get("metrics", {}):
            seconds[event["trial"]] = event["metrics"]["trial_wall_s"]
    return seconds


def trial_statuses(tracker: Tracker, results, *, resources: dict[str, float],
                   stopped: str | None = None) -> dict[str, str]:
    """Each trial's final status by name, from the journal (the record that survives driver crashes).

    A trial the journal saw start but not end is closed from Ray's own results; one that Ray does not
    know at all is closed as KILLED with the reason. Every trial that ever ran is accounted for once;
    a forgotten one (see the module's doc) is not a trial of the job's. ``stopped``: the signal that
    stopped the job before its end, if one did (its running trials end KILLED, with it in the reason).
    A trial closed here is charged as the callback charges one: the training seconds the journal last
    saw (`trained_seconds`, `charged`) times ``resources``, a trial's CPUs and GPUs (`trial_cost`).
    """
    ray_results = {r.metrics["trial_id"]: r for r in results if r.metrics and "trial_id" in r.metrics}
    ray_errors = {trial: result.error for trial, result in ray_results.items()}
    seconds = trained_seconds(tracker.journal.events)
    names, statuses = {}, {}
    for event in tracker.journal.events:
        if event["op"] == "trial_start":
            names[event["trial"]] = event["name"]
            statuses[event["trial"]] = "RUNNING"
        elif event["op"] == "trial_end":
            statuses[event["trial"]] = event["status"]
        elif event["op"] == "trial_forget":
            statuses.pop(event["trial"], None)
    for trial, status in list(statuses.items()):
        if status != "RUNNING":
            continue
        if stopped and ray_errors.get(trial) is None:
            reason = f"stopped: the job was stopped ({what_stopped(stopped)})"
            end = TrialEnd(trial, "KILLED", {"tuner.end": reason})
        elif trial not in ray_errors:
            end = TrialEnd(trial, "KILLED", {"tuner.end": "lost: the driver stopped before Ray saved this trial"})
        elif ray_errors[trial] is not None:
            end = TrialEnd(trial, "FAILED", {"tuner.end": "failed", "error": str(ray_errors[trial]).splitlines()[0][:500]})
        else:
            end = TrialEnd(trial, "FINISHED", {"tuner.end": "finished (recorded from Ray's results after a restart)"})
        last_result = ray_results[trial].metrics if trial in ray_results else None
        end = replace(end, metrics=trial_cost(charged(seconds.get(trial, 0.0), last_result), resources))
        tracker.emit(**end.event())
        statuses[trial] = end.status
    return {names[trial]: status for trial, status in statuses.items()}


def job_cost(events: list[dict[str, Any]]) -> dict[str, float]:
    """Trial-hours, CPU-hours and GPU-hours of the trials the journal saw end (forgotten ones aside)."""
    ends = {e["trial"]: e.get("metrics", {}) for e in events if e["op"] == "trial_end"}
    for event in events:
        if event["op"] == "trial_forget":
            ends.pop(event["trial"], None)
    return {f"{name}_hours": sum(m.get(key, 0.0) for m in ends.values()) / 3600
            for name, key in (("trial", "trial_wall_s"), ("cpu", "cpu_s"), ("gpu", "gpu_s"))}


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
