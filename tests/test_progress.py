"""What a user sees: the live progress view, and a piped `tuner run` log that is short and plain."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console

from tests.conftest import EXAMPLES, ROOT
from tuner.progress import ProgressCallback


def _trial(n: int, lr: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{n}", experiment_tag=f"{n}_lr={lr}", config={"lr": lr, "width": 32},
                           status="RUNNING")


def _drive(progress: ProgressCallback, outcomes: list[str]) -> None:
    """Run trials through the callback as Tune would: start, three results, an end."""
    progress.setup()
    progress.on_step_begin(0, [])
    for n, outcome in enumerate(outcomes, start=1):
        trial = _trial(n, 0.1 * n)
        progress.on_trial_start(0, [trial], trial)
        for epoch in (1, 2, 3):
            done = outcome == "stopped" and epoch == 2
            progress.on_trial_result(0, [trial], trial, {progress.metric: 1.0 / n + 1.0 / epoch,
                                                         "training_iteration": epoch, "done": done})
            if done:
                break
        if outcome == "failed":
            progress.on_trial_error(0, [trial], trial)
        else:
            progress.on_trial_complete(0, [trial], trial)
    progress.on_experiment_end([])


def test_plain_lines_in_a_pipe_are_few_and_escape_free():
    buffer = io.StringIO()
    progress = ProgressCallback(total=4, metric="val_loss", mode="min", searched=["lr"], max_t=3,
                                console=Console(file=buffer, force_terminal=False), every_s=20)
    _drive(progress, ["finished", "failed", "stopped", "finished"])
    lines = buffer.getvalue().splitlines()
    assert "\x1b" not in buffer.getvalue()
    assert len(lines) == 2  # the start and the end; nothing in between within 20 s
    assert lines[0].startswith("[0:00] 0/4 trials done")
    assert "4/4 trials done (2 finished, 1 stopped, 1 failed), 0 running" in lines[-1]
    assert "best val_loss 0.5833 (trial-004: lr=0.4)" in lines[-1]
    assert progress.counts == {"finished": 2, "stopped": 1, "failed": 1}


def test_live_view_on_a_terminal_draws_a_bar_and_the_best_trial():
    buffer = io.StringIO()
    progress = ProgressCallback(total=2, metric="val_acc", mode="max", searched=["lr"],
                                console=Console(file=buffer, force_terminal=True, width=120))
    _drive(progress, ["finished", "finished"])
    text = buffer.getvalue()
    assert "\x1b[" in text and "2/2" in text
    assert "best val_acc 2 (trial-001: lr=0.1)" in text  # mode max: 1/1 + 1/1 at epoch 1 wins


def test_the_progress_callback_pickles_without_its_console():
    import pickle

    progress = ProgressCallback(total=1, metric="val_loss", mode="min", searched=["lr"])
    _drive(progress, ["finished"])
    copy = pickle.loads(pickle.dumps(progress))
    assert copy.counts == {"finished": 0, "stopped": 0, "failed": 0} and copy.console is not None


@pytest.mark.slow
def test_a_piped_four_trial_run_prints_a_short_plain_log_ending_in_the_summary(tmp_path):
    """Issue 9's acceptance: the log of `tuner run ... > file` has no escape codes and ends in the summary."""
    log = tmp_path / "run.log"
    with open(log, "w") as handle:
        code = subprocess.call(
            [sys.executable, "-m", "tuner.cli", "run", str(EXAMPLES / "digits-mlp.yaml"), "--set",
             "search.num_samples=4", "--set", "trial.epochs=3", "--set", "ensemble.top_k=2",
             "--output-dir", str(tmp_path / "runs")],
            stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "TERM": "xterm-256color"},
            timeout=300)
    text = log.read_text()
    assert code == 0, text
    assert "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) <= 25, text
    assert lines[0].startswith("[0:00] 0/4 trials done")
    assert any("4/4 trials done" in line for line in lines)
    assert "digits-mlp: 4 trials: 4 finished" in text and "top trials by val_loss" in text
    assert "ensemble of 2: test acc" in text and "MLflow UI: http://127.0.0.1:5000/#/experiments/" in text
    assert lines[-1].startswith("export: tuner export digits-mlp -o best.yaml")
