"""What the search features cost: reproducible batches against the normal search (the whole `tuner run`
command, each run in a fresh process, the arms interleaved), and multi-objective TPE's suggestion time
against single-objective at 100 and 1,000 trials (each arm in a fresh process).

    python -m bench search_features [--pairs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, USER_CODE, save, table, time_tuner_run

JOB = """name: batches
trainable: workloads:varied_trainable
code_dir: {code}
metric: loss
mode: min
search: {{algorithm: tpe, num_samples: 24, max_concurrent: 4, seed: 0, reproducible: {reproducible},
          space: {{x: {{uniform: [0, 1]}}}}}}
trial: {{resources: {{cpu: 0.5}}}}
fixed: {{epochs: 4, epoch_s: 0.25}}
ensemble: {{top_k: 0}}
"""


def reproducible_arm(reproducible: bool) -> float:
    """Wall seconds of one `tuner run` of the job, in a fresh process."""
    return time_tuner_run(JOB.format(code=USER_CODE, reproducible=str(reproducible).lower()))


def suggestion_arm(objectives: int, trials: int, asks: int = 20) -> dict[str, float]:
    """Median and 90th-percentile ms of one suggestion (ask + the space's suggest calls) at ``trials``."""
    import optuna

    from search_spaces import load_preset, sample, to_optuna
    from tuner.search import SAMPLERS
    from tuner.spec import spec_from_mapping

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    metrics = ["val_loss", "num_params"][:objectives]
    spec = spec_from_mapping({"name": "s", "metric": metrics if objectives > 1 else metrics[0],
                              "mode": ["min"] * objectives if objectives > 1 else "min"})
    space = {k: v for k, v in load_preset("training_tricks").items() if "when" not in v}  # every key, every trial
    distributions = to_optuna(space)
    study = optuna.create_study(directions=["minimize"] * objectives, sampler=SAMPLERS["tpe"](spec))
    rng = random.Random(0)
    filler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    history = []
    for _ in range(trials):
        trial = filler.ask(distributions)
        history.append(optuna.trial.create_trial(params=trial.params, distributions=distributions,
                                                 values=[rng.random() for _ in range(objectives)]))
        filler.tell(trial, 0.0)
    study.add_trials(history)
    times = []
    define = sample(space)
    for _ in range(asks):
        started = time.perf_counter()
        trial = study.ask()
        define(trial)
        times.append((time.perf_counter() - started) * 1000)
        study.tell(trial, [rng.random() for _ in range(objectives)] if objectives > 1 else rng.random())
    return {"median_ms": statistics.median(times), "p90_ms": sorted(times)[int(0.9 * len(times)) - 1]}


def _fresh(arm: str, **kwargs: Any) -> Any:
    """Run an arm in a fresh Python process; its JSON answer."""
    done = subprocess.run([sys.executable, "-m", "bench.search_features", "--arm", arm, "--args", json.dumps(kwargs)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def bootstrap(ratios: list[float], rounds: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--arm")
    parser.add_argument("--args", default="{}")
    args = parser.parse_args(argv)
    if args.arm:  # inside a fresh process
        kwargs = json.loads(args.args)
        answer = reproducible_arm(**kwargs) if args.arm == "reproducible" else suggestion_arm(**kwargs)
        print(json.dumps(answer))
        return

    pairs = []
    for i in range(args.pairs):  # ABBA: the arm that goes first alternates
        order = [False, True] if i % 2 == 0 else [True, False]
        walls = {flag: _fresh("reproducible", reproducible=flag) for flag in order}
        pairs.append({"pair": i + 1, "normal_s": walls[False], "reproducible_s": walls[True],
                      "ratio": walls[True] / walls[False]})
    ratios = [p["ratio"] for p in pairs]
    low, high = bootstrap(ratios)
    summary = {"normal_s": statistics.median(p["normal_s"] for p in pairs),
               "reproducible_s": statistics.median(p["reproducible_s"] for p in pairs),
               "ratio": statistics.median(ratios), "ratio_95": (low, high)}
    table(pairs + [{"pair": "median", **summary}], ["pair", "normal_s", "reproducible_s", "ratio"],
          "reproducible batches against the normal search: 24 trials of unequal length, 4 at a time, `tuner run`")
    print(f"ratio {summary['ratio']:.3f}, 95% bootstrap interval {low:.3f}..{high:.3f}")

    suggestion = []
    for trials in (100, 1000):
        for objectives in (1, 2):
            suggestion.append({"trials": trials, "objectives": objectives, **_fresh("suggest", objectives=objectives,
                                                                                    trials=trials)})
    table(suggestion, ["trials", "objectives", "median_ms", "p90_ms"],
          "TPE suggestion time (ask + 8 suggests of training_tricks' keys), the service's sampler settings")
    save("search_features", pairs, summary=summary, suggestion=suggestion)


if __name__ == "__main__":
    main(sys.argv[1:])
