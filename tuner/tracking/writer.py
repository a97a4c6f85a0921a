"""The writer: a job's one MLflow writer, a journal plus a thread that delivers it.

Deliveries run every few seconds (fewer, larger batches cost the trials much less than one call per
event); while the server is away the writer waits longer between tries and the journal keeps
everything.

Tune restores a job's callbacks by unpickling them, so the `TrackingCallback` cannot be handed its
writer: it finds it with `writer_for(folder)`, the one lookup of open writers in a process
(`open_writer` registers a job's writer, `Tracker.close` removes it).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from tuner.errors import describe
from tuner.settings import mlflow_settings
from tuner.tracking.delivery import Delivery
from tuner.tracking.journal import Journal
from tuner.tracking.names import now_ms

log = logging.getLogger(__name__)

_RETRY_WAIT_S = (1, 2, 4, 8)  # waits between delivery attempts while the server is away
_FLUSH_S = 2.0  # the writer delivers what accumulated this often

# The open writers of this process, by run folder: how a callback Tune unpickled finds its job's.
_OPEN: dict[Path, "Tracker"] = {}


def open_writer(folder: Path, *, tracking_uri: str, experiment_id: str | None = None,
                parent_run_id: str | None = None) -> "Tracker":
    """Open the writer of a run folder's journal (one per folder in a process). Without the parent run
    it journals only, and delivers from `Tracker.deliver_to` on."""
    folder = folder.resolve()
    if folder in _OPEN:
        raise RuntimeError(f"{folder}: a tracking writer is already open for this run folder")
    _OPEN[folder] = Tracker(folder, tracking_uri=tracking_uri, experiment_id=experiment_id,
                            parent_run_id=parent_run_id)
    return _OPEN[folder]


def writer_for(folder: Path) -> "Tracker":
    """The open writer of a run folder (the job opens it before Tune starts)."""
    try:
        return _OPEN[folder.resolve()]
    except KeyError:
        raise RuntimeError(f"{folder}: no tracking writer is open for this run folder; a job opens it "
                           "before Tune starts (tuner.job.Job)") from None


class Tracker:
    """The job's one MLflow writer: a journal plus a thread that delivers it.

    One per run folder in a process (`open_writer`), shared by the Tune callback and the job, which
    logs its results after `Tuner.fit`.
    """

    def __init__(self, folder: Path, *, tracking_uri: str, experiment_id: str | None = None,
                 parent_run_id: str | None = None) -> None:
        self.journal = Journal(folder)
        self.tracking_uri = tracking_uri
        self.delivery: Delivery | None = None  # from `deliver_to` on
        self._stop = threading.Event()
        self._failures = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        if parent_run_id is not None:
            self.deliver_to(experiment_id or "", parent_run_id)

    def deliver_to(self, experiment_id: str, parent_run_id: str) -> None:
        """Start delivering the journal (what it holds already included) to the job's parent run. A
        job's trials may start before that run exists: Tune starts while MLflow's store is opened."""
        if self.delivery is not None:
            raise RuntimeError(f"{self.journal.events_path}: the writer already delivers to a parent run")
        self.delivery = Delivery(tracking_uri=self.tracking_uri, experiment_id=experiment_id,
                                 parent_run_id=parent_run_id)
        self._thread = threading.Thread(target=self._run, name="tuner-mlflow-writer", daemon=True)
        self._thread.start()

    def emit(self, op: str, **fields: Any) -> None:
        """Journal one event; ``time`` (ms) defaults to now."""
        self.journal.append({"op": op, "time": now_ms(), **fields})

    def _deliver_once(self) -> bool:
        """Try to deliver everything pending; True when nothing is left."""
        with mlflow_settings():  # short HTTP retries: a dead server must not hold the writer for minutes
            return self._deliver_pending()

    def _deliver_pending(self) -> bool:
        pending = self.journal.pending()
        if not pending:
            return True
        delivered = 0
        try:
            delivered = self.delivery.apply(pending)
        except Exception as exc:  # noqa: BLE001 - an outage (refused items were dropped in Delivery): keep, retry
            self._failures += 1
            self.last_error = describe(exc)
            if self._failures == 1:
                log.warning("tracking server unreachable (%s); buffering events on disk", self.last_error)
            delivered = self.delivery.progress
        else:
            if self._failures:
                log.warning("tracking server is back; delivered the buffered events")
            self._failures = 0
        if delivered:
            self.journal.mark_delivered(delivered)
        return delivered == len(pending)

    def _run(self) -> None:
        # Deliver every _FLUSH_S, not on every event: fewer, larger batches cost the trials (which
        # share the machine's cores with this thread) much less than one call per event.
        while not self._stop.wait(_FLUSH_S):
            if not self._deliver_once():
                self._stop.wait(_RETRY_WAIT_S[min(self._failures, len(_RETRY_WAIT_S)) - 1])

    def close(self, *, timeout_s: float = 30.0) -> int:
        """Stop the writer, then keep delivering until done or ``timeout_s``; return events left undelivered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + timeout_s
        while self.delivery is not None and not self._deliver_once() and time.monotonic() < deadline:
            time.sleep(_RETRY_WAIT_S[min(self._failures, len(_RETRY_WAIT_S)) - 1])
        left = len(self.journal.pending())
        self.journal.close()
        _OPEN.pop(self.journal.events_path.parent.resolve(), None)
        return left
