"""Scale of bookkeeping: 1,000 no-op trials through the service (TPE over six knobs, every trial in MLflow).

Reports the per-trial overhead (wall time / trials), the seconds between trial ends over the first
and the last tenth of the trials (a cost that grows with the job shows there), the searcher's
suggestion latency early and late, the driver's memory and the sizes of what the job wrote: the
study's journal, the tracking journal, the MLflow store and Tune's experiment folder. Smaller runs
compare Tune's snapshot period: every step (0), every second (1) and Tune's own "auto" (the
service's default: at least every 10 s, more as a snapshot costs more). `--period` sets the main run's.
`max_rss_mb` is the process's peak so far: the main run's own, and for the comparison runs after it
no less than the main run's.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

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
    from ray.tune.search.optuna import OptunaSearch

    from tuner.run import run_job

    latencies: list[float] = []
    suggest = OptunaSearch.suggest

    def timed(self, trial_id):
        start = time.perf_counter()
        try:
            return suggest(self, trial_id)
        finally:
            latencies.append(time.perf_counter() - start)

    OptunaSearch.suggest = timed
    default_period = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")  # the job's own setting yields to a set one
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = snapshot_period
    try:
        with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
            with Timer() as t:
                result = run_job(_spec(trials), output_root=Path(tmp))
            ends = sorted(e["time"] / 1000 for e in journal_events(Path(tmp), "noop") if e["op"] == "trial_end")
            tenth = max(2, len(ends) // 10)
            sizes = {"study_mb": _mb(result.run_folder / "study.log"), "journal_mb": _mb(result.run_folder / "tracking"),
                     "mlflow_mb": _mb(Path(tmp) / "mlflow.db"), "tune_mb": _mb(result.run_folder / "ray")}
    finally:
        OptunaSearch.suggest = suggest
        if default_period is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S")
        else:
            os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = default_period
    done = [s for s in latencies if s > 0]
    return {"trials": trials, "snapshot_period": snapshot_period, "wall_s": t.seconds,
            "per_trial_s": t.seconds / trials, "child_runs": len(result.statuses), "undelivered": result.undelivered,
            "end_gap_s_first_tenth": (ends[tenth - 1] - ends[0]) / (tenth - 1),
            "end_gap_s_last_tenth": (ends[-1] - ends[-tenth]) / (tenth - 1),
            "suggest_ms_first_10": 1000 * median(done[:10]), "suggest_ms_last_10": 1000 * median(done[-10:]),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **sizes}


def _mb(path: Path) -> float:
    """Megabytes of a file, or of everything under a folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=200,
                        help="trials for the snapshot-period comparison (0: none)")
    parser.add_argument("--period", default="auto", help="Tune's snapshot period for the main run (the service's: auto)")
    args = parser.parse_args(argv)
    start_ray()
    rows = [run(args.trials, args.period), *(run(args.compare, p) for p in ("0", "1", "auto") if args.compare)]
    table(rows, ["trials", "snapshot_period", "wall_s", "per_trial_s", "end_gap_s_first_tenth", "end_gap_s_last_tenth",
                 "undelivered", "suggest_ms_first_10", "suggest_ms_last_10", "max_rss_mb", "study_mb", "journal_mb",
                 "mlflow_mb", "tune_mb"], "bookkeeping: no-op trials, TPE over 6 knobs, 2 at a time")
    # The default run keeps its file name; another gets its own (bookkeeping-3000-compare-0-period-1.json).
    default = (args.trials, args.compare, args.period) == (1000, 200, "auto")
    save("bookkeeping" if default else f"bookkeeping-{args.trials}-compare-{args.compare}-period-{args.period}", rows)
    return rows


if __name__ == "__main__":
    main()
