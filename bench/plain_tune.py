"""The baseline a user would write without the service: Ray Tune + Optuna's TPE, logging to MLflow.
Run as its own process by `bench/cold.py` (one arm per fresh process):

    python bench/plain_tune.py --logging ray-mlflow --store /tmp/x/mlflow.db

The job is `bench/cold.py`'s: 16 trials x 20 reports x 0.05 s, 2 at a time (8 s of ideal work).
--logging:
  none          no logging at all
  ray-mlflow    Ray's own `MLflowLoggerCallback`: a flat run per trial, every key Tune adds (~13 a
                report), one synchronous call per report
  rows          the rows the service logs (a parent run, a child run per trial with its config, the
                reported metrics only), one synchronous call per report: what logging less buys
  rows-batched  the same rows, batched: metrics kept per trial and sent with `log_batch` once a second
                and at the trial's end: what batching buys
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # workloads, on the driver and (PYTHONPATH) workers

from ray import tune  # noqa: E402
from ray.tune import Callback  # noqa: E402

TRIALS, CONCURRENCY, EPOCHS, EPOCH_S = 16, 2, 20, 0.05


class RowsCallback(Callback):
    """The service's rows through MLflow's client, synchronously, batched or not."""

    def __init__(self, tracking_uri: str, batched: bool) -> None:
        from mlflow.tracking import MlflowClient

        self.client, self.batched = MlflowClient(tracking_uri), batched
        experiment = self.client.create_experiment("plain")
        self.experiment, self.parent = experiment, self.client.create_run(experiment).info.run_id
        self.runs: dict[str, str] = {}
        self.pending: dict[str, list] = {}
        self.flushed = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment, tags={"mlflow.parentRunId": self.parent},
                                     run_name=trial.trial_id).info.run_id
        self.runs[trial.trial_id] = run
        self.client.log_batch(run, params=[Param(k, str(v)) for k, v in trial.config.items()])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric("loss", result["loss"], now, result["epoch"])]
        if not self.batched:
            self.client.log_batch(self.runs[trial.trial_id], metrics=metrics)
            return
        self.pending.setdefault(trial.trial_id, []).extend(metrics)
        if time.monotonic() - self.flushed >= 1.0:
            self._flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._flush()
        self.client.set_terminated(self.runs[trial.trial_id], "FINISHED")

    def on_experiment_end(self, trials, **info):
        self._flush()
        self.client.set_terminated(self.parent, "FINISHED")

    def _flush(self) -> None:
        for trial_id, metrics in self.pending.items():
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(self.runs[trial_id], metrics=metrics[start:start + 1000])
        self.pending, self.flushed = {}, time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logging", choices=["none", "ray-mlflow", "rows", "rows-batched"], required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--storage", type=Path, required=True, help="Tune's storage folder")
    args = parser.parse_args()

    import ray
    from ray.tune.search.optuna import OptunaSearch

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    from workloads import sleep_trainable

    uri = f"sqlite:///{args.store.resolve()}"
    callbacks = []
    if args.logging == "ray-mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks = [MLflowLoggerCallback(tracking_uri=uri, experiment_name="plain", save_artifact=False)]
    elif args.logging in ("rows", "rows-batched"):
        callbacks = [RowsCallback(uri, batched=args.logging == "rows-batched")]
    tuner = tune.Tuner(
        tune.with_resources(sleep_trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1), "epochs": EPOCHS, "epoch_s": EPOCH_S},
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="loss", mode="min", seed=0), num_samples=TRIALS,
                                    max_concurrent_trials=CONCURRENCY, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(args.storage.resolve()), callbacks=callbacks, verbose=0),
    )
    best = tuner.fit().get_best_result(metric="loss", mode="min")
    print(f"best loss {best.metrics['loss']:.4f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
