"""Run and resume a job: JobSpec -> `ray.tune.Tuner.fit()` (or `Tuner.restore()`) -> JobResult.

A job writes only inside its run folder (`tuner.folders` lays it out and locks it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tuner.errors import NotFoundError, UserError, describe, redact, tracking_errors
from tuner.folders import (DEFAULT_OUTPUT_ROOT, RunFolder, new_run_folder, run_folder_lock, store_lock,
                           tracking_uri_for)
from tuner.settings import engine_settings
from tuner.spec import JobSpec, load_spec

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_folder: Path
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    statuses: dict[str, str]  # trial name -> FINISHED | KILLED | FAILED
    best_trial: str | None = None
    best_value: float | None = None
    best_config: dict[str, Any] = field(default_factory=dict)
    ensemble: dict[str, Any] | None = None
    top: list[dict[str, Any]] = field(default_factory=list)  # best trials first
    undelivered: int = 0
    stopped: bool = False  # ended by SIGTERM (tuner stop) before all trials ran

    @property
    def succeeded(self) -> bool:
        """At least one trial ran to its end or was stopped by the scheduler with results."""
        return any(status in ("FINISHED", "KILLED") for status in self.statuses.values())


# ------------------------------------------------------------------------------------------- Ray


def _init_ray(spec: JobSpec, *, verbose: bool) -> bool:
    """Start (or join) Ray; return True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env: dict[str, Any] = {}
    # A job submitted through Ray's Jobs API (tuner submit) already ships the trainable's folder as its
    # working_dir, which Ray puts on every worker's path.
    if spec.user_code and not _in_ray_job():
        # Workers do not see the driver's sys.path: ship the user's code folder with the job.
        paths = [spec.code_dir, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
    ray.init(address=spec.ray.address or "local", runtime_env=env or None, include_dashboard=False,
             logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose,
             configure_logging=True)
    return True


def _in_ray_job() -> bool:
    """Whether this process is the entrypoint of a Ray Jobs submission (Ray sets this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def _leave_ray_working_dir(folder: RunFolder) -> None:
    """As a Jobs entrypoint, work from the run folder rather than Ray's copy of the working_dir.

    Ray may delete a job's working_dir copy once no worker uses it while this driver still has it
    as its current directory (seen: Tune's end failed in os.getcwd with FileNotFoundError). The spec
    resolved every path it needs to an absolute one when it was loaded.
    """
    if _in_ray_job():
        os.chdir(folder.path.resolve())


@dataclass(frozen=True)
class Factories:
    """What the service's loop trains: the model factory and the data factory (a built-in data set
    arrives loaded, from the driver; a user's ``load`` runs in each trial)."""

    model: Callable
    data: Callable


def factories(spec: JobSpec) -> Factories | None:
    """The job's model and data factories; None for a job with its own trainable."""
    if not spec.service_loop:
        return None
    from trainables.factories import data_factory, model_factory

    return Factories(model=model_factory(spec.model, spec.code_dir),  # type: ignore[arg-type]
                     data=data_factory(spec.data.model_dump(), spec.code_dir, task=spec.task))  # type: ignore[union-attr]


def _trainable(spec: JobSpec, made: Factories | None) -> Callable:
    from ray import tune

    if made is not None:
        from trainables.train import service_trainable

        # The factories travel through Ray's object store (a built-in data set with its arrays).
        function = tune.with_parameters(service_trainable, model=made.model, data=made.data, task=spec.task)
    else:
        from trainables.factories import import_function

        function = import_function(spec.trainable, spec.code_dir, kind="trainable")  # type: ignore[arg-type]
    resources = {"cpu": spec.trial.resources.cpu, "gpu": spec.trial.resources.gpu}
    return tune.with_resources(function, resources)


def synchronous_snapshots() -> None:
    """Make Tune wait for each experiment snapshot to reach the run folder before its step goes on.

    Ray 2.60 writes the snapshot to a staging folder, then copies it to the run folder in a
    background thread, and skips a copy while one is in flight. Two things went wrong with that:
    the next snapshot was written while the copy read the staging folder ("Saving experiment state
    to storage ... failed", an ERROR with a traceback, seen in bench/overhead.py), and a driver
    killed just after a trial's end could leave a snapshot without it, so `tuner resume` lost or
    re-ran that trial. With `wait=True` (Ray's own parameter, used for its final snapshot) each
    step's snapshot is on disk before the tracking callback journals the step's trial ends.
    """
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as Manager

    from tuner.tracking import snapshot_taken

    original = Manager.sync_up_experiment_state
    if getattr(original, "tuner_waits", False):
        return

    def sync_up_and_wait(self, save_fn, force: bool = False, wait: bool = False) -> None:
        before = self._last_save_time
        original(self, save_fn, force=force, wait=True)
        if self._last_save_time != before:  # a snapshot was written (not throttled): trial ends may be journaled
            snapshot_taken()

    sync_up_and_wait.tuner_waits = True  # type: ignore[attr-defined]
    Manager.sync_up_experiment_state = sync_up_and_wait


def make_tuner(spec: JobSpec, folder: RunFolder, callbacks: list, made: Factories | None, *,
               verbose: bool = False):
    """The `ray.tune.Tuner` of a job (`run_job` adds the tracking callback; bench/ measures without it)."""
    from ray import tune

    synchronous_snapshots()

    from tuner.search import make_scheduler, make_searcher
    from tuner.tracking import trial_name

    return tune.Tuner(
        _trainable(spec, made),
        param_space=spec.trial_config(),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(spec),
            scheduler=make_scheduler(spec),
            num_samples=spec.search.num_samples,
            max_concurrent_trials=spec.search.max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=folder.ray.name,
            storage_path=str(folder.path.resolve()),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.trial.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=spec.metric,
                                                    checkpoint_score_order=spec.mode),
            verbose=1 if verbose else 0,
        ),
    )


