"""The service's entry points: run a job, resume one, train one config without Ray.

    result = run_job(load_spec("job.yaml"))     # JobSpec -> tuner.job.JobResult
    result = resume_job(RunFolder(path))        # the same parent run, Tune's state restored

Engine settings (Tune's snapshot period, MLflow's HTTP retries) are set around the job and restored
after it (`tuner.settings`); nothing is changed at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.engine import Factories, factories, make_tuner
from tuner.errors import UserError
from tuner.folders import DEFAULT_OUTPUT_ROOT, RunFolder, run_folder_lock
from tuner.job import ChecksFailed, Job, JobFailed, JobResult
from tuner.settings import engine_settings
from tuner.spec import JobSpec

__all__ = ["run_job", "resume_job", "train_once", "trial_config", "factories", "make_tuner", "Factories",
           "ChecksFailed", "JobFailed", "JobResult"]


def run_job(spec: JobSpec, *, output_root: Path = DEFAULT_OUTPUT_ROOT, check: bool = False,
            callbacks: list | None = None, verbose: bool = False) -> JobResult:
    """Run a validated job to its end (see `tuner.job.Job.fit`); with ``check``, the sanity checks
    first (`ChecksFailed` when one fails, nothing left)."""
    with engine_settings():
        job = Job.new(spec, output_root)
        with run_folder_lock(job.folder.path, f"tuner run {spec.name}"):
            return job.fit(check=check, callbacks=callbacks, verbose=verbose)


def resume_job(folder: RunFolder, *, verbose: bool = False) -> JobResult:
    """Finish an interrupted job under its parent run (see `tuner.job.Job.resume`)."""
    with engine_settings(), run_folder_lock(folder.path, f"tuner resume {folder.path.parent.name}"):
        return Job.existing(folder).resume(verbose=verbose)


def trial_config(spec: JobSpec) -> dict[str, Any]:
    """One config of the spec, no search: its constants plus one value per searched knob (the knob's
    default where the space holds it, else a middle value; a conditional knob only where its condition
    holds). An exported spec pins each searched knob to the best trial's value, so this is exactly that
    trial's config."""
    from search_spaces import representative
    from trainables.knobs import DEFAULTS

    return {**spec.trial_config(), **representative(spec.space, DEFAULTS)}


def train_once(spec: JobSpec, *, report) -> None:
    """Train the spec's config once, in this process, no Ray (``tuner train``).

    Torch uses as many threads as a trial had CPUs, so results match the trial's on the same machine.
    """
    import torch

    from trainables.train import fit

    if not spec.service_loop:
        raise UserError(f"{spec.name}: tuner train runs the service's training loop; a job with its own "
                        f"trainable runs with tuner run (num_samples: 1)")
    made = factories(spec)
    torch.set_num_threads(max(1, int(spec.trial.resources.cpu)))
    fit(trial_config(spec), model=made.model, data=made.data, task=spec.task, report=report)  # type: ignore[union-attr]
