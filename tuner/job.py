"""A tuning job as one object: its spec, run folder, tracking writer and Ray session.

    job = Job.new(spec, output_root)          # or Job.existing(run_folder) to resume
    with run_folder_lock(job.folder.path, "tuner run NAME"):   # the caller holds the folder's lock
        result = job.fit(check=True, callbacks=...)            # or job.resume()

`fit` starts Ray, the parent run (in a thread) and the journal's writer, runs Tune (its trials start
before the parent run exists; the journal is delivered once it does) and `finish`es: ranks the
trials, builds the ensemble, writes the report and ends the parent run. Whatever stops a job after
its parent run exists ends that run FAILED (or KILLED) with the reason, never RUNNING. A job writes
only inside its run folder (`tuner.folders`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ray.tune import Callback

from tuner.engine import (Factories, checked_factories, factories, in_ray_job, make_tuner, ray_session,
                          restore_tuner, stop_on_signals)
from tuner.errors import (NotFoundError, TrackingRefused, TrackingUnavailable, UserError, describe, redact,
                          tracking_errors)
from tuner.folders import RunFolder, new_run_folder, store_lock, tracking_uri_for
from tuner.report import import_in_background
from tuner.search import make_searcher
from tuner.service import Service, running
from tuner.spec import JobSpec, load_spec
from tuner.study import close_unfinished, earlier_trials, pareto_front, seed_study, study_ref
from tuner.tracking import (JournalWriteError, RankedTrial, Tracker, TrackingCallback, job_cost, open_writer,
                            share_trials_view, start_parent_run, trial_statuses, what_stopped)

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
    top: list[RankedTrial] = field(default_factory=list)  # best trials first
    pareto_front: list[str] = field(default_factory=list)  # a multi-objective job's front, best first metric first
    view: str = ""  # the MLflow UI's URL fragment of the trials table
    cost: dict[str, float] = field(default_factory=dict)  # trial_hours, cpu_hours, gpu_hours of the ended trials
    budget_spent: str | None = None  # what of search.budget stopped new trials, if it did
    undelivered: int = 0
    stop_signal: str | None = None  # SIGTERM (tuner stop), SIGINT (Ctrl-C) or SIGUSR1 (Tune's), when one ended it early
    ray_service: str | None = None  # the address of the `tuner up` Ray head the job attached to
    service_ui: str | None = None  # that service's MLflow UI

    @property
    def stopped(self) -> bool:
        return self.stop_signal is not None

    @property
    def succeeded(self) -> bool:
        """At least one trial ran to its end or was stopped by the scheduler with results."""
        return any(status in ("FINISHED", "KILLED") for status in self.statuses.values())


class JobFailed(UserError):
    """The job failed after its parent run started; the parent run is FAILED with the reason."""

    exit_code = 1


class ChecksFailed(Exception):
    """A sanity check failed (`Job.fit` with ``check``): no trial ran, the run folder was removed and
    no parent run made. ``results``: every check's result, for the table the CLI prints."""

    def __init__(self, results: list) -> None:
        super().__init__("a sanity check failed: " + ", ".join(r.name for r in results if not r.passed))
        self.results = results


