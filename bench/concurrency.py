"""Concurrency: the same 16 sleeping trials (20 reports x 0.05 s each) run 1, 2, 4 and 8 at a time
on the machine's 2 cores (`trial.resources.cpu` 2/k: fractional CPUs), each run a whole `tuner run`
in a fresh process, the order rotating per round.

    python -m bench concurrency [--rounds 2] [--levels 1 2 4 8]

Efficiency = ideal / measured, ideal = 16 x 1 s / k. Two measures: the trials' span (the first
trial's first report to the last trial's end, from the journal's time stamps: what Ray Tune and the
service do with the trials) and the whole command (start-up and exit included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import USER_CODE, journal_events, save, table, tuner_run

TRIALS, EPOCHS, EPOCH_S = 16, 20, 0.05
JOB = """name: sleepy
trainable: workloads:sleep_trainable
code_dir: {code}
metric: loss
mode: min
search: {{algorithm: random, num_samples: {trials}, max_concurrent: {k}, seed: 0, space: {{x: {{uniform: [0, 1]}}}}}}
trial: {{resources: {{cpu: {cpu}}}}}
fixed: {{epochs: {epochs}, epoch_s: {epoch_s}}}
ensemble: {{top_k: 0}}
"""


def run_level(k: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "job.yaml"
        spec.write_text(JOB.format(code=USER_CODE, trials=TRIALS, k=k, cpu=round(2 / k, 4), epochs=EPOCHS,
                                   epoch_s=EPOCH_S))
        wall = tuner_run(spec, Path(tmp) / "out")
        events = journal_events(Path(tmp) / "out", "sleepy")
    times = [e["time"] / 1000 for e in events if e["op"] in ("metrics", "trial_end")]
    first = min(e["time"] / 1000 for e in events if e["op"] == "metrics") - EPOCH_S
    return {"k": k, "wall_s": wall, "span_s": max(times) - first}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args(argv)
    runs = []
    for r in range(args.rounds):
        for k in args.levels[r % len(args.levels):] + args.levels[: r % len(args.levels)]:
            runs.append({"round": r, **run_level(k)})
            print(f"round {r} k={k}: span {runs[-1]['span_s']:.1f} s, whole {runs[-1]['wall_s']:.1f} s", flush=True)
    rows = []
    for k in args.levels:
        mine = [x for x in runs if x["k"] == k]
        ideal = TRIALS * EPOCHS * EPOCH_S / k
        span, wall = statistics.median(x["span_s"] for x in mine), statistics.median(x["wall_s"] for x in mine)
        rows.append({"k": k, "ideal_s": ideal, "span_s": span, "span_efficiency": ideal / span, "wall_s": wall,
                     "wall_efficiency": ideal / wall})
    table(rows, ["k", "ideal_s", "span_s", "span_efficiency", "wall_s", "wall_efficiency"],
          f"16 trials x 1 s of sleep, k at a time on 2 cores (cpu 2/k), median of {args.rounds}")
    save("concurrency", rows, runs=runs)


if __name__ == "__main__":
    main(sys.argv[1:])
