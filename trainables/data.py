"""The built-in data sets: digits, IDX (as MNIST ships it), .npz and .csv.

Every loader returns raw arrays; `make_dataset` scales inputs to [0, 1] and splits them into
train/validation/test by a fixed seed, so the test split is the same for every trial and is never
used for selection. The driver loads the data once and puts it in Ray's object store; a loaded
`Dataset` is a data factory like a user's own: ``dataset(config)`` gives the three splits as torch
``TensorDataset``s, each example shaped as an image where the data has one.

    >>> ds = load_dataset({"name": "digits"})
    >>> ds.x_train.shape, ds.num_classes
    ((1257, 64), 10)
    >>> train, val, test = ds({})
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FORMATS = ("idx", "npz", "csv")


@dataclass(frozen=True)
class Scaling:
    """raw -> scaled is ``(raw - offset) / divisor``; kept so a model can take raw inputs later."""

    offset: float
    divisor: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.offset) / self.divisor).astype(np.float32)


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None  # None for regression
    image_shape: tuple[int, int, int] | None  # (channels, height, width) when inputs are images
    scaling: Scaling = field(default_factory=lambda: Scaling(0.0, 1.0))
    # Regression: targets are standardised by the training split's mean and deviation (the loss at
    # init is then about 1, and the lr ranges of the presets fit); the ensemble model undoes it.
    target_scaling: tuple[float, float] | None = None

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def input_scaling(self) -> tuple[float, float]:
        """(offset, divisor): the ensemble model applies it to raw inputs, ``(raw - offset) / divisor``."""
        return self.scaling.offset, self.scaling.divisor

    def __call__(self, config: Mapping[str, Any]) -> tuple:
        """The data factory: (train, val, test) ``TensorDataset``s; ``config`` is not needed here."""
        import torch
        from torch.utils.data import TensorDataset

        shape = self.image_shape or self.x_train.shape[1:]
        return tuple(TensorDataset(torch.from_numpy(x).reshape(len(x), *shape), torch.from_numpy(y))
                     for x, y in ((self.x_train, self.y_train), (self.x_val, self.y_val), (self.x_test, self.y_test)))


def load_dataset(data: Mapping[str, Any], *, task: str = "classification") -> Dataset:
    """Load what a spec's ``data`` section names (already validated by the spec)."""
    split = {k: data[k] for k in ("val_fraction", "test_fraction", "split_seed") if k in data}
    if data.get("name") == "digits":
        x, y, shape = _load_digits()
    else:
        path = Path(data["path"])
        loader = {"idx": load_idx, "npz": load_npz, "csv": load_csv}[data["format"]]
        options = {"label_column": data.get("label_column", "label")} if data["format"] == "csv" else {}
        x, y, shape = loader(path, **options)
    return make_dataset(x, y, image_shape=shape, task=task, **split)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    image_shape: tuple[int, int, int] | None = None,
    task: str = "classification",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split_seed: int = 0,
) -> Dataset:
    """Scale raw inputs to [0, 1] and split them by a fixed seed.

    Classification labels are integers 0..C-1, or any other values (strings, say), which are then
    numbered in sorted order. Regression targets are numbers, kept as they are.
    """
    x = np.asarray(x)
    y = np.asarray(y).reshape(len(y), -1) if task == "regression" else np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    if task == "regression":
        y = y.astype(np.float32).reshape(-1) if y.shape[1] == 1 else y.astype(np.float32)
        num_classes = None
    else:
        if not np.issubdtype(y.dtype, np.integer):
            _, y = np.unique(y, return_inverse=True)  # named classes, numbered in sorted order
        y = y.astype(np.int64)
        if y.min() < 0:
            raise ValueError(f"labels must be 0..C-1 (got {y.min()})")
        num_classes = int(y.max()) + 1
    scaling = _scaling_for(x)
    x = scaling.apply(x.reshape(len(x), -1))
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    n_val = max(1, int(round(len(x) * val_fraction)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    target_scaling = None
    if task == "regression":
        mean, std = float(y[train].mean()), float(y[train].std()) or 1.0
        y, target_scaling = ((y - mean) / std).astype(np.float32), (mean, std)
    return Dataset(
        x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], x_test=x[test], y_test=y[test],
        num_classes=num_classes, image_shape=image_shape, scaling=scaling, target_scaling=target_scaling,
    )


def _scaling_for(x: np.ndarray) -> Scaling:
    if x.dtype == np.uint8:
        return Scaling(0.0, 255.0)
    low, high = float(np.min(x)), float(np.max(x))
    return Scaling(low, (high - low) or 1.0)


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    from sklearn.datasets import load_digits  # scikit-learn ships this 8x8 set offline

    bunch = load_digits()
    # Pixel values are 0..16; scaling to [0, 1] divides by the observed maximum, 16.
    return bunch.data.astype(np.float32), bunch.target, (1, 8, 8)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not): big-endian dims after a magic of 0, 0, dtype, ndim."""
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values for dims {tuple(dims)}")
    return data.reshape(tuple(dims)).astype(np.dtype(dtype).newbyteorder("="))


def find_idx_pair(folder: Path) -> tuple[Path, Path]:
    """The images and labels files in a folder laid out as MNIST ships (``*-images-idx3-ubyte[.gz]``)."""
    images = sorted(folder.glob("*images-idx3-ubyte*"))
    labels = sorted(folder.glob("*labels-idx1-ubyte*"))
    if len(images) != 1 or len(labels) != 1:
        raise FileNotFoundError(f"{folder}: expected one *images-idx3-ubyte[.gz] and one *labels-idx1-ubyte[.gz] file")
    return images[0], labels[0]


def load_idx(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    images, labels = find_idx_pair(path)
    x = read_idx(images)
    y = read_idx(labels)
    return x, y, (1, x.shape[1], x.shape[2])


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int] | None]:
    """An .npz with inputs under ``x`` and labels under ``y``; (N, H, W) or (N, C, H, W) are images."""
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f or "y" not in f:
            raise KeyError(f"{path}: needs arrays named 'x' and 'y' (has {', '.join(f.files)})")
        x, y = f["x"], f["y"]
    shape = None
    if x.ndim == 3:
        shape = (1, x.shape[1], x.shape[2])
    elif x.ndim == 4:
        shape = tuple(x.shape[1:])
    return x, y, shape


def load_csv(path: Path, *, label_column: str = "label") -> tuple[np.ndarray, np.ndarray, None]:
    """A .csv with a header row; ``label_column`` holds the labels (classes or targets), every other column is a feature."""
    import pandas as pd

    frame = pd.read_csv(path)
    if label_column not in frame.columns:
        raise KeyError(f"{path}: no column named {label_column!r} (has {', '.join(map(str, frame.columns[:10]))})")
    y = frame.pop(label_column).to_numpy()
    return frame.to_numpy(dtype=np.float32), y, None
