"""Algorithm and scheduler names -> Optuna samplers (inside Ray's OptunaSearch) and Ray schedulers.

Closed registries: the spec only admits these names, and adding one is one line here.
"""

from __future__ import annotations

from typing import Callable

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from search_spaces import to_optuna
from tuner.spec import JobSpec

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    # Multivariate TPE models the knobs jointly (lr and optimizer, lr and batchnorm interact); the
    # constant liar keeps trials that run at the same time from being sent to the same spot, which
    # Optuna recommends for parallel workers (bench/search_quality.py: BENCHMARKS.md section 2).
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def make_searcher(spec: JobSpec) -> OptunaSearch:
    """Ray's OptunaSearch over the spec's space, with the chosen Optuna sampler.

    Early stopping comes from the Tune scheduler (OptunaSearch always uses Optuna's NopPruner).
    """
    return OptunaSearch(
        space=to_optuna(spec.space),
        metric=spec.metric,
        mode=spec.mode,
        sampler=SAMPLERS[spec.search.algorithm](spec.search.seed),
    )


def asha_max_t(spec: JobSpec) -> int | None:
    """The epoch at which ASHA stops every trial (reaching it is finishing); None without ASHA."""
    return (spec.scheduler.max_t or spec.trial.epochs) if spec.scheduler.name == "asha" else None


def make_scheduler(spec: JobSpec) -> TrialScheduler:
    if spec.scheduler.name == "asha":
        return ASHAScheduler(
            metric=spec.metric,
            mode=spec.mode,
            time_attr="training_iteration",
            max_t=asha_max_t(spec),
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return FIFOScheduler()
