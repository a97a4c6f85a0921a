"""Data loaders: digits, IDX (the real MNIST test split), npz, csv; fixed splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from tests.conftest import MNIST
from trainables.data import load_dataset, make_dataset, read_idx


def test_digits_scaled_and_split_by_seed():
    a, b = load_dataset({"name": "digits"}), load_dataset({"name": "digits"})
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0
    assert np.array_equal(a.y_test, b.y_test)
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    other = load_dataset({"name": "digits", "split_seed": 1})
    assert not np.array_equal(a.y_test, other.y_test)


def test_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes()
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.tobytes())
    assert np.array_equal(read_idx(tmp_path / "t-images-idx3-ubyte.gz"), images)


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST-10k not found at {MNIST}")
def test_real_mnist_test_split_loads():
    ds = load_dataset({"path": str(MNIST), "format": "idx"})
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 10_000
    assert ds.x_train.max() <= 1.0 and ds.scaling.divisor == 255.0


def test_npz_and_csv(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (40, 6, 6)).astype(np.uint8)
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset({"path": str(tmp_path / "d.npz"), "format": "npz"})
    assert ds.image_shape == (1, 6, 6) and ds.num_classes == 4
    (tmp_path / "d.csv").write_text("f1,f2,label\n" + "\n".join(f"{i},{i * 2},{i % 3}" for i in range(30)))
    ds = load_dataset({"path": str(tmp_path / "d.csv"), "format": "csv"})
    assert ds.input_dim == 2 and ds.num_classes == 3 and ds.x_train.max() <= 1.0


def test_labels_must_match_inputs():
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        make_dataset(np.zeros((3, 2)), np.zeros(2))
