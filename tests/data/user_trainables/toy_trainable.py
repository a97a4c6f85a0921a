"""A user's own Ray Tune function trainable, written as in Ray Tune's docs (not part of the project)."""

import random
import time

from ray import tune


def train(config):
    x = config["x"]
    if x > config.get("fail_above", 2.0):
        raise ValueError(f"x={x:.3f} is out of range for this model")
    if x > config.get("oom_above", 2.0):
        import torch

        torch.empty(2**45, dtype=torch.uint8)  # 32 TiB: the allocator refuses, as a real OOM does
    for epoch in range(config.get("epochs", 6)):
        # jitter: a random extra wait (the OS's randomness, not a seeded one), so trials end in another order each run
        time.sleep(config.get("sleep", 0.0) + random.SystemRandom().uniform(0, config.get("jitter", 0.0)))
        tune.report({"score": (x - 0.3) ** 2 + 1.0 / (epoch + 1), "epoch": epoch + 1})
