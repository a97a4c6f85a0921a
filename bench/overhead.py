"""Orchestration overhead: the service against what users write today, on the same trials, same run.

Workloads (2 trials at a time, the machine's 2 cores):
  sleep-0.05s  16 trials x 20 epochs x 0.05 s: ideal 16 * 20 * 0.05 / 2 = 8 s
  sleep-2s     16 trials x 4 epochs x 0.5 s (2-second trials): ideal 16 s
  digits       the demo job (16 TPE trials of the MLP on digits), tracking on vs off: what logging costs
               (24 pairs of runs by default, ABBA order: the median of the pairs' ratios, its 95% interval,
               the CPU the driver and the machine spent, and the tracking's own work counted)

Arms:
  service              `tuner run` in-process (run_job): every trial and epoch in MLflow, report, plots
  service, no tracking the same Ray Tune job (tuner.run.make_tuner) without the tracking callback
  ray tune             plain `tune.Tuner` + OptunaSearch, no logging
  ray tune + mlflow    the same plus Ray's MLflowLoggerCallback (one flat run per trial, synchronous)
  optuna + mlflow      `study.optimize(n_jobs=2)` with a callback that logs each trial to MLflow
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import ROOT, USER_CODE, Timer, median, save, start_ray, table

CONCURRENCY = 2
STORE = "sqlite:///mlflow.db"  # in each arm's own temporary folder, whatever $MLFLOW_TRACKING_URI says


def _sleep_spec(name: str, trials: int, epochs: int, epoch_s: float):
    from tuner.spec import spec_from_mapping

    return spec_from_mapping({
        "name": name, "trainable": "workloads:sleep_trainable", "code_dir": str(USER_CODE), "metric": "loss",
        "mode": "min", "search": {"algorithm": "random", "num_samples": trials, "max_concurrent": CONCURRENCY,
                                  "seed": 0, "space": {"x": {"uniform": [0.0, 1.0]}}},
        "fixed": {"epochs": epochs, "epoch_s": epoch_s}, "ensemble": {"top_k": 0},
        "mlflow": {"tracking_uri": STORE}})


def service(spec, tmp: Path) -> float:
    from tuner.run import run_job

    with Timer() as t:
        run_job(spec, output_root=tmp)
    return t.seconds


def service_without_tracking(spec, tmp: Path, made=None) -> float:
    from tuner.folders import new_run_folder
    from tuner.run import make_tuner

    with Timer() as t:
        make_tuner(spec, new_run_folder(spec, tmp), [], made).fit()
    return t.seconds


def service_tune_phase(spec, tmp: Path, made, *, tracking: bool) -> Timer:
    """Only `Tuner.fit` of the job, with or without the tracking callback (plus flushing what it wrote).

    With tracking, the timer also carries the tracking's own work, counted: ``callback_cpu_s`` (the
    callback on Tune's loop), ``writer_cpu_s`` (the writer's deliveries, the final one included) and
    ``flush_s`` (the final flush's wall time, which nothing else overlaps).
    """
    from tuner.folders import new_run_folder, tracking_uri_for
    from tuner.run import make_tuner
    from tuner.tracking import open_writer, start_parent_run

    folder = new_run_folder(spec, tmp)
    callbacks = []
    if tracking:
        uri = tracking_uri_for(spec, tmp)
        experiment_id, parent = start_parent_run(tracking_uri=uri, experiment=spec.experiment, job_name=spec.name,
                                                 params={}, spec_yaml=spec.to_yaml(), tags={})
        tracker = _timed_writer(open_writer(folder.tracking, tracking_uri=uri, experiment_id=experiment_id,
                                            parent_run_id=parent))
        callbacks = [_timed_callback_class()(folder=folder.tracking, metric=spec.objective, mode=spec.direction)]
    with Timer() as t:
        make_tuner(spec, folder, callbacks, made).fit()
        if tracking:
            with Timer() as flush:
                left = tracker.close()
    if tracking:
        if left:
            raise RuntimeError(f"{left} tracking events undelivered: the measurement is void")
        t.callback_cpu_s, t.writer_cpu_s = callbacks[0].cpu_s, tracker.cpu_s
        t.flush_s = flush.seconds
    return t


def _timed(hook: Callable) -> Callable:
    def timed(self, *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.cpu_s += time.thread_time() - started
    return timed


def _timed_writer(tracker):
    """The job's writer, with the CPU its deliveries take (its own thread's) counted in ``cpu_s``."""
    deliver = tracker._deliver_once  # bench's hook on the service's writer; tuner/ has none of its own
    tracker.cpu_s = 0.0

    def timed() -> bool:
        started = time.thread_time()
        try:
            return deliver()
        finally:
            tracker.cpu_s += time.thread_time() - started
    tracker._deliver_once = timed
    return tracker


@functools.cache
def _timed_callback_class() -> type:
    """The service's tracking callback, with the CPU its hooks take on Tune's loop counted in ``cpu_s``."""
    from tuner.tracking import TrackingCallback

    hooks = {name: _timed(hook) for name, hook in vars(TrackingCallback).items() if name.startswith("on_")}
    return type("TimedTrackingCallback", (TrackingCallback,), {"cpu_s": 0.0, **hooks})


def plain_ray_tune(spec, tmp: Path, *, mlflow: bool) -> float:
    from optuna.samplers import RandomSampler
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from workloads import sleep_trainable

    callbacks = [MLflowLoggerCallback(tracking_uri=f"sqlite:///{tmp / 'plain.db'}", experiment_name="plain")] if mlflow else []
    tuner = tune.Tuner(
        tune.with_resources(sleep_trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0.0, 1.0), **spec.fixed},
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="loss", mode="min", sampler=RandomSampler(seed=0)),
                                    num_samples=spec.search.num_samples, max_concurrent_trials=CONCURRENCY,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp), name=f"plain-{time.time_ns()}", callbacks=callbacks, verbose=0))
    with Timer() as t:
        tuner.fit()
    return t.seconds


def plain_optuna(spec, tmp: Path) -> float:
    """What an Optuna user writes: threads, per-epoch trial.report, an MLflow run per trial from a callback."""
    import mlflow
    import optuna

    from tuner.tracking import fluent_tracking_uri

    fixed = spec.fixed

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for epoch in range(fixed["epochs"]):
            time.sleep(fixed["epoch_s"])
            loss = x + 1.0 / (epoch + 1)
            trial.report(loss, epoch)
        return loss

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with mlflow.start_run(run_name=f"trial-{trial.number}"):
            mlflow.log_params(trial.params)
            mlflow.log_metrics({f"loss_epoch_{step}": v for step, v in trial.intermediate_values.items()})
            mlflow.log_metric("loss", trial.value)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    # mlflow.set_tracking_uri, as users write it, also sets $MLFLOW_TRACKING_URI: restored after the arm.
    with fluent_tracking_uri(f"sqlite:///{tmp / 'optuna.db'}"):
        mlflow.set_experiment("plain-optuna")
        with Timer() as t:
            study.optimize(objective, n_trials=spec.search.num_samples, n_jobs=CONCURRENCY, callbacks=[log_trial])
    return t.seconds


def _measure(arms: dict[str, Callable[[Path], float]], reps: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each arm once to warm up, then ``reps`` times, interleaved (noisy machines drift), each in a fresh
    folder. Returns (runs, warm-up times) by arm.

    The warm-up is not counted: the first Tune job in a process pays one-off costs (worker processes,
    their imports; about 4 s here), and without it whichever arm runs first carries them in one of its
    runs, which moves its median up (a median of 3 with one cold run is the slower of the two warm ones).
    """
    warmup = {name: _in_fresh_folder(arm) for name, arm in arms.items()}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(reps):
        for name, arm in arms.items():
            times[name].append(_in_fresh_folder(arm))
    return times, warmup


