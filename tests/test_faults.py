"""Nothing lost, round 2: what an attacker's or a careless user's hands did to the landed code.

Each test names the README guarantee it holds; together they are README's fault matrix.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import DATA, children, free_port
from tuner.cli import app
from tuner.errors import TrackingUnavailable
from tuner.folders import RunFolder, new_run_folder, run_folder_lock, store_lock
from tuner.spec import spec_from_mapping
from tuner.tracking import Delivery, Journal, JournalWriteError, legal_name, start_parent_run, sync

CLI = [sys.executable, "-m", "tuner.cli"]


_STORES: dict[str, str] = {}


def _store(tmp_path: Path) -> tuple[str, str, str]:
    """A new parent run in this module's one SQLite store (a new store costs MLflow's migrations, ~2 s)."""
    uri = _STORES.setdefault("uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id, parent = start_parent_run(tracking_uri=uri, experiment="e", job_name="j", params={},
                                             spec_yaml="name: j\n", tags={})
    return uri, experiment_id, parent


def _journal_trials(folder: Path, trials: int) -> None:
    journal = Journal(folder)
    for n in range(trials):
        journal.append({"op": "trial_start", "time": 1, "trial": f"t{n}", "name": f"trial-{n:03d}",
                        "params": {"x": n}})
        journal.append({"op": "metrics", "time": 1, "trial": f"t{n}", "step": 1, "values": {"loss": n}})
        journal.append({"op": "trial_end", "time": 2, "trial": f"t{n}", "status": "FINISHED", "tags": {}})
    journal.close()


# ------------------------------------------------------------------------- 1. names MLflow refuses


@pytest.mark.parametrize("name, legal", [("acc@1", "acc_1"), ("val/loss", "val/loss"), ("a//b", "a__b"),
                                         ("../x", "___x"), ("/x", "_x"), ("top-5 acc:val", "top-5 acc:val"),
                                         ("", "_"), ("x" * 300, "x" * 250)])
def test_names_map_to_ones_mlflow_takes(tmp_path, name, legal):
    assert legal_name(name) == legal
    uri, _, parent = _store(tmp_path)
    MlflowClient(uri).log_batch(parent, metrics=[Metric(legal, 1.0, 0, 0)], params=[Param(legal, "v")])


def test_a_refused_item_is_dropped_with_a_warning_and_everything_else_arrives(tmp_path, caplog):
    """A name that reached the journal unmapped (written by hand here) cannot block the delivery."""
    uri, experiment_id, parent = _store(tmp_path)
    journal = Journal(tmp_path / "tracking")
    journal.append({"op": "trial_start", "time": 1, "trial": "t0", "name": "trial-000", "params": {"x": 1}})
    journal.append({"op": "metrics", "time": 1, "trial": "t0", "step": 1, "values": {"acc@1": 0.5, "loss": 0.3}})
    journal.append({"op": "trial_end", "time": 2, "trial": "t0", "status": "FINISHED", "tags": {}})
    journal.append({"op": "parent_end", "time": 3, "status": "FINISHED"})
    journal.close()
    assert sync(tmp_path / "tracking", tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent) == (4, 0)
    _, parent_run, (child,) = children(uri, parent)
    assert child.data.metrics == {"loss": 0.3} and child.data.tags["tuner.dropped"] == "acc@1"
    assert child.info.status == "FINISHED" and parent_run.info.status == "FINISHED"
    assert "MLflow refused metric 'acc@1'" in caplog.text


@pytest.mark.slow
def test_a_trainable_reporting_acc_at_1_reaches_mlflow_renamed(ray_session, tmp_path):
    from tuner.run import run_job

    spec = spec_from_mapping({
        "name": "odd", "trainable": "odd_names:train", "code_dir": str(DATA / "user_trainables"),
        "metric": "acc@1", "mode": "max", "ensemble": {"top_k": 0}, "fixed": {"warmup@start": 2},
        "search": {"algorithm": "random", "num_samples": 3, "space": {"x": {"uniform": [0.1, 0.9]}}}})
    result = run_job(spec, output_root=tmp_path)
    assert result.undelivered == 0 and sorted(result.statuses.values()) == ["FINISHED"] * 3
    client, parent, runs = children(result.tracking_uri, result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["tuner.renamed.best_acc_1"] == "best_acc@1"
    assert parent.data.metrics["best_acc_1"] == pytest.approx(result.best_value)
    assert parent.data.params["fixed.warmup_start"] == "2"
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["tuner.renamed.acc_1"] == "acc@1"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "acc_1")] == [1, 2, 3]
        assert run.data.params["warmup_start"] == "2"


# -------------------------------------------------------------------- 2. exactly once, concurrently


def test_two_tuner_sync_at_once_deliver_each_trial_once(tmp_path):
    uri, experiment_id, parent = _store(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    _journal_trials(folder / "tracking", 20)
    RunFolder(folder).write_state(name="j", tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent)
    procs = [subprocess.Popen([*CLI, "sync", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in outs)
    refused = [err for code, _, err in outs if code == 2]
    assert codes in ([0, 0], [0, 2]), outs  # the second either waited its turn (nothing left) or was refused
    if refused:
        assert "in use by `tuner sync`" in refused[0] and refused[0].count("\n") == 1
    _, _, runs = children(uri, parent)
    assert len(runs) == 20 and len({r.data.tags["tuner.trial_id"] for r in runs}) == 20


def test_a_command_on_a_locked_run_folder_says_who_holds_it_and_exits_2(tmp_path):
    uri, experiment_id, parent = _store(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    RunFolder(folder).write_state(name="j", tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tuner.folders import run_folder_lock
        with run_folder_lock(Path({str(folder)!r}), "tuner run j"):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in (["sync", str(folder)], ["resume", str(folder)]):
            result = CliRunner().invoke(app, command)
            assert result.exit_code == 2, result.output
            assert f"in use by `tuner run j` (pid {holder.pid}" in result.output
            assert result.output.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()
    # kill -9 releases it (the operating system's lock): the next command gets the folder.
    with run_folder_lock(folder, "tuner sync"):
        pass


def test_a_lost_reply_to_create_run_never_makes_a_second_run(tmp_path):
    """The server made the run but the answer was lost: the retry finds it by its trial tag."""
    uri, experiment_id, parent = _store(tmp_path)
    _journal_trials(tmp_path / "tracking", 1)
    delivery = Delivery(tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent)
    real = delivery.client.create_run

    def made_then_lost(*args, **kwargs):
        real(*args, **kwargs)
        delivery.client.create_run = real
        raise ConnectionError("connection reset by peer")

    delivery.client.create_run = made_then_lost
    events = Journal(tmp_path / "tracking").pending()
    with pytest.raises(ConnectionError):
        delivery.apply(events)
    assert delivery.apply(events) == len(events)
    _, _, runs = children(uri, parent)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


# ------------------------------------------------------------------- 3. full disk and power loss

_FILL = """
import resource, sys
from pathlib import Path
from tuner.tracking import Journal, JournalWriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a disk that is full after 4 KB
journal = Journal(Path(sys.argv[1]))
n = 0
try:
    while True:
        journal.append({"op": "metrics", "time": 0, "trial": "t", "step": n, "values": {"loss": 0.123456789}})
        n += 1
