"""What TPE looks at in a long study: the best finished trials and the most recent ones, not all.

Optuna's TPESampler reads every finished trial of its study at every suggestion, in Python loops:
a suggestion took 145 ms after 10,000 trials, against 20 ms after 1,000 (BENCHMARKS.md, section 10),
and Optuna has no setting to make it look at fewer. `BoundedHistory` is an Optuna storage (Optuna's
public `BaseStorage` interface) around the study's real one: asked for finished trials, it answers
with the ``best`` best and the ``recent`` most recent of them (and every unfinished one); every other
call goes to the real storage unchanged, so what is written and numbered is the same.

    storage = BoundedHistory(open_storage(ref), recent=1000, best=100)
    OptunaSearch(..., sampler=TPESampler(...), storage=storage)

Why TPE searches much as before: it splits the finished trials into the best ``gamma(n)`` (at most 25
for one objective) and the rest, and models each side. With the best 100 always kept, the good side is
the same as with the whole history; the rest is modelled from the recent trials, where TPE's default
weights already put the old ones near zero (BENCHMARKS.md, section 10, measures the difference).
Only the sampler reads through this view: the study on disk, `tuner dashboard`, `tuner resume` and the
report see every trial. A multi-objective study is answered whole: its good side is a share of every
trial, with no fixed number to keep.
"""

from __future__ import annotations

import abc
import copy
import heapq
from typing import Any, Container

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

KEEP_BEST = 100  # the best finished trials always kept: TPE's good side is at most 25 of them
_FINISHED = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL})


class BoundedHistory(BaseStorage):
    """The real ``storage``, but finished trials beyond the ``best`` best and the ``recent`` most recent
    are left out of `get_all_trials` (for single-objective studies)."""

    def __init__(self, storage: BaseStorage, *, recent: int, best: int = KEEP_BEST) -> None:
        if recent < 1 or best < 1:
            raise ValueError(f"recent and best must be positive (recent={recent}, best={best})")
        self.storage, self.recent, self.best = storage, recent, best
        self._minimize: dict[int, bool | None] = {}  # study id -> minimize (None: multi-objective)
        self._kept: tuple[tuple[int, int], set[int]] | None = None  # ((study, finished), best trials' numbers)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self.storage.get_all_trials(study_id, deepcopy=False, states=states)
        if len(trials) > self.recent + self.best and self._direction(study_id) is not None:
            trials = self._bounded(study_id, trials)
        return copy.deepcopy(trials) if deepcopy else trials

    def _direction(self, study_id: int) -> bool | None:
        if study_id not in self._minimize:
            directions = self.storage.get_study_directions(study_id)
            self._minimize[study_id] = directions[0] == StudyDirection.MINIMIZE if len(directions) == 1 else None
        return self._minimize[study_id]

    def _bounded(self, study_id: int, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        finished = [t for t in trials if t.state in _FINISHED]  # in trial-number order, as storages give them
        if len(finished) <= self.recent + self.best:
            return trials
        first_recent = finished[-self.recent].number
        # A finished trial never changes, and each end adds one: the count of finished trials names
        # the older ones exactly, so their best are looked up once per trial end, not per call.
        key = (study_id, len(finished))
        if self._kept is None or self._kept[0] != key:
            sign = 1.0 if self._minimize[study_id] else -1.0
            older = (t for t in finished if t.number < first_recent and t.state == TrialState.COMPLETE)
            best = heapq.nsmallest(self.best, older, key=lambda t: sign * t.values[0])
            self._kept = (key, {t.number for t in best})
        kept = self._kept[1]
        return [t for t in trials if t.state not in _FINISHED or t.number >= first_recent or t.number in kept]


def _forward(name: str) -> Any:
    def method(self: BoundedHistory, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.storage, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The real storage's `{name}`."
    return method


# Every other storage method, those Optuna adds later included, goes to the real storage unchanged.
for _name, _member in vars(BaseStorage).items():
    if callable(_member) and not _name.startswith("_") and _name != "get_all_trials":
        setattr(BoundedHistory, _name, _forward(_name))
abc.update_abstractmethods(BoundedHistory)
