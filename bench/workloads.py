"""Fixed-work trainables for the benchmarks (shipped to Ray workers on PYTHONPATH as `workloads`)."""

import time

from ray import tune


def sleep_trainable(config):
    """``epochs`` reports, each after ``epoch_s`` seconds of "work"."""
    for epoch in range(config["epochs"]):
        time.sleep(config["epoch_s"])
        tune.report({"loss": config["x"] + 1.0 / (epoch + 1), "epoch": epoch + 1})


def noop_trainable(config):
    """One report, no work: what a trial costs the machinery."""
    tune.report({"loss": sum(float(v) for v in config.values() if isinstance(v, (int, float)))})


def varied_trainable(config):
    """``epochs`` reports of ``epoch_s * (0.5 + x)`` seconds each: trials of unequal length, as real ones are."""
    for epoch in range(config["epochs"]):
        time.sleep(config["epoch_s"] * (0.5 + config["x"]))
        tune.report({"loss": (config["x"] - 0.3) ** 2 + 1.0 / (epoch + 1), "epoch": epoch + 1})
