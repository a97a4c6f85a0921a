"""The engines' side of a job: Ray start-up, the trainable, the `ray.tune.Tuner`, SIGTERM.

Everything here is Ray's public API but one call at a local Ray's shutdown (`_stop_monitor_first`, README);
`tuner.job.Job` puts it together with the run folder and the tracking writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from tuner.errors import UserError, describe
from tuner.folders import RunFolder
from tuner.service import Service
from tuner.spec import JobSpec


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


def checked_factories(spec: JobSpec) -> tuple[Factories, list]:
    """The job's model and data factories (a job with ``model:``) and the recipe's three checks
    (`trainables.checks`) on one config of it, the one `tuner train` would train. The model or data
    failing under them is one line (`UserError`) saying where."""
    from trainables.checks import run_checks
    from tuner.run import trial_config

    try:
        made = factories(spec)
        return made, run_checks(trial_config(spec), model=made.model, data=made.data, task=spec.task)  # type: ignore[union-attr]
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the data or model the user gave failed: one line, where it failed
        raise UserError(f"the sanity checks could not run: {describe(exc)}") from None


def trainable(spec: JobSpec, made: Factories | None) -> Callable:
    """The function Tune runs per trial, with the trial's resources."""
    from ray import tune

    if made is not None:
        from trainables.train import service_trainable

        # The factories travel through Ray's object store (a built-in data set with its arrays).
        function = tune.with_parameters(service_trainable, model=made.model, data=made.data, task=spec.task)
    else:
        from trainables.factories import import_function

        function = import_function(spec.trainable, spec.code_dir, kind="trainable")  # type: ignore[arg-type]
    return tune.with_resources(function, {"cpu": spec.trial.resources.cpu, "gpu": spec.trial.resources.gpu})


def make_tuner(spec: JobSpec, folder: RunFolder, callbacks: list, made: Factories | None, *,
               searcher=None, verbose: bool = False):
    """The `ray.tune.Tuner` of a job (the job adds the tracking callback; bench/ measures without it).
    ``searcher``: the job's (`tuner.search.make_searcher`); default: one with its study in memory."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from tuner.search import make_scheduler, make_searcher
    from tuner.tracking import trial_name

    return tune.Tuner(
        trainable(spec, made),
        param_space=spec.trial_config(),
        tune_config=tune.TuneConfig(
            search_alg=searcher or make_searcher(spec),
            scheduler=make_scheduler(spec),
            num_samples=spec.search.num_samples,
            # Reproducible batches come from the searcher's ConcurrencyLimiter; a second limit would warn.
            max_concurrent_trials=None if spec.search.reproducible else spec.search.max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=folder.ray.name,
            storage_path=str(folder.path.resolve()),
            # The per-trial files `ResultGrid` reads the results from (tuner.report); Tune's automatic
            # loggers are off in a job (tuner.settings), TensorBoard's with them.
            callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=spec.trial.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=spec.objective,
                                                    checkpoint_score_order=spec.direction),
            verbose=1 if verbose else 0,
        ),
    )


def restore_tuner(spec: JobSpec, folder: RunFolder, made: Factories | None):
    """The interrupted job's `ray.tune.Tuner`, searcher state and callbacks included (Tune unpickles them)."""
    from ray import tune

    return tune.Tuner.restore(str(folder.ray.resolve()), trainable=trainable(spec, made),
                              resume_unfinished=True, resume_errored=False, restart_errored=False)


