"""What every benchmark shares: a quiet in-process Ray, the machine's description, results files, tables."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MNIST = ROOT.parent / "shared" / "data" / "mnist10k"
USER_CODE = ROOT / "bench"

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def machine() -> dict[str, Any]:
    import mlflow
    import optuna
    import ray
    import torch

    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform(),
            "ray": ray.__version__, "optuna": optuna.__version__, "mlflow": mlflow.__version__,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def cpu_model() -> str:
    """The CPU's name as Linux gives it: the same code ran about twice as fast on one machine of this
    project's kind as on another (BENCHMARKS.md), so each results file says which it ran on."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def start_ray(num_cpus: int = 2) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, runtime_env={"env_vars": {"PYTHONPATH": str(USER_CODE)}})
    sys.path.insert(0, str(USER_CODE))
    for noisy in ("ray", "mlflow", "alembic", "optuna", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def save(name: str, rows: list[dict[str, Any]], **extra: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "command": " ".join(sys.argv),
                                **extra, "rows": rows}, indent=2, default=str))
    return path


def table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        view.add_row(*[_cell(row.get(c)) for c in columns])
    Console(width=200).print(view)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple) and all(isinstance(v, float) for v in value):
        return "(" + ", ".join(f"{v:.3g}" for v in value) + ")"
    return "-" if value is None else str(value)


def journal_events(output_root: Path, job: str) -> list[dict[str, Any]]:
    """The events of the newest run of ``job`` under ``output_root``, from its journal
    (`tracking/events.jsonl`: one JSON object a line, ``op`` and ``time`` in ms among its keys)."""
    journal = sorted(output_root.glob(f"{job}/*/tracking/events.jsonl"))[-1]
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def median(values: list[float]) -> float:
    return statistics.median(values)


class Timer:
    """Wall seconds; also CPU seconds of this process (all its threads) and of the whole machine.

    CPU time leaves out the time a process waited for a core, so it tells where the work went; on
    these virtual machines it is no steadier than wall time (the same trials took 27-45 s of CPU).
    """

    def __enter__(self) -> Timer:
        self.start, self._cpu, self._machine = time.perf_counter(), time.process_time(), machine_cpu_s()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_s = time.process_time() - self._cpu
        self.machine_cpu_s = machine_cpu_s() - self._machine


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine has used since boot (user, nice, system, irq); Linux."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
    ticks = sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
    return ticks / os.sysconf("SC_CLK_TCK")


def tuner_run(spec: Path, output_dir: Path, code: Path = ROOT, *, checks: bool = False) -> float:
    """Wall seconds of one whole `tuner run` of ``spec`` (the sanity checks skipped unless ``checks``),
    in a fresh process started in the spec's folder, with ``code`` first on the path (the driver's and,
    through PYTHONPATH, the workers'): what a user times. Raises with the command's output when it fails."""
    import subprocess

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tuner.cli", "run", str(spec), "--output-dir", str(output_dir),
                           *([] if checks else ["--skip-checks"])], cwd=spec.parent,
                          env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{spec} ({code}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return wall


def time_tuner_run(spec_text: str, code: Path = ROOT) -> float:
    """`tuner_run` of a spec's text, in a temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "job.yaml"
        spec.write_text(spec_text)
        return tuner_run(spec, Path(tmp) / "out", code)
