"""What a finished job shows: trials ranked by the metric, a CSV of all trials, and the plots.

The plots are Optuna's own (optimization history, parallel coordinates, parameter importances),
drawn with matplotlib on a study rebuilt from the trials' results, and saved as PNG so they show in
MLflow's artifact view and next to the job's local output.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping

from tuner.spec import JobSpec
from tuner.tracking.names import RankedTrial, trial_run_name

log = logging.getLogger(__name__)

SAMPLED = "_sampled"  # a row's keys the trial sampled (a conditional one may be absent)


def rank_trials(results, *, metric: str, mode: str) -> list[RankedTrial]:
    """Trials that did not fail, best first, by the best value of ``metric`` over their epochs."""
    ranked = []
    for result in results:
        if result.error is not None or result.metrics_dataframe is None or metric not in result.metrics_dataframe:
            continue
        series = result.metrics_dataframe[metric].dropna()
        if series.empty:
            continue
        value = float(series.min() if mode == "min" else series.max())
        if not math.isfinite(value):
            continue
        checkpoint = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
        ranked.append(RankedTrial(
            trial=trial_run_name(result.metrics["trial_id"], result.metrics.get("experiment_tag")),
            trial_id=result.metrics["trial_id"],
            value=value,
            epochs=int(result.metrics.get("training_iteration", len(series))),
            config=dict(result.config),
            checkpoint=checkpoint.path if checkpoint is not None else None,
        ))
    ranked.sort(key=lambda r: r.value, reverse=(mode == "max"))
    return ranked


def trial_rows(spec: JobSpec, results, statuses: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per trial of the job. A trial that never reported has no metrics and no config in Ray's
    result (a stopped job's trial stopped before its first epoch): its params are left blank, and one
    that the journal never saw start (still pending when the job stopped) was no trial of the job's."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        # The trial's folder is named as its run (the engine's trial_dirname_creator).
        name = (trial_run_name(metrics["trial_id"], metrics.get("experiment_tag")) if "trial_id" in metrics
                else Path(result.path).name)
        if not metrics and result.error is None and name not in statuses:
            continue
        frame = result.metrics_dataframe
        best = None
        if frame is not None and spec.objective in frame and not frame[spec.objective].dropna().empty:
            best = float(frame[spec.objective].min() if spec.direction == "min" else frame[spec.objective].max())
        config = result.config or {}
        rows.append({"trial": name, "status": statuses.get(name, "FAILED" if result.error else "FINISHED"),
                     f"best_{spec.objective}": best, "epochs": metrics.get("training_iteration"),
                     **{k: config.get(k) for k in spec.space}, SAMPLED: [k for k in spec.space if k in config]})
    return sorted(rows, key=lambda r: r["trial"])


def rebuild_study(spec: JobSpec, rows: list[dict[str, Any]]):
    """An Optuna study holding the job's trials, for Optuna's plots and importance code."""
    import optuna

    from search_spaces import to_optuna

    distributions = to_optuna(spec.space)
    study = optuna.create_study(direction="minimize" if spec.direction == "min" else "maximize")
    for row in rows:
        value = row[f"best_{spec.objective}"]
        ok = row["status"] != "FAILED" and value is not None and math.isfinite(value)
        params = {k: row[k] for k in row[SAMPLED]}  # a conditional key a trial did not sample is no param
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params},
            value=value if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
    return study


def write_report(spec: JobSpec, results, ranked: list[RankedTrial], statuses: Mapping[str, str],
                 folder: Path) -> list[Path]:
    """Write trials.csv and the PNG plots into ``folder``; return the files written."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(spec, results, statuses)
    written = [folder / "trials.csv"]
    pd.DataFrame(rows).drop(columns=SAMPLED, errors="ignore").to_csv(written[0], index=False)
    complete = sum(1 for r in rows if r["status"] != "FAILED" and r[f"best_{spec.objective}"] is not None)
    if complete >= 2:
        written += _plots(rebuild_study(spec, rows), folder)
    return written


def import_in_background() -> threading.Thread:
    """Import what the plots need in a thread, while the trials run: matplotlib, and Optuna's plots
    and importance code, which brings scikit-learn (about 3 s on 2 cores, BENCHMARKS.md section 8).
    The job's end then only draws. A failed import is left for `_plots` to meet and raise."""

    def imports() -> None:
        try:
            _plot_modules()
        except ImportError as exc:
            log.debug("the report's imports failed in the background (%s); the report will raise it", exc)

    thread = threading.Thread(target=imports, name="tuner-report-imports", daemon=True)
    thread.start()
    return thread


def _plot_modules():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator  # noqa: F401 - the slow one: scikit-learn
    from optuna.visualization import matplotlib as ovm

    return plt, ovm


def _plots(study, folder: Path) -> list[Path]:
    import optuna

    plt, ovm = _plot_modules()

    plots = {"optimization_history.png": ovm.plot_optimization_history,
             "parallel_coordinate.png": ovm.plot_parallel_coordinate}
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len({tuple(sorted(map(str, t.params.items()))) for t in completed}) >= 2:
        plots["param_importances.png"] = ovm.plot_param_importances
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in plots.items():
            axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(10, 6)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=100)
            plt.close(figure)
            written.append(folder / name)
    return written
