"""Live progress of a running job, in the driver: a Ray Tune callback that only draws.

On a terminal it is a rich live view (a bar over the N trials, the counts, the best trial so far,
elapsed time and ETA), redrawn a few times a second. In a pipe, a file or CI it prints plain lines
with no escape codes: one when the job starts, one every ``every_s`` seconds while it runs (a few
a minute), and one at the end.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from tuner.tracking import improves, stopped_early, trial_name


class ProgressCallback(Callback):
    def __init__(self, *, total: int, metric: str, mode: str, searched: list[str], max_t: int | None = None,
                 console: Console | None = None, every_s: float = 20.0) -> None:
        self.total, self.metric, self.mode, self.searched, self.max_t = total, metric, mode, searched, max_t
        self.console = console or Console(highlight=False)
        self.every_s = every_s
        self.counts = {"finished": 0, "stopped": 0, "failed": 0}
        self.running: set[str] = set()
        self.stopped: set[str] = set()
        self.best: tuple[float, str, dict[str, Any]] | None = None  # (value, trial name, searched config)
        self.started = time.monotonic()
        self._printed = 0.0
        self._seen_trials = False
        self._live: Live | None = None
        self._bar: Progress | None = None

    # ------------------------------------------------------------------------------ what it says

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def eta_s(self) -> float | None:
        """Remaining time if the trials left take as long as the ones done so far."""
        if not self.done:
            return None
        return (time.monotonic() - self.started) / self.done * (self.total - self.done)

    def summary(self) -> str:
        c = self.counts
        line = (f"{self.done}/{self.total} trials done ({c['finished']} finished, {c['stopped']} stopped, "
                f"{c['failed']} failed), {len(self.running)} running")
        if self.best:
            value, name, config = self.best
            line += f"; best {self.metric} {value:.4g} ({name}: {config_text(config)})"
        return line

    def _line(self) -> str:
        eta = self.eta_s()
        clock = f"[{_clock(time.monotonic() - self.started)}]"
        return f"{clock} {self.summary()}" + (f"; ETA {_clock(eta)}" if eta is not None and self.done < self.total else "")

    def _view(self) -> Group:
        return Group(self._bar, Text(self.summary(), overflow="fold"))  # type: ignore[arg-type]

    def _update(self, *, force: bool = False) -> None:
        if self._live is not None:
            self._bar.update(self._task, completed=self.done)  # type: ignore[union-attr]
            self._live.update(self._view())
        elif force or time.monotonic() - self._printed >= self.every_s:
            self._printed = time.monotonic()
            self.console.print(self._line(), markup=False, soft_wrap=True)

    # ----------------------------------------------------------------------------- Tune's events

    def setup(self, **info: Any) -> None:
        self.started = time.monotonic()
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[eta]}"), console=self.console)
            self._task = self._bar.add_task("trials", total=self.total, eta="")
            self._live = Live(self._view(), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._update(force=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._seen_trials:  # after `tuner resume`: count the trials that ended before the restart
            self._seen_trials = True
            for trial in trials:
                if trial.status == "TERMINATED":
                    self.counts["finished"] += 1
                elif trial.status == "ERROR":
                    self.counts["failed"] += 1

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._update()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if stopped_early(result, self.max_t):
            self.stopped.add(trial.trial_id)
        value = result.get(self.metric)
        if improves(value, self.best[0] if self.best else None, self.mode):
            self.best = (float(value), trial_name(trial), {k: trial.config.get(k) for k in self.searched})
        if self._bar is not None:
            eta = self.eta_s()
            self._bar.update(self._task, eta=f"ETA {_clock(eta)}" if eta is not None else "")
        self._update()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.counts["stopped" if trial.trial_id in self.stopped else "finished"] += 1
        self._update()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.counts["failed"] += 1
        self._update()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._live is not None:
            self._update()
            self._live.stop()
            self._live = None
        else:
            self._update(force=True)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; the live view and the console stay behind.
        return {**self.__dict__, "_live": None, "_bar": None, "console": None, "_seen_trials": False,
                "counts": {k: 0 for k in self.counts}, "running": set(), "stopped": set()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.console = Console(highlight=False)


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def fmt(value: Any) -> str:
    """A config value as the terminal shows it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in config.items())