class Job:
    """One job, start to end: the composition root of the service (no module holds a job's state)."""

    def __init__(self, spec: JobSpec, folder: RunFolder, tracking_uri: str, *, experiment_id: str | None = None,
                 parent_run_id: str | None = None) -> None:
        self.spec, self.folder, self.tracking_uri = spec, folder, tracking_uri
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.tracker: Tracker | None = None  # the journal's writer, open while the job runs
        self.study = study_ref(spec, folder)  # (storage URL, name) of the Optuna study
        self.warm_start: list = []  # an earlier job's trials, for the study before the search starts
        self.view = ""  # the MLflow UI's URL fragment of the job's trials table
        self.searcher = None  # the searcher this process made (a resumed job's is Tune's restored one)
        self.service: Service | None = None  # the local service's Ray head (`tuner up`), if the job attaches
        self.outcome: str | None = None  # the parent run's end, once the journal has it (FINISHED, KILLED, FAILED)
        self.checks: list = []  # the sanity checks' results, when the job ran them (`fit`'s ``check``)

    @classmethod
    def new(cls, spec: JobSpec, output_root: Path) -> Job:
        """A new job in a new run folder under ``output_root``."""
        uri = tracking_uri_for(spec, output_root)
        service = _service(spec, output_root)
        try:
            folder = new_run_folder(spec, output_root)
            folder.spec.write_text(spec.to_yaml())
        except OSError as exc:
            raise UserError(f"{output_root}: cannot write the job's run folder ({describe(exc)})") from None
        job = cls(spec, folder, uri)
        job.service = service
        return job

    @classmethod
    def existing(cls, folder: RunFolder) -> Job:
        """An interrupted job, from its run folder, to resume under the same parent run."""
        if not (folder.ray / "tuner.pkl").exists():
            raise NotFoundError(f"{folder.path}: no Ray experiment to resume (the job stopped before Ray started)")
        state = folder.read_state()  # no job.json: killed after Tune's start, before the parent run was made
        spec = load_spec(folder.spec)
        job = cls(spec, folder, folder.tracking_uri(state), experiment_id=state["experiment_id"],
                  parent_run_id=state["parent_run_id"])
        job.service = _service(spec, folder.path.parent.parent)  # <output_root>/<name>/<stamp>
        return job

    # ---------------------------------------------------------------------------------- running

    def fit(self, *, check: bool = False, callbacks: list | None = None, verbose: bool = False) -> JobResult:
        """Run the job to its end. ``check``: the recipe's sanity checks on the model and data first, beside
        Ray's start; one that fails raises `ChecksFailed` before any trial and leaves nothing (no run
        folder, no parent run). ``callbacks``: more Ray Tune callbacks (the CLI's progress view)."""
        # MLflow's store and the parent run are made while Ray starts (both take seconds cold), and so
        # are the model and data factories (torch's import, the data set read: 2.3 s for MNIST-10k) and
        # the checks on them. The parent run records the checks' results, so it waits for them.
        with (contextlib.ExitStack() as ray, ThreadPoolExecutor(2, thread_name_prefix="tuner-start") as pool,
              contextlib.nullcontext(pool.submit(self._make, check)) as making,
              _ParentRun(pool, functools.partial(self._start_parent_run, making if check else None),
                         now=not _ray_is_up(self.spec, self.service)) as parent):
            ray_failed = _enter(ray, ray_session(self.spec, self.folder, verbose=verbose, service=self.service))
            # Tune starts before the parent run exists. The journal has the trials from the start; it is
            # delivered once the run exists (`_OnceTrialsStart`). Not when Ray failed, nor for a warm
            # start, whose earlier trials (read with the parent run) seed the study first.
            early = ray_failed is None and self.spec.search.warm_start is None
            stopped_early = None if early else self._wait_for_parent(parent, ray_failed)
            with self._parent_fails_with_the_job(parent):
                if early:  # the journal only, until the parent run exists
                    self.tracker = open_writer(self.folder.tracking, tracking_uri=self.tracking_uri)
                else:
                    self._parent_made(parent)
                if stopped_early is not None:
                    raise stopped_early
                if ray_failed is not None:
                    raise ray_failed
                if self.warm_start:
                    seed_study(self.spec, *self.study, self.warm_start)
                made = making.result()
                callback = TrackingCallback(folder=self.folder.tracking, metric=self.spec.objective,
                                            mode=self.spec.direction, max_t=_max_t(self.spec),
                                            resources=self.spec.trial.resources.model_dump())
                started = _OnceTrialsStart(self, parent if early else None)
                with stop_on_signals() as stopped:
                    self.searcher = make_searcher(self.spec, storage=self.study[0], study_name=self.study[1])
                    results = make_tuner(self.spec, self.folder, [callback, started, *(callbacks or [])], made,
                                         searcher=self.searcher, verbose=verbose).fit()
                self._parent_made(parent)  # a job shorter than the store's start waits for it here
                # Ray's shutdown takes 0.2-0.6 s when this job started Ray (its processes get SIGTERM
                # and time to exit; BENCHMARKS.md, section 8); nothing after Tune needs Ray, so it runs
                # beside the report and the ensemble, and the job waits for both.
                shutdown = pool.submit(ray.close)
                try:
                    result = self.finish(results, made, stop_signal=stopped.signal or _stopped_in_tune(results))
                except BaseException:
                    if shutdown.exception() is not None:  # the job's own error goes on; Ray's is told
                        log.warning("Ray's shutdown failed as well: %s", describe(shutdown.exception()))
                    raise
            # The job's outcome is written (parent run, job.json, journal closed): Ray failing to shut
            # down now is told, and does not turn a finished job into a failed one.
            if shutdown.exception() is not None:
                log.warning("Ray did not shut down cleanly: %s", describe(shutdown.exception()))
            return result

    def _wait_for_parent(self, parent: _ParentRun, ray_failed: BaseException | None) -> BaseException | None:
        """Wait for the parent run before anything else; a stop that came meanwhile, to be raised once
        the run exists (it then ends KILLED). A store that refused the job: its one-line error, Ray's
        failure told with it, and the run folder removed (nothing started)."""
        try:
            parent.result()
        except (KeyboardInterrupt, SystemExit) as stop:
            # Ctrl-C or SIGTERM while the parent run was being made: its thread goes on and makes it,
            # so wait for that and end the run KILLED, as any stop before Tune's loop.
            if parent.exception() is not None:
                self._leave_nothing()
                raise
            return stop
        except BaseException as refused:
            self._leave_nothing()
            if ray_failed is None or not isinstance(refused, (TrackingUnavailable, TrackingRefused)):
                raise
            raise type(refused)(f"{refused}; Ray did not start either: {describe(ray_failed)}") from ray_failed
        return None

    def _parent_made(self, parent: _ParentRun) -> None:
        """Once the parent run exists: the journal's writer delivers to it and job.json names it. Waits
        for it; raises what kept it from being made."""
        if self.tracker is not None and self.tracker.delivery is not None:
            return
        parent.result()
        if self.tracker is None:
            self._open_tracking()
        else:
            self.tracker.deliver_to(self.experiment_id or "", self.parent_run_id or "")
        self.folder.write_state(name=self.spec.name, tracking_uri=self.tracking_uri,
                                experiment_id=self.experiment_id, parent_run_id=self.parent_run_id,
                                study_storage=redact(self.study[0]), study_name=self.study[1], status="running")

    def _leave_nothing(self) -> None:
        """The store refused the job or its parent run could not be made: close the journal (nothing
        of it delivered) and remove the run folder, as if the job had not started."""
        if self.tracker is not None:
            self.tracker.close(timeout_s=0)
            self.tracker = None
        shutil.rmtree(self.folder.path, ignore_errors=True)

    def resume(self, *, verbose: bool = False) -> JobResult:
        """Finish an interrupted job with `Tuner.restore` (searcher state included), same parent run.
        The tracking callback comes back with the experiment (Tune unpickles it) and finds the writer."""
        with self._parent_fails_with_the_job():
            self._open_tracking()
            made = factories(self.spec)
            import_in_background()
            with ray_session(self.spec, self.folder, verbose=verbose, service=self.service), \
                    stop_on_signals() as stopped:
                results = restore_tuner(self.spec, self.folder, made).fit()
            return self.finish(results, made, stop_signal=stopped.signal or _stopped_in_tune(results))

    def finish(self, results, made: Factories | None, *, stop_signal: str | None = None) -> JobResult:
        """After Tune: rank trials, ensemble, report, close the parent run, flush tracking. ``stop_signal``:
        what stopped Tune before its end (SIGTERM or SIGINT), if anything did."""
        from tuner.report import rank_trials, write_report

        stopped = stop_signal is not None
        spec, tracker = self.spec, self.tracker
        if tracker is None or self.parent_run_id is None:
            raise RuntimeError("Job.finish comes after fit or resume, which open the parent run and its writer")
        ranked = rank_trials(results, metric=spec.objective, mode=spec.direction)
        statuses = trial_statuses(tracker, results, resources=spec.trial.resources.model_dump(),
                                  stopped=stop_signal)
        if not stopped:
            close_unfinished(*self.study)  # trials Tune forgot after a crash: FAIL, not RUNNING for ever
        result = JobResult(run_folder=self.folder.path, tracking_uri=self.tracking_uri,
                           experiment_id=self.experiment_id or "", parent_run_id=self.parent_run_id,
                           statuses=statuses, top=ranked[:5], stop_signal=stop_signal, view=self.view,
                           ray_service=self.service and self.service.ray_address,
                           service_ui=self.service and self.service.ui_url)
        if ranked:
            best = ranked[0]
            result.best_trial, result.best_value, result.best_config = best.trial, best.value, best.config
        if ranked and spec.ensemble.top_k > 0 and not stopped:
            from tuner.ensemble import build_ensemble

            result.ensemble = build_ensemble(spec, ranked, folder=self.folder, tracker=tracker,
                                             model=made and made.model, data=made and made.data)
        written = write_report(spec, results, ranked, statuses, self.folder.report)
        if spec.multi_objective:
            result.pareto_front, front_files = pareto_front(spec, results, self.folder.report)
            written += front_files
            tracker.emit("parent", tags={"pareto_front": ",".join(result.pareto_front)[:5000]})
            # Export's default: the front's member best on the first metric (by the values the sampler got).
            best = next((r for r in ranked if result.pareto_front and r.trial == result.pareto_front[0]), None)
            if best is not None:
                result.best_trial, result.best_value, result.best_config = best.trial, best.value, best.config
        for path in written:
            tracker.emit("artifact", path=str(path), artifact_path="report")
        counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("FINISHED", "KILLED", "FAILED")}
        final = "KILLED" if stopped else "FINISHED" if result.succeeded else "FAILED"
        tags = {"tuner.status": final}
        result.cost = job_cost(tracker.journal.events)
        result.budget_spent = _budget_spent(spec, result, stopped, self.searcher)
        if result.budget_spent:
            tags["tuner.budget"] = result.budget_spent
        if result.best_trial:
            tags.update(best_trial=result.best_trial, best_config=json.dumps(result.best_config, default=str))
        tracker.emit("parent", metrics={**{f"trials_{k.lower()}": v for k, v in counts.items()}, **result.cost},
                     tags=tags)
        tracker.emit("parent_end", status=final)
        self.outcome = final  # a stop from here on leaves the parent run's end as it is
        result.undelivered = tracker.close(timeout_s=spec.mlflow.flush_timeout_s)
        self.folder.write_state(status=final.lower(), best_trial=result.best_trial, undelivered=result.undelivered)
        return result

    # ------------------------------------------------------------------------------ the parent run

    def _make(self, check: bool) -> Factories | None:
        """The model and data factories (None for a job with its own trainable), and with ``check`` the
        sanity checks on them, whose results go on the parent run: `ChecksFailed` when one fails."""
        if not (check and self.spec.service_loop):
            return factories(self.spec)
        made, self.checks = checked_factories(self.spec)
        if not all(c.passed for c in self.checks):
            raise ChecksFailed(self.checks)
        return made

    def _start_parent_run(self, checking: Future | None) -> None:
        """Make the job's parent run (in a thread, beside Ray's start), once the sanity checks, if
        ``checking``, have passed. A failure (theirs too) is raised in the job's thread, which removes the
        run folder (`_leave_nothing`): Tune may be writing in it by then."""
        if checking is not None:
            checking.result()
        spec = self.spec
        check_tags = {f"check.{c.name}": f"{'pass' if c.passed else 'FAIL'} ({c.value:.4g})" for c in self.checks}
        if spec.search.warm_start is not None:  # an unknown job is refused before anything starts
            with tracking_errors(self.tracking_uri, "read the warm start's trials"):
                self.warm_start = earlier_trials(spec, self.tracking_uri)
        with store_lock(self.tracking_uri), tracking_errors(self.tracking_uri, "start the job's parent run"):
            self.experiment_id, self.parent_run_id = start_parent_run(
                tracking_uri=self.tracking_uri, experiment=spec.experiment, job_name=spec.name,
                spec_yaml=self.folder.spec.read_text(), params=_spec_params(spec),
                tags={"algorithm": spec.search.algorithm, "seed": str(spec.search.seed),
                      "tuner.study": self.study[1], **check_tags})
        try:  # a convenience: a store that refuses the tag still runs the job, with a warning
            self.view = share_trials_view(self.tracking_uri, self.experiment_id, self.parent_run_id,
                                          metrics=spec.metrics, modes=spec.modes, params=list(spec.space))
        except Exception as exc:  # noqa: BLE001 - told as a warning; the summary links the parent run instead
            log.warning("the MLflow UI's trials view was not saved (%s)", describe(exc))

    def _open_tracking(self) -> None:
        """The journal's writer gets the store's URI as given; job.json and Tune's pickle only its
        redacted form (`RunFolder.tracking_uri` restores the password from the environment)."""
        if self.experiment_id is None or self.parent_run_id is None:
            raise RuntimeError("the job's parent run must exist before its tracking writer opens")
        self.tracker = open_writer(self.folder.tracking, tracking_uri=self.tracking_uri,
                                   experiment_id=self.experiment_id, parent_run_id=self.parent_run_id)

    @contextlib.contextmanager
    def _parent_fails_with_the_job(self, parent: _ParentRun | None = None) -> Iterator[None]:
        """Whatever stops the job after its parent run exists (a data file that does not parse, an
        engine error, a full disk) ends the parent run FAILED with the reason: the traceback goes to
        ``error.txt`` in the run folder and on the parent run, the command prints one line. Ctrl-C that
        gets past Tune ends it KILLED, and so does a SIGTERM before or after Tune's loop (Ray's handler
        in the driver turns it into SystemExit). ``parent``: the run being made, when the block may
        start before it exists; a failure to make it is the job's error (`_settle_parent`)."""
        try:
            try:
                yield
            except BaseException:
                if parent is not None:
                    self._settle_parent(parent)
                raise
        except JobFailed:
            raise
        except (KeyboardInterrupt, SystemExit) as stop:
            if self.outcome is None:
                self._end_parent("KILLED", {})
                log.warning("%s", self._stopped_outside_tune(stop))
            else:  # while the job's end was being delivered: it stays what the journal says
                try:
                    self.folder.write_state(status=self.outcome.lower())
                    unsaved = ""
                except OSError as exc:
                    unsaved = f"; job.json was not updated ({describe(exc)})"
                log.warning("%s: stopped (%s) while MLflow was being sent the job's end (parent run %s); what "
                            "it did not get is in the journal: tuner sync %s%s", self.spec.name, _what(stop),
                            self.outcome, self.folder.path, unsaved)
            if isinstance(stop, SystemExit) and stop.code == signal.SIGTERM:
                # Exit 143, as a shell reports a SIGTERM and as a stop in Tune's loop exits.
                raise SystemExit(128 + signal.SIGTERM) from stop
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded in full, then raised again as one line
            if parent is not None and parent.done() and exc is parent.future.exception():
                raise  # the parent run was not made: the store's refusal, nothing left behind
            reason = describe(exc)
            if self.outcome is not None:  # after the journal has the job's end: that end stands
                raise JobFailed(f"{self.spec.name}: the job ended (parent run {self.outcome}), then failed to "
                                f"close its records: {reason}; what MLflow did not get is in the journal: "
                                f"tuner sync {self.folder.path}") from exc
            trace = self.folder.path / "error.txt"
            try:
                trace.write_text(traceback.format_exc())
                reason += self._end_parent("FAILED", {"tuner.status": "FAILED", "error": reason}, trace=trace)
            except (OSError, JournalWriteError) as disk:
                reason += f"; the run folder could not record it ({describe(disk)})"
            raise JobFailed(f"{self.spec.name}: the job failed: {reason} (parent run FAILED; traceback in "
                            f"{trace})") from exc

    def _settle_parent(self, parent: _ParentRun) -> None:
        """Before a failure or a stop that came while the parent run was being made is recorded: wait
        for the run, and once it exists the journal is delivered to it (the run's end goes there). Not
        made (the store refused the job): that refusal is raised instead, the run folder removed."""
        if self.tracker is not None and self.tracker.delivery is not None:
            return
        if parent.exception() is not None:  # waits for it
            self._leave_nothing()
            raise parent.exception()  # type: ignore[misc]  # the error in hand is its context
        try:
            self._parent_made(parent)
        except OSError as exc:  # job.json: the error in hand is recorded below, or says the folder failed
            log.warning("%s: job.json does not name the parent run (%s)", self.folder.path, describe(exc))

    def _stopped_outside_tune(self, stop: BaseException) -> str:
        """The one line for a job stopped before or after Tune's loop, and what to run next."""
        again = (f"resume: tuner resume {self.folder.path}" if (self.folder.ray / "tuner.pkl").exists()
                 else f"no trial started; run it again: tuner run {self.folder.spec}")
        return f"{self.spec.name}: stopped ({_what(stop)}); parent run KILLED; {again}"

    def _end_parent(self, status: str, tags: dict[str, str], *, trace: Path | None = None) -> str:
        """End the parent run through the journal, or straight through MLflow when there is no journal
        or it cannot be written; '' or what went wrong, for the one-line message."""
        note = ""
        if self.tracker is not None:
            try:
                if trace is not None:
                    self.tracker.emit("artifact", path=str(trace), artifact_path=None)
                self.tracker.emit("parent", tags=tags)
                self.tracker.emit("parent_end", status=status)
                left = self.tracker.close(timeout_s=self.spec.mlflow.flush_timeout_s)
                self.folder.write_state(status=status.lower(), error=tags.get("error"), undelivered=left)
                return ""
            except (OSError, JournalWriteError) as exc:
                self.tracker.close(timeout_s=0)
                note = f"; the journal could not record it ({describe(exc)})"
        from mlflow.tracking import MlflowClient

        try:
            with tracking_errors(self.tracking_uri, "end the parent run"):
                client = MlflowClient(self.tracking_uri)
                if tags:
                    client.set_tag(self.parent_run_id, "error", tags.get("error", "")[:5000])
                client.set_terminated(self.parent_run_id, status=status)
        except UserError as exc:
            note += f"; nor could MLflow be told ({exc}): the parent run may still show RUNNING"
        return note


