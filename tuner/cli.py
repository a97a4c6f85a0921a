"""The ``tuner`` command: parse, call, print. No logic of its own.

    tuner validate job.yaml                   # check a spec, print a summary (exit 2 on bad input)
    tuner check job.yaml                      # the recipe's sanity checks on the spec's model and data
    tuner run job.yaml --set search.num_samples=8
    tuner resume digits-mlp                   # finish an interrupted job
    tuner export digits-mlp -o best.yaml      # the best trial's config as a spec (--pick trial-007: another)
    tuner train best.yaml                     # retrain it once, no search
    tuner sync digits-mlp                     # deliver tracking events a dead server missed
    tuner ui                                  # the MLflow UI on the job's store
    tuner dashboard digits-mlp                # the job's Optuna study in optuna-dashboard
    tuner runs / tuner show digits-mlp        # jobs in the store, one job's trials
    tuner up / tuner down                     # keep Ray and the MLflow UI running between jobs
    tuner submit job.yaml --address http://HEAD:8265 --wait    # on a Ray cluster (Jobs API)
    tuner status ID / logs ID --follow / stop ID / list

User errors print as one line and exit 2; a failed job exits 1.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tuner.errors import UserError, describe, redact, tracking_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Hyperparameter tuning for PyTorch: one YAML job, Ray Tune + Optuna, every trial in MLflow.")
# Wide enough for the summary table when the output is a pipe or a file (rich assumes 80 columns there).
# soft_wrap: a line is never broken by Rich (a path, a URL or a command to copy stays on one line, in
# a pipe too); tables still fit the width.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one-line messages stay one line in a pipe

SetOption = typer.Option([], "--set", help="Override a spec value: key.path=value (YAML value). Repeatable.")
OutputOption = typer.Option(Path("tuner_runs"), "--output-dir", help="Where jobs write their files.")
VerboseOption = typer.Option(False, "--verbose", "-v", help="Show Ray's own output.")


def _user_errors(command: Callable) -> Callable:
    """Print a UserError as one line and exit 2; let bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            err.print(f"error: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _quiet(verbose: bool, *, import_mlflow: bool = True) -> None:
    """Logging for a command: warnings and errors only, unless ``verbose``.

    MLflow sets its own loggers' levels when it is imported. Commands that use it import it here and
    set the levels after. `tuner run` and `tuner resume` leave the import (0.8-1.0 s alone on 2
    cores) to the thread that opens the parent run beside `ray.init`: 0.5 s less start-up on one
    machine, none on a faster one (BENCHMARKS.md, section 8). They give MLflow its level through its
    own setting, MLFLOW_LOGGING_LEVEL, which Ray's processes inherit (their output reaches the
    terminal only with -v)."""
    if import_mlflow:
        import mlflow  # noqa: F401 - it sets its loggers' levels on import; set ours after
    elif not verbose:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "ERROR"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not verbose:
        for noisy in ("ray", "mlflow", "alembic", "optuna", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("tuner").setLevel(logging.INFO if verbose else logging.WARNING)


@app.command()
@_user_errors
def validate(spec: Path = typer.Argument(..., help="The job's YAML file."), set: List[str] = SetOption) -> None:
    """Check a spec without running anything; print what it would do."""
    from tuner.spec import load_spec

    job = load_spec(spec, overrides=set)
    out.print(f"{spec}: ok")
    what = (f"model {job.model} on {_data_name(job)}, {job.task}" if job.service_loop
            else f"trainable {job.trainable}")
    out.print(f"  job        {job.name} ({what})")
    out.print(f"  search     {job.search.algorithm}, {job.search.num_samples} trials, "
              f"{job.search.max_concurrent} at once, seed {job.search.seed}, scheduler {job.scheduler.name}")
    goals = ", ".join(f"{mode} {metric}" for metric, mode in zip(job.metrics, job.modes))
    out.print(f"  optimise   {goals} over {', '.join(job.space)}")
    out.print(f"  per trial  {job.trial.epochs} epochs, {job.trial.resources.cpu:g} cpu, "
              f"{job.trial.resources.gpu:g} gpu, {job.trial.max_failures} retries")
    if job.fixed:
        out.print(f"  fixed      {', '.join(f'{k}={v}' for k, v in job.fixed.items())}")
    if job.service_loop:
        from trainables.knobs import DEFAULTS

        passed = [k for k in [*job.fixed, *job.space] if k not in DEFAULTS]
        if passed:
            out.print(f"  for you    {', '.join(passed)} (no knobs of the loop: passed in config to your factories)")


def _data_name(job: Any) -> str:
    return job.data.name or job.data.factory or f"{job.data.path} ({job.data.format})"


def _run_checks(job: Any) -> list:
    """The recipe's three checks on one config of the job (the one `tuner train` would train)."""
    from tuner.engine import checked_factories

    return checked_factories(job)[1]


def _print_checks(results: list) -> None:
    table = Table(title="sanity checks", title_justify="left")
    for column in ("check", "result", "measured", "target"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, "pass" if r.passed else "FAIL", f"{r.value:.4g}", r.target + (f"; {r.detail}" if r.detail else ""))
    out.print(table)


@app.command()
@_user_errors
def check(spec: Path = typer.Argument(..., help="The job's YAML file."), set: List[str] = SetOption) -> None:
    """Run the sanity checks (loss at init, input-independent baseline, overfit one batch)."""
    from tuner.spec import load_spec

    job = load_spec(spec, overrides=set)
    if not job.service_loop:
        out.print("checks run on a model and data (model: and data:); a job with its own trainable has none to check")
        return
    results = _run_checks(job)
    _print_checks(results)
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


@app.command()
@_user_errors
def run(spec: Path = typer.Argument(..., help="The job's YAML file."), set: List[str] = SetOption,
        output_dir: Path = OutputOption, skip_checks: bool = typer.Option(False, "--skip-checks"),
        verbose: bool = VerboseOption) -> None:
    """Run a tuning job and print the best trial."""
    from tuner.run import ChecksFailed, run_job
    from tuner.spec import load_spec

    job = load_spec(spec, overrides=set)
    _quiet(verbose, import_mlflow=False)
    try:  # the checks run beside Ray's start; one failing leaves nothing: no trial, run folder or parent run
        result = run_job(job, output_root=output_dir, check=job.service_loop and not skip_checks,
                         callbacks=_progress(job, verbose), verbose=verbose)
    except ChecksFailed as failed:
        _print_checks(failed.results)
        err.print("a sanity check failed: fix the model or data first, or run with --skip-checks")
        raise typer.Exit(1) from None
    _print_result(result, job)
    raise typer.Exit(_exit_code(result))


def _progress(job: Any, verbose: bool) -> list:
    """The live progress view, unless Ray's own reporter is showing (-v)."""
    if verbose:
        return []
    from tuner.progress import ProgressCallback
    from tuner.search import asha_max_t

    return [ProgressCallback(total=job.search.num_samples, metric=job.objective, mode=job.direction,
                             searched=list(job.space), max_t=asha_max_t(job), console=out)]


def _ui_url(tracking_uri: str, fragment: str) -> str:
    """Where a page of the MLflow UI is (for a local store, once `tuner ui` runs)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/{fragment}"


def _print_result(result: Any, job: Any) -> None:
    from tuner.folders import embedded_store
    from tuner.progress import config_text, fmt

    counts = {s: sum(1 for v in result.statuses.values() if v == s) for s in ("FINISHED", "KILLED", "FAILED")}
    out.print(f"{job.name}: {len(result.statuses)} trials: {counts['FINISHED']} finished, "
              f"{counts['KILLED']} stopped early, {counts['FAILED']} failed"
              + (" (the job was stopped: running trials recorded as KILLED)" if result.stopped else ""))
    if result.top:
        table = Table(title=f"top trials by {job.objective} ({job.direction})", title_justify="left")
        table.add_column("trial")
        table.add_column(job.objective, justify="right")
        table.add_column("epochs", justify="right")
        for key in job.space:
            table.add_column(key)
        for row in result.top:
            table.add_row(row.trial, f"{row.value:.4f}", str(row.epochs),
                          *[fmt(row.config.get(k)) for k in job.space])
        out.print(table)
    if result.pareto_front:
        out.print(f"Pareto front of {', '.join(f'{m} ({d})' for m, d in zip(job.metrics, job.modes))}: "
                  f"{', '.join(result.pareto_front)}  (report/pareto_front.csv; export takes --pick TRIAL)")
    if result.best_trial:
        out.print(f"best trial: {result.best_trial}  {job.objective}={result.best_value:.4f}")
        searched = {k: result.best_config.get(k) for k in job.space}
        out.print("best config: " + config_text(searched))
    if result.ensemble:
        e = result.ensemble
        where = e["model_uri"] or f"{e.get('model_dir')} (not logged to MLflow)"
        score = "acc" if e["task"] == "classification" else "rmse"
        out.print(f"ensemble of {len(e['members'])}: test {score} {e[f'ensemble_test_{score}']:.4f} "
                  f"(best single {e[f'best_single_test_{score}']:.4f}); model {where}")
    if result.cost:
        c = result.cost
        out.print(f"cost: {c['trial_hours']:.3g} trial-hours, {c['cpu_hours']:.3g} CPU-hours, "
                  f"{c['gpu_hours']:.3g} GPU-hours")
    if result.budget_spent:
        out.print(f"search.budget {result.budget_spent}: no new trial started after that")
    where = redact(result.tracking_uri)
    out.print(f"MLflow: parent run {result.parent_run_id} in {where}")
    local = not result.tracking_uri.startswith(("http://", "https://"))
    fragment = result.view or f"#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
    if result.service_ui and result.tracking_uri == embedded_store(result.run_folder.parent.parent):
        out.print(f"MLflow UI: {result.service_ui}/{fragment}")  # the `tuner up` UI shows this store
    else:
        out.print(f"MLflow UI: {_ui_url(where, fragment)}" + ("  (after `tuner ui`)" if local else ""))
    if result.ray_service:
        out.print(f"Ray: the local service's head at {result.ray_service} (tuner up; tuner down stops it)")
    out.print(f"export: tuner export {job.name} -o best.yaml --tracking-uri {where}")
    if result.stopped:  # Tune saved its state: the stopped trials run again, the pending ones run
        out.print(f"resume: tuner resume {result.run_folder}")
    if result.undelivered:
        err.print(f"{result.undelivered} tracking events were not delivered to {where}; they are kept "
                  f"in {result.run_folder}/tracking: run `tuner sync {result.run_folder}` once the server is back")


TrackingOption = typer.Option(None, "--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, "
                              "else the embedded store in --output-dir.")


def _store(tracking_uri: str | None, output_dir: Path) -> str:
    from tuner.folders import store_uri

    return store_uri(tracking_uri, output_dir)


@app.command()
@_user_errors
def export(job: str = typer.Argument(..., help="Job name or parent run id."),
           output: Path = typer.Option(Path("best.yaml"), "--output", "-o"),
           format: str = typer.Option("yaml", "--format", help="yaml or json"),
           force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
           pick: Optional[str] = typer.Option(None, "--pick", help="A trial (trial-007) instead of the best "
                                              "on the first metric: a member of a multi-objective job's front."),
           tracking_uri: Optional[str] = TrackingOption, output_dir: Path = OutputOption) -> None:
    """Write the best trial's config (or --pick's) as a spec that `tuner train` retrains."""
    from tuner.export import best_spec, write_spec

    if format not in ("yaml", "json"):
        raise UserError(f"--format: must be yaml or json (got {format!r})")
    _quiet(False)
    store = _store(tracking_uri, output_dir)
    with tracking_errors(store, f"read job {job}"):
        spec = best_spec(store, job, pick=pick)
    write_spec(spec, output, fmt=format, force=force)
    out.print(f"wrote {output} (best trial {spec['_exported']['trial']} of run {spec['_exported']['from_run']})")
    if spec["_exported"]["model_uri"]:
        out.print(f"ensemble model: {spec['_exported']['model_uri']}")
    out.print(f"retrain: tuner train {output}")


@app.command()
@_user_errors
def train(spec: Path = typer.Argument(..., help="A spec, typically from tuner export."),
          set: List[str] = SetOption) -> None:
    """Train the spec's config once, no search, and print each epoch."""
    from tuner.run import JobFailed, train_once
    from tuner.spec import load_spec

    job = load_spec(spec, overrides=set)
    history: list[dict[str, float]] = []

    def report(metrics: dict[str, float], checkpoint: Any) -> None:
        history.append(metrics)
        out.print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

    try:
        train_once(job, report=report)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - your model or data failed, or the loss diverged: one line
        raise JobFailed(f"{job.name}: training failed: {describe(exc)}") from None
    best = (min if job.direction == "min" else max)(m[job.objective] for m in history)
    out.print(f"best {job.objective}={best!r}")


@app.command()
@_user_errors
def resume(job: str = typer.Argument(..., help="Job name (its newest run) or run folder."),
           output_dir: Path = OutputOption, verbose: bool = VerboseOption) -> None:
    """Finish an interrupted job: same trials, same MLflow parent run."""
    from tuner.folders import find_run_folder
    from tuner.run import resume_job
    from tuner.spec import load_spec

    folder = find_run_folder(output_dir, job)
    _quiet(verbose, import_mlflow=False)
    result = resume_job(folder, verbose=verbose)
    _print_result(result, load_spec(folder.spec))
    raise typer.Exit(_exit_code(result))


def _exit_code(result: Any) -> int:
    """0 when a trial ran to its end, 1 when none did; a job stopped by a signal (Ctrl-C, `tuner stop`)
    exits as the shell reports a command that signal ended: 128 + its number (130 for Ctrl-C)."""
    if result.stop_signal is not None:
        import signal

        return 128 + signal.Signals[result.stop_signal].value
    return 0 if result.succeeded else 1


@app.command()
@_user_errors
def sync(job: str = typer.Argument(..., help="Job name (its newest run) or run folder."),
         output_dir: Path = OutputOption) -> None:
    """Deliver tracking events that the MLflow server missed."""
    from tuner.folders import find_run_folder, run_folder_lock
    from tuner.tracking import sync as deliver

    folder = find_run_folder(output_dir, job)
    _quiet(False)
    with run_folder_lock(folder.path, "tuner sync"):  # a job still running is busy, not missing its job.json
        state = folder.read_state()
        uri = folder.tracking_uri(state)
        with tracking_errors(uri, "take the journal's events"):
            delivered, left = deliver(folder.tracking, tracking_uri=uri, experiment_id=state["experiment_id"],
                                      parent_run_id=state["parent_run_id"])
    out.print(f"delivered {delivered} events to {redact(state['tracking_uri'])}; {left} left")
    raise typer.Exit(0 if left == 0 else 1)


@app.command()
@_user_errors
def ui(spec: Optional[Path] = typer.Argument(None, help="A job spec; its store is opened."),
       port: int = typer.Option(5000, "--port"), output_dir: Path = OutputOption,
       tracking_uri: Optional[str] = TrackingOption) -> None:
    """Start the MLflow UI on the job's store (Ctrl-C stops it)."""
    import subprocess

    from tuner.folders import tracking_uri_for
    from tuner.spec import load_spec

    uri = tracking_uri_for(load_spec(spec), output_dir) if spec else _store(tracking_uri, output_dir)
    out.print(f"MLflow UI for {redact(uri)}: http://127.0.0.1:{port}")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    raise typer.Exit(subprocess.call(command))


@app.command()
@_user_errors
def up(output_dir: Path = OutputOption,
       num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="Ray's CPUs (default: all)."),
       num_gpus: Optional[int] = typer.Option(None, "--num-gpus", min=0, help="Ray's GPUs (default: all)."),
       ui_port: int = typer.Option(5000, "--ui-port", min=1, max=65535), no_ui: bool = typer.Option(False, "--no-ui"),
       ) -> None:
    """Keep a local Ray head and the MLflow UI running: later `tuner run`s attach to them (warm start)."""
    from tuner.service import up as start

    service, started = start(output_dir, num_cpus=num_cpus, num_gpus=num_gpus, ui_port=None if no_ui else ui_port)
    out.print(f"{'up' if started else 'already up (since ' + service.started + ')'}: Ray head at "
              f"{service.ray_address}" + (f", MLflow UI at {service.ui_url}" if service.ui_url else "")
              + f"; jobs with --output-dir {output_dir} attach to it; `tuner down` stops it")


