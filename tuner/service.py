"""A local service that stays up between jobs: `tuner up` starts a Ray head and the MLflow UI on
this machine and keeps them running; `tuner run` and `tuner resume` attach to that Ray, so a job no
longer pays Ray's start-up (about 5 s here) or a new MLflow store; `tuner down` stops both.

    tuner up                 # Ray head on 127.0.0.1, MLflow UI on tuner_runs/mlflow.db at :5000
    tuner run job.yaml       # attaches to it (a spec's ray.address, or $RAY_ADDRESS, still wins)
    tuner down

``<output_root>/service.json`` describes the service. The head uses Ray's own token (Ray 2.60 turns
token auth on and keeps the token in ``~/.ray/auth_token``), and a job attaches the way Ray's docs
describe for a local cluster, ``ray.init(address="auto")``: Ray then finds the head through the
file ``ray start`` writes (/tmp/ray/ray_current_cluster) and turns auth on for the driver with that
token. (An explicit address would not: Ray reads ``RAY_AUTH_MODE`` when it is imported.) So a job
attaches only while that file names this service's head. Both servers run in process groups of their
own and are stopped by group id, never by name, once the group's leader is checked to be the
command `tuner up` started (a recycled process id is left alone).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from tuner.errors import UserError, describe
from tuner.folders import Busy, busy_folders, embedded_store, write_atomically

log = logging.getLogger(__name__)

STATE_FILE = "service.json"
START_TIMEOUT_S = 90  # Ray's head answers in about 5 s here, the MLflow UI in about 8
STOP_GRACE_S = 5  # Ray's GCS server may ignore SIGTERM for longer: then SIGKILL
RAY_MARKER = Path("/tmp/ray/ray_current_cluster")  # `ray start --head` writes it; a plain ray.init() joins it


@dataclass
class Service:
    ray_address: str  # 127.0.0.1:PORT, the head's GCS
    ray_pgid: int
    ui_url: str | None
    ui_pgid: int | None
    started: str


def running(output_root: Path) -> Service | None:
    """The service `tuner up` left for ``output_root``, if its Ray head still answers."""
    service = _described(output_root)
    if service is None:
        return None
    host, port = service.ray_address.rsplit(":", 1)
    if not (_ours(service.ray_pgid, "ray") and _answers(host, int(port))):
        return None
    if not _current_cluster_port() == port:
        log.warning("%s: the service's Ray head is up but another `ray start` has become this machine's "
                    "current cluster; jobs start their own Ray until `tuner down` and `tuner up`", output_root)
        return None
    return service


def up(output_root: Path, *, num_cpus: int | None = None, num_gpus: int | None = None,
       ui_port: int | None = 5000) -> tuple[Service, bool]:
    """Start the service for ``output_root`` (or find it up); (service, started now)."""
    output_root.mkdir(parents=True, exist_ok=True)
    with _service_lock(output_root):
        found = running(output_root)
        if found is not None:
            return found, False
        _stop_leftovers(output_root)
        if ui_port is not None and not _free(ui_port):
            raise UserError(f"--ui-port {ui_port}: already in use on 127.0.0.1; pick another or --no-ui")
        logs = output_root / "service"
        logs.mkdir(exist_ok=True)
        gcs_port = _free_port()
        head = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--include-dashboard=false",
                "--disable-usage-stats", *([f"--num-cpus={num_cpus}"] if num_cpus is not None else []),
                *([f"--num-gpus={num_gpus}"] if num_gpus is not None else [])]
        ray = _spawn(head, logs / "ray.log")
        ui = None
        if ui_port is not None:
            store = embedded_store(output_root)
            ui = _spawn([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                         "--port", str(ui_port), "--workers", "1"], logs / "ui.log")
        service = Service(ray_address=f"127.0.0.1:{gcs_port}", ray_pgid=ray.pid,
                          ui_url=f"http://127.0.0.1:{ui_port}" if ui else None, ui_pgid=ui.pid if ui else None,
                          started=time.strftime("%Y-%m-%d %H:%M:%S"))
        try:
            _wait(lambda: _current_cluster_port() == str(gcs_port), ray, logs / "ray.log", "the Ray head")
            if ui is not None:
                _wait(lambda: _healthy(f"{service.ui_url}/health"), ui, logs / "ui.log", "the MLflow UI")
            write_atomically(output_root / STATE_FILE, json.dumps(asdict(service), indent=2))
        except BaseException:
            _stop_groups([(ray.pid, "ray"), *([(ui.pid, "mlflow")] if ui else [])])
            _drop_marker(str(gcs_port))
            raise
        return service, True


def down(output_root: Path, *, force: bool = False) -> tuple[Service | None, bool]:
    """Stop the service of ``output_root``: (its description, None without one; whether any of its
    processes still ran, False when they had ended and only the file was left). A job attached to
    its Ray head would die with it (Ray's driver aborts a minute after its GCS goes, leaving the parent
    run RUNNING), so a running job in ``output_root`` is a refusal unless ``force``."""
    with _service_lock(output_root):
        if _described(output_root) is not None and not force:
            running_jobs = busy_folders(output_root)
            if running_jobs:
                raise UserError(f"{output_root}: {len(running_jobs)} job(s) running here, which a stopped Ray "
                                f"would kill: {'; '.join(running_jobs)}; let them end or stop them first "
                                f"(--force stops the service anyway)")
        return _stop_leftovers(output_root)


# ------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _service_lock(output_root: Path) -> Iterator[None]:
    lock = FileLock(output_root / "service.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"{output_root}: another tuner up or tuner down is running; wait for it to end") from None
    try:
        yield
    finally:
        lock.release()


def _stop_leftovers(output_root: Path) -> tuple[Service | None, bool]:
    """Stop what a service description names (alive or not) and remove the description; (the
    description, whether a process of it still ran)."""
    service = _described(output_root)
    if service is None:
        return None, False
    ran = _stop_groups([(service.ray_pgid, "ray"), *([(service.ui_pgid, "mlflow")] if service.ui_pgid else [])])
    _drop_marker(service.ray_address.rsplit(":", 1)[1])
    (output_root / STATE_FILE).unlink(missing_ok=True)
    return service, ran


def _drop_marker(port: str) -> None:
    """Remove Ray's current-cluster file if it names the stopped head's ``port`` (it would send "auto"
    to a dead head); another cluster's file stays."""
    if _current_cluster_port() == port:
        RAY_MARKER.unlink(missing_ok=True)


