"""scikit-learn's diabetes data (442 patients, 10 features, disease progression after a year) as
torch datasets: your own data, as tuner takes it. It ships with scikit-learn: nothing to download.

Features and the target are standardised with the training split's mean and deviation, so the
loss at init is about the target's variance (1) and ``val_rmse`` is in standard deviations of the
target (multiply by ``TARGET_STD``, about 77, for the original units).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from torch.utils.data import TensorDataset


def load(config: dict) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """70% train, 15% validation, 15% test, the same split for every trial (``split_seed``, default 0)."""
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(config.get("split_seed", 0)).permutation(len(y))
    n_test = n_val = int(0.15 * len(y))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()

    def split(idx: np.ndarray) -> TensorDataset:
        features = torch.tensor((x[idx] - x_mean) / x_std, dtype=torch.float32)
        return TensorDataset(features, torch.tensor((y[idx] - y_mean) / y_std, dtype=torch.float32))

    return split(train), split(val), split(test)