_PARENT_RUN_WAITS_S = 10.0  # the longest a parent run waits for the first trial's start (`_ParentRun`)


class _ParentRun:
    """The job's parent run, made in a thread of the job's start: beside Ray's start when the job starts
    Ray; when Ray is up already (a `tuner up` service, a cluster), once the first trial has started,
    so that the trials' workers get the cores first (MLflow's import and store take 1.8 s of CPU: made
    beside Tune's start on 2 cores with the report's imports, the first epoch came at 5.5-6.7 s of a
    warm job, 4.2-5.0 s with both left for the first trial's start, 2026-12-07). Whoever waits for it
    starts it, and it is made after at most `_PARENT_RUN_WAITS_S` in any case: a trial that waits for
    resources (a cluster scaling up) must not keep the job out of the MLflow UI."""

    def __init__(self, pool: ThreadPoolExecutor, make: Callable[[], None], *, now: bool) -> None:
        self._go = threading.Event()
        self.future: Future = pool.submit(self._make, make)
        if now:
            self._go.set()

    def __enter__(self) -> _ParentRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.start()  # its thread must not wait for ever: the pool waits for its threads

    def _make(self, make: Callable[[], None]) -> None:
        self._go.wait(_PARENT_RUN_WAITS_S)
        make()

    def start(self) -> None:
        self._go.set()

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> None:
        self.start()
        self.future.result()

    def exception(self) -> BaseException | None:
        self.start()
        return self.future.exception()


