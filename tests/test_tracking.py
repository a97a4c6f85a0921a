"""The journal and its delivery: nothing lost while the server is away, nothing duplicated on replay."""

from __future__ import annotations

import socket
from pathlib import Path

from mlflow.tracking import MlflowClient

from tuner.tracking import PARENT_TAG, Journal, Tracker, start_parent_run, sync


def _dead_server() -> str:
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _emit_two_trials(tracker: Tracker) -> None:
    for n, trial in enumerate(["a_1", "b_2"], start=1):
        tracker.emit("trial_start", trial=trial, name=f"trial-00{n}", params={"lr": 0.1 * n, "clip": None})
        for step in (1, 2, 3):
            tracker.emit("metrics", trial=trial, step=step, values={"val_loss": 1.0 / step + n})
    tracker.emit("trial_end", trial="a_1", status="FINISHED", tags={"tuner.end": "finished"})
    tracker.emit("trial_end", trial="b_2", status="FAILED", tags={"tuner.end": "failed", "error": "boom"},
                 traceback="Traceback ...\nValueError: boom")
    tracker.emit("parent", metrics={"best_val_loss": 1.333}, tags={"best_trial": "trial-001"})


def test_events_kept_while_server_is_dead_then_synced_once(tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(tracking_uri=store, experiment="e", job_name="j", params={"a": 1},
                                             spec_yaml="name: j\n", tags={})
    folder = tmp_path / "tracking"
    tracker = Tracker(folder, tracking_uri=_dead_server(), experiment_id=experiment_id, parent_run_id=parent)
    _emit_two_trials(tracker)
    left = tracker.close(timeout_s=1)
    assert left == 11 and tracker.last_error  # nothing reached the dead server, all kept on disk

    delivered, left = sync(folder, tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent)
    assert (delivered, left) == (11, 0)
    client = MlflowClient(store)
    children = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    assert sorted((r.info.run_name, r.info.status) for r in children) == [("trial-001", "FINISHED"),
                                                                          ("trial-002", "FAILED")]
    failed = next(r for r in children if r.info.run_name == "trial-002")
    assert failed.data.tags["error"] == "boom" and failed.data.params == {"lr": "0.2", "clip": "null"}
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "val_loss")] == [1, 2, 3]
    assert client.get_run(parent).data.metrics["best_val_loss"] == 1.333

    # A second sync has nothing to do; a full replay (as after a crash before `delivered` was
    # written) finds the runs by their trial tag instead of creating new ones.
    assert sync(folder, tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent) == (0, 0)
    (folder / "delivered").write_text("0")
    assert sync(folder, tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent) == (11, 0)
    again = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    assert len(again) == 2


