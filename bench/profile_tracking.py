"""Where tracking time goes: the MLflow calls the writer makes on the digits demo, counted and timed.

    python -m bench.profile_tracking

Runs the demo's `Tuner.fit` with the tracking callback, wrapping `MlflowClient`'s write methods;
prints calls and seconds per method. (This is how the batching in tuner/tracking.py was chosen:
one call per event made 83 `log_batch` calls for 16 trials, one per trial per delivery makes ~30.)
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, save, start_ray, table

METHODS = ("create_run", "log_batch", "set_terminated", "search_runs", "get_run", "update_run", "log_text",
           "log_artifact")


def main(argv: list[str] | None = None) -> list[dict]:
    from mlflow.tracking import MlflowClient

    from bench.overhead import STORE, service_tune_phase
    from tuner.run import factories
    from tuner.spec import load_spec

    start_ray()
    calls: collections.Counter = collections.Counter()
    spent: collections.Counter = collections.Counter()
    originals = {name: getattr(MlflowClient, name) for name in METHODS}

    def wrap(name, original):
        def timed(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
                calls[name] += 1
        return timed

    demo = load_spec(ROOT / "examples" / "digits-mlp.yaml", overrides=["ensemble.top_k=0", f"mlflow.tracking_uri={STORE}"])
    made = factories(demo)
    for name, original in originals.items():
        setattr(MlflowClient, name, wrap(name, original))
    try:
        with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
            wall = service_tune_phase(demo, Path(tmp), made, tracking=True).seconds
    finally:
        for name, original in originals.items():
            setattr(MlflowClient, name, original)
    rows = [{"method": name, "calls": calls[name], "seconds": spent[name]} for name in METHODS if calls[name]]
    rows.append({"method": "total (writer thread)", "calls": sum(calls.values()), "seconds": sum(spent.values())})
    rows.append({"method": "Tuner.fit wall", "seconds": wall})
    table(rows, ["method", "calls", "seconds"], "MLflow calls of the tracking writer, digits demo (16 trials)")
    save("profile_tracking", rows)
    return rows


if __name__ == "__main__":
    main()