def _described(output_root: Path) -> Service | None:
    """The service ``<output_root>/service.json`` describes, None without one; keys this version does
    not know are ignored (an older or newer tuner's)."""
    state = output_root / STATE_FILE
    if not state.exists():
        return None
    known = {f.name for f in fields(Service)}
    try:
        return Service(**{k: v for k, v in json.loads(state.read_text()).items() if k in known})
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{state}: not a service description ({describe(exc)}); stop what it names by hand "
                        f"and remove the file") from None


def _spawn(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _current_cluster_port() -> str | None:
    """The GCS port of the cluster Ray's ``address="auto"`` finds on this machine."""
    try:
        return RAY_MARKER.read_text().strip().rsplit(":", 1)[-1]
    except OSError:
        return None


def _wait(ready, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"{what} did not start (exit {process.returncode}): {tail[0][:300]} (log: {log})")
        if time.monotonic() > deadline:
            raise UserError(f"{what} did not answer within {START_TIMEOUT_S} s (log: {log})")
        time.sleep(0.2)


def _ours(pgid: int, word: str) -> bool:
    """Whether the process ``pgid`` is alive and its command line names ``word`` (ray, mlflow)."""
    try:
        return word in Path(f"/proc/{pgid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _stop_groups(groups: list[tuple[int, str]]) -> bool:
    """SIGTERM each process group (pgid, the word its leader's command line holds), SIGKILL what is
    left of them after STOP_GRACE_S; a group whose leader is not ours any more is left alone. Whether
    any group was ours and alive."""
    alive = [pgid for pgid, word in groups if _ours(pgid, word)]
    found = bool(alive)
    for pgid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while alive and time.monotonic() < deadline:
        for pgid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)  # our own child (tuner up's failed start): reap it
        alive = [pgid for pgid in alive if _group_alive(pgid)]
        time.sleep(0.1)
    for pgid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE_S  # SIGKILL is not instant: `tuner down` returns once they are gone
    while any(_group_alive(pgid) for pgid in alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _healthy(url: str) -> bool:
    """Whether ``url`` answers 200; a port that speaks something else (BadStatusLine) is not healthy."""
    with contextlib.suppress(OSError, http.client.HTTPException), urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200
    return False


def _free(port: int) -> bool:
    """Whether a server could listen on ``port``: with SO_REUSEADDR, as servers bind, so connections
    a server just closed (TIME_WAIT, right after `tuner down`) do not count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
