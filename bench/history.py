"""What bounding TPE's history costs the search: the service's TPE on Hartmann-6 with the whole history
against the best 100 and the most recent `search.tpe_history` trials (`tuner.history`), 1,000 and 500.

Hartmann-6 is the usual six-dimensional test function of Bayesian optimisation (minimum -3.32237 in
[0, 1]^6, several local minima). Each arm and seed runs in a fresh process, the arms alternating; a
trial is what Ray's OptunaSearch does (`ask`, the space's define-by-run function, `tell`), in memory.
Reports the best value found after each checkpoint and the median suggestion time over the last 100.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, USER_CODE, median, save, table

SPACE = {f"x{i}": {"uniform": [0.0, 1.0]} for i in range(6)}
MINIMUM = -3.32237
ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]


def hartmann6(x: list[float]) -> float:
    import math

    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j] * 1e-4) ** 2 for j in range(6)))
                for i in range(4))


def measure(arm: str, seed: int, trials: int, checkpoints: list[int], history: int | None) -> dict[str, Any]:
    import optuna

    from search_spaces import parse_space, sample
    from tuner.search import SAMPLERS, sampler_storage
    from tuner.spec import spec_from_mapping

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = spec_from_mapping({"name": "h6", "trainable": "workloads:noop_trainable", "code_dir": str(USER_CODE),
                              "metric": "loss", "mode": "min",
                              "search": {"algorithm": "tpe", "seed": seed, "space": SPACE, "num_samples": trials,
                                         "tpe_history": history}})
    space = parse_space(SPACE)
    study = optuna.create_study(storage=sampler_storage(spec, optuna.storages.InMemoryStorage()),
                                sampler=SAMPLERS["tpe"](spec), direction="minimize")
    best, at, times = float("inf"), {}, []
    started = time.perf_counter()
    for n in range(1, trials + 1):
        t0 = time.perf_counter()
        trial = study.ask()
        config = sample(space)(trial) or trial.params
        times.append(time.perf_counter() - t0)
        value = hartmann6([config[f"x{i}"] for i in range(6)])
        study.tell(trial, value)
        best = min(best, value)
        if n in checkpoints:
            at[n] = best
    return {"tpe_history": arm, "seed": seed, "trials": trials, **{f"regret_at_{n}": at[n] - MINIMUM for n in checkpoints},
            "suggest_ms_last_100": 1000 * median(times[-100:]), "total_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--histories", nargs="+", default=["all", "1000", "500"],
                        help="search.tpe_history of each arm (all: the whole history)")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # arm, seed, trials: measured in this process
    args = parser.parse_args(argv)
    arms = {h: None if h == "all" else int(h) for h in args.histories}
    checkpoints = sorted({n for n in (500, 1000, 2000, 3000, 5000, 10000) if n < args.trials} | {args.trials})
    if args.one:
        arm, seed, trials = args.one
        print(json.dumps(measure(arm, int(seed), int(trials), checkpoints, arms[arm])))
        return []
    rows = []
    for seed in range(args.seeds):
        order = list(arms) if seed % 2 == 0 else list(reversed(arms))
        for arm in order:
            done = subprocess.run([sys.executable, "-m", "bench.history", "--trials", str(args.trials),
                                   "--histories", *args.histories, "--one", arm, str(seed), str(args.trials)],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    summary = [{"tpe_history": arm, **{k: median([r[k] for r in rows if r["tpe_history"] == arm]) for k in rows[0]
                               if k.startswith(("regret", "suggest", "total"))}} for arm in arms]
    table(summary, list(summary[0]), f"TPE on Hartmann-6, {args.trials} trials: medians of {args.seeds} seeds")
    default = (args.trials, args.seeds, args.histories) == (3000, 5, ["all", "1000", "500"])
    save("history" if default else f"history-{args.trials}-{args.seeds}-{'-'.join(args.histories)}", rows,
         summary=summary)
    return rows


if __name__ == "__main__":
    main()
