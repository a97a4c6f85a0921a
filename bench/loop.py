"""The service's training loop against a minimal hand-written PyTorch loop, on the same user model and data.

Workload: the ResNet of examples/mnist-resnet (8 channels, one block per stage, batchnorm) on the
MNIST test split through its own data factory (examples/mnist-resnet/mnist.py: a plain Dataset, so
both loops read it through a DataLoader), batches of 128, Adam, 4 epochs, one torch thread (as a
trial with 1 CPU). Falls back to scikit-learn's digits through the same model when MNIST is absent.

Arms, each run in its own fresh process, alternating which goes first (ABBA) over ``--pairs`` pairs:
  hand-written   what a user writes: shuffle, forward, cross-entropy, backward, step; validation loss
                 and accuracy after each epoch
  service        `trainables.train.fit` with a no-op report: the same, plus what the service adds
                 (init/dropout knobs, the pre-clip gradient norm, the lr schedule, the divergence
                 check, the loss at init, a checkpoint on every better epoch)

Reported: seconds per epoch and CPU seconds per run of each arm, and the median of the pairs'
ratios (service / hand-written), of wall time and of CPU time, each with a bootstrap 95% interval.
Both arms run one thread, so CPU time is their work, without the machine's noise in wall time.
Target: the loop costs at most 5% more.

    python -m bench.loop [--pairs 4] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import MNIST, ROOT, median, save, table

EXAMPLE = ROOT / "examples" / "mnist-resnet"
CONFIG = {"channels": 8, "depth": 1, "batchnorm": True, "batch_size": 128, "lr": 0.01, "optimizer": "adam",
          "seed": 0, "data_path": str(MNIST)}


def _workload():
    """(model factory, data factory, name) of the benchmark's user model and data."""
    sys.path.insert(0, str(EXAMPLE))
    import mnist
    import resnet

    if MNIST.is_dir():
        return resnet.build, mnist.load, "resnet on mnist10k"
    from trainables.data import load_dataset

    return resnet.build, load_dataset({"name": "digits"}), "resnet on digits (MNIST absent)"


def hand_written(epochs: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    build, load, _ = _workload()
    started = time.perf_counter()  # like the service arm: data and model set-up counted in
    torch.manual_seed(0)
    train, val, _ = load(CONFIG)
    x0, _ = train[0]
    model = build(CONFIG, tuple(x0.shape), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    loader = DataLoader(train, batch_size=CONFIG["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            total, correct, n = 0.0, 0, 0
            for x, y in DataLoader(val, batch_size=1024):
                out = model(x)
                total += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
                n += len(y)
    return {"epoch_s": (time.perf_counter() - started) / epochs, "val_loss": total / n, "val_acc": correct / n}


def service(epochs: int) -> dict[str, float]:
    from trainables.train import fit

    build, load, _ = _workload()
    history: list[dict[str, float]] = []
    marks: list[float] = []

    def report(metrics, checkpoint):
        history.append(metrics)
        marks.append(time.perf_counter())

    started = time.perf_counter()
    fit({**CONFIG, "epochs": epochs}, model=build, data=load, report=report)
    # From fit's call to its last report: its set-up (data, model, the loss at init) counted in.
    return {"epoch_s": (marks[-1] - started) / epochs, "val_loss": history[-1]["val_loss"],
            "val_acc": history[-1]["val_acc"]}


def _child(arm: str, epochs: int) -> None:
    import torch

    torch.set_num_threads(1)
    cpu = time.process_time()
    row = {"hand-written": hand_written, "service": service}[arm](epochs)
    print(json.dumps({**row, "cpu_s": time.process_time() - cpu}))


def _run(arm: str, epochs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.loop", "--child", arm, "--epochs", str(epochs)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--child", choices=["hand-written", "service"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.epochs)
    if args.pairs < 2:
        parser.error("--pairs must be at least 2 (the interval needs pairs to resample)")
    runs: list[dict] = []
    for pair in range(args.pairs):
        order = ["hand-written", "service"] if pair % 2 == 0 else ["service", "hand-written"]
        results = {arm: _run(arm, args.epochs) for arm in order}
        runs.append({"pair": pair + 1, "first": order[0], **{f"{arm}_{k}": v for arm, r in results.items()
                                                                for k, v in r.items()},
                     "ratio": results["service"]["epoch_s"] / results["hand-written"]["epoch_s"],
                     "cpu_ratio": results["service"]["cpu_s"] / results["hand-written"]["cpu_s"]})
        print(f"pair {pair + 1}: hand-written {results['hand-written']['epoch_s']:.3f} s/epoch, "
              f"service {results['service']['epoch_s']:.3f} s/epoch", flush=True)
    ratios = [r["ratio"] for r in runs]
    cpu_ratios = [r["cpu_ratio"] for r in runs]
    low, high = _interval(ratios)
    summary = [{"arm": arm, "s per epoch (median)": median([r[f"{arm}_epoch_s"] for r in runs]),
                "CPU s per run (median)": median([r[f"{arm}_cpu_s"] for r in runs]),
                "val_acc (last run)": runs[-1][f"{arm}_val_acc"]} for arm in ("hand-written", "service")]
    summary[1]["wall: service / hand-written"] = median(ratios)
    summary[1]["wall 95% interval"] = (low, high)
    summary[1]["CPU: service / hand-written"] = median(cpu_ratios)
    summary[1]["CPU 95% interval"] = _interval(cpu_ratios)
    _, _, workload = _workload()
    table(summary, ["arm", "s per epoch (median)", "CPU s per run (median)", "val_acc (last run)",
                    "wall: service / hand-written", "wall 95% interval", "CPU: service / hand-written",
                    "CPU 95% interval"],
          f"the training loop, {workload}, {args.epochs} epochs, {args.pairs} pairs")
    path = save("loop", runs, workload=workload, epochs=args.epochs, config=CONFIG, summary=summary)
    print(f"results: {path.relative_to(ROOT)}")


def _interval(ratios: list[float]) -> tuple[float, float]:
    import numpy as np
    from scipy.stats import bootstrap

    result = bootstrap((np.array(ratios),), np.median, confidence_level=0.95, n_resamples=2000,
                       method="percentile", random_state=0)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


if __name__ == "__main__":
    main(sys.argv[1:])
