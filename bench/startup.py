"""Start-up: from `tuner run` to the first trial starting, and what the time goes to.

Two measurements of the demo job (2 trials, 1 epoch):
  end to end  `tuner run` as a subprocess; the first trial's start is read from the job's journal
  phases     the same steps in a fresh interpreter, each timed: imports and spec one after the
             other; then the job's steps, each as its start and its length from the job's start,
             since three of them run side by side (`ray.init`; in threads beside it the data set
             with the sanity checks, and the MLflow parent run, where a new SQLite store creates
             its tables, which waits for the checks), then `Tuner.fit` to the first trial's start
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, journal_events, median, save, table

ARGS = ["examples/digits-mlp.yaml", "--set", "search.num_samples=2", "--set", "trial.epochs=1"]


def end_to_end() -> float:
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        start = time.time()
        subprocess.run([sys.executable, "-m", "tuner.cli", "run", *ARGS, "--output-dir", tmp], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = next(e for e in journal_events(Path(tmp), "digits-mlp") if e["op"] == "trial_start")
        return first["time"] / 1000 - start


def phases() -> dict[str, Any]:
    """Run in a fresh interpreter (``--phases``): time each step of `tuner run` up to the first trial."""
    spent: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        spent[name] = now - clock
        clock = now

    import tuner.cli as cli

    lap("import tuner.cli (typer, rich)")
    from tuner.spec import load_spec

    spec = load_spec(ROOT / ARGS[0], overrides=[ARGS[2], ARGS[4]])
    lap("load and validate the spec")
    cli._quiet(False)  # imports mlflow
    lap("import mlflow")
    import torch  # noqa: F401

    lap("import torch")

    import ray
    from ray import tune

    import tuner.job as job
    import tuner.run as run
    lap("import ray, ray.tune")

    began = time.perf_counter()
    steps: dict[str, list[float]] = {}  # label -> [start, end], seconds from the job's start

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            steps.setdefault(label, [time.perf_counter() - began])
            try:
                return original(*args, **kwargs)
            finally:
                steps[label][1:] = [time.perf_counter() - began]

        setattr(owner, name, wrapper)

    # Where tuner.job looks them up (it imports them by name), and Ray's own.
    timed(job, "start_parent_run", "MLflow parent run (new SQLite store), in a thread beside ray.init")
    timed(ray, "init", "ray.init (local)")
    timed(job, "checked_factories", "the data set and the sanity checks, in a thread beside ray.init")

    class FirstTrial(tune.Callback):
        def setup(self, **info):
            steps.setdefault("Tuner.fit to the first trial", [time.perf_counter() - began])

        def on_trial_start(self, iteration, trials, trial, **info):
            step = steps["Tuner.fit to the first trial"]
            if len(step) == 1:
                step.append(time.perf_counter() - began)

    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        run.run_job(spec, output_root=Path(tmp), check=True, callbacks=[FirstTrial()])
    return {"before the job": spent, "job steps": {label: {"starts_at": se[0], "seconds": se[1] - se[0]}
                                                    for label, se in steps.items()}}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases:
        print(json.dumps(phases()))
        return []
    totals = [end_to_end() for _ in range(args.reps)]
    runs = [json.loads(subprocess.run([sys.executable, "-m", "bench.startup", "--phases"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.strip().splitlines()[-1])
            for _ in range(args.reps)]
    before = runs[0]["before the job"]
    rows = [{"phase": name, "seconds": median([r["before the job"][name] for r in runs]), "starts_at_s": None}
            for name in before]
    rows.append({"phase": "sum of the steps before the job", "seconds": sum(r["seconds"] for r in rows),
                 "starts_at_s": None})
    rows += [{"phase": name, "seconds": median([r["job steps"][name]["seconds"] for r in runs]),
              "starts_at_s": median([r["job steps"][name]["starts_at"] for r in runs])}
             for name in runs[0]["job steps"]]
    rows.append({"phase": "end to end: tuner run -> first trial starts", "seconds": median(totals), "starts_at_s": None})
    table(rows, ["phase", "seconds", "starts_at_s"],
          f"start-up of `tuner run` (median of {args.reps}; starts_at_s: from the job's start)")
    save("startup", rows, end_to_end_runs=totals, phase_runs=runs)
    return rows


if __name__ == "__main__":
    main()
