"""Scale of bookkeeping: 1,000 no-op trials through the service (TPE over six knobs, every trial in MLflow).

Reports the per-trial overhead (wall time / trials) and the searcher's suggestion latency early and
late in the run (Optuna's TPE looks at the whole history on every suggestion). Smaller runs compare
Tune's snapshot period: every step (0), every second (1, the service's default) and Tune's own
"auto" (at least every 10 s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import USER_CODE, Timer, median, save, start_ray, table

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
        with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp, Timer() as t:
            result = run_job(_spec(trials), output_root=Path(tmp))
    finally:
        OptunaSearch.suggest = suggest
        if default_period is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S")
        else:
            os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = default_period
    done = [s for s in latencies if s > 0]
    return {"trials": trials, "snapshot_period": snapshot_period, "wall_s": t.seconds,
            "per_trial_s": t.seconds / trials, "child_runs": len(result.statuses), "undelivered": result.undelivered,
            "suggest_ms_first_10": 1000 * median(done[:10]), "suggest_ms_last_10": 1000 * median(done[-10:])}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=200,
                        help="trials for the snapshot-period comparison (0: none)")
    args = parser.parse_args(argv)
    start_ray()
    rows = [run(args.trials, "1"), *(run(args.compare, period) for period in ("0", "1", "auto") if args.compare)]
    table(rows, ["trials", "snapshot_period", "wall_s", "per_trial_s", "child_runs", "undelivered",
                 "suggest_ms_first_10", "suggest_ms_last_10"], "bookkeeping: no-op trials, TPE over 6 knobs, 2 at a time")
    # The default run keeps its file name; another gets its own (bookkeeping-3000-compare-0.json).
    default = (args.trials, args.compare) == (1000, 200)
    save("bookkeeping" if default else f"bookkeeping-{args.trials}-compare-{args.compare}", rows)
    return rows


if __name__ == "__main__":
    main()