class _OnceTrialsStart(Callback):
    """What waits for the first trial's start, so that its worker gets the cores first: the report's
    plotting imports (about 3 s of CPU), and the parent run when it was left for then (`_ParentRun`).
    Beside Tune's start on 2 cores the imports delayed the trials' workers by 2.5 s (2026-12-07).

    With ``parent``: Tune's loop checks at each step whether the parent run exists; then the journal's
    writer delivers to it and job.json names it (`Job._parent_made`). A store that refused the job
    raises here and stops Tune. Tune saves its callbacks with the experiment: this one is saved as one
    that does nothing (a resumed job's parent run exists)."""

    def __init__(self, job: Job, parent: _ParentRun | None) -> None:
        self.job, self.parent, self.started = job, parent, False

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if not self.started:
            self.started = True
            if self.parent is not None:
                self.parent.start()
            import_in_background()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.parent is not None and self.parent.done():
            self.job._parent_made(self.parent)
            self.parent = None

    def __reduce__(self):
        return Callback, ()


def _stopped_in_tune(results) -> str | None:
    """SIGUSR1 when Tune's loop ended with a trial neither done nor failed, and no signal of the job's
    stopped it: Tune's own handler took a SIGUSR1 sent to the driver. The job then ends as a stopped
    one (trials KILLED, `tuner resume` goes on), not FINISHED with those trials cut short."""
    if any(r.error is None and not (r.metrics or {}).get("done") for r in results):
        return "SIGUSR1"
    return None


