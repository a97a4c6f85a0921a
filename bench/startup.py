"""Start-up: from `tuner run` to the first trial starting, and what the time goes to.

Two measurements of the demo job (2 trials, 1 epoch):
  end to end  `tuner run` as a subprocess; the first trial's start is read from the job's journal
  phases     the same steps in a fresh interpreter, each timed: imports, spec, sanity checks,
             the MLflow parent run (a new SQLite store creates its tables), data, Ray, first trial
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


def phases() -> dict[str, float]:
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
    checks = cli._run_checks(spec)
    lap("sanity checks (data + 3 checks)")

    import ray  # noqa: F401
    from ray import tune  # noqa: F401

    import tuner.run as run
    import tuner.tracking as tracking
    lap("import ray, ray.tune")

    def timed(module, name: str, label: str) -> None:
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            lap("(between)") if clock else None
            result = original(*args, **kwargs)
            lap(label)
            return result

        setattr(module, name, wrapper)

    timed(tracking, "start_parent_run", "MLflow parent run (new SQLite store)")
    timed(run, "factories", "load the data set")
    timed(run, "_init_ray", "ray.init")

    class FirstTrial(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            if "Tuner.fit to the first trial" not in spent:
                lap("Tuner.fit to the first trial")

    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        run.run_job(spec, output_root=Path(tmp), checks=checks, callbacks=[FirstTrial()])
    spent.pop("(between)", None)
    return spent


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
    rows = [{"phase": name, "seconds": median([r[name] for r in runs])} for name in runs[0]]
    rows.append({"phase": "sum of phases", "seconds": sum(r["seconds"] for r in rows)})
    rows.append({"phase": "end to end: tuner run -> first trial starts", "seconds": median(totals)})
    table(rows, ["phase", "seconds"], f"start-up of `tuner run` (median of {args.reps})")
    save("startup", rows, end_to_end_runs=totals, phase_runs=runs)
    return rows


if __name__ == "__main__":
    main()
