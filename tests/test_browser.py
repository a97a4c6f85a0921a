"""`tuner ui` serves a finished job's store, and headless Chromium finds the parent run and its children."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, small_spec
from tuner.run import run_job
from tuner.tracking import PARENT_TAG

from screenshot import browser, missing_browser, show_job, start_ui, stop  # noqa: E402 - docs/ is on sys.path (conftest)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_job(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    spec = small_spec(root, name="ui-job", search={"num_samples": 3, "algorithm": "random"})
    return root, run_job(spec, output_root=root)


@pytest.fixture(scope="module")
def ui(finished_job):
    root, _ = finished_job
    port = free_port()
    process, first_line = start_ui(root, port)
    yield f"http://127.0.0.1:{port}", first_line
    stop(process)


def test_tuner_ui_prints_its_url_and_serves_the_jobs_store(finished_job, ui):
    root, result = finished_job
    url, first_line = ui
    assert first_line == f"MLflow UI for {result.tracking_uri}: {url}"
    client = MlflowClient(url)  # the UI's server answers MLflow's REST API on the same store
    children = client.search_runs([result.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert len(children) == 3


def test_headless_chromium_finds_the_parent_run_and_its_child_runs(finished_job, ui):
    if reason := missing_browser():
        pytest.skip(reason)
    _, result = finished_job
    url, _ = ui
    driver = browser()
    try:
        names = show_job(driver, url, result.experiment_id, "ui-job")
    finally:
        driver.quit()
    assert names == sorted(result.statuses) == ["trial-001", "trial-002", "trial-003"]


@pytest.fixture(scope="module")
def dashboard(finished_job):
    import subprocess
    import sys

    from screenshot import wait_for_http

    root, _ = finished_job
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tuner.cli", "dashboard", "ui-job", "--output-dir", str(root),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    try:
        first_line = process.stdout.readline().strip()
        wait_for_http(f"http://127.0.0.1:{port}/api/studies", process, what="tuner dashboard")
        yield f"http://127.0.0.1:{port}", first_line
    finally:
        stop(process)


def test_tuner_dashboard_serves_the_jobs_stored_study(finished_job, dashboard):
    import json
    import urllib.request

    _, result = finished_job
    url, first_line = dashboard
    state = json.loads((result.run_folder / "job.json").read_text())
    assert first_line == f"optuna-dashboard for study {state['study_name']}: {url}/dashboard/studies"
    with urllib.request.urlopen(f"{url}/api/studies", timeout=10) as answer:
        (summary,) = json.load(answer)["study_summaries"]
    assert summary["study_name"] == state["study_name"] and summary["directions"] == ["minimize"]
    with urllib.request.urlopen(f"{url}/api/studies/{summary['study_id']}", timeout=10) as answer:
        trials = json.load(answer)["trials"]
    assert len(trials) == 3 and all(t["state"] == "Complete" for t in trials)


def test_headless_chromium_finds_the_jobs_trials_in_the_dashboard(finished_job, dashboard):
    if reason := missing_browser():
        pytest.skip(reason)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import json
    import urllib.request

    url, _ = dashboard
    with urllib.request.urlopen(f"{url}/api/studies", timeout=10) as answer:
        (summary,) = json.load(answer)["study_summaries"]
    driver = browser()
    try:
        driver.get(f"{url}/dashboard/studies/{summary['study_id']}/trials")
        WebDriverWait(driver, 60).until(lambda d: "3 Trials" in d.find_element(By.TAG_NAME, "body").text)
        text = driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    assert all(f"Trial {n}" in text for n in range(3)) and text.count("Complete") >= 3