def _what(stop: BaseException) -> str:
    """What stopped the job, in words: Ctrl-C, a SIGTERM (Ray's handler raises SystemExit(15)), or an exit."""
    if isinstance(stop, KeyboardInterrupt):
        return what_stopped("SIGINT")
    if isinstance(stop, SystemExit) and stop.code == signal.SIGTERM:
        return what_stopped("SIGTERM")
    return f"SystemExit {getattr(stop, 'code', '')}"


def _budget_spent(spec: JobSpec, result: JobResult, stopped: bool, searcher) -> str | None:
    """Why fewer trials than num_samples ran, when search.budget is why."""
    budget = spec.search.budget
    ran = len(result.statuses)
    if stopped or (budget.wall_s is None and budget.gpu_hours is None) or ran >= (spec.search.num_samples or 0):
        return None
    searcher = getattr(searcher, "searcher", searcher)  # inside reproducible's ConcurrencyLimiter
    spent = searcher.spent() if searcher is not None else None
    if spent is None:  # a resumed job: Tune restored its own searcher
        spent = " or ".join(f"{k} {v:g}" for k, v in budget.model_dump().items() if v is not None)
    return f"spent: {spent}; {ran} of {spec.search.num_samples} trials started"


def _service(spec: JobSpec, output_root: Path) -> Service | None:
    """The `tuner up` service a job attaches to: the one up for its output folder, unless the spec or
    $RAY_ADDRESS names a Ray cluster or the job runs inside one (tuner submit)."""
    if spec.ray.address is not None or os.environ.get("RAY_ADDRESS") or in_ray_job():
        return None
    return running(output_root)


