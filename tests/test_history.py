"""TPE's bounded history: the best and the most recent finished trials, every write unchanged."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.trial import TrialState

from tuner.errors import SpecError
from tuner.history import BoundedHistory
from tuner.search import SAMPLERS, sampler_storage
from tuner.spec import load_spec, spec_from_mapping
from tuner.study import open_storage

X = {"x": FloatDistribution(0.0, 1.0)}


def _study(values: list[float], *, recent: int, best: int, directions=("minimize",)) -> optuna.Study:
    study = optuna.create_study(storage=BoundedHistory(InMemoryStorage(), recent=recent, best=best),
                                directions=list(directions))
    _add(study, values)
    return study


def _add(study: optuna.Study, values: list[float]) -> None:
    """Finished trials of these values (a second objective, where there is one, opposes the first)."""
    for value in values:
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=X,
                                                  values=[value, -value][:len(study.directions)]))


def _numbers(study: optuna.Study, states=None) -> list[int]:
    return [t.number for t in study._storage.get_all_trials(study._study_id, deepcopy=False, states=states)]


def test_the_answer_is_the_best_older_trials_and_the_most_recent_in_number_order():
    values = [float((7 * i) % 50) for i in range(50)]  # 0 … 49, each once, spread over the history
    study = _study(values, recent=10, best=5)
    running = study.ask()  # trial 50: the recent ones are the last 10 trials, finished or not
    older_best = sorted(sorted(range(41), key=lambda i: values[i])[:5])
    assert _numbers(study) == older_best + list(range(41, 51))
    assert _numbers(study, states=(TrialState.COMPLETE,)) == older_best + list(range(41, 50))
    assert _numbers(study, states=(TrialState.RUNNING,)) == [running.number]
    assert study.best_trial.value == 0.0 and study.best_trial.number in older_best
    # What the sampler does not read is all still there: counts, trials by id, the whole study on disk.
    assert study._storage.get_n_trials(study._study_id) == 51
    assert study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, 3)).number == 3


def test_an_older_unfinished_trial_is_kept_until_it_ends_then_only_if_among_the_best():
    study = _study([], recent=3, best=2)
    slow = study.ask()  # trial 0 runs while the window moves past it
    _add(study, [float(i) for i in range(1, 8)])
    assert _numbers(study) == [0, 1, 2, 5, 6, 7]
    study.tell(slow, -1.0)  # ends as the best of all
    assert _numbers(study) == [0, 1, 5, 6, 7]
    _add(study, [100.0, 100.0])
    assert _numbers(study) == [0, 1, 7, 8, 9]  # 5 and 6 left the window; 0 and 1 stay the best


def test_a_maximised_study_keeps_its_largest_values():
    study = _study([9.0, 1.0, 8.0, 2.0, 3.0, 0.0, 0.5, 0.1], recent=3, best=2, directions=("maximize",))
    assert _numbers(study) == [0, 2, 5, 6, 7]


def test_a_short_or_multi_objective_study_is_answered_whole():
    assert _numbers(_study([1.0] * 15, recent=10, best=5)) == list(range(15))
    assert _numbers(_study([float(i) for i in range(40)], recent=10, best=5, directions=("minimize", "minimize"))) \
        == list(range(40))


def test_a_deep_copy_is_asked_for_and_given():
    study = _study([float(i) for i in range(30)], recent=10, best=5)
    copies = study._storage.get_all_trials(study._study_id, deepcopy=True)
    copies[0].params["x"] = 99.0
    assert study.trials[0].params["x"] == 0.5 and len(copies) == 15


def test_every_other_storage_method_goes_to_the_real_storage():
    forwarded = [name for name, member in vars(BaseStorage).items()
                 if callable(member) and not name.startswith("_") and name != "get_all_trials"]
    assert "set_trial_state_values" in forwarded and "get_n_trials" in forwarded
    for name in forwarded:
        assert getattr(BoundedHistory, name) is not getattr(BaseStorage, name), name
    assert not BoundedHistory.__abstractmethods__


def test_it_survives_pickling_as_ray_saves_the_searcher():
    study = _study([float(i) for i in range(30)], recent=10, best=5)
    _numbers(study)
    view = pickle.loads(pickle.dumps(study._storage))
    assert isinstance(view, BoundedHistory) and (view.recent, view.best) == (10, 5)
    assert [t.number for t in view.get_all_trials(study._study_id)] == _numbers(study) == [*range(5), *range(20, 30)]


def test_tpe_reads_no_more_than_the_bound_and_still_searches():
    spec = spec_from_mapping({"name": "h", "search": {"algorithm": "tpe", "seed": 0, "tpe_history": 100,
                                                      "space": {"dropout": {"uniform": [0.0, 0.5]}}}})
    storage = sampler_storage(spec, InMemoryStorage())
    assert isinstance(storage, BoundedHistory) and storage.recent == 100
    read: list[int] = []
    real = storage.get_all_trials

    def spy(study_id, deepcopy=True, states=None):
        trials = real(study_id, deepcopy, states)
        read.append(len(trials))
        return trials

    storage.get_all_trials = spy
    study = optuna.create_study(storage=storage, sampler=SAMPLERS["tpe"](spec))
    study.optimize(lambda t: (t.suggest_float("dropout", 0.0, 0.5) - 0.3) ** 2, n_trials=260)
    assert max(read) == 100 + 100  # the best 100 and the 100 most recent (one of them running)
    whole = optuna.load_study(study_name=study.study_name, storage=storage.storage).trials
    assert len(whole) == 260 and min(t.value for t in whole) == study.best_value < 1e-3


def test_random_and_grid_read_the_whole_study():
    for algorithm in ("random", "grid"):
        spec = spec_from_mapping({"name": "h", "search": {"algorithm": algorithm,
                                                          "space": {"optimizer": {"choice": ["sgd", "adam"]}}}})
        storage = InMemoryStorage()
        assert sampler_storage(spec, storage) is storage
    whole = spec_from_mapping({"name": "h", "search": {"tpe_history": None}})
    assert sampler_storage(whole, storage) is storage


@pytest.mark.parametrize("search, message", [
    ({"tpe_history": 50}, "search.tpe_history: input should be greater than or equal to 100 (got 50)"),
    ({"algorithm": "random", "tpe_history": 500}, "search.tpe_history: only tpe reads the history "
                                                  "(algorithm is random) (got 500)"),
    ({"algorithm": "random", "tpe_history": None}, "search.tpe_history: only tpe reads the history "
                                                   "(algorithm is random) (got None)"),
])
def test_a_bad_history_is_one_line_naming_the_field(search, message):
    with pytest.raises(SpecError) as error:
        spec_from_mapping({"name": "h", "search": search})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_saved_random_spec_loads_again(tmp_path):
    spec = spec_from_mapping({"name": "h", "search": {"algorithm": "random"}})
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    assert load_spec(tmp_path / "spec.yaml").search.tpe_history == 1000


def test_a_database_study_is_read_through_optunas_cache(tmp_path):
    """Pins `optuna.storages.get_storage`, which Optuna calls internal (README): behind the view, a
    database study must still be wrapped in the cache that keeps finished trials in memory, or every
    TPE suggestion reads the whole study from the database again; `open_storage` itself stays a plain
    RDBStorage (optuna-dashboard checks its schema only for one)."""
    spec = spec_from_mapping({"name": "h", "search": {"algorithm": "tpe"}})
    database = open_storage(f"sqlite:///{tmp_path}/study.db")
    assert isinstance(database, optuna.storages.RDBStorage)
    view = sampler_storage(spec, database)
    assert type(view.storage).__name__ == "_CachedStorage", (
        f"optuna {optuna.__version__}: get_storage gave {type(view.storage).__name__}; see tuner/search.py sampler_storage")


def test_ties_keep_the_older_trials_as_tpe_does():
    study = _study([1.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.5], recent=2, best=2, directions=("maximize",))
    assert _numbers(study) == [0, 1, 5, 6]
