"""The whole `tuner run` command at several commits: each run a fresh process, the commits' order
rotating from one round to the next. What a user times, and how it moved between commits.

    python -m bench.commits 2115ba7 HEAD [--rounds 4] [--job sleep|mnist] [--warm] [--checks]

Each commit is checked out into a temporary worktree and run with this machine's .venv (its code
first on PYTHONPATH, the workers' too). A new SQLite MLflow store per run. The jobs:
  sleep  a user's trainable: 16 trials × 20 epochs of 0.05 s, 2 at a time (8 s of ideal work)
  mnist  the service's own loop (the built-in MLP on MNIST-10k, what a user's own model and data
         set go through): 8 trials × 2 epochs, 2 at a time; its start-up runs to the end of the
         first epoch, which the job's data and torch's import come before
--warm: every run attaches to one `tuner up` service (started by this checkout, before the rounds;
one untimed job of each commit first), as a user who keeps the service up: `bench.cold`'s warm arm.
--checks: the mnist job with its sanity checks, as `tuner run` runs by default (otherwise skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cold import EPOCH_S, _phases, _service, _until_idle
from bench.common import MNIST, ROOT, save, table, tuner_run

JOB = """name: sleepy
trainable: workloads:sleep_trainable
code_dir: {code}
metric: loss
mode: min
search: {{algorithm: tpe, num_samples: 16, max_concurrent: 2, seed: 0, space: {{x: {{uniform: [0, 1]}}}}}}
fixed: {{epochs: 20, epoch_s: 0.05}}
ensemble: {{top_k: 0}}
"""
MNIST_JOB = f"""name: mnist
model: mlp
data: {{path: {MNIST}, format: idx}}
metric: val_loss
mode: min
search: {{algorithm: tpe, num_samples: 8, max_concurrent: 2, seed: 0, space: {{lr: {{loguniform: [0.001, 0.1]}}}}}}
trial: {{epochs: 2}}
fixed: {{batch_size: 128, width: 256}}
ensemble: {{top_k: 0}}
"""


CHECK = """import sys, tuner.cli, tuner.run
outside = sorted(m.__name__ for m in list(sys.modules.values())
                 if m.__name__.split(".")[0] in ("tuner", "trainables", "search_spaces")
                 and not (getattr(m, "__file__", None) or "").startswith(sys.argv[1]))
sys.exit(f"modules from outside the tree: {outside}" if outside else 0)
"""


def check_tree(tree: Path) -> None:
    """Refuse a commit whose imports reach outside its worktree: the editable install supplies a module
    a commit lacks from this checkout (seen: a commit that imported a module added one commit later)."""
    done = subprocess.run([sys.executable, "-c", CHECK, str(tree)], cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    if done.returncode != 0:
        raise SystemExit(f"{tree.name}: {done.stderr.strip().splitlines()[-1]}")


def run_once(tree: Path, job: str, warm_root: Path | None = None, checks: bool = False) -> dict[str, float]:
    """One whole run: its wall seconds, start-up and time after the last trial (bench.cold's phases).
    ``warm_root``: the output folder of a `tuner up` service to attach to (else a new one)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "job.yaml"
        spec.write_text(JOB.format(code=tree / "bench") if job == "sleep" else MNIST_JOB)
        out = warm_root or Path(tmp) / "out"
        if warm_root is not None:
            _until_idle()
        started = time.time()
        wall = tuner_run(spec, out, tree, checks=checks)
        phases = (_phases(out, started, time.time()) if job == "sleep" else
                  _phases(out, started, time.time(), name="mnist", epoch_s=0.0))
        return {"wall_s": wall, **phases}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="+")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--job", choices=["sleep", "mnist"], default="sleep")
    parser.add_argument("--warm", action="store_true", help="attach every run to one `tuner up` service")
    parser.add_argument("--checks", action="store_true", help="the mnist job with its sanity checks")
    args = parser.parse_args(argv)
    if args.checks and args.job != "mnist":
        parser.error("--checks: only the mnist job has sanity checks (the sleep job is a user's trainable)")
    with tempfile.TemporaryDirectory(prefix="tuner-commits-") as base:
        trees = {}
        for rev in args.revs:
            sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.strip()
            trees[sha] = Path(base) / sha
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[sha]), sha], cwd=ROOT, check=True,
                           capture_output=True)
            check_tree(trees[sha])
        try:
            runs: dict[str, list[dict[str, float]]] = {sha: [] for sha in trees}
            shas = list(trees)
            warm_root = Path(base) / "warm" if args.warm else None
            with _service(warm_root) if warm_root else contextlib.nullcontext():
                for sha in shas if warm_root else []:
                    # untimed: each commit's first job on the service
                    run_once(trees[sha], args.job, warm_root, args.checks)
                for r in range(args.rounds):
                    for sha in shas[r % len(shas):] + shas[: r % len(shas)]:  # rotate who goes first
                        runs[sha].append(run_once(trees[sha], args.job, warm_root, args.checks))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    rows = [{"commit": sha, **{key: statistics.median(r[key] for r in rs) for key in rs[0]},
             "runs": ", ".join(f"{r['wall_s']:.1f}" for r in rs)} for sha, rs in runs.items()]
    table(rows, ["commit", "wall_s", "startup_s", "after_last_trial_s", "runs"],
          f"`tuner run` of the {args.job} job{', warm' if args.warm else ''}{', checks' if args.checks else ''}, "
          f"whole command, median of {args.rounds}"
          + (f" ({16 * 20 * EPOCH_S / 2:g} s ideal)" if args.job == "sleep" else ""))
    suffix = (("" if args.job == "sleep" else f"-{args.job}") + ("-warm" if args.warm else "")
              + ("-checks" if args.checks else ""))
    save("commits-" + "-".join(runs) + suffix, rows, revs=args.revs, job=args.job, checks=args.checks,
         every_run=runs)  # a file per comparison


if __name__ == "__main__":
    main(sys.argv[1:])
