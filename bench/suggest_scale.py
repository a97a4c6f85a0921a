"""TPE's suggestion time as the history grows to 10,000 trials, the study in the service's journal file
and in memory, read whole or through the service's bounded view (`search.tpe_history`, default 1,000:
`tuner.history`); the journal's size and this process's memory.

The service's sampler (`tuner.search.SAMPLERS["tpe"]`: multivariate TPE with the constant liar) over
`bench.bookkeeping`'s six knobs; the history is filled with finished trials of random values through
Optuna's public `add_trials`, then each suggestion is what Ray's OptunaSearch does per trial: `ask`
and the space's define-by-run function (`search_spaces.sample`), timed without the `tell`.
Each row runs in a fresh process. The whole service at 1,000 trials is `bench bookkeeping`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bookkeeping import SPACE, _spec
from bench.common import ROOT, median, save, table

SIZES = [1000, 10000]
SUGGESTIONS = 10


def measure(history: int, storage_kind: str, tpe_history: int | None) -> dict[str, Any]:
    import numpy as np
    import optuna

    from search_spaces import parse_space, sample, to_optuna
    from tuner.search import SAMPLERS, sampler_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = _spec(history)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"tpe_history": tpe_history})})
    space = parse_space(SPACE)
    distributions = to_optuna(space)
    with tempfile.TemporaryDirectory(prefix="tuner-scale-") as tmp:
        journal = Path(tmp) / "study.log"
        if storage_kind == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            storage = JournalStorage(JournalFileBackend(str(journal)))
        else:
            storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=sampler_storage(spec, storage), sampler=SAMPLERS["tpe"](spec),
                                    direction="minimize")
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        study.add_trials([optuna.trial.create_trial(
            params={k: _draw(rng, d) for k, d in distributions.items()},
            distributions=distributions, value=float(rng.random())) for _ in range(history)])
        fill_s = time.perf_counter() - started
        times = []
        for _ in range(SUGGESTIONS):
            started = time.perf_counter()
            trial = study.ask()
            sample(space)(trial)
            times.append(time.perf_counter() - started)
            study.tell(trial, float(rng.random()))
        size = journal.stat().st_size if journal.exists() else None
    return {"history": history, "storage": storage_kind, "tpe_history": tpe_history or "all", "suggest_ms_median": 1000 * median(times),
            "suggest_ms_max": 1000 * max(times), "fill_s": fill_s, "journal_mb": size and size / 1e6,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _draw(rng, distribution) -> Any:
    """A uniform draw from an Optuna distribution (log-uniform where it is on a log scale)."""
    import optuna.distributions as od

    if isinstance(distribution, od.CategoricalDistribution):
        return distribution.choices[int(rng.integers(len(distribution.choices)))]
    low, high = distribution.low, distribution.high
    if isinstance(distribution, od.IntDistribution):
        return int(rng.integers(low, high + 1))
    if distribution.log:
        return float(low * (high / low) ** rng.random())
    return float(rng.uniform(low, high))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # history, storage, tpe_history: in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], None if args.one[2] == "all" else int(args.one[2]))))
        return []
    rows = []
    for history in args.sizes:
        for kind, tpe_history in (("journal", "1000"), ("journal", "all"), ("memory", "1000"), ("memory", "all")):
            done = subprocess.run([sys.executable, "-m", "bench.suggest_scale", "--one", str(history), kind, tpe_history],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    table(rows, ["history", "storage", "tpe_history", "suggest_ms_median", "suggest_ms_max", "journal_mb", "max_rss_mb", "fill_s"],
          f"TPE suggestion after N finished trials (median of {SUGGESTIONS})")
    save("suggest_scale", rows)
    return rows


if __name__ == "__main__":
    main()