def _in_fresh_folder(arm: Callable[[Path], Any]) -> Any:
    """One run of ``arm`` in a new temporary folder (its own run folders and MLflow store)."""
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        return arm(Path(tmp))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workloads", default="sleep,long,digits", help="comma-separated: sleep, long, digits")
    parser.add_argument("--pairs", type=int, default=24, help="tracking on/off pairs of the digits workload")
    args = parser.parse_args(argv)
    if args.pairs < 2:  # the bootstrap interval needs two pairs
        parser.error(f"--pairs: at least 2, got {args.pairs}")
    workloads = set(args.workloads.split(","))
    start_ray()
    rows: list[dict[str, Any]] = []
    if "sleep" in workloads:
        rows += _sleep_workload(args.reps)
    if "long" in workloads:
        rows += _long_workload(args.reps)
    if "digits" in workloads:
        rows += _digits_workload(args.pairs)
    table(rows, ["workload", "arm", "wall_s", "ideal_s", "of_ideal", "vs_ray_tune_mlflow", "logging_overhead",
                 "logging_overhead_95", "machine_cpu_overhead", "counted_overhead"],
          f"orchestration overhead (median of {args.reps}, {CONCURRENCY} trials at a time)")
    partial = workloads != {"sleep", "long", "digits"}
    save("overhead-" + "-".join(sorted(workloads)) if partial else "overhead", rows, reps=args.reps, pairs=args.pairs)
    return rows


def _sleep_workload(reps: int) -> list[dict[str, Any]]:
    rows = []
    sleep = _sleep_spec("sleep-0.05s", 16, 20, 0.05)
    ideal = 16 * 20 * 0.05 / CONCURRENCY
    times, warmup = _measure({
        "service": lambda tmp: service(sleep, tmp),
        "service, no tracking": lambda tmp: service_without_tracking(sleep, tmp),
        "ray tune": lambda tmp: plain_ray_tune(sleep, tmp, mlflow=False),
        "ray tune + mlflow": lambda tmp: plain_ray_tune(sleep, tmp, mlflow=True),
        "optuna + mlflow": lambda tmp: plain_optuna(sleep, tmp),
    }, reps)
    reference = median(times["ray tune + mlflow"])
    for arm, values in times.items():
        rows.append({"workload": "sleep-0.05s", "arm": arm, "wall_s": median(values), "runs": values,
                     "warmup_s": warmup[arm], "ideal_s": ideal,
                     "of_ideal": ideal / median(values), "vs_ray_tune_mlflow": median(values) / reference})
    return rows