@app.command()
@_user_errors
def down(output_dir: Path = OutputOption,
         force: bool = typer.Option(False, "--force", help="Stop it even while jobs run on it (they fail).")) -> None:
    """Stop what `tuner up` started for this output folder (refused while a job runs there)."""
    from tuner.service import down as stop

    service, ran = stop(output_dir, force=force)
    if service is None:
        out.print(f"nothing is up for {output_dir}")
    elif not ran:
        out.print(f"nothing was running: the service of {output_dir} (Ray head at {service.ray_address}) had "
                  f"already ended; removed its {output_dir / 'service.json'}")
    else:
        out.print(f"stopped: Ray head at {service.ray_address}"
                  + (f", MLflow UI at {service.ui_url}" if service.ui_url else ""))


@app.command()
@_user_errors
def dashboard(job: str = typer.Argument(..., help="A job name (its newest run) or a run folder."),
              port: int = typer.Option(8080, "--port"), output_dir: Path = OutputOption) -> None:
    """Serve the job's Optuna study with optuna-dashboard on 127.0.0.1 (Ctrl-C stops it)."""
    from optuna_dashboard import run_server

    from tuner.folders import find_run_folder
    from tuner.study import open_storage, stored_study

    storage, name = stored_study(find_run_folder(output_dir, job))
    out.print(f"optuna-dashboard for study {name}: http://127.0.0.1:{port}/dashboard/studies")
    _quiet(False)
    try:
        run_server(open_storage(storage), host="127.0.0.1", port=port)
    except OSError as exc:  # the port is taken, or not ours to open
        raise UserError(f"--port {port}: cannot serve on it ({describe(exc)})") from None


