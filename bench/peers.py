"""Time to quality against peers: the service's TPE+ASHA and random search, Optuna's own TPE with its
HyperbandPruner (one worker, and n_jobs=2), and Ray Tune's own OptunaSearch with ASHA, on MNIST-10k.

Every arm trains the same model (the built-in MLP, width 256, batch 128) with the same loop
(`trainables.train.fit`) over the same space (`training_tricks`): 30 trials of up to 10 epochs,
maximising validation accuracy, 2 at a time (Optuna's sequential arm: one). The peers use their
libraries' defaults, as their documentation shows them: Optuna's `TPESampler(seed=)` and
`HyperbandPruner()`; Ray's `OptunaSearch(seed=)` and `ASHAScheduler(grace_period=1,
reduction_factor=4)`. The service's arms are the whole `tuner run` command with its defaults
(multivariate TPE with the constant liar, ASHA grace 1 factor 4), checks skipped and the ensemble
off (the peers have neither).

Each job is a fresh process; the arms' order rotates from seed to seed. From each job, every epoch's
validation accuracy with its wall-clock time since the process was started; then per arm the epochs
spent (reported by any trial) and the seconds until the best so far first reaches each of ``--targets``:
medians over seeds with bootstrap intervals. A job that never reaches it counts as not reached, and
an arm's median is given only when most of its seeds reached the target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cold import bootstrap_median
from bench.common import MNIST, ROOT, journal_events, median, save, table

SPEC = ROOT / "examples" / "mnist-mlp.yaml"

ARMS = ["service tpe+asha", "service random", "optuna tpe+hyperband", "optuna tpe+hyperband n_jobs=2",
        "ray tune optunasearch+asha"]
TRIALS, EPOCHS = 30, 10
SERVICE = {"service tpe+asha": ["search.algorithm=tpe", "scheduler.name=asha"],
           "service random": ["search.algorithm=random", "scheduler.name=fifo"]}


# ------------------------------------------------------------------------- one job, in its own process


def run_job(arm: str, seed: int, folder: Path) -> list[dict[str, float]]:
    """Run one job of ``arm`` in a fresh process; its epochs as {"t": s since launch, "trial", "val_acc"}."""
    started = time.time()
    if arm in SERVICE:
        sets = [*SERVICE[arm], *_sets(seed)]
        command = [sys.executable, "-m", "tuner.cli", "run", str(SPEC), "--output-dir", str(folder), "--skip-checks",
                   *[a for s in sets for a in ("--set", s)]]
    else:
        command = [sys.executable, "-m", "bench.peers", "--one", arm, "--seed", str(seed), "--folder", str(folder),
                   "--trials", str(TRIALS), "--epochs", str(EPOCHS)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"{arm}, seed {seed}: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    if arm in SERVICE:  # the service's journal: one "metrics" event per reported epoch, ms time stamps
        return [{"t": e["time"] / 1000 - started, "trial": e["trial"], "val_acc": e["values"]["val_acc"]}
                for e in journal_events(folder, "mnist-mlp") if e["op"] == "metrics" and "val_acc" in e["values"]]
    rows = [json.loads(line) for line in (folder / "epochs.jsonl").read_text().splitlines() if line.strip()]
    return [{**r, "t": r["time"] - started} for r in rows]


def _recorder(folder: Path):
    """Append one line per epoch; lines under PIPE_BUF from several processes stay whole (O_APPEND)."""
    path = folder / "epochs.jsonl"

    def record(trial: Any, metrics: dict[str, float]) -> None:
        with open(path, "a") as f:
            f.write(json.dumps({"time": time.time(), "trial": str(trial), "val_acc": metrics["val_acc"]}) + "\n")

    return record


def _sets(seed: int) -> list[str]:
    return [f"search.seed={seed}", f"search.num_samples={TRIALS}", f"trial.epochs={EPOCHS}", "metric=val_acc",
            "mode=max", "ensemble.top_k=0", f"data.path={MNIST}"]


def _job(seed: int):
    """The peers' model, data and constant config, from the service's own spec of the job: the same
    data split, fixed knobs and epochs as the service's arms."""
    from tuner.engine import factories
    from tuner.spec import load_spec

    spec = load_spec(SPEC, overrides=_sets(seed))
    return factories(spec), spec.trial_config()