def _long_workload(reps: int) -> list[dict[str, Any]]:
    rows = []
    long = _sleep_spec("sleep-2s", 16, 4, 0.5)
    ideal = 16 * 4 * 0.5 / CONCURRENCY
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as existing:
        # "existing store": every job of the arm in one folder, so one MLflow store, as a user's jobs
        # are; its tables are created once, by the warm-up. The "service" arm gets a new folder and
        # store per job, as a user's very first job does (MLflow creates the tables: about 0.8 s).
        times, warmup = _measure({"service": lambda tmp: service(long, tmp),
                                  "service, existing store": lambda tmp: service(long, Path(existing)),
                                  "ray tune": lambda tmp: plain_ray_tune(long, tmp, mlflow=False)}, reps)
    for arm, values in times.items():
        rows.append({"workload": "sleep-2s", "arm": arm, "wall_s": median(values), "runs": values,
                     "warmup_s": warmup[arm], "ideal_s": ideal, "of_ideal": ideal / median(values)})
    return rows


def _digits_workload(pairs: int) -> list[dict[str, Any]]:
    from tuner.run import factories
    from tuner.spec import load_spec

    demo = load_spec(ROOT / "examples" / "digits-mlp.yaml", overrides=["ensemble.top_k=0", f"mlflow.tracking_uri={STORE}"])
    made = factories(demo)

    def run(tracking: bool) -> Timer:
        return _in_fresh_folder(lambda tmp: service_tune_phase(demo, tmp, made, tracking=tracking))

    # The effect (a few tenths of a second) is smaller than the drift between 15-second runs on a
    # shared machine, so runs are paired, and the arm that goes first alternates (ABBA): a drift, or a
    # machine that is slow every other run, then falls on both arms alike. The overhead is the median
    # of the pairs' ratios, with a bootstrap 95% interval.
    warmup = {"tracking on": run(True).seconds, "tracking off": run(False).seconds}
    on: list[Timer] = []
    off: list[Timer] = []
    for pair in range(pairs):
        for tracking in (True, False) if pair % 2 == 0 else (False, True):
            (on if tracking else off).append(run(tracking))
    ratios = [a.seconds / b.seconds - 1 for a, b in zip(on, off)]
    machine = [a.machine_cpu_s / b.machine_cpu_s - 1 for a, b in zip(on, off)]
    # Counted rather than timed: the CPU the callback and the writer took, shared with the trials by
    # the machine's cores, plus the final flush, which nothing overlaps (its CPU is counted twice).
    counted = [(t.callback_cpu_s + t.writer_cpu_s) / CONCURRENCY + t.flush_s for t in on]
    rows = []
    for arm, timers in (("tracking on", on), ("tracking off", off)):
        rows.append({"workload": "digits demo (Tuner.fit)", "arm": arm, "wall_s": median([t.seconds for t in timers]),
                     "runs": [t.seconds for t in timers], "warmup_s": warmup[arm],
                     "driver_cpu_s": median([t.cpu_s for t in timers]), "driver_cpu_runs": [t.cpu_s for t in timers],
                     "machine_cpu_s": median([t.machine_cpu_s for t in timers]),
                     "machine_cpu_runs": [t.machine_cpu_s for t in timers]})
    rows[0].update(logging_overhead=median(ratios), logging_overhead_95=_median_interval(ratios),
                   pair_overheads=ratios, machine_cpu_overhead=median(machine), pair_machine_cpu_overheads=machine,
                   counted_overhead=median([c / (t.seconds - c) for c, t in zip(counted, on)]),
                   callback_cpu_s=median([t.callback_cpu_s for t in on]),
                   writer_cpu_s=median([t.writer_cpu_s for t in on]), flush_s=median([t.flush_s for t in on]),
                   counted_runs=[{"callback_cpu_s": t.callback_cpu_s, "writer_cpu_s": t.writer_cpu_s,
                                  "flush_s": t.flush_s} for t in on])
    whole = load_spec(ROOT / "examples" / "digits-mlp.yaml", overrides=[f"mlflow.tracking_uri={STORE}"])
    rows.append({"workload": "digits demo (whole run_job)", "arm": "service",
                 "wall_s": _in_fresh_folder(lambda tmp: service(whole, tmp))})
    return rows


def _median_interval(values: list[float]) -> tuple[float, float]:
    """A percentile-bootstrap 95% interval for the median of ``values``."""
    import numpy as np
    from scipy.stats import bootstrap

    interval = bootstrap((values,), np.median, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    return float(interval.low), float(interval.high)


if __name__ == "__main__":
    main()