except JournalWriteError as exc:
    print(n, exc)
"""


def test_a_full_disk_stops_the_journal_with_one_line_and_no_cut_line(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _FILL, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    count, message = proc.stdout.split(" ", 1)
    assert "cannot write the tracking journal" in message and "File too large" in message
    data = (tmp_path / "events.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(data) <= 4096  # whole lines only: the failed one was cut back
    journal = Journal(tmp_path)
    assert journal.damaged == 0 and [e["step"] for e in journal.events] == list(range(int(count)))
    journal.append({"op": "metrics", "time": 0, "trial": "t", "step": -1, "values": {}})  # room again: goes on


def test_damaged_lines_are_skipped_and_a_damaged_delivered_file_replays(tmp_path):
    uri, experiment_id, parent = _store(tmp_path)
    folder = tmp_path / "tracking"
    _journal_trials(folder, 2)
    with open(folder / "events.jsonl", "ab") as f:
        f.write(b'\x00\x00{"op": garbage}\n[1, 2]\n')  # what a power loss can leave in a block
    (folder / "delivered").write_text("")  # renamed before its data reached the disk
    journal = Journal(folder)
    assert journal.damaged == 2 and journal.delivered == 0 and len(journal.events) == 8
    journal.close()
    assert sync(folder, tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent) == (8, 0)
    assert sync(folder, tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent) == (0, 0)
    assert len(children(uri, parent)[2]) == 2


def test_journal_writes_fsync_state_changes(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    journal = Journal(tmp_path)
    journal.append({"op": "metrics", "time": 0, "trial": "t", "step": 1, "values": {}})
    assert synced == []
    journal.append({"op": "trial_end", "time": 0, "trial": "t", "status": "FINISHED"})
    assert len(synced) == 1
    journal.mark_delivered(2)  # write, fsync, rename, fsync the folder
    assert len(synced) == 3 and (tmp_path / "delivered").read_text() == "2"


# ------------------------------------------------------------------- 4. a failure after the start


def test_a_data_file_that_does_not_parse_fails_the_parent_run_with_one_line(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\nx,4,1\n5,6,0\n")
    (tmp_path / "job.yaml").write_text("name: bad-data\nmodel: mlp\ndata: {path: bad.csv, format: csv}\n"
                                       "search: {num_samples: 1}\n")
    proc = subprocess.run([*CLI, "run", "job.yaml", "--skip-checks"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "bad-data: the job failed: ValueError" in line and "parent run FAILED" in line
    uri = f"sqlite:///{tmp_path / 'tuner_runs' / 'mlflow.db'}"
    (parent,) = MlflowClient(uri).search_runs(["1"])
    assert parent.info.status == "FAILED" and parent.data.tags["error"].startswith("ValueError")
    (folder,) = (tmp_path / "tuner_runs" / "bad-data").iterdir()
    assert json.loads((folder / "job.json").read_text())["status"] == "failed"
    assert "Traceback" in (folder / "error.txt").read_text()
    check = CliRunner().invoke(app, ["check", str(tmp_path / "job.yaml")])
    assert check.exit_code == 2 and check.output.count("\n") == 1 and "could not run: ValueError" in check.output


# --------------------------------------------------------------------------------- 5, 6. input


def test_cli_one_liners_for_a_quoted_job_name_and_a_damaged_job_json(tmp_path):
    uri, _, _ = _store(tmp_path)
    shown = CliRunner().invoke(app, ["show", "x'", "--tracking-uri", uri])
    assert shown.exit_code == 2 and "not a job name" in shown.output and "Traceback" not in shown.output
    folder = tmp_path / "runs" / "j" / "20260101-000000"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text('{"tracking_uri": ')
    synced = CliRunner().invoke(app, ["sync", str(folder)])
    assert synced.exit_code == 2 and "job.json: damaged" in synced.output


def test_control_characters_from_a_spec_never_reach_the_terminal(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text('name: x\n"\\e[2J\\e[31mred": 1\n')
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "\x1b" not in result.output and "\\x1b[2J" in result.output


@pytest.mark.parametrize("uri", ["sqlite:////var/lib/mlflow/mlflow.db", "databricks", "databricks://profile",
                                 "sqlite:///sub/mlflow.db"])
def test_tracking_uris_mlflow_users_write_are_accepted(uri):
    assert spec_from_mapping({"name": "x", "mlflow": {"tracking_uri": uri}}).mlflow.tracking_uri == uri


# ------------------------------------------------------------------------------------ 7. secrets


def test_submit_ships_code_not_secrets_or_results(tmp_path):
    from tuner.submit import _copy_code

    code = tmp_path / "project"
    for path, text in {"model.py": "x = 1", "pkg/__init__.py": "", "pkg/layers.py": "y = 2", ".env": "KEY=s3cret",
                       ".env.local": "KEY=s3cret", ".ray/auth_token": "tok", "tuner_runs/mlflow.db": "db",
                       "tuner_runs/j/1/ray/checkpoint_000001/model.pt": "w", "notes.db": "db",
                       "secret_data/rows.csv": "1,2", ".gitignore": "secret_data/\n*.log\n", "train.log": "log",
                       "weights/pretrained.pt": "w"}.items():
        (code / path).parent.mkdir(parents=True, exist_ok=True)
        (code / path).write_text(text)
    staged = tmp_path / "staged"
    _copy_code(code, staged)
    shipped = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert shipped == [".gitignore", "model.py", "pkg/__init__.py", "pkg/layers.py", "weights/pretrained.pt"]


@pytest.mark.parametrize("where", ["/", "~"])
def test_submit_refuses_a_code_dir_that_is_the_disk_or_a_home(tmp_path, where):
    from tuner.errors import UserError
    from tuner.submit import _copy_code

    with pytest.raises(UserError, match="code_dir: .* is the whole disk or a home folder"):
        _copy_code(Path(where).expanduser(), tmp_path / "staged")


# --------------------------------------------------------------------------------------- 8. hangs


def test_jobs_api_and_tracking_reads_against_a_server_that_never_answers_fail_in_one_line(tmp_path, monkeypatch):
    import tuner.submit as submit

    monkeypatch.setattr(submit, "REQUEST_TIMEOUT_S", 3)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(submit.UserError, match="no answer within 3 s"):
            submit.status(address, "tuner-x-1")
        assert time.monotonic() - started < 10
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["show", "x", "--tracking-uri", dead])  # MLflow's retries: the service's 1
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "did not answer" in result.output
    assert time.monotonic() - started < 30, result.output
    with pytest.raises(TrackingUnavailable, match="did not answer when asked to start the job's parent run"):
        from tuner.errors import tracking_errors

        with tracking_errors(dead, "start the job's parent run"):
            start_parent_run(tracking_uri=dead, experiment="e", job_name="j", params={}, spec_yaml="", tags={})


# ----------------------------------------------------------------------------- 9. two jobs at once


def test_two_jobs_starting_together_get_their_own_folders_and_one_new_store(tmp_path):
    spec = spec_from_mapping({"name": "twin"})
    folders, errors = [], []

    def start():
        try:
            folders.append(new_run_folder(spec, tmp_path).path)
            uri = f"sqlite:///{tmp_path / 'new.db'}"
            with store_lock(uri):
                start_parent_run(tracking_uri=uri, experiment="twin", job_name="twin", params={}, spec_yaml="",
                                 tags={})
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(folders)) == 4
    assert len(MlflowClient(f"sqlite:///{tmp_path / 'new.db'}").search_runs(["1"])) == 4


@pytest.mark.slow
def test_a_journal_that_cannot_be_written_mid_job_stops_it_with_the_parent_failed(ray_session, tmp_path,
                                                                                    monkeypatch):
    """The disk fills while trials report: Tune stops, the parent run is FAILED with the reason."""
    from tests.conftest import small_spec
    from tuner.run import JobFailed, run_job

    real = Journal.append
    appended = []

    def fills_up(self, event):
        appended.append(event["op"])
        if len(appended) > 6 and event["op"] == "metrics":
            raise JournalWriteError(f"cannot write the tracking journal {self.events_path}: No space left on device")
        return real(self, event)

    monkeypatch.setattr(Journal, "append", fills_up)
    with pytest.raises(JobFailed, match="the job failed: .*JournalWriteError: .*No space left on device") as caught:
        run_job(small_spec(tmp_path, search={"num_samples": 4}), output_root=tmp_path)
    assert "\n" not in str(caught.value)
    (parent,) = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        ["1"], filter_string="tags.`tuner.job` = 't'")
    assert parent.info.status == "FAILED" and "No space left on device" in parent.data.tags["error"]
