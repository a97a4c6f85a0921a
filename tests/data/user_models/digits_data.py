"""A user's own data factory: scikit-learn's digits as a plain torch Dataset (not a TensorDataset,
so the service's loop reads it through a DataLoader), images of (1, 8, 8) scaled to [0, 1].

The split (70/15/15, seed 0) is easy to rebuild elsewhere, which the ensemble tests do in a fresh process.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset


def split():
    """(train, val, test) indices."""
    n = 1797
    order = np.random.default_rng(0).permutation(n)
    n_test = n_val = int(0.15 * n)
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


class Digits(Dataset):
    def __init__(self, idx):
        bunch = load_digits()
        self.x = torch.tensor(bunch.data[idx] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
        self.y = torch.tensor(bunch.target[idx], dtype=torch.int64)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def load(config):
    return tuple(Digits(idx) for idx in split())
