"""What a user times: the whole command, each run a fresh process, the arms' order rotating per round.

    python -m bench cold [--rounds 3]

The job: 16 trials x 20 reports x 0.05 s, TPE, 2 at a time: 8 s of ideal work on 2 cores. Arms:
  plain                 Ray Tune + OptunaSearch in a script, no logging      (bench/plain_tune.py)
  plain + ray mlflow    the same with Ray's MLflowLoggerCallback (what users write today)
  plain + rows          the service's rows (parent, child runs, reported metrics only), one call a report
  plain + rows batched  those rows batched (log_batch once a second and at each trial's end)
  tuner cold            `tuner run`, a new output folder (a new MLflow store, Ray started in-process)
  tuner warm            `tuner run` with `tuner up` running for its output folder (Ray head and the
                        MLflow UI up; the store exists): the first job after `tuner up`
  tuner warm, next job  the same, after one job (not timed) has run on that service: what a user who
                        keeps the service up gets from the second job on

Each plain arm makes a new SQLite store, as `tuner cold` does. Ratios are per round (same round, so
the same machine weather), reported as the median with a 95% bootstrap interval over rounds. The
`tuner` arms also give start-up (process start to the first trial's first epoch, less that epoch's
0.05 s) and the time after the last trial (its last event to the process's exit), from the journal's
own time stamps.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, USER_CODE, journal_events, machine_cpu_s, save, table

IDEAL_S, EPOCH_S = 8.0, 0.05
JOB = f"""name: sleepy
trainable: workloads:sleep_trainable
code_dir: {USER_CODE}
metric: loss
mode: min
search: {{algorithm: tpe, num_samples: 16, max_concurrent: 2, seed: 0, space: {{x: {{uniform: [0, 1]}}}}}}
fixed: {{epochs: 20, epoch_s: {EPOCH_S}}}
ensemble: {{top_k: 0}}
"""
PLAIN = {"plain": "none", "plain + ray mlflow": "ray-mlflow", "plain + rows": "rows",
         "plain + rows batched": "rows-batched"}
WARM = ("tuner warm", "tuner warm, next job")
ARMS = [*PLAIN, "tuner cold", *WARM]
BASELINE = "plain + ray mlflow"
TUNER = [sys.executable, "-m", "tuner.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_arm(arm: str, base: Path, warm_root: Path) -> dict:
    """One run of ``arm`` in a fresh process; its wall seconds (and phases for the tuner arms)."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        if arm in PLAIN:
            command = [sys.executable, str(ROOT / "bench" / "plain_tune.py"), "--logging", PLAIN[arm],
                       "--store", f"{tmp}/mlflow.db", "--storage", f"{tmp}/ray"]
            root = None
        else:
            (Path(tmp) / "job.yaml").write_text(JOB)
            root = warm_root if arm in WARM else Path(tmp) / "out"
            command = [*TUNER, "run", f"{tmp}/job.yaml", "--output-dir", str(root), "--skip-checks"]
            if arm == "tuner warm, next job":  # one job first, on the same service, not timed
                _run(command, tmp, f"{arm}, the untimed first job")
                _until_idle()
        started_epoch, started = time.time(), time.perf_counter()
        _run(command, tmp, arm)
        wall, ended_epoch = time.perf_counter() - started, time.time()
        row = {"arm": arm, "wall_s": wall}
        if root is not None:
            row.update(_phases(root, started_epoch, ended_epoch))
        return row


def _run(command: list[str], cwd: str, what: str) -> None:
    """Run a command to its end; a failure raises with the end of its output."""
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what}: exit {done.returncode}: {done.stdout[-1500:]}{done.stderr[-1500:]}")


def _phases(root: Path, started: float, ended: float, *, name: str = "sleepy", epoch_s: float = EPOCH_S) -> dict:
    """Start-up (to the first epoch's report, less ``epoch_s``) and the time after the last trial,
    from the newest run's journal of job ``name`` (ms time stamps)."""
    events = journal_events(root, name)
    first = min(e["time"] for e in events if e["op"] == "metrics") / 1000
    last = max(e["time"] for e in events if e["op"] in ("metrics", "trial_end")) / 1000
    return {"startup_s": first - epoch_s - started, "after_last_trial_s": ended - last}


@contextlib.contextmanager
def _service(root: Path):
    """`tuner up` for the warm arm (not timed; its MLflow UI creates the store, which then exists, as
    it does for a user who keeps the service); `tuner down` after."""
    subprocess.run([*TUNER, "up", "--output-dir", str(root)], env=_env(), check=True, capture_output=True)
    _until_idle()  # a kept service is idle when a job comes; the MLflow UI's workers take ~10 s to settle
    try:
        yield
    finally:
        subprocess.run([*TUNER, "down", "--output-dir", str(root)], env=_env(), check=True, capture_output=True)


def _until_idle(below_cores: float = 0.3, longest_s: float = 60) -> None:
    """Wait until the machine uses less than ``below_cores`` of CPU over a second."""
    deadline = time.monotonic() + longest_s
    while time.monotonic() < deadline:
        before = machine_cpu_s()
        time.sleep(1)
        if machine_cpu_s() - before < below_cores:
            return


def bootstrap_median(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the median of ``values`` (resampled with replacement)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    args = parser.parse_args(argv)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tuner-cold-") as base:
        warm_root = Path(base) / "warm"
        for r in range(args.rounds):
            order = args.arms[r % len(args.arms):] + args.arms[: r % len(args.arms)]  # rotate who goes first
            for arm in order:
                # The service is up only around the warm arm's runs: its idle Ray head and MLflow UI
                # take CPU from whatever runs beside them (the plain arms took 30% longer).
                with _service(warm_root) if arm in WARM else contextlib.nullcontext():
                    runs.append({"round": r, **run_arm(arm, Path(base), warm_root)})
                print(f"round {r} {arm}: {runs[-1]['wall_s']:.1f} s", flush=True)
    rows = []
    for arm in args.arms:
        mine = [x for x in runs if x["arm"] == arm]
        walls = [x["wall_s"] for x in mine]
        row = {"arm": arm, "wall_s": statistics.median(walls), "runs": ", ".join(f"{w:.1f}" for w in walls),
               "x_ideal": statistics.median(walls) / IDEAL_S}
        if BASELINE in args.arms:
            ratios = [x["wall_s"] / next(b["wall_s"] for b in runs if b["arm"] == BASELINE and b["round"] == x["round"])
                      for x in mine]
            row["x_baseline"], row["x_baseline_95"] = statistics.median(ratios), bootstrap_median(ratios)
        if "startup_s" in mine[0]:
            row["startup_s"] = statistics.median(x["startup_s"] for x in mine)
            row["after_last_trial_s"] = statistics.median(x["after_last_trial_s"] for x in mine)
        rows.append(row)
    table(rows, ["arm", "wall_s", "x_ideal", "x_baseline", "x_baseline_95", "startup_s", "after_last_trial_s", "runs"],
          f"the whole command, fresh processes, median of {args.rounds} rounds ({IDEAL_S:g} s ideal; "
          f"x_baseline: / {BASELINE} in the same round)")
    save("cold", rows, runs=runs, ideal_s=IDEAL_S, commit=_commit())


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main(sys.argv[1:])