def _ray_is_up(spec: JobSpec, service: Service | None) -> bool:
    """Whether the job attaches to a Ray that is up already (`ray_session` starts one otherwise)."""
    import ray

    return (service is not None or spec.ray.address is not None or bool(os.environ.get("RAY_ADDRESS"))
            or in_ray_job() or ray.is_initialized())


def _enter(stack: contextlib.ExitStack, context) -> BaseException | None:
    """Enter ``context`` on ``stack``; what it raised, if it did, to be raised once the parent run
    exists (it then ends FAILED with the reason)."""
    try:
        stack.enter_context(context)
    except BaseException as exc:  # noqa: BLE001 - raised again by the caller
        return exc
    return None


def _max_t(spec: JobSpec) -> int | None:
    from tuner.search import asha_max_t

    return asha_max_t(spec)


def _spec_params(spec: JobSpec) -> dict[str, Any]:
    params = {"model": spec.model, "trainable": spec.trainable, "task": spec.task, "metric": ",".join(spec.metrics),
              "mode": ",".join(spec.modes), "algorithm": spec.search.algorithm, "num_samples": spec.search.num_samples,
              "max_concurrent": spec.search.max_concurrent, "seed": spec.search.seed,
              "scheduler": spec.scheduler.name, "epochs": spec.trial.epochs,
              "space": ",".join(spec.space), "ensemble_top_k": spec.ensemble.top_k}
    params.update({f"fixed.{k}": v for k, v in spec.fixed.items()})
    if spec.data is not None:
        params["data"] = spec.data.name or spec.data.factory or spec.data.path
    return params