def test_live_tracker_delivers_in_order(tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(tracking_uri=store, experiment="e", job_name="j", params={},
                                             spec_yaml="name: j\n", tags={})
    tracker = Tracker(tmp_path / "tracking", tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent)
    _emit_two_trials(tracker)
    assert tracker.close(timeout_s=30) == 0
    assert Journal(tmp_path / "tracking").delivered == 11


def test_a_tracker_opened_before_the_parent_run_journals_then_delivers_it_all(tmp_path: Path):
    """A job's trials start before its parent run exists (tuner.job): the writer journals them, and
    delivers what it holds once it is given the run; one that never gets it delivers nothing."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tmp_path / "tracking", tracking_uri=store)
    _emit_two_trials(tracker)
    assert tracker.delivery is None and Journal(tmp_path / "tracking").delivered == 0
    experiment_id, parent = start_parent_run(tracking_uri=store, experiment="e", job_name="j", params={},
                                             spec_yaml="name: j\n", tags={})
    tracker.deliver_to(experiment_id, parent)
    assert tracker.close(timeout_s=30) == 0
    assert Journal(tmp_path / "tracking").delivered == 11
    runs = MlflowClient(store).search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    assert len(runs) == 2

    refused = Tracker(tmp_path / "refused", tracking_uri=store)
    _emit_two_trials(refused)
    assert refused.close(timeout_s=30) == 11  # nothing delivered, nothing lost from the journal


def test_journal_ignores_a_line_cut_short_by_a_crash(tmp_path: Path):
    journal = Journal(tmp_path)
    journal.append({"op": "metrics", "trial": "a", "step": 1, "time": 0, "values": {"x": 1}})
    journal.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"op": "metr')
    again = Journal(tmp_path)
    assert len(again.events) == 1
    # The next event (a resumed job's) does not run into the cut line: it is cut off first.
    again.append({"op": "metrics", "trial": "a", "step": 2, "time": 0, "values": {"x": 2}})
    again.close()
    assert [e["step"] for e in Journal(tmp_path).events] == [1, 2]


class FakeTrial:
    """The parts of a Tune trial the callback reads."""

    def __init__(self, trial_id: str, index: int) -> None:
        self.trial_id, self.experiment_tag, self.config = trial_id, f"{index}_x=1", {"x": 1}
        self.last_result = {"score": 0.5}

    def is_finished(self) -> bool:
        return True


def test_a_resumed_job_squares_the_journal_with_the_trials_tune_restored(tmp_path: Path):
    from tuner.tracking import TrackingCallback, open_writer

    folder = tmp_path / "tracking"
    journal = Journal(folder)  # what the killed driver left: a ended, b and c started
    for n, trial in enumerate(["a", "b", "c"], start=1):
        journal.append({"op": "trial_start", "time": n, "trial": trial, "name": f"trial-00{n}", "params": {}})
    journal.append({"op": "trial_end", "time": 4, "trial": "a", "status": "FINISHED", "tags": {}})
    journal.close()

    tracker = open_writer(folder, tracking_uri=_dead_server(), experiment_id="1", parent_run_id="p")
    import pickle

    callback = pickle.loads(pickle.dumps(TrackingCallback(folder=folder, metric="score", mode="min")))
    callback.setup()
    # Tune restored a (its snapshot had it still running) and b; c started after the last snapshot.
    a, b, c2 = FakeTrial("a", 1), FakeTrial("b", 2), FakeTrial("c2", 3)
    callback.on_step_begin(0, [a, b])
    for trial in (a, b, c2):
        callback.on_trial_start(0, [a, b, c2], trial)
        callback.on_trial_result(0, [a, b, c2], trial, {"score": 0.5, "training_iteration": 1})
        callback.on_trial_complete(0, [a, b, c2], trial)
    callback.on_step_begin(1, [a, b, c2])  # squared once, at the first step only
    assert tracker.close(timeout_s=0) > 0
    new = [(e["op"], e.get("trial")) for e in Journal(folder).events[4:]]
    assert new[0] == ("trial_forget", "c")  # Tune forgot c: its run goes, c2 takes its place
    assert ("trial_end", "a") not in new and ("trial_start", "a") not in new  # a ended once, before
    assert [t for op, t in new if op == "trial_end"] == ["b", "c2"]
    assert [op for op, _ in new].count("trial_forget") == 1


def test_a_forgotten_trials_run_is_deleted_and_one_never_delivered_is_never_made(tmp_path: Path):
    from mlflow.entities import ViewType

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(tracking_uri=store, experiment="e", job_name="j", params={},
                                             spec_yaml="name: j\n", tags={})
    folder = tmp_path / "tracking"
    journal = Journal(folder)
    journal.append({"op": "trial_start", "time": 1, "trial": "c", "name": "trial-003", "params": {}})
    journal.close()
    assert sync(folder, tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent) == (1, 0)
    journal = Journal(folder)
    journal.append({"op": "trial_forget", "time": 2, "trial": "c", "tags": {"tuner.end": "forgotten"}})
    journal.append({"op": "trial_start", "time": 3, "trial": "d", "name": "trial-004", "params": {}})
    journal.append({"op": "trial_forget", "time": 4, "trial": "d", "tags": {"tuner.end": "forgotten"}})
    journal.close()
    assert sync(folder, tracking_uri=store, experiment_id=experiment_id, parent_run_id=parent) == (3, 0)
    client = MlflowClient(store)
    flt = f"tags.`{PARENT_TAG}` = '{parent}'"
    assert client.search_runs([experiment_id], filter_string=flt) == []
    deleted = client.search_runs([experiment_id], filter_string=flt, run_view_type=ViewType.DELETED_ONLY)
    assert [(r.info.run_name, r.data.tags["tuner.end"]) for r in deleted] == [("trial-003", "forgotten")]


def test_a_callback_pickled_by_an_older_layout_comes_back_and_the_best_so_far_goes_on(tmp_path: Path):
    from tuner.tracking import TrackingCallback, open_writer

    folder = tmp_path / "tracking"
    journal = Journal(folder)
    journal.append({"op": "parent", "time": 1, "step": 1, "metrics": {"best_score": 0.2}, "tags": {}})
    journal.close()
    old = TrackingCallback.__new__(TrackingCallback)
    old.__setstate__({"settings": {"folder": folder, "tracking_uri": "x"}, "metric": "score", "mode": "min",
                      "max_t": None})
    assert old.folder == folder and old.resources == {"cpu": 1.0, "gpu": 0.0}
    tracker = open_writer(folder, tracking_uri=_dead_server(), experiment_id="1", parent_run_id="p")
    old.setup()
    assert old.best == 0.2  # a trial ending at 0.3 after a resume is no new best
    worse = FakeTrial("w", 1)
    worse.last_result = {"score": 0.3, "time_total_s": 2.0}
    old.on_trial_complete(0, [worse], worse)
    tracker.close(timeout_s=0)
    events = Journal(folder).events
    assert [e["op"] for e in events] == ["parent", "trial_end"]
    assert events[1]["metrics"] == {"trial_wall_s": 2.0, "cpu_s": 2.0, "gpu_s": 0.0}


def test_a_trial_the_job_closed_when_it_was_stopped_is_journaled_again_when_a_resume_runs_it(tmp_path: Path):
    from tuner.tracking import TrackingCallback, open_writer

    folder = tmp_path / "tracking"
    journal = Journal(folder)
    journal.append({"op": "trial_start", "time": 1, "trial": "s", "name": "trial-001", "params": {}})
    journal.append({"op": "trial_end", "time": 2, "trial": "s", "status": "KILLED",
                    "tags": {"tuner.end": "stopped: the job was stopped (SIGTERM, e.g. tuner stop)"}})
    journal.close()
    tracker = open_writer(folder, tracking_uri=_dead_server(), experiment_id="1", parent_run_id="p")
    callback = TrackingCallback(folder=folder, metric="score", mode="min")
    callback.setup()
    stopped = FakeTrial("s", 1)
    callback.on_step_begin(0, [stopped])  # Tune restored it: nothing forgotten
    callback.on_trial_start(0, [stopped], stopped)
    callback.on_trial_complete(0, [stopped], stopped)
    tracker.close(timeout_s=0)
    new = [(e["op"], e.get("status")) for e in Journal(folder).events[2:]]
    assert new == [("trial_start", None), ("trial_end", "FINISHED"), ("parent", None)]  # parent: a new best


def test_a_trial_is_charged_every_run_it_had(tmp_path: Path):
    """Ray's time_since_restore starts again at 0 each time a trial is restored (here: once in a job
    stopped by `tuner stop`, once more in the resumed job, a retry after a failure): each run's
    seconds count once, a result seen twice counts once."""
    from tuner.tracking import TrackingCallback, open_writer
    from tuner.tracking.callback import trained_seconds

    folder = tmp_path / "tracking"
    journal = Journal(folder)  # the stopped job: 2 s of training, charged when it was closed
    journal.append({"op": "trial_start", "time": 1, "trial": "s", "name": "trial-001", "params": {}})
    journal.append({"op": "metrics", "time": 2, "trial": "s", "step": 2, "values": {"score": 1.0}, "seconds": 2.0})
    journal.append({"op": "trial_end", "time": 3, "trial": "s", "status": "KILLED", "metrics": {"trial_wall_s": 2.0},
                    "tags": {"tuner.end": "stopped: the job was stopped (SIGTERM, e.g. tuner stop)"}})
    journal.close()
    tracker = open_writer(folder, tracking_uri=_dead_server(), experiment_id="1", parent_run_id="p")
    callback = TrackingCallback(folder=folder, metric="score", mode="min", resources={"cpu": 2.0, "gpu": 0.5})
    callback.setup()
    trial = FakeTrial("s", 1)
    callback.on_step_begin(0, [trial])
    callback.on_trial_start(0, [trial], trial)
    for iterations, seconds in [(1, 1.0), (2, 3.0), (2, 3.0), (1, 0.5)]:  # a retry after 3 s (the 3rd: a repeat)
        callback.on_trial_result(0, [trial], trial, {"score": 0.5, "training_iteration": iterations,
                                                     "iterations_since_restore": iterations,
                                                     "time_since_restore": seconds})
    callback.on_trial_complete(0, [trial], trial)
    tracker.close(timeout_s=0)
    events = Journal(folder).events
    end = [e for e in events if e["op"] == "trial_end"][-1]
    assert end["metrics"] == {"trial_wall_s": 5.5, "cpu_s": 11.0, "gpu_s": 2.75}  # 2 + 3 + 0.5 s
    assert trained_seconds(events) == {"s": 5.5}


def test_training_time_counts_rays_results_only_and_each_once():
    from tuner.tracking.names import TrainingTime, charged

    time = TrainingTime()
    time.add("a", {"score": 1.0, "time_total_s": 9.0})  # not a result of Ray's Trainable: nothing to count
    assert time.seconds("a") == 0.0 and charged(time.seconds("a"), {"time_total_s": 9.0}) == 9.0
    for iterations, seconds in [(1, 2.0), (2, 4.0), (2, 4.0), (1, 1.0), (2, 3.0)]:  # restored after 4 s
        time.add("a", {"iterations_since_restore": iterations, "time_since_restore": seconds})
    assert time.seconds("a") == 7.0 and time.seconds("b") == 0.0
