"""Run a job on a Ray cluster through Ray's Jobs API (`ray.job_submission.JobSubmissionClient`).

The cluster runs the same `tuner run` as the job's entrypoint, on the head node, so the driver
(the job's one MLflow writer) sits next to Ray's scheduler and only the head needs to reach MLflow.
What travels with a submission (Ray's runtime_env):
  working_dir  a staging folder: the spec as ``spec.yaml`` and, for a user trainable, its code folder
  py_modules   this project's packages (tuner, trainables, search_spaces)
  env_vars     how Ray stops the job: SIGTERM, then up to STOP_WAIT_S for the driver to close the trials

Authentication: with ``RAY_AUTH_MODE=token`` Ray's client sends the token from ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; a refused token is one line, exit 2.

Every request has a deadline (REQUEST_TIMEOUT_S): Ray's client sets none, so an address that
accepts connections and never answers would hang the command forever.

Only code travels: the code folder's files less what ``.gitignore`` names and what never belongs on
a cluster (SHIP_NEVER: the output folder, ``.env*``, ``.ray``, databases, checkpoints).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from tuner.errors import NotFoundError, UserError
from tuner.spec import JobSpec

PACKAGES = ("tuner", "trainables", "search_spaces")
STOP_WAIT_S = 120  # after `tuner stop`, how long Ray waits for the driver to end the trials and flush
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
REMOTE_OUTPUT_DIR = "/tmp/tuner_runs"  # the default --output-dir on the head node, outside Ray's per-job folder
REQUEST_TIMEOUT_S = 20  # the most one request to the Jobs API may take
SUBMIT_TIMEOUT_S = 600  # the most a submission (with its upload of the code folder) may take
# Never shipped from a code folder, whatever .gitignore says: secrets, local state, results.
SHIP_NEVER = (".git", ".venv", "venv", "__pycache__", "*.pyc", ".env", ".env.*", ".ray", "*.db", "*.db-journal",
              "*.sqlite", "tuner_runs", "mlruns", "mlartifacts", "ray_results", "checkpoint_*")


def cluster_address(address: str | None, spec: JobSpec | None = None) -> str:
    """--address, else $RAY_ADDRESS, else the spec's ray.address; the dashboard's http URL."""
    address = address or os.environ.get("RAY_ADDRESS") or (spec.ray.address if spec else None)
    if not address:
        raise UserError("--address: no cluster given (pass --address http://HEAD:8265, set RAY_ADDRESS, "
                        "or set ray.address in the spec)")
    if address == "auto":
        raise UserError("--address: 'auto' joins a cluster from one of its nodes (tuner run); tuner submit needs "
                        "the cluster's dashboard, http://HEAD:8265")
    return address if "://" in address else f"http://{address}"


def client(address: str):
    """A Jobs API client, with Ray's connection and authentication errors as one-line UserErrors."""
    from ray.job_submission import JobSubmissionClient

    try:
        return _with_deadline(address, JobSubmissionClient, address)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or its AuthenticationError
        raise UserError(f"--address {address}: {_first_line(exc)}") from None


