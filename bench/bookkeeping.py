"""Scale of bookkeeping: 1,000 no-op trials through the service (TPE over six knobs, every trial in MLflow).

Reports the per-trial overhead (wall time / trials), the seconds between trial ends over the first
and the last tenth of the trials (a cost that grows with the job shows there), the searcher's
suggestion latency early and late, the driver's memory and the sizes of what the job wrote: the
study's journal, the tracking journal, the MLflow store and Tune's experiment folder. Smaller runs
compare Tune's snapshot period: every step (0), every second (1) and Tune's own "auto" (the
service's default: at least every 10 s, more as a snapshot costs more). `--period` sets the main run's.
`max_rss_mb` is the process's peak so far: the main run's own, and for the comparison runs after it
no less than the main run's.

`--arm` picks what runs the trials, each in its own process (run the arms one after the other):
  service       the service's job (`tuner.run.run_job`): the default
  plain-tpe     Ray Tune alone, as a user would write it: OptunaSearch with Optuna's TPE (whole
                history, study in memory), Tune's default loggers, no MLflow; the same trials, space,
                concurrency and actor reuse
  plain-random  the same with Optuna's random sampler: what Tune itself costs a trial, the searcher
                almost free
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from ray.tune import Callback

from bench.common import USER_CODE, Timer, journal_events, median, save, start_ray, table

SPACE = {"a": {"loguniform": [1e-5, 1.0]}, "b": {"uniform": [0.0, 1.0]}, "c": {"uniform": [-1.0, 1.0]},
         "d": {"loguniform": [1e-3, 10.0]}, "e": {"uniform": [0.0, 0.5]}, "f": {"choice": [0, 1, 2, 3]}}


def _spec(trials: int):
    from tuner.spec import spec_from_mapping

    return spec_from_mapping({
        "name": "noop", "trainable": "workloads:noop_trainable", "code_dir": str(USER_CODE), "metric": "loss",
        "mode": "min", "search": {"algorithm": "tpe", "num_samples": trials, "max_concurrent": 2, "seed": 0,
                                  "space": SPACE},
        "ensemble": {"top_k": 0}, "mlflow": {"tracking_uri": "sqlite:///mlflow.db"}})


def run(trials: int, snapshot_period: str) -> dict[str, Any]:
    from tuner.run import run_job

    default_period = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")  # the job's own setting yields to a set one
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = snapshot_period
    try:
        with _timed_suggestions() as latencies, tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
            with Timer() as t:
                result = run_job(_spec(trials), output_root=Path(tmp))
            ends = [e["time"] / 1000 for e in journal_events(Path(tmp), "noop") if e["op"] == "trial_end"]
            sizes = {"study_mb": _mb(result.run_folder / "study.log"), "journal_mb": _mb(result.run_folder / "tracking"),
                     "mlflow_mb": _mb(Path(tmp) / "mlflow.db"), "tune_mb": _mb(result.run_folder / "ray")}
    finally:
        if default_period is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S")
        else:
            os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = default_period
    return {"arm": "service", "trials": trials, "snapshot_period": snapshot_period, "wall_s": t.seconds,
            "per_trial_s": t.seconds / trials, "child_runs": len(result.statuses), "undelivered": result.undelivered,
            **_pace(ends, latencies), **sizes}


@contextlib.contextmanager
def _timed_suggestions() -> Iterator[list[float]]:
    """Time every OptunaSearch suggestion for a block (on the class: Tune pickles the searcher)."""
    from ray.tune.search.optuna import OptunaSearch

    latencies: list[float] = []
    suggest = OptunaSearch.suggest

    def timed(self, trial_id):
        start = time.perf_counter()
        try:
            return suggest(self, trial_id)
        finally:
            latencies.append(time.perf_counter() - start)

    OptunaSearch.suggest = timed
    try:
        yield latencies
    finally:
        OptunaSearch.suggest = suggest


def _pace(ends: list[float], latencies: list[float]) -> dict[str, float]:
    """The gap between trial ends over the first and the last tenth, suggestions early and late, the
    process's peak memory."""
    ends = sorted(ends)
    tenth = max(2, len(ends) // 10)
    done = [s for s in latencies if s > 0]
    return {"end_gap_s_first_tenth": (ends[tenth - 1] - ends[0]) / (tenth - 1),
            "end_gap_s_last_tenth": (ends[-1] - ends[-tenth]) / (tenth - 1),
            "suggest_ms_first_10": 1000 * median(done[:10]), "suggest_ms_last_10": 1000 * median(done[-10:]),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class _TrialEnds(Callback):
    """When each trial ended, for the plain arms (the service's come from its journal)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.times.append(time.time())


def plain(trials: int, sampler: str) -> dict[str, Any]:
    """The same no-op trials through Ray Tune alone (no service, no MLflow), timed the same way."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import to_optuna
    from workloads import noop_trainable

    chosen = optuna.samplers.TPESampler(seed=0) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=0)
    ends = _TrialEnds()
    with _timed_suggestions() as latencies, tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        tuner = tune.Tuner(
            tune.with_resources(noop_trainable, {"cpu": 1}),
            # The service arm's space, as the Optuna distributions Tune would convert its own domains to.
            tune_config=tune.TuneConfig(search_alg=OptunaSearch(to_optuna(SPACE), metric="loss", mode="min",
                                                                sampler=chosen),
                                        num_samples=trials, max_concurrent_trials=2, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=tmp, callbacks=[ends], verbose=0))
        with Timer() as t:
            results = tuner.fit()
        sizes = {"tune_mb": _mb(Path(tmp))}
    return {"arm": f"plain-{sampler}", "trials": trials, "snapshot_period": os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "auto"),
            "wall_s": t.seconds, "per_trial_s": t.seconds / trials,
            "child_runs": sum(1 for r in results if r.error is None), "undelivered": None,
            **_pace(ends.times, latencies), **sizes}


def _mb(path: Path) -> float:
    """Megabytes of a file, or of everything under a folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=200,
                        help="trials for the snapshot-period comparison (0: none; the service arm only)")
    parser.add_argument("--period", default="auto", help="Tune's snapshot period for the main run (the service's: auto)")
    parser.add_argument("--arm", choices=["service", "plain-tpe", "plain-random"], default="service")
    args = parser.parse_args(argv)
    start_ray()
    if args.arm == "service":
        rows = [run(args.trials, args.period), *(run(args.compare, p) for p in ("0", "1", "auto") if args.compare)]
    else:
        rows = [plain(args.trials, args.arm.split("-")[1])]
    table(rows, ["arm", "trials", "snapshot_period", "wall_s", "per_trial_s", "end_gap_s_first_tenth", "end_gap_s_last_tenth",
                 "undelivered", "suggest_ms_first_10", "suggest_ms_last_10", "max_rss_mb", "study_mb", "journal_mb",
                 "mlflow_mb", "tune_mb"], "bookkeeping: no-op trials, TPE over 6 knobs, 2 at a time")
    # The default run keeps its file name; another gets its own (bookkeeping-3000-compare-0-period-1.json).
    default = (args.trials, args.compare, args.period, args.arm) == (1000, 200, "auto", "service")
    if default:
        name = "bookkeeping"
    elif args.arm == "service":
        name = f"bookkeeping-{args.trials}-compare-{args.compare}-period-{args.period}"
    else:
        name = f"bookkeeping-{args.trials}-{args.arm}"
    save(name, rows)
    return rows


if __name__ == "__main__":
    main()
