"""MNIST from its IDX files as a torch Dataset: your own data, as tuner takes it.

tuner calls ``load(config)`` in each trial's process and trains on the first two of the three
datasets it returns; the third, the test split, scores the ensemble once at the end. Each yields
``(x, y)``: here a (1, 28, 28) float image, standardised, and an integer class.

The folder comes from the job's ``fixed: {data_path: ...}``, relative to this file (or absolute).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent
MEAN, STD = 0.1307, 0.3081  # MNIST's pixel mean and standard deviation, after scaling to [0, 1]


def read_idx(path: Path) -> np.ndarray:
    """One IDX file: two zero bytes, a type byte (0x08: unsigned bytes), the rank, big-endian sizes, the data."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    rank = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=rank, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


class Mnist(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy((images.astype(np.float32) / 255 - MEAN) / STD).unsqueeze(1)
        self.targets = torch.from_numpy(labels.astype(np.int64))  # torchvision's name: tuner reads labels here

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.targets[i]


def load(config: dict) -> tuple[Mnist, Mnist, Mnist]:
    """70% train, 15% validation, 15% test, the same split for every trial (seed 0)."""
    folder = HERE / config["data_path"]
    images = read_idx(next(folder.glob("*images-idx3-ubyte*")))
    labels = read_idx(next(folder.glob("*labels-idx1-ubyte*")))
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = n_val = int(0.15 * len(labels))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return tuple(Mnist(images[i], labels[i]) for i in (train, val, test))
