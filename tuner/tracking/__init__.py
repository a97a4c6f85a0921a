"""MLflow tracking: one parent run per job, one child run per trial, written only by the driver.

    journal.py   an append-only file of events on disk (<run folder>/tracking/events.jsonl)
    delivery.py  the events applied to MLflow in order, idempotently; the parent run; `tuner sync`
    writer.py    the job's one writer: the journal plus a thread that delivers it every few seconds
    callback.py  the Ray Tune callback (trial events -> journal) and each trial's final status
    names.py     MLflow's naming rules, run names, and the typed records `TrialEnd` and `RankedTrial`

The callback never talks to MLflow, so a slow or dead tracking server cannot stall Tune's event
loop; what is still undelivered when a job ends stays in the journal for `tuner sync`.
Credentials for a secured server come from MLflow's own environment variables
(MLFLOW_TRACKING_USERNAME / PASSWORD / TOKEN) and are never logged.
"""

from tuner.tracking.callback import TrackingCallback, job_cost, trial_statuses
from tuner.tracking.delivery import Delivery, fluent_tracking_uri, share_trials_view, start_parent_run, sync
from tuner.tracking.journal import Journal, JournalWriteError
from tuner.tracking.names import (JOB_TAG, PARENT_TAG, TRIAL_TAG, RankedTrial, TrialEnd, improves, legal_name,
                                  legal_names, stopped_early, trial_name, trial_run_name, what_stopped)
from tuner.tracking.writer import Tracker, open_writer, writer_for

__all__ = ["TrackingCallback", "job_cost", "trial_statuses", "Delivery", "fluent_tracking_uri", "share_trials_view", "start_parent_run", "sync",
           "Journal", "JournalWriteError", "JOB_TAG", "PARENT_TAG", "TRIAL_TAG", "RankedTrial", "TrialEnd",
           "improves", "legal_name", "legal_names", "stopped_early", "trial_name", "trial_run_name", "what_stopped", "Tracker",
           "open_writer", "writer_for"]