# ------------------------------------------------------------------------------------------ jobs


def run_job(spec: JobSpec, *, output_root: Path = DEFAULT_OUTPUT_ROOT, checks: list | None = None,
            callbacks: list | None = None, verbose: bool = False) -> JobResult:
    """Run a validated job to its end.

    ``checks``: sanity-check results to log on the parent run; ``callbacks``: more Ray Tune callbacks
    (the CLI's progress view).
    """
    with engine_settings():
        return _run_job(spec, output_root=output_root, checks=checks, callbacks=callbacks, verbose=verbose)


def _run_job(spec: JobSpec, *, output_root: Path, checks: list | None, callbacks: list | None,
             verbose: bool) -> JobResult:
    from tuner.search import asha_max_t
    from tuner.tracking import Tracker, TrackingCallback, start_parent_run

    uri = tracking_uri_for(spec, output_root)
    spec_yaml = spec.to_yaml()
    check_tags = {f"check.{c.name}": f"{'pass' if c.passed else 'FAIL'} ({c.value:.4g})" for c in checks or []}
    try:
        folder = new_run_folder(spec, output_root)
        folder.spec.write_text(spec_yaml)
    except OSError as exc:
        raise UserError(f"{output_root}: cannot write the job's run folder ({describe(exc)})") from None
    with run_folder_lock(folder.path, f"tuner run {spec.name}"):
        try:
            with store_lock(uri), tracking_errors(uri, "start the job's parent run"):
                experiment_id, parent_run_id = start_parent_run(
                    tracking_uri=uri, experiment=spec.experiment, job_name=spec.name, spec_yaml=spec_yaml,
                    params=_spec_params(spec), tags={"algorithm": spec.search.algorithm,
                                                     "seed": str(spec.search.seed), **check_tags})
        except BaseException:
            shutil.rmtree(folder.path, ignore_errors=True)  # nothing started: leave nothing behind
            raise
        job = _Started(folder, spec, uri, experiment_id, parent_run_id)
        with _parent_fails_with_the_job(job):
            folder.write_state(name=spec.name, tracking_uri=uri, experiment_id=experiment_id,
                               parent_run_id=parent_run_id, status="running")
            # The writer gets the store's URI as given; the callback, which Tune pickles into the run
            # folder, only its redacted form (it finds this writer by its folder).
            job.tracker = Tracker.for_run(folder.tracking, tracking_uri=uri, experiment_id=experiment_id,
                                          parent_run_id=parent_run_id)
            callback = TrackingCallback(folder=folder.tracking, tracking_uri=redact(uri),
                                        experiment_id=experiment_id, parent_run_id=parent_run_id,
                                        metric=spec.metric, mode=spec.mode, max_t=asha_max_t(spec))
            made = factories(spec)
            _leave_ray_working_dir(folder)
            started = _init_ray(spec, verbose=verbose)
            try:
                with _stop_on_sigterm() as stopped:
                    results = make_tuner(spec, folder, [callback, *(callbacks or [])], made, verbose=verbose).fit()
            finally:
                if started:
                    import ray

                    ray.shutdown()
            return _finish(spec, folder, results, job.tracker, made, stopped=stopped.is_set())


