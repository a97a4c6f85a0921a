"""The job's Optuna study: stored in a database of its own, seeded from an earlier job, and the
multi-objective Pareto front of the trials.

The study lives in Optuna's journal file in the run folder (``study.log``, `JournalStorage`), or
under ``search.storage`` (Optuna's RDB storage: a PostgreSQL, MySQL or SQLite database of its own,
never MLflow's, whose alembic_version table it would share). Ray's OptunaSearch keeps it up to date
as trials end; `tuner dashboard` serves it, and `tuner resume` continues from it (Tune's restored
searcher reopens the same storage).

Why a journal file by default rather than a SQLite database: every ask and every suggested value
is a write, and Optuna's RDB storage on SQLite took 20-30 ms per suggestion (a transaction each),
which made 1,000 no-op trials 2.6 times slower through the whole service (BENCHMARKS.md, section
3); the journal file appends a line per write (4-10 ms per suggestion at 200 trials).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from search_spaces import domain_of, is_active, to_optuna
from tuner.errors import NotFoundError, UserError, describe, redact
from tuner.folders import RunFolder
from tuner.spec import JobSpec

STUDY_FILE = "study.log"


def study_ref(spec: JobSpec, folder: RunFolder) -> tuple[str, str]:
    """(storage, study name) of a job's study: a database URL or the journal file's path; the name is
    unique per run (job and run folder)."""
    return spec.search.storage or str((folder.path / STUDY_FILE).resolve()), f"{spec.name}-{folder.path.name}"


def open_storage(ref: str):
    """The Optuna storage a `study_ref` names: RDB for a database URL, else the journal file."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in ref:
        return optuna.storages.RDBStorage(ref)
    return JournalStorage(JournalFileBackend(ref))


def stored_study(folder: RunFolder) -> tuple[str, str]:
    """(storage URL, study name) of a run's stored study, checked to exist (`tuner dashboard`)."""
    import optuna

    state = folder.read_state()
    if "study_storage" not in state:
        raise NotFoundError(f"{folder.path}: this run has no stored study (it started before studies were stored)")
    storage, name = state["study_storage"], state["study_name"]
    if "://" not in storage and not Path(storage).is_file():
        raise NotFoundError(f"{storage}: no such study file (the job stopped before its search started)")
    try:
        names = optuna.get_all_study_names(open_storage(storage))
    except Exception as exc:  # noqa: BLE001 - the database is away or is no study's: one line, exit 2
        raise UserError(f"{redact(storage)}: cannot open the study's database ({describe(exc)})") from None
    if name not in names:
        raise NotFoundError(f"{redact(storage)}: no study {name} (the job stopped before its search started)")
    return storage, name


def typed_params(space: dict[str, Any], params: dict[str, str]) -> dict[str, Any] | None:
    """A trial's config from MLflow's params (strings), typed by the space; None when the trial does not
    fit the space (a key missing that its conditions require, a value outside its domain)."""
    config: dict[str, Any] = {}
    for key, entry in space.items():
        if not is_active(entry, config):
            continue
        if key not in params:
            return None
        kind, args = domain_of(entry)
        text = params[key]
        try:
            if kind == "choice":
                value = next(c for c in args if ("null" if c is None else str(c)) == text)
            elif kind in ("randint", "lograndint"):
                value = int(text)
            else:
                value = float(text)
        except (StopIteration, ValueError):
            return None
        if kind != "choice" and not args[0] <= value <= args[1]:
            return None
        config[key] = value
    return config


def earlier_trials(spec: JobSpec, tracking_uri: str) -> list:
    """The finished trials of ``search.warm_start.job`` that fit this job's space, as Optuna trials with
    their values (the last reported value of each metric, what Optuna was told when they ended)."""
    import optuna
    from mlflow.tracking import MlflowClient

    from tuner.export import find_parent_run
    from tuner.tracking import PARENT_TAG

    job = spec.search.warm_start.job  # type: ignore[union-attr]
    parent = find_parent_run(tracking_uri, job)
    children = MlflowClient(tracking_uri).search_runs(
        [parent.info.experiment_id], max_results=50_000,
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    children = [c for c in children if c.info.status in ("FINISHED", "KILLED")]  # ended (KILLED: by ASHA)
    distributions = to_optuna(spec.space)
    trials = []
    for child in children:
        config = typed_params(spec.space, child.data.params)
        values = [child.data.metrics.get(m) for m in spec.metrics]
        if config is None or any(v is None or not math.isfinite(v) for v in values):
            continue
        trials.append(optuna.trial.create_trial(
            params=config, distributions={k: distributions[k] for k in config}, values=values,
            user_attrs={"warm_start": f"{job}/{child.info.run_name}"}))
    if not trials:
        raise NotFoundError(f"search.warm_start.job: {job} (run {parent.info.run_id}) has no finished trial that "
                            f"fits this job's space and metrics")
    return trials


def close_unfinished(url: str, name: str) -> None:
    """After Tune: a trial the study still holds as RUNNING was one Tune forgot after a crash (the
    searcher that asked for it was restored from an older snapshot); end it FAIL, or a sampler with
    the constant liar would count it as running for ever."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:  # the search never started (no trial was asked for)
        return
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def seed_study(spec: JobSpec, url: str, name: str, trials: list) -> None:
    """Create the job's study holding ``trials`` as already evaluated, before OptunaSearch opens it."""
    import optuna

    study = optuna.create_study(storage=open_storage(url), study_name=name, load_if_exists=True,
                                directions=["minimize" if m == "min" else "maximize" for m in spec.modes])
    study.add_trials(trials)


def pareto_front(spec: JobSpec, results, folder: Path) -> tuple[list[str], list[Path]]:
    """The trials on the Pareto front of a multi-objective job (by each metric's last value, what the
    sampler was told) and the files written: pareto_front.csv and Optuna's Pareto-front plot."""
    import optuna
    import pandas as pd

    from tuner.tracking import trial_run_name

    study = optuna.create_study(directions=["minimize" if m == "min" else "maximize" for m in spec.modes])
    distributions = to_optuna(spec.space)
    for result in results:
        metrics = result.metrics or {}
        values = [metrics.get(m) for m in spec.metrics]
        if result.error is not None or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            continue
        params = {k: v for k, v in result.config.items() if k in distributions}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, values=values,
            user_attrs={"trial": trial_run_name(metrics["trial_id"], metrics.get("experiment_tag"))}))
    front = sorted(study.best_trials, key=lambda t: t.values[0] * (1 if spec.modes[0] == "min" else -1))
    names = [t.user_attrs["trial"] for t in front]
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "pareto_front.csv"]
    pd.DataFrame([{"trial": t.user_attrs["trial"], **dict(zip(spec.metrics, t.values)), **t.params}
                  for t in front]).to_csv(written[0], index=False)
    if len(study.trials) >= 2 and len(spec.metrics) <= 3:  # Optuna draws fronts of 2 or 3 objectives
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = ovm.plot_pareto_front(study, target_names=spec.metrics)
        figure = axes.figure
        figure.set_size_inches(8, 6)
        figure.tight_layout()
        figure.savefig(folder / "pareto_front.png", dpi=100)
        plt.close(figure)
        written.append(folder / "pareto_front.png")
    return names, written
