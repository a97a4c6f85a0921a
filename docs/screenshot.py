"""Refresh docs/mlflow-ui.png: a job's parent run and its child runs in the MLflow UI.

    python docs/screenshot.py        # runs a 6-trial demo job in a temporary folder, then the picture

It drives Debian's headless Chromium (packages chromium and chromium-driver, nothing downloaded)
through Selenium. tests/test_browser.py uses the same functions to check the UI in CI.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# No background traffic: this machine's network is closed, and Chromium would keep trying.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1500,900")


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} not found: apt-get install chromium chromium-driver"
    return None


def start_ui(output_dir: Path, port: int) -> tuple[subprocess.Popen, str]:
    """`tuner ui` on a job folder's store, in its own process group; returns it and its first line."""
    ui = subprocess.Popen([sys.executable, "-m", "tuner.cli", "ui", "--output-dir", str(output_dir), "--port", str(port)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    first_line = ui.stdout.readline().strip()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", ui, what="tuner ui")
    except RuntimeError:
        stop(ui)
        raise
    return ui, first_line


def wait_for_http(url: str, process: subprocess.Popen, *, what: str, timeout_s: float = 90) -> None:
    """Wait until ``url`` answers; fail early if ``process`` (the server) exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not answer at {url}") from None
            time.sleep(0.5)


def stop(*processes: subprocess.Popen) -> None:
    """Stop processes started with start_new_session=True, and their children, by their process
    groups: SIGTERM to every group at once, then SIGKILL to those still there 5 s later (a
    `ray start --block` head waits out SIGTERM far longer): one wait for all, not one each."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def show_job(driver, url: str, experiment_id: str, job: str, *, timeout_s: float = 60) -> list[str]:
    """Open the experiment's runs table, expand the job's parent run; return the child run names shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout_s)
    driver.get(f"{url}/#/experiments/{experiment_id}/runs")
    parent = wait.until(lambda d: d.find_element(By.XPATH, f"//a[contains(@href,'/runs/')]/span[text()='{job}']"))
    expand = parent.find_element(By.XPATH, "./ancestor::span[contains(@class,'ag-cell-value')][1]//button")
    expand.click()
    wait.until(lambda d: d.find_elements(By.XPATH, "//a[contains(@href,'/runs/')]/span[starts-with(text(),'trial-')]"))
    for close in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):  # the assistant side panel
        if close.is_displayed():
            close.click()
    time.sleep(1)  # let the table settle after the panel closes
    names = [e.text for e in driver.find_elements(By.XPATH, "//a[contains(@href,'/runs/')]/span")]
    return sorted(n for n in names if re.fullmatch(r"trial-\d+", n))


def main() -> int:
    out = ROOT / "docs" / "mlflow-ui.png"
    if reason := missing_browser():
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tuner-shot-") as tmp:
        runs = Path(tmp)
        subprocess.run([sys.executable, "-m", "tuner.cli", "run", "examples/digits-mlp.yaml", "--set",
                        "search.num_samples=6", "--set", "trial.epochs=5", "--output-dir", str(runs)],
                       cwd=ROOT, check=True)
        ui, _ = start_ui(runs, 5057)
        driver = browser()
        try:
            names = show_job(driver, "http://127.0.0.1:5057", "1", "digits-mlp")
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
            stop(ui)
    print(f"wrote {out.relative_to(ROOT)} ({len(names)} child runs shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
