"""A Ray Tune trainable reporting a metric named as many libraries name it, `acc@1`: legal in Ray,
refused by MLflow (names take only alphanumerics, _ - . : / and spaces)."""

from ray import tune


def train(config):
    for epoch in range(3):
        tune.report({"acc@1": config["x"] * (epoch + 1), "loss": 1.0 - config["x"] / (epoch + 1)})