def resume_job(folder: RunFolder, *, verbose: bool = False) -> JobResult:
    """Finish an interrupted job with `Tuner.restore` (searcher state included), same parent run."""
    with engine_settings():
        return _resume_job(folder, verbose=verbose)


def _resume_job(folder: RunFolder, *, verbose: bool) -> JobResult:
    from ray import tune

    from tuner.tracking import Tracker

    with run_folder_lock(folder.path, f"tuner resume {folder.path.parent.name}"):
        if not (folder.ray / "tuner.pkl").exists():
            raise NotFoundError(f"{folder.path}: no Ray experiment to resume (the job stopped before Ray started)")
        spec = load_spec(folder.spec)
        state = folder.read_state()
        uri = folder.tracking_uri(state)
        job = _Started(folder, spec, uri, state["experiment_id"], state["parent_run_id"])
        with _parent_fails_with_the_job(job):
            job.tracker = tracker = Tracker.for_run(folder.tracking, tracking_uri=uri,
                                                    experiment_id=job.experiment_id, parent_run_id=job.parent_run_id)
            made = factories(spec)
            _leave_ray_working_dir(folder)
            started = _init_ray(spec, verbose=verbose)
            try:
                # The TrackingCallback comes back with the experiment (Tune pickled it) and reopens the
                # journal: the same Tracker as above (one per run folder in a process).
                synchronous_snapshots()
                tuner = tune.Tuner.restore(str(folder.ray.resolve()), trainable=_trainable(spec, made),
                                           resume_unfinished=True, resume_errored=False, restart_errored=False)
                with _stop_on_sigterm() as stopped:
                    results = tuner.fit()
            finally:
                if started:
                    import ray

                    ray.shutdown()
            return _finish(spec, folder, results, tracker, made, stopped=stopped.is_set())


class JobFailed(UserError):
    """The job failed after its parent run started; the parent run is FAILED with the reason."""

    exit_code = 1


@dataclass
class _Started:
    """A job whose parent run exists: what ending it needs."""

    folder: RunFolder
    spec: JobSpec
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tracker: Any = None  # its Tracker, once made


