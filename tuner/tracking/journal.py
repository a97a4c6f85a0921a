"""The journal: an append-only file of tracking events on disk, and how far delivery got.

Everything a job tells MLflow is first a line in ``<run folder>/tracking/events.jsonl``; the
writer (`tuner.tracking.writer`) delivers the lines in order and records the count in
``delivered``. A job that ends with the server away leaves the rest for `tuner sync`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from tuner.errors import UserError
from tuner.folders import write_atomically

log = logging.getLogger(__name__)


class JournalWriteError(UserError):
    """The journal could not be written (a full disk, a file-size limit): the job stops."""

    exit_code = 1


class Journal:
    """An append-only JSON-lines file of events and the count already delivered.

    Durable where the protocol needs it: an event that changes a run's state (a trial's start or end,
    the parent's results and end, an artifact) is fsync'd before `append` returns, so a power loss
    keeps every event `tuner resume` relies on; metric rows reach the disk with the next such event
    (a power loss can lose the last seconds of a running trial's metrics, never a trial). A write
    that fails (a full disk) is cut back to the last whole line and raises `JournalWriteError`; a
    damaged line found on opening is skipped and counted in ``damaged``.
    """

    DURABLE_OPS = frozenset({"trial_start", "trial_end", "parent", "parent_end", "artifact"})

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.events_path = folder / "events.jsonl"
        self.delivered_path = folder / "delivered"
        self.events: list[dict[str, Any]] = []
        self.damaged = 0
        if self.events_path.exists():
            data = self.events_path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) < len(data):
                # A line a crash cut short: cut it off, or the next event (a resumed job's) would run into it.
                with open(self.events_path, "r+b") as f:
                    f.truncate(len(complete))
            for line in complete.splitlines():
                if not line.strip():
                    continue
                event = _parse_event(line)
                if event is None:  # kept as a place-holder: `delivered` counts lines, damaged ones included
                    self.damaged += 1
                    event = {"op": "damaged"}
                self.events.append(event)
            if self.damaged:
                log.warning("%s: skipped %d damaged line(s)", self.events_path, self.damaged)
        self.delivered = self._read_delivered()
        self._fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def _read_delivered(self) -> int:
        if not self.delivered_path.exists():
            return 0
        text = self.delivered_path.read_text().strip()
        if text.isdigit() and int(text) <= len(self.events):
            return int(text)
        # Deliveries are idempotent (runs found by their trial tag, the same values again): replay all.
        log.warning("%s: damaged (%r); delivering the journal again from its start", self.delivered_path, text[:20])
        return 0

    def append(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, default=str) + "\n").encode()
        with self._lock:
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                written = 0
                while written < len(line):
                    written += os.write(self._fd, line[written:])
                if event["op"] in self.DURABLE_OPS:
                    os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)  # never leave a cut line for the next event to run into
                raise JournalWriteError(f"cannot write the tracking journal {self.events_path}: "
                                        f"{exc.strerror or exc}") from None
            self.events.append(event)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.events[self.delivered :]

    def mark_delivered(self, count: int) -> None:
        self.delivered += count
        write_atomically(self.delivered_path, str(self.delivered))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _parse_event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("op"), str) else None