@contextlib.contextmanager
def ray_session(spec: JobSpec, folder: RunFolder, *, verbose: bool, service: Service | None = None) -> Iterator[None]:
    """Ray for the job's block: started here and shut down after, or the one already running, or the
    local service's head (`tuner up`; a spec's ``ray.address`` comes first)."""
    import ray

    if in_ray_job():
        # Ray may delete a Jobs submission's working_dir copy once no worker uses it while this driver
        # still has it as its current directory (seen: Tune's end failed in os.getcwd with
        # FileNotFoundError). The spec resolved every path it needs when it was loaded.
        os.chdir(folder.path.resolve())
    if ray.is_initialized():
        yield
        return
    env: dict[str, Any] = {}
    # A job submitted through Ray's Jobs API (tuner submit) already ships the code folder as its
    # working_dir, which Ray puts on every worker's path. Otherwise workers do not see the driver's
    # sys.path: ship the user's code folder with the job.
    if spec.user_code and not in_ray_job():
        paths = [spec.code_dir, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
    # The service's head is this machine's current cluster: "auto" finds it and turns on its token
    # auth for this driver (tuner.service).
    address = spec.ray.address or ("auto" if service is not None else "local")
    try:
        ray.init(address=address, runtime_env=env or None, include_dashboard=False,
                 logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose,
                 configure_logging=True)
    finally:  # a SIGTERM inside ray.init, after Ray's core worker started, would have armed the alarm
        _take_sigterm_back_from_abseil()
    try:
        yield
    finally:
        try:
            if address == "local":
                _stop_monitor_first()
        finally:
            ray.shutdown()


def _take_sigterm_back_from_abseil() -> None:
    """Undo the 3 s abort that Ray's driver puts on SIGTERM.

    Ray 2.60's core worker registers SIGTERM with abseil's failure-signal handler (C++), which runs
    first and arms an alarm that aborts the process 3 s later (SIGABRT, a core dump) unless it has
    exited by then (ray-project/ray#64830). A job stopped by `tuner stop` before Tune's loop ends its
    parent run and shuts Ray down, which takes longer: `tuner run` sent SIGTERM 9 s in exited -6
    (2026-12-07). Installing Ray's own Python handler again through `signal.signal` replaces
    abseil's at the C level; what a SIGTERM does in Python (Ray's SystemExit) stays the same.
    tests/test_run.py pins it."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there; Ray installs its handlers only there too
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:  # None: not installed from Python (nothing of Ray's to put back)
        signal.signal(signal.SIGTERM, handler)


def _stop_monitor_first() -> None:
    """Stop the autoscaler's monitor of the Ray this driver started, before `ray.shutdown`.

    Ray 2.60's shutdown stops the GCS before the monitor; the monitor's SIGTERM handler then writes
    to the stopped GCS and hangs until Ray kills it a second later (`Node.kill_all_processes`):
    1.2-1.6 s of shutdown, against 0.2-0.5 s with the monitor killed first (BENCHMARKS.md,
    section 8). A single-node Ray's monitor has nothing to keep. No public API reaches the processes
    `ray.init` started, so this is Ray's private `Node.kill_monitor` (README; tests/test_run.py pins it).
    """
    from ray._private import worker

    node = worker._global_node
    if node is not None and node.is_head():
        node.kill_monitor(check_alive=False)


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a Ray Jobs submission (Ray sets this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


@dataclass
class StopRequest:
    """Which signal asked a running job to stop (None: none did)."""

    signal: str | None = None

    def is_set(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGTERM (how `tuner stop`, Ray's Jobs API and Kubernetes stop a job) and the first Ctrl-C end
    the job one way: Tune stops the running trials and saves its state (its handler listens on
    SIGUSR1), and the job then closes those trials as KILLED and its parent run KILLED, instead of
    dying with them. Tune's own Ctrl-C handler is turned off meanwhile (``TUNE_DISABLE_SIGINT_HANDLER``,
    one of Tune's documented settings): it stops Tune the same way but tells no one, so a job
    Ctrl-C'd mid-search ended FINISHED, its running trials FINISHED. A second Ctrl-C raises
    KeyboardInterrupt at once, as Tune's does; so does the first when Tune's loop has not started (its
    handler is not there yet: there is nothing to stop gently), or SystemExit(15) for a SIGTERM, as
    Ray's own handler raises. A Ctrl-C the process ignores (a background job of a shell) stays
    ignored."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_signal(signum: int, frame: Any) -> None:
        if request.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        request.signal = signal.Signals(signum).name
        if signal.getsignal(signal.SIGUSR1) is on_signal:  # Tune's loop has not replaced it yet
            if signum == signal.SIGTERM:
                raise SystemExit(signum)  # as Ray's own handler does: the job ends it KILLED, exit 143
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGUSR1)

    watched = [signal.SIGTERM, signal.SIGUSR1]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        watched.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, on_signal) for signum in watched}
    tune_setting = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if tune_setting is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_setting
