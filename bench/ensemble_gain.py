"""Ensemble gain on MNIST-10k: test accuracy of the top-5 ensemble minus the best single trial's, per seed.

Each seed is the 20-trial job of examples/mnist-mlp.yaml (TPE, `ensemble: {top_k: 5}`); test data is
never used to pick the members.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import MNIST, ROOT, Timer, median, save, start_ray, table


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from tuner.run import run_job
    from tuner.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    if not MNIST.is_dir():
        raise SystemExit(f"MNIST-10k not found at {MNIST}")
    start_ray()
    rows = []
    for seed in range(args.seeds):
        spec = load_spec(ROOT / "examples" / "mnist-mlp.yaml", overrides=[
            f"search.seed={seed}", f"search.num_samples={args.trials}", f"data.path={MNIST}",
            "mlflow.tracking_uri=sqlite:///mlflow.db"])
        with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp, Timer() as t:
            ensemble = run_job(spec, output_root=Path(tmp)).ensemble
        if ensemble is None:
            raise RuntimeError(f"seed {seed}: no ensemble was built")
        rows.append({"seed": seed, "members": len(ensemble["members"]), "ensemble_test_acc": ensemble["ensemble_test_acc"],
                     "best_single_test_acc": ensemble["best_single_test_acc"],
                     "margin": ensemble["ensemble_test_acc"] - ensemble["best_single_test_acc"], "wall_s": t.seconds})
    rows.append({"seed": "median", "margin": median([r["margin"] for r in rows]),
                 "ensemble_test_acc": median([r["ensemble_test_acc"] for r in rows]),
                 "best_single_test_acc": median([r["best_single_test_acc"] for r in rows])})
    table(rows, ["seed", "members", "ensemble_test_acc", "best_single_test_acc", "margin", "wall_s"],
          f"ensemble gain on MNIST-10k ({args.trials} TPE trials, top 5)")
    save("ensemble_gain", rows, seeds=args.seeds, trials=args.trials)
    return rows


if __name__ == "__main__":
    main()
