"""What TPE looks at in a long study: the best finished trials and the most recent ones, not all.

Optuna's TPESampler reads every finished trial of its study at every suggestion, in Python loops:
a suggestion took about 100 ms after 10,000 trials, against 17 ms after 1,000 (BENCHMARKS.md,
section 10), and Optuna has no setting to make it look at fewer. `BoundedHistory` is an Optuna storage (Optuna's
public `BaseStorage` interface) around the study's real one: asked for the study's trials, it answers
with the ``recent`` most recent trials, the ``best`` best complete ones before them and any unfinished
one; every other call goes to the real storage unchanged, so what is written and numbered is the same.

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

KEEP_BEST = 100  # the best complete trials kept before the recent ones: TPE's good side is at most 25
_FINISHED = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL})


class BoundedHistory(BaseStorage):
    """The real ``storage``, but `get_all_trials` leaves out the trials before the ``recent`` last ones
    that are finished and not among the ``best`` best (for single-objective studies)."""

    def __init__(self, storage: BaseStorage, *, recent: int, best: int = KEEP_BEST) -> None:
        if recent < 1 or best < 1:
            raise ValueError(f"recent and best must be positive (recent={recent}, best={best})")
        self.storage, self.recent, self.best = storage, recent, best
        self._minimize: dict[int, bool | None] = {}  # study id -> minimize (None: multi-objective)
        self._older: dict[int, _Older] = {}  # study id -> what is kept of the trials before the recent ones

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_older": {}}  # rebuilt from the study on first use (Ray pickles the searcher)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        if self._direction(study_id) is None or (states is not None and not any(s in states for s in _FINISHED)):
            return self.storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        trials = self._bounded(study_id, self.storage.get_all_trials(study_id, deepcopy=False))
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _direction(self, study_id: int) -> bool | None:
        if study_id not in self._minimize:
            directions = self.storage.get_study_directions(study_id)
            self._minimize[study_id] = directions[0] == StudyDirection.MINIMIZE if len(directions) == 1 else None
        return self._minimize[study_id]

    def _bounded(self, study_id: int, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """The trials before the ``recent`` last ones, less those neither unfinished nor among the best."""
        first_recent = len(trials) - self.recent
        # Optuna numbers a study's trials 0, 1, 2, ... in the order its storages list them; were that
        # ever not so, the whole study is the answer (slower, never wrong).
        if first_recent <= self.best or trials[-1].number != len(trials) - 1:
            return trials
        older = self._older.setdefault(study_id, _Older(self.best, minimize=bool(self._minimize[study_id])))
        older.extend(trials, first_recent)
        return [trials[n] for n in older.kept()] + trials[first_recent:]


class _Older:
    """The trials before the recent ones, kept: the best ``best`` complete ones and every unfinished one.

    A finished trial never changes, so each trial is looked at once when the recent window moves past
    it, and unfinished ones again until they end: a call costs what the new trials cost, not the study.
    """

    def __init__(self, best: int, *, minimize: bool) -> None:
        self.best, self.sign = best, 1.0 if minimize else -1.0
        self.seen = 0  # trials 0 .. seen-1 have been looked at
        # A heap of (-score, -number): the worst kept trial on top, and of equal ones the newest, so
        # ties keep the older trials, as TPE's stable sort of the whole history does.
        self.worst_first: list[tuple[float, int]] = []
        self.unfinished: list[int] = []

    def extend(self, trials: list[FrozenTrial], first_recent: int) -> None:
        waiting, self.unfinished = self.unfinished, []
        for number in [*waiting, *range(self.seen, max(self.seen, first_recent))]:
            self._look_at(trials[number])
        self.seen = max(self.seen, first_recent)

    def _look_at(self, trial: FrozenTrial) -> None:
        if trial.state not in _FINISHED:
            self.unfinished.append(trial.number)
        elif trial.state == TrialState.COMPLETE:
            entry = (-self.sign * trial.values[0], -trial.number)
            if len(self.worst_first) < self.best:
                heapq.heappush(self.worst_first, entry)
            elif entry > self.worst_first[0]:
                heapq.heapreplace(self.worst_first, entry)

    def kept(self) -> list[int]:
        return sorted([-negative for _, negative in self.worst_first] + self.unfinished)


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
