"""What a user sees: the live progress view, and the plain lines of a piped run (a whole piped `tuner run` is
checked in tests/test_own_model.py::test_your_model_end_to_end_through_the_cli)."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

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
