"""Names and small records shared by the journal, the delivery and the Tune callback.

MLflow's naming rules (`legal_name`), a trial's readable run name, and the typed records a job's
end passes around: `TrialEnd` (what the journal says of a trial's end) and `RankedTrial` (a trial
that reached a value of the metric, for the ensemble, the report and the summary).
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

TRIAL_TAG = "tuner.trial_id"
JOB_TAG = "tuner.job"
PARENT_TAG = "mlflow.parentRunId"


def trial_run_name(trial_id: str, experiment_tag: str | None = None) -> str:
    """``trial-007`` for the 7th trial Tune created: readable, and stable across resumes.

    Tune's experiment tag starts with the trial's index (``7_lr=0.01,...``); the id is a fallback.
    """
    index = (experiment_tag or "").split("_", 1)[0]
    return f"trial-{int(index):03d}" if index.isdigit() else f"trial-{trial_id}"


def trial_name(trial) -> str:
    """The readable name of a `ray.tune.experiment.Trial`."""
    return trial_run_name(trial.trial_id, trial.experiment_tag)


@dataclass(frozen=True)
class TrialEnd:
    """A trial's end as the journal records it (op ``trial_end``)."""

    trial: str  # Tune's trial id
    status: Literal["FINISHED", "KILLED", "FAILED"]
    tags: dict[str, str] = field(default_factory=dict)  # tuner.end (why it ended), error
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. diverged: 1
    traceback: str | None = None  # a failed trial's error, logged as error.txt on its run
    time: int = field(default_factory=lambda: now_ms())

    def event(self) -> dict[str, Any]:
        return {"op": "trial_end", **asdict(self)}


class TrainingTime:
    """Each trial's training seconds over all its runs, from Ray's results.

    Ray's ``time_total_s`` goes on from a checkpoint when a trial is restored (a retry after a
    failure, or a resumed job), but starts again at 0 when the trial has none. Ray's
    ``time_since_restore`` always starts again at 0, so the seconds of every run are summed here.
    A new run shows as ``iterations_since_restore`` not growing. Time after a run's last result is
    not counted, as Ray does not count it either."""

    def __init__(self) -> None:
        self.earlier: dict[str, float] = {}  # trial id -> seconds of its runs before the current one
        self.current: dict[str, tuple[int, float]] = {}  # trial id -> (iterations, seconds) of the current run

    def add(self, trial: str, result: Mapping[str, Any]) -> None:
        """Count one of a trial's results (Ray's; each result once, in order). A result without Ray's
        ``iterations_since_restore`` counts nothing (`charged` falls back on ``time_total_s``)."""
        if "iterations_since_restore" not in result:
            return
        iterations = int(result["iterations_since_restore"] or 0)
        seconds = float(result.get("time_since_restore") or 0.0)
        before = self.current.get(trial)
        if before == (iterations, seconds):
            return  # the same result again (Tune hands a trial's last result to a searcher's end as well)
        if before is not None and iterations <= before[0]:  # restored: a run after the one that was counting
            self.earlier[trial] = self.earlier.get(trial, 0.0) + before[1]
        self.current[trial] = (iterations, seconds)

    def seconds(self, trial: str) -> float:
        return self.earlier.get(trial, 0.0) + self.current.get(trial, (0, 0.0))[1]


def charged(seconds: float, last_result: Mapping[str, Any] | None) -> float:
    """A trial's training seconds: those `TrainingTime` counted over its runs, or Ray's ``time_total_s``
    where it is more (it never exceeds all runs' seconds, but knows more where a crash lost the
    journal's last results, or where a journal from before the seconds were kept has none)."""
    return max(seconds, float((last_result or {}).get("time_total_s") or 0.0))


@dataclass(frozen=True)
class RankedTrial:
    """A trial that reached a finite value of the metric; a job's trials are ranked best first."""

    trial: str  # readable name, trial-007
    trial_id: str
    value: float  # its best value of the metric over its epochs
    epochs: int
    config: dict[str, Any]
    checkpoint: str | None  # its best epoch's checkpoint folder, when it saved one


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


def now_ms() -> int:
    return int(time.time() * 1000)


def improves(value: Any, best: float | None, mode: str) -> bool:
    """Whether a reported ``value`` beats ``best`` (None: nothing yet) in direction ``mode``."""
    return is_number(value) and (best is None or (value < best if mode == "min" else value > best))


def stopped_early(result: Mapping[str, Any], max_t: int | None) -> bool:
    """Whether a trial's result says a scheduler stopped it before its end.

    Tune marks a result done=True before callbacks see it only when a scheduler (or stopper) decided
    to stop the trial; a trainable that returns ends with a result callbacks never see. ASHA also
    "stops" a trial that reached max_t: that one finished.
    """
    return bool(result.get("done")) and (max_t is None or result.get("training_iteration", 0) < max_t)


def what_stopped(signal_name: str) -> str:
    """How the job's messages name the signal that stopped it: ``Ctrl-C`` for SIGINT, else the
    signal and where it usually comes from."""
    if signal_name == "SIGINT":
        return "Ctrl-C"
    if signal_name == "SIGUSR1":
        return "SIGUSR1, Ray Tune's own stop signal"
    return f"{signal_name}, e.g. tuner stop"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