def _with_deadline(address: str, function, *args: Any, deadline_s: float | None = None, **kwargs: Any) -> Any:
    """``function(*args)`` in a daemon thread, or a one-line error after ``deadline_s`` (default
    REQUEST_TIMEOUT_S; the thread is left to the request's own fate: a daemon never holds the
    process's exit)."""
    deadline_s = deadline_s or REQUEST_TIMEOUT_S
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread just below
            outcome["error"] = exc

    thread = threading.Thread(target=call, name="tuner-jobs-request", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        raise UserError(f"--address {address}: no answer within {deadline_s:g} s (is it Ray's dashboard, "
                        f"http://HEAD:8265?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _call(address: str, what: str, function, *args: Any, deadline_s: float | None = None, **kwargs: Any) -> Any:
    try:
        return _with_deadline(address, function, *args, deadline_s=deadline_s, **kwargs)
    except UserError:
        raise
    except RuntimeError as exc:  # the Jobs API answers unknown ids and refusals with RuntimeError
        message = _first_line(exc)
        if "does not exist" in message or "not found" in message.lower():
            raise NotFoundError(f"{what}: no such job on {address}") from None
        raise UserError(f"{what}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - a lost connection, a refused token, a package too large
        raise UserError(f"{what}: {_first_line(exc)} ({address})") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _stage(spec_path: Path, spec: JobSpec, folder: Path) -> list[str]:
    """Fill ``folder`` with what the cluster needs; return the `--set` overrides the entrypoint adds."""
    overrides = ["ray.address=auto"]
    raw = yaml.safe_load(spec_path.read_text())
    if spec.user_code:
        _copy_code(Path(spec.code_dir), folder)  # type: ignore[arg-type]
        overrides.append("code_dir=.")
    if spec.data is not None and spec.data.path:  # the same absolute path must exist on the head node
        overrides.append(f"data.path={spec.data.path}")
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return overrides


def _copy_code(code_dir: Path, folder: Path) -> None:
    """Copy what a trainable needs from ``code_dir``: not what ``.gitignore`` names, never SHIP_NEVER."""
    import pathspec

    code_dir = code_dir.resolve()
    if code_dir in (Path("/"), Path.home().resolve()):
        raise UserError(f"code_dir: {code_dir} is the whole disk or a home folder; put your model's code in a "
                        f"folder of its own")
    gitignore = code_dir / ".gitignore"
    ignored = pathspec.GitIgnoreSpec.from_lines(gitignore.read_text().splitlines() if gitignore.is_file() else [])
    never = shutil.ignore_patterns(*SHIP_NEVER)

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(code_dir)
        skipped = set(never(directory, names))
        for name in names:
            path = (relative / name).as_posix() + ("/" if Path(directory, name).is_dir() else "")
            if ignored.match_file(path):
                skipped.add(name)
        return skipped

    shutil.copytree(code_dir, folder, dirs_exist_ok=True, ignore=ignore)


def submit(spec_path: Path, spec: JobSpec, address: str, *, overrides: list[str],
           output_dir: str = REMOTE_OUTPUT_DIR) -> str:
    """Submit the job; return its submission id."""
    import shlex

    jobs = client(address)
    project = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="tuner-submit-") as staging:
        extra = _stage(spec_path, spec, Path(staging))
        command = ["python", "-m", "tuner.cli", "run", "spec.yaml", "--output-dir", output_dir]
        for item in [*overrides, *extra]:
            command += ["--set", item]
        runtime_env = {"working_dir": staging, "py_modules": [str(project / p) for p in PACKAGES],
                       "env_vars": {"RAY_JOB_STOP_SIGNAL": "SIGTERM", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S)}}
        submission_id = f"tuner-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        # Uploading the code folder takes as long as it takes: a longer deadline than a request's.
        return _call(address, spec.name, jobs.submit_job, entrypoint=shlex.join(command), runtime_env=runtime_env,
                     submission_id=submission_id, metadata={"tuner.job": spec.name}, deadline_s=SUBMIT_TIMEOUT_S)


def _row(info, submission_id: str) -> dict[str, Any]:
    """A job's JobInfo / JobDetails as the terminal shows it."""
    return {"id": submission_id, "status": str(getattr(info.status, "value", info.status)),
            "message": info.message or "", "job": (info.metadata or {}).get("tuner.job", "-"),
            "started": _when(info.start_time), "ended": _when(info.end_time)}


def status(address: str, submission_id: str, jobs=None) -> dict[str, Any]:
    jobs = jobs or client(address)
    return _row(_call(address, submission_id, jobs.get_job_info, submission_id), submission_id)


def list_jobs(address: str) -> list[dict[str, Any]]:
    rows = [_row(j, j.submission_id or j.job_id) for j in _call(address, "list", client(address).list_jobs)]
    return sorted(rows, key=lambda r: r["started"], reverse=True)


def logs(address: str, submission_id: str) -> str:
    return _call(address, submission_id, client(address).get_job_logs, submission_id)


def follow(address: str, submission_id: str) -> Iterator[str]:
    """The job's log as it is written, until the job ends (Ray's tail_job_logs)."""
    jobs = client(address)
    _call(address, submission_id, jobs.get_job_status, submission_id)  # unknown ids fail here, clearly
    stream = jobs.tail_job_logs(submission_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()


def wait(address: str, submission_id: str, *, poll_s: float = 1.0) -> str:
    """Block until the job is in a terminal state; return it."""
    jobs = client(address)
    while (state := status(address, submission_id, jobs)["status"]) not in TERMINAL:
        time.sleep(poll_s)
    return state


def stop(address: str, submission_id: str) -> bool:
    """Ask Ray to stop the job (SIGTERM to `tuner run`, which ends the trials as KILLED)."""
    return bool(_call(address, submission_id, client(address).stop_job, submission_id))


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"
