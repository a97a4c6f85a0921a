"""The search: algorithm names -> Optuna samplers inside Ray's OptunaSearch, scheduler names -> Ray
schedulers, and the Optuna study stored in a database of its own.

Closed registries: the spec only admits these names, and adding one is one line here. The space is
always sampled define-by-run (`search_spaces.sample`), which is what makes conditional keys possible.
TPE reads the study through `tuner.history`'s view (the best and the most recent trials), which keeps
a suggestion's cost flat in a long job.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Callable

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import condition_of, domain_of, sample
from tuner.history import BoundedHistory
from tuner.spec import JobSpec
from tuner.tracking.names import TrainingTime, charged
from tuner.study import open_storage

log = logging.getLogger(__name__)

SAMPLERS: dict[str, Callable[[JobSpec], optuna.samplers.BaseSampler]] = {
    # Multivariate TPE models the knobs jointly (lr and optimizer, lr and batchnorm interact), by groups
    # of keys sampled together where keys are conditional (`group`; a space without conditions is one
    # group, and TPE suggests the same without the option, which reads every trial again at every
    # suggestion); the constant liar keeps trials that run at the same time from being sent to the same
    # spot, which Optuna recommends for parallel workers (bench/search_quality.py: BENCHMARKS.md).
    # Multi-objective TPE is the same sampler.
    "tpe": lambda spec: optuna.samplers.TPESampler(seed=spec.search.seed, multivariate=True, constant_liar=True,
                                                   group=any(condition_of(e) for e in spec.space.values())),
    "random": lambda spec: optuna.samplers.RandomSampler(seed=spec.search.seed),
    "grid": lambda spec: optuna.samplers.GridSampler({k: domain_of(e)[1] for k, e in spec.space.items()},
                                                     seed=spec.search.seed),
}


class StoredStudySearch(OptunaSearch):
    """Ray's OptunaSearch, for a study that outlives the driver, with the job's budget.

    After `tuner resume`, Tune may run again a trial whose end the stored study already has (the trial
    ended after Tune's last snapshot): its results are not told again, and the study keeps the values
    it had. With ``search.budget``, no trial is suggested once the search has run ``wall_s`` seconds
    or its ended trials have used ``gpu_hours`` (their training seconds over all their runs, as the
    job's cost counts them, times the trial's GPUs): Tune then starts no new trial and lets the
    running ones finish.
    """

    def __init__(self, *args, budget: dict | None = None, gpus_per_trial: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.budget = {k: v for k, v in (budget or {}).items() if v is not None}
        self.gpus_per_trial = gpus_per_trial
        self.gpu_s = 0.0
        self.time = TrainingTime()  # saved with Tune's snapshots: a trial stopped and run again is charged both runs
        # The seconds the search has run: saved with Tune's snapshots, so a resumed search goes on
        # counting from there; the time between a crash and `tuner resume` does not count.
        self.ran_s = 0.0
        self.clock: tuple[int, float, float] | None = None  # (pid, monotonic start, ran_s then) of this process

    def _ran(self) -> float:
        now = time.monotonic()
        if self.clock is None or self.clock[0] != os.getpid():  # the first call in this process
            self.clock = (os.getpid(), now, self.ran_s)
        self.ran_s = self.clock[2] + (now - self.clock[1])  # never below the saved seconds by rounding
        return self.ran_s

    def spent(self) -> str | None:
        """What of the budget is spent, or None."""
        if "wall_s" in self.budget and self._ran() >= self.budget["wall_s"]:
            return f"wall_s {self.budget['wall_s']:g}"
        if "gpu_hours" in self.budget and self.gpu_s / 3600 >= self.budget["gpu_hours"]:
            return f"gpu_hours {self.budget['gpu_hours']:g}"
        return None

    def suggest(self, trial_id: str):
        if self.spent():
            return Searcher.FINISHED
        return super().suggest(trial_id)

    def _time(self) -> TrainingTime:
        if not hasattr(self, "time"):  # a searcher saved before it counted this way
            self.time = TrainingTime()
        return self.time

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result:
            self._time().add(trial_id, result)
        self.gpu_s += charged(self._time().seconds(trial_id), result) * self.gpus_per_trial
        self._ran()
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._time().add(trial_id, result)
        try:
            with warnings.catch_warnings():
                # A trial run again from its start (after `tuner resume`, or a retry) reports its first
                # epochs again; the study keeps the values the first run reported, and says so per epoch.
                warnings.filterwarnings("ignore", message="The reported value is ignored because this `step=",
                                        category=UserWarning)
                super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.info("trial %s: the stored study already has its end; its re-run is not reported", trial_id)


def sampler_storage(spec: JobSpec, storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage the sampler reads the study through: for TPE, a view of the best and the most recent
    trials (`tuner.history`, ``search.tpe_history``); random and grid get the whole study (the grid
    looks for its unvisited points in it)."""
    if spec.search.algorithm != "tpe" or spec.search.tpe_history is None:
        return storage
    # A database's storage gets Optuna's cache of finished trials here, as `create_study` would give a
    # bare one, which it no longer sees behind the view: without it every read goes to the database
    # (`get_storage`, which Optuna calls internal: README, pinned by tests/test_history.py).
    return BoundedHistory(optuna.storages.get_storage(storage), recent=spec.search.tpe_history)


def make_searcher(spec: JobSpec, *, storage: str | None = None, study_name: str | None = None) -> Searcher:
    """Ray's OptunaSearch over the spec's space with the chosen Optuna sampler; the study in ``storage``
    (`tuner.study.open_storage`) under ``study_name`` when given, kept up to date as trials end.

    Early stopping comes from the Tune scheduler (OptunaSearch always uses Optuna's NopPruner).
    With ``search.reproducible``, suggestions come in batches of max_concurrent, each batch waiting
    for the one before (Ray's ConcurrencyLimiter with batch=True): the sampler then sees the same
    history at every suggestion, whatever order trials end in.
    """
    with warnings.catch_warnings():  # TPE's `group` is experimental in Optuna 5: a warning per job otherwise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = SAMPLERS[spec.search.algorithm](spec)
    searcher = StoredStudySearch(
        space=sample(spec.space),
        metric=spec.metrics if spec.multi_objective else spec.objective,
        mode=spec.modes if spec.multi_objective else spec.direction,
        sampler=sampler,
        points_to_evaluate=[dict(p) for p in spec.search.start_from] or None,
        storage=sampler_storage(spec, open_storage(storage)) if storage else None,
        study_name=study_name,
        budget=spec.search.budget.model_dump(),
        gpus_per_trial=spec.trial.resources.gpu,
    )
    if spec.search.reproducible:
        return ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent, batch=True)
    return searcher


def asha_max_t(spec: JobSpec) -> int | None:
    """The epoch at which ASHA stops every trial (reaching it is finishing); None without ASHA."""
    return (spec.scheduler.max_t or spec.trial.epochs) if spec.scheduler.name == "asha" else None


def make_scheduler(spec: JobSpec) -> TrialScheduler:
    if spec.scheduler.name == "asha":
        return ASHAScheduler(
            metric=spec.objective,  # a multi-objective job's first metric
            mode=spec.direction,
            time_attr="training_iteration",
            max_t=asha_max_t(spec),
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return FIFOScheduler()