@contextlib.contextmanager
def _parent_fails_with_the_job(job: _Started) -> Iterator[None]:
    """Whatever stops the job after its parent run exists (a data file that does not parse, an engine
    error, a full disk) ends the parent run FAILED with the reason, never RUNNING: the traceback goes
    to ``error.txt`` in the run folder and on the parent run, the command prints one line. Ctrl-C
    that gets past Tune ends it KILLED."""
    import traceback

    from tuner.tracking import JournalWriteError

    try:
        yield
    except JobFailed:
        raise
    except KeyboardInterrupt:
        _end_parent(job, "KILLED", {})
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded in full, then raised again as one line
        reason = describe(exc)
        trace = job.folder.path / "error.txt"
        try:
            trace.write_text(traceback.format_exc())
            reason += _end_parent(job, "FAILED", {"tuner.status": "FAILED", "error": reason}, trace=trace)
        except (OSError, JournalWriteError) as disk:
            reason += f"; the run folder could not record it ({describe(disk)})"
        raise JobFailed(f"{job.spec.name}: the job failed: {reason} (parent run FAILED; traceback in {trace})"
                        ) from exc


def _end_parent(job: _Started, status: str, tags: dict[str, str], *, trace: Path | None = None) -> str:
    """End the parent run through the journal, or straight through MLflow when there is no journal or
    it cannot be written; '' or what went wrong, for the one-line message."""
    from tuner.tracking import JournalWriteError

    if job.tracker is not None:
        try:
            if trace is not None:
                job.tracker.emit("artifact", path=str(trace), artifact_path=None)
            job.tracker.emit("parent", tags=tags)
            job.tracker.emit("parent_end", status=status)
            left = job.tracker.close(timeout_s=job.spec.mlflow.flush_timeout_s)
            job.folder.write_state(status=status.lower(), error=tags.get("error"), undelivered=left)
            return ""
        except (OSError, JournalWriteError) as exc:
            job.tracker.close(timeout_s=0)
            note = f"; the journal could not record it ({describe(exc)})"
    else:
        note = ""
    from mlflow.tracking import MlflowClient

    try:
        with tracking_errors(job.tracking_uri, "end the parent run"):
            client = MlflowClient(job.tracking_uri)
            if tags:
                client.set_tag(job.parent_run_id, "error", tags.get("error", "")[:5000])
            client.set_terminated(job.parent_run_id, status=status)
    except UserError as exc:
        note += f"; nor could MLflow be told ({exc}): the parent run may still show RUNNING"
    return note


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """SIGTERM (how `tuner stop`, Ray's Jobs API and Kubernetes stop a job) ends the job the way
    Ctrl-C does: Tune stops the running trials and saves its state (its handler listens on SIGUSR1
    too), and the job then closes those trials as KILLED instead of dying with them."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        stopped.set()
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGTERM, previous)


def _spec_params(spec: JobSpec) -> dict[str, Any]:
    params = {"model": spec.model, "trainable": spec.trainable, "task": spec.task, "metric": spec.metric, "mode": spec.mode,
              "algorithm": spec.search.algorithm, "num_samples": spec.search.num_samples,
              "max_concurrent": spec.search.max_concurrent, "seed": spec.search.seed,
              "scheduler": spec.scheduler.name, "epochs": spec.trial.epochs,
              "space": ",".join(spec.space), "ensemble_top_k": spec.ensemble.top_k}
    params.update({f"fixed.{k}": v for k, v in spec.fixed.items()})
    if spec.data is not None:
        params["data"] = spec.data.name or spec.data.factory or spec.data.path
    return params


def _trial_statuses(tracker, results, *, stopped: bool = False) -> dict[str, str]:
    """Each trial's final status, from the journal (the record that survives driver crashes).

    A trial the journal saw start but not end (the driver died after Tune saved the trial's end,
    before the journal got it) is closed from Ray's own results; one that Ray does not know at all
    (the driver died before Tune saved it) is closed as KILLED with the reason. Every trial that
    ever ran is accounted for.
    """
    ray_errors = {r.metrics["trial_id"]: r.error for r in results if r.metrics and "trial_id" in r.metrics}
    names, statuses = {}, {}
    for event in tracker.journal.events:
        if event["op"] == "trial_start":
            names[event["trial"]] = event["name"]
            statuses[event["trial"]] = "RUNNING"
        elif event["op"] == "trial_end":
            statuses[event["trial"]] = event["status"]
    for trial, status in list(statuses.items()):
        if status != "RUNNING":
            continue
        if stopped and ray_errors.get(trial) is None:
            status, tags = "KILLED", {"tuner.end": "stopped: the job was stopped (SIGTERM, e.g. tuner stop)"}
        elif trial not in ray_errors:
            status, tags = "KILLED", {"tuner.end": "lost: the driver stopped before Ray saved this trial"}
        elif ray_errors[trial] is not None:
            status, tags = "FAILED", {"tuner.end": "failed", "error": str(ray_errors[trial]).splitlines()[0][:500]}
        else:
            status, tags = "FINISHED", {"tuner.end": "finished (recorded from Ray's results after a restart)"}
        tracker.emit("trial_end", trial=trial, status=status, tags=tags)
        statuses[trial] = status
    return {names[trial]: status for trial, status in statuses.items()}


def _finish(spec: JobSpec, folder: RunFolder, results, tracker, made: Factories | None, *,
            stopped: bool = False) -> JobResult:
    """After Tune: rank trials, ensemble, report, close the parent run, flush tracking."""
    from tuner.report import rank_trials, write_report

    ranked = rank_trials(results, metric=spec.metric, mode=spec.mode)
    statuses = _trial_statuses(tracker, results, stopped=stopped)
    result = JobResult(run_folder=folder.path, tracking_uri=tracker.tracking_uri,
                       experiment_id=tracker.delivery.experiment_id, parent_run_id=tracker.delivery.parent_run_id,
                       statuses=statuses, top=ranked[:5], stopped=stopped)
    if ranked:
        best = ranked[0]
        result.best_trial, result.best_value, result.best_config = best["trial"], best["value"], best["config"]
    if ranked and spec.ensemble.top_k > 0 and not stopped:
        from tuner.ensemble import build_ensemble

        result.ensemble = build_ensemble(spec, ranked, folder=folder, tracker=tracker,
                                         model=made and made.model, data=made and made.data)
    for path in write_report(spec, results, ranked, statuses, folder.report):
        tracker.emit("artifact", path=str(path), artifact_path="report")
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("FINISHED", "KILLED", "FAILED")}
    final = "KILLED" if stopped else "FINISHED" if result.succeeded else "FAILED"
    tags = {"tuner.status": final}
    if result.best_trial:
        tags.update(best_trial=result.best_trial, best_config=json.dumps(result.best_config, default=str))
    tracker.emit("parent", metrics={f"trials_{k.lower()}": v for k, v in counts.items()}, tags=tags)
    tracker.emit("parent_end", status=final)
    result.undelivered = tracker.close(timeout_s=spec.mlflow.flush_timeout_s)
    folder.write_state(status=final.lower(), best_trial=result.best_trial,
                       undelivered=result.undelivered)
    return result


def trial_config(spec: JobSpec) -> dict[str, Any]:
    """One config of the spec, no search: its constants plus one value per searched knob (the knob's
    default where the space holds it, else a middle value). An exported spec pins each searched knob
    to the best trial's value, so this is exactly that trial's config."""
    from search_spaces import midpoint
    from trainables.knobs import DEFAULTS

    return {**spec.trial_config(), **{k: midpoint(d, DEFAULTS.get(k)) for k, d in spec.space.items()}}


def train_once(spec: JobSpec, *, report) -> None:
    """Train the spec's config once, in this process, no Ray (``tuner train``).

    Torch uses as many threads as a trial had CPUs, so results match the trial's on the same machine.
    """
    import torch

    from trainables.train import fit

    if not spec.service_loop:
        raise UserError(f"{spec.name}: tuner train runs the service's training loop; a job with its own "
                        f"trainable runs with tuner run (num_samples: 1)")
    made = factories(spec)
    torch.set_num_threads(max(1, int(spec.trial.resources.cpu)))
    fit(trial_config(spec), model=made.model, data=made.data, task=spec.task, report=report)  # type: ignore[union-attr]