def optuna_job(seed: int, folder: Path, n_jobs: int) -> None:
    """Optuna alone: TPE with Hyperband pruning, the trials in this process (``n_jobs`` threads)."""
    import optuna

    from search_spaces import load_preset, sample
    from trainables.train import fit

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    (made, constant), space = _job(seed), load_preset("training_tricks")
    record = _recorder(folder)

    def objective(trial: optuna.Trial) -> float:
        sample(space)(trial)
        best = 0.0

        def report(metrics: dict[str, float], _checkpoint: str | None) -> None:
            nonlocal best
            record(trial.number, metrics)
            best = max(best, metrics["val_acc"])
            trial.report(metrics["val_acc"], metrics["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        fit({**constant, **trial.params}, model=made.model, data=made.data, report=report)
        return best

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner())
    study.optimize(objective, n_trials=TRIALS, n_jobs=n_jobs, catch=(RuntimeError,))


def ray_tune_job(seed: int, folder: Path) -> None:
    """Ray Tune alone: its OptunaSearch (TPE) and ASHA, no tracking beyond Tune's own files."""
    import logging

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import load_preset, sample

    made, constant = _job(seed)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    record = _recorder(folder)

    def trainable(config: dict[str, Any], model=None, data=None) -> None:  # what Tune's guides show
        import torch

        from trainables.train import fit

        torch.set_num_threads(1)
        trial = tune.get_context().get_trial_id()

        def report(metrics: dict[str, float], _checkpoint: str | None) -> None:
            record(trial, metrics)
            tune.report({"val_acc": metrics["val_acc"]})

        fit({**constant, **config}, model=model, data=data, report=report)

    tuner = tune.Tuner(
        tune.with_parameters(trainable, model=made.model, data=made.data),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(sample(load_preset("training_tricks")), metric="val_acc", mode="max", seed=seed),
            scheduler=ASHAScheduler(metric="val_acc", mode="max", max_t=EPOCHS, grace_period=1, reduction_factor=4),
            num_samples=TRIALS, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(folder / "ray"), verbose=0))
    tuner.fit()
    ray.shutdown()


# ------------------------------------------------------------------------------------------ analysis


def reach(epochs: list[dict[str, float]], target: float) -> dict[str, Any]:
    """Epochs spent and seconds since launch when the best so far first reaches ``target``."""
    for spent, row in enumerate(sorted(epochs, key=lambda r: r["t"]), start=1):
        if row["val_acc"] >= target:
            return {"epochs": spent, "seconds": row["t"]}
    return {"epochs": None, "seconds": None}


def summarise(jobs: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    rows = []
    for arm in ARMS:
        mine = [j for j in jobs if j["arm"] == arm]
        if not mine:
            continue
        hits = [reach(j["epochs"], target) for j in mine]
        reached = [h for h in hits if h["epochs"] is not None]
        row: dict[str, Any] = {"arm": arm, "reached": f"{len(reached)}/{len(mine)}",
                               "median best val_acc": median([max(r["val_acc"] for r in j["epochs"]) for j in mine]),
                               "median wall s (whole job)": median([j["wall_s"] for j in mine]),
                               "median epochs (whole job)": median([len(j["epochs"]) for j in mine])}
        if len(reached) * 2 > len(mine):  # a median over seeds, the unreached counted as slowest
            for key in ("epochs", "seconds"):
                values = [h[key] if h[key] is not None else float("inf") for h in hits]
                row[f"median {key} to target"] = median(values)
                row[f"{key} 95%"] = bootstrap_median(values)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.96, 0.965], help="validation accuracies")
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10, help="a trial's most epochs")
    parser.add_argument("--one", choices=ARMS, help=argparse.SUPPRESS)  # a peer's job, in this process
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global TRIALS, EPOCHS
    TRIALS, EPOCHS = args.trials, args.epochs
    if args.one:
        if args.one == "ray tune optunasearch+asha":
            ray_tune_job(args.seed, args.folder)
        else:
            optuna_job(args.seed, args.folder, n_jobs=2 if args.one.endswith("n_jobs=2") else 1)
        return
    if not MNIST.is_dir():
        raise SystemExit(f"MNIST-10k not found at {MNIST}")
    jobs = []
    for i, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        order = args.arms[i % len(args.arms):] + args.arms[: i % len(args.arms)]
        for arm in order:
            with tempfile.TemporaryDirectory(prefix="tuner-peers-") as tmp:
                started = time.perf_counter()
                epochs = run_job(arm, seed, Path(tmp))
                wall = time.perf_counter() - started
            jobs.append({"arm": arm, "seed": seed, "wall_s": wall, "epochs": epochs})
            print(f"{arm}, seed {seed}: {wall:.1f} s, {len(epochs)} epochs, best "
                  f"{max(r['val_acc'] for r in epochs):.4f}, first target {reach(epochs, args.targets[0])}", flush=True)
    columns = ["arm", "reached", "median epochs to target", "epochs 95%", "median seconds to target", "seconds 95%",
               "median best val_acc", "median epochs (whole job)", "median wall s (whole job)"]
    rows = []
    for target in args.targets:
        rows += [{"target": target, **row} for row in summarise(jobs, target)]
        table([r for r in rows if r["target"] == target], columns,
              f"Time to val_acc ≥ {target} on MNIST-10k, {args.seeds} seeds")
    save("peers", rows, targets=args.targets, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
         trials=TRIALS, max_epochs=EPOCHS, jobs=jobs)


if __name__ == "__main__":
    main()
