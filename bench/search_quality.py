"""Search quality on real data: MNIST-10k, random vs TPE vs TPE+ASHA, several seeds, 30 trials each.

For each job: the best validation accuracy after each trial (in the order Tune created them) and
after each epoch spent; then, per algorithm, the median and spread over seeds, the epochs each
needed to reach random search's median final best, and its best within a third of random's epochs.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import MNIST, ROOT, Timer, median, save, start_ray, table

ARMS = {"random": {"search.algorithm": "random", "scheduler.name": "fifo"},
        "tpe": {"search.algorithm": "tpe", "scheduler.name": "fifo"},
        "tpe+asha": {"search.algorithm": "tpe", "scheduler.name": "asha"}}  # the spec's ASHA: grace 1, factor 4


def job_curve(arm: str, seed: int, trials: int, epochs: int) -> dict[str, Any]:
    """Run one job; return its trials' (best val_acc, epochs) in creation order."""
    from tuner.run import run_job
    from tuner.spec import load_spec

    overrides = [f"{k}={v}" for k, v in ARMS[arm].items()] + [
        f"search.seed={seed}", f"search.num_samples={trials}", f"trial.epochs={epochs}", "metric=val_acc",
        "mode=max", "ensemble.top_k=0", f"data.path={MNIST}", "mlflow.tracking_uri=sqlite:///mlflow.db"]
    spec = load_spec(ROOT / "examples" / "mnist-mlp.yaml", overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp, Timer() as t:
        result = run_job(spec, output_root=Path(tmp))
        with open(result.run_folder / "report" / "trials.csv") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: r["trial"])
    accs = [float(r["best_val_acc"]) if r["best_val_acc"] else 0.0 for r in rows]
    spent = [int(float(r["epochs"])) if r["epochs"] else 0 for r in rows]
    best_so_far = [max(accs[: i + 1]) for i in range(len(accs))]
    epochs_so_far = [sum(spent[: i + 1]) for i in range(len(spent))]
    return {"arm": arm, "seed": seed, "wall_s": t.seconds, "best": best_so_far[-1], "epochs": epochs_so_far[-1],
            "best_so_far": best_so_far, "epochs_so_far": epochs_so_far}


def epochs_to_reach(job: dict[str, Any], target: float) -> int | None:
    for best, epochs in zip(job["best_so_far"], job["epochs_so_far"]):
        if best >= target:
            return epochs
    return None


def best_within(job: dict[str, Any], epochs: float) -> float:
    """The job's best after at most ``epochs`` epochs spent (trials in creation order)."""
    return max([b for b, e in zip(job["best_so_far"], job["epochs_so_far"]) if e <= epochs], default=0.0)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed + seeds - 1")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    if not MNIST.is_dir():
        raise SystemExit(f"MNIST-10k not found at {MNIST}")
    start_ray()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [job_curve(arm, seed, args.trials, args.epochs) for seed in seeds for arm in ARMS]
    random_median = median([j["best"] for j in jobs if j["arm"] == "random"])
    third = median([j["epochs"] for j in jobs if j["arm"] == "random"]) / 3  # the target's budget
    rows = []
    for arm in ARMS:
        mine = [j for j in jobs if j["arm"] == arm]
        bests = [j["best"] for j in mine]
        reach = [epochs_to_reach(j, random_median) for j in mine]
        reached = [r for r in reach if r is not None]
        rows.append({"arm": arm, "median_best_val_acc": median(bests), "min": min(bests), "max": max(bests),
                     "stdev": statistics.stdev(bests) if len(bests) > 1 else 0.0,
                     "median_epochs": median([j["epochs"] for j in mine]),
                     "median_epochs_to_random_median": median(reached) if reached else None,
                     "seeds_reaching_it": f"{len(reached)}/{len(mine)}",
                     "median_best_within_a_third": median([best_within(j, third) for j in mine]),
                     "seeds_reaching_it_within_a_third": f"{sum(r <= third for r in reached)}/{len(mine)}",
                     "median_best_at_trial_10": median([j["best_so_far"][min(10, len(j["best_so_far"])) - 1] for j in mine])})
    table(rows, ["arm", "median_best_val_acc", "min", "max", "stdev", "median_epochs", "median_epochs_to_random_median",
                 "seeds_reaching_it", "median_best_within_a_third", "seeds_reaching_it_within_a_third",
                 "median_best_at_trial_10"],
          f"search quality on MNIST-10k: {args.trials} trials x {args.epochs} epochs, {args.seeds} seeds")
    name = "search_quality" if args.first_seed == 0 else f"search_quality-seeds-{seeds[0]}-{seeds[-1]}"
    save(name, rows, jobs=jobs, random_median_best=random_median, seeds=list(seeds), trials=args.trials,
         epochs=args.epochs)
    return rows


if __name__ == "__main__":
    main()
