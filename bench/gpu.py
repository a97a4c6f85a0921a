"""Trials per GPU: the built-in CNN on MNIST-10k with 1, 2, 4 and 8 trials sharing one GPU
(`trial.resources.gpu` 1, 0.5, 0.25, 0.125), mixed precision off and on. Each arm is a whole
`tuner run` in a fresh process; `nvidia-smi` is sampled twice a second meanwhile.

    python -m bench gpu [--epochs 3] [--packings 1 2 4 8]

Reports trials per hour, the GPU's mean utilisation and its peak memory, per arm. Without CUDA it
prints one line and writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import MNIST, save, table, tuner_run

JOB = """name: gpu-{packing}-{amp}
model: cnn
data: {{path: {mnist}, format: idx}}
metric: val_loss
mode: min
search: {{algorithm: random, num_samples: {trials}, max_concurrent: {packing}, seed: 0,
          space: {{lr: {{loguniform: [0.0003, 0.01]}}, dropout: {{uniform: [0.0, 0.5]}}}}}}
trial: {{epochs: {epochs}, resources: {{cpu: 1, gpu: {gpu}}}}}
fixed: {{batch_size: 128, amp: {amp}}}
ensemble: {{top_k: 0}}
"""


class GpuSampler:
    """`nvidia-smi` utilisation (%) and memory used (MiB) of GPU 0, every ``period_s``."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s, self.samples = period_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            out = subprocess.run(["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, memory = (float(v) for v in out.stdout.strip().split(","))
                self.samples.append((util, memory))


def run_arm(packing: int, amp: bool, epochs: int) -> dict:
    trials = 2 * packing  # each slot runs two trials
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "job.yaml"
        spec.write_text(JOB.format(packing=packing, amp=str(amp).lower(), mnist=MNIST, trials=trials, epochs=epochs,
                                   gpu=1 / packing))
        with GpuSampler() as gpu:
            wall = tuner_run(spec, Path(tmp) / "out")
    utils = [u for u, _ in gpu.samples]
    return {"trials_per_gpu": packing, "amp": amp, "trials": trials, "wall_s": wall,
            "trials_per_hour": trials * 3600 / wall, "gpu_util_mean": statistics.mean(utils) if utils else None,
            "gpu_memory_peak_mib": max((m for _, m in gpu.samples), default=None)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench gpu: skipped, no CUDA device here (torch.cuda.is_available() is False)")
        return
    card = torch.cuda.get_device_name(0)
    rows = [run_arm(packing, amp, args.epochs) for packing in args.packings for amp in (False, True)]
    table(rows, ["trials_per_gpu", "amp", "trials", "wall_s", "trials_per_hour", "gpu_util_mean", "gpu_memory_peak_mib"],
          f"trials sharing one {card}, CNN on MNIST-10k, {args.epochs} epochs each")
    save("gpu", rows, card=card, epochs=args.epochs)


if __name__ == "__main__":
    main(sys.argv[1:])
