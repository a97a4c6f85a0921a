"""A trainable whose worker process dies once, mid-training: what `trial.max_failures` is for.

It checkpoints every epoch; the first run kills its own process (as the OOM killer or a lost node
would) after epoch ``die_after``. Ray restarts the trial from its last checkpoint.
"""

import json
import os
import tempfile
from pathlib import Path

from ray import tune


def train(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["epoch"]
    marker = Path(config["marker_dir"]) / f"died-{config['x']}"
    for epoch in range(start, config.get("epochs", 6)):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch + 1}))
            tune.report({"score": config["x"] + 1.0 / (epoch + 1), "started_at_epoch": start},
                        checkpoint=tune.Checkpoint.from_directory(folder))
        if epoch + 1 == config["die_after"] and not marker.exists():
            marker.touch()
            os._exit(1)
