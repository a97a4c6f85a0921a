"""Where a job's files live: run folders, the MLflow store's URI, and the locks and atomic writes
that keep them whole when commands run at the same time or the machine stops mid-write.

A job writes only inside its run folder, ``<output_root>/<name>/<timestamp>/``:
  spec.yaml        the validated spec (absolute paths), what `tuner resume` re-reads
  job.json         the MLflow parent run and store it tracks to (written atomically)
  ray/             Ray Tune's experiment folder (trial checkpoints, searcher state)
  tracking/        the MLflow event journal (see tuner.tracking)
  report/          trials.csv and the plots, also logged to the parent run
  lock             held by the one command writing to the folder (run, resume or sync)

``tuner run``, ``tuner resume`` and ``tuner sync`` hold their run folder's lock (the `filelock`
library; the operating system's ``flock``, so a process killed with -9 releases it) for as long as
they write to it and to its MLflow runs; a second command on the same folder says in one line who
holds it and exits 2.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from tuner.errors import NotFoundError, UserError, redact

DEFAULT_OUTPUT_ROOT = Path("tuner_runs")
EMBEDDED_STORE = "mlflow.db"


LOCK_FILE = "lock"
HOLDER_FILE = "lock.holder"  # who holds the lock: pid, command, since (for the refusal's message)
STORE_WAIT_S = 120  # how long a job waits for another to finish creating the same new store


class Busy(UserError):
    """Another command holds the lock."""


@contextlib.contextmanager
def run_folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock, or raise `Busy` naming the command that holds it."""
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"{folder}: in use by {_holder(folder)}; wait for it to end") from None
    holder = folder / HOLDER_FILE
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "command": command,
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def busy_folders(output_root: Path) -> list[str]:
    """Who holds the run folders under ``output_root`` now: one `_holder` description a held lock."""
    held = []
    for lock_file in sorted(output_root.glob(f"*/*/{LOCK_FILE}")):
        lock = FileLock(lock_file, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            held.append(_holder(lock_file.parent))
        else:
            lock.release()
    return held


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER_FILE).read_text())
        return f"`{info['command']}` (pid {info['pid']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another tuner command"


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise the creation of a local SQLite store: two jobs starting on a new store would both
    create MLflow's tables, and one fails ("table ... already exists"). Other stores need none."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    path = Path(tracking_uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{path}.lock", timeout=STORE_WAIT_S):
            yield
    except Timeout:
        raise Busy(f"{path}: another job has been creating this MLflow store for {STORE_WAIT_S} s") from None


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def spec(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def state(self) -> Path:
        return self.path / "job.json"

    @property
    def tracking(self) -> Path:
        return self.path / "tracking"

    @property
    def ray(self) -> Path:
        return self.path / "ray"

    @property
    def report(self) -> Path:
        return self.path / "report"

    def read_state(self) -> dict[str, Any]:
        if not self.state.exists() and self.spec.exists():
            # job.json is written once the parent run exists, and Tune starts before that (tuner.job).
            raise NotFoundError(f"{self.path}: no MLflow parent run (the job stopped before it was made, or is "
                                f"starting now): nothing of it reached MLflow; run it again: tuner run {self.spec}")
        try:
            state = json.loads(self.state.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.state}: damaged or unreadable ({type(exc).__name__}): this run folder cannot be "
                            f"resumed or synced") from None
        if not isinstance(state, dict) or not {"tracking_uri", "experiment_id", "parent_run_id"} <= set(state):
            raise UserError(f"{self.state}: damaged (fields missing): this run folder cannot be resumed or synced")
        return state

    def write_state(self, **fields: Any) -> None:
        """Update job.json (a store URI's password is never written: see `tracking_uri`)."""
        if "tracking_uri" in fields:
            fields["tracking_uri"] = redact(fields["tracking_uri"])
        state = {**(self.read_state() if self.state.exists() else {}), **fields}
        write_atomically(self.state, json.dumps(state, indent=2))

    def tracking_uri(self, state: dict[str, Any]) -> str:
        """The job's store. A password in it was left out of job.json; $MLFLOW_TRACKING_URI gives it back
        when it names the same store."""
        uri = state["tracking_uri"]
        if "***" not in uri:
            return uri
        given = os.environ.get("MLFLOW_TRACKING_URI", "")
        if given and redact(given) == uri:
            return given
        raise UserError(f"{self.state}: the job's store {uri} needs its password: set MLFLOW_TRACKING_URI to "
                        f"that URI with the password, or use MLFLOW_TRACKING_USERNAME/PASSWORD")


def write_atomically(path: Path, text: str) -> None:
    """Write, fsync, rename, fsync the folder: after a crash or power loss the file is the old one or
    the new one, never empty or half-written."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def embedded_store(output_root: Path) -> str:
    """The default MLflow store: a SQLite file in the output folder."""
    return f"sqlite:///{(output_root / EMBEDDED_STORE).resolve()}"


def store_uri(tracking_uri: str | None, output_root: Path) -> str:
    """The one resolver of the MLflow store every command uses: the given URI, else
    $MLFLOW_TRACKING_URI, else the embedded store; a relative sqlite path lies in the output folder."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        return embedded_store(output_root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_absolute():
        return f"sqlite:///{(output_root / uri[len('sqlite:///'):]).resolve()}"
    return uri


def tracking_uri_for(spec: Any, output_root: Path) -> str:
    """A job's store: its spec's ``mlflow.tracking_uri``, resolved by `store_uri`."""
    return store_uri(spec.mlflow.tracking_uri, output_root)


def _is_run_folder(path: Path) -> bool:
    """spec.yaml is written first, job.json once the parent run exists: a job stopped in between (Tune
    starts before the parent run) is a run folder too, the newest of its job, and says what happened."""
    return (path / "spec.yaml").exists() or (path / "job.json").exists()


def job_folders(output_root: Path, name: str) -> list[RunFolder]:
    """A job's run folders, oldest first."""
    base = output_root / name
    return [RunFolder(p) for p in sorted(base.iterdir()) if _is_run_folder(p)] if base.is_dir() else []


def find_run_folder(output_root: Path, job: str) -> RunFolder:
    """A run folder by path, or the newest run of a job by name."""
    if Path(job).is_dir() and _is_run_folder(Path(job)):
        return RunFolder(Path(job))
    folders = job_folders(output_root, job)
    if not folders:
        raise NotFoundError(f"{job}: no such job in {output_root}/ (give the job name or its run folder)")
    return folders[-1]


def new_run_folder(spec: Any, output_root: Path) -> RunFolder:
    """A new folder ``<name>/<timestamp>[-n]``: made atomically, so two jobs started in the same second
    get two folders."""
    base = output_root / spec.name
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return RunFolder(path.resolve())
    raise AssertionError("unreachable")