@app.command()
@_user_errors
def runs(tracking_uri: Optional[str] = TrackingOption, output_dir: Path = OutputOption) -> None:
    """List the jobs in the MLflow store, newest first."""
    from tuner.show import job_runs

    _quiet(False)
    store = _store(tracking_uri, output_dir)
    with tracking_errors(store, "list the jobs"):
        rows = job_runs(store)
    table = Table(title=f"jobs in {redact(store)}", title_justify="left")
    for column in ("job", "parent run", "started", "status", "best"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


@app.command()
@_user_errors
def show(job: str = typer.Argument(..., help="Job name or parent run id."),
         tracking_uri: Optional[str] = TrackingOption, output_dir: Path = OutputOption) -> None:
    """Show one job's trials and their statuses."""
    from tuner.show import job_trials

    _quiet(False)
    store = _store(tracking_uri, output_dir)
    with tracking_errors(store, f"read job {job}"):
        title, columns, rows = job_trials(store, job)
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


# ------------------------------------------------------------------------------- Ray cluster

AddressOption = typer.Option(None, "--address", help="The cluster's dashboard, http://HEAD:8265; default "
                             "$RAY_ADDRESS, else the spec's ray.address.")


@app.command()
@_user_errors
def submit(spec: Path = typer.Argument(..., help="The job's YAML file."), set: List[str] = SetOption,
           address: Optional[str] = AddressOption,
           wait: bool = typer.Option(False, "--wait", help="Follow the job's log; exit 0 only if it SUCCEEDED."),
           remote_output_dir: Optional[str] = typer.Option(None, "--remote-output-dir",
                                                           help="The job's --output-dir on the head node "
                                                                "[default: /tmp/tuner_runs].")) -> None:
    """Run a job on a Ray cluster (Ray's Jobs API); print its submission id."""
    from tuner import submit as cluster
    from tuner.spec import load_spec

    job = load_spec(spec, overrides=set)
    where = cluster.cluster_address(address, job)
    submission_id = cluster.submit(spec, job, where, overrides=set,
                                   output_dir=remote_output_dir or cluster.REMOTE_OUTPUT_DIR)
    out.print(submission_id)
    if not wait:
        err.print(f"follow it: tuner logs {submission_id} --follow --address {where}")
        return
    _print_log(cluster.follow(where, submission_id))
    state = cluster.wait(where, submission_id)
    err.print(f"{submission_id}: {state}")
    raise typer.Exit(0 if state == "SUCCEEDED" else 1)


@app.command()
@_user_errors
def status(submission_id: str = typer.Argument(..., help="A submission id from tuner submit."),
           address: Optional[str] = AddressOption) -> None:
    """A submitted job's state: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    from tuner import submit as cluster

    info = cluster.status(cluster.cluster_address(address), submission_id)
    out.print(f"{info['id']}: {info['status']} (job {info['job']}, started {info['started']}, ended {info['ended']})")
    if info["message"]:
        out.print(info["message"], markup=False)


@app.command()
@_user_errors
def logs(submission_id: str = typer.Argument(..., help="A submission id from tuner submit."),
         address: Optional[str] = AddressOption,
         follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends.")) -> None:
    """A submitted job's log (its `tuner run` output)."""
    from tuner import submit as cluster

    where = cluster.cluster_address(address)
    _print_log(cluster.follow(where, submission_id) if follow else [cluster.logs(where, submission_id)])


def _print_log(chunks: Iterable[str]) -> None:
    """A job's log as Ray gives it: text with its own newlines, no markup."""
    for chunk in chunks:
        out.out(chunk, end="", highlight=False)


@app.command()
@_user_errors
def stop(submission_id: str = typer.Argument(..., help="A submission id from tuner submit."),
         address: Optional[str] = AddressOption,
         wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the job has stopped.")) -> None:
    """Stop a submitted job: its running trials end as KILLED in MLflow."""
    from tuner import submit as cluster

    where = cluster.cluster_address(address)
    if not cluster.stop(where, submission_id):
        out.print(f"{submission_id}: already ended ({cluster.status(where, submission_id)['status']})")
        return
    out.print(f"{submission_id}: {cluster.wait(where, submission_id) if wait else 'stopping'}")


@app.command(name="list")
@_user_errors
def list_(address: Optional[str] = AddressOption) -> None:
    """The jobs submitted to the cluster, newest first."""
    from tuner import submit as cluster

    where = cluster.cluster_address(address)
    table = Table(title=f"jobs on {where}", title_justify="left")
    for column in ("submission id", "job", "status", "started", "ended"):
        table.add_column(column)
    for row in cluster.list_jobs(where):
        table.add_row(row["id"], row["job"], row["status"], row["started"], row["ended"])
    out.print(table)


def main() -> None:
    """The console script. At exit Python's last garbage collection walks every object Ray, MLflow
    and torch made: 2.5 s of a cold `tuner run` here (BENCHMARKS.md, section 8). The command's work
    is done by then (files closed, Ray shut down, tracking flushed), so those objects are frozen out
    of that collection; they are freed with the process."""
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
