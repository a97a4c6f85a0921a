"""Engine settings that only environment variables reach, set around a job or a command (where the
user has not set them) and restored after it: nothing is changed at import. The tracking writer also
sets MLflow's around each delivery, for code that uses it outside a job (the variables are the
process's: a block nested in a job's changes nothing, the job's block holds them).

    with engine_settings():      # a job: Tune's and MLflow's
        ...
    with mlflow_settings():      # a command that talks to MLflow
        ...
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

# Ray Tune's, for the driver of a job.
TUNE_SETTINGS = {
    # Snapshot the experiment state, what `tuner resume` restores from, by Tune's own "auto" period:
    # every 10 s, or 19 times what the last snapshot took, so snapshots take at most 5% of the driver.
    # A snapshot holds every trial: a fixed period of 1 s took most of the driver once a job had
    # thousands of trials (BENCHMARKS.md, section 3), and every step (0) made 1,000 short trials 9x
    # slower. A killed driver loses the trials that ended since the last snapshot: `tuner resume` runs
    # them again, and the journal counts each trial once whatever Tune re-runs (tuner.tracking.callback).
    "TUNE_GLOBAL_CHECKPOINT_S": "auto",
    # Trials checkpoint only on a better epoch and keep one checkpoint each, which makes Tune snapshot
    # often and warn about it on every snapshot; the snapshots are what `tuner resume` restores from.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Tune's automatic loggers less its TensorBoard one: make_tuner passes the CSV and JSON loggers the
    # job's results are read from; TensorBoard's imports torch into the driver (2.5 s of a cold job).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Ray's classic reporter, which prints nothing at verbose=0 (the CLI draws its own progress).
    "RAY_AIR_NEW_OUTPUT": "0",
}

# MLflow's client: short HTTP retries (the journal already buffers, a long retry inside one call would
# hold up every later event, and a command against a dead server answers in seconds), no progress bars.
MLFLOW_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@contextlib.contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """Set the variables the user has not set, for a block; remove them after."""
    added = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def mlflow_settings() -> contextlib.AbstractContextManager:
    return environment(MLFLOW_SETTINGS)


def engine_settings() -> contextlib.AbstractContextManager:
    return environment({**TUNE_SETTINGS, **MLFLOW_SETTINGS})
