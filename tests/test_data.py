import gzip
import hashlib
import struct

import numpy as np
import pytest
from conftest import ROOT

from robustlab._validate import validate_arrays
from robustlab.data import Dataset, load
from robustlab.errors import DatasetUnavailableError, ValidationError


def test_digits_default(digits):
    assert digits.name == "digits"
    assert digits.x_train.shape == (1437, 8, 8, 1)
    assert digits.x_test.shape == (360, 8, 8, 1)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() == 1.0
    assert digits.num_classes == 10 and set(np.unique(digits.y_test)) == set(range(10))


def test_subset_is_seeded():
    a = load("digits", n_train=100, n_test=50, seed=3)
    b = load("digits", n_train=100, n_test=50, seed=3)
    c = load("digits", n_train=100, n_test=50, seed=4)
    assert len(a.x_train) == 100 and len(a.x_test) == 50
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_unknown_name():
    with pytest.raises(ValidationError, match="expected name to be one of digits, mnist"):
        load("imagenet")


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                  *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_single_split(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 6, 6)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(30) % 10)
    data = load(f"idx:{tmp_path}", split=20)
    assert data.x_train.shape == (20, 6, 6, 1) and data.x_test.shape == (10, 6, 6, 1)
    np.testing.assert_array_equal(data.y_test, np.arange(20, 30) % 10)
    with pytest.raises(ValidationError, match="split="):
        load(f"idx:{tmp_path}")
    with pytest.raises(ValidationError, match="expected split <= 29"):
        load(f"idx:{tmp_path}", split=30)


def test_idx_truncated_and_missing(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 4, 4)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10))
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(ValidationError, match="truncated"):
        load(f"idx:{tmp_path}", split=5)
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load(f"idx:{tmp_path}/nope")


def test_npz_roundtrip_and_no_pickle(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 5, 5), dtype=np.uint8),
             y_train=np.arange(20) % 3, x_test=rng.integers(0, 256, (6, 5, 5), dtype=np.uint8),
             y_test=np.arange(6) % 3)
    data = load(f"npz:{path}")
    assert data.x_train.shape == (20, 5, 5, 1) and data.num_classes == 3
    assert data.x_train.max() <= 1.0
    bad = tmp_path / "obj.npz"
    np.savez(bad, x_train=np.array([object()]), y_train=[0], x_test=[0], y_test=[0])
    with pytest.raises(ValidationError, match="without pickle"):
        load(f"npz:{bad}")
    missing = tmp_path / "m.npz"
    np.savez(missing, x_train=np.zeros((2, 2, 2)))
    with pytest.raises(ValidationError, match="missing y_train, x_test, y_test"):
        load(f"npz:{missing}")


@pytest.mark.parametrize(("x", "y", "match"), [
    (np.zeros((4, 8, 8)), np.zeros(4, int), r"shape \(N, H, W, C\)"),
    (np.full((4, 8, 8, 1), np.nan), np.zeros(4, int), "finite"),
    (np.full((4, 8, 8, 1), 1.5), np.zeros(4, int), r"within bounds \[0, 1\]"),
    (np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 10]), r"in \[0, 10\)"),
    (np.zeros((4, 8, 8, 1)), np.array([0.5, 1, 2, 3]), "integer labels"),
    (np.zeros((4, 8, 8, 1)), np.zeros(3, int), "one label per image"),
    (np.zeros((0, 8, 8, 1)), np.zeros(0, int), "at least one example"),
])
def test_malformed_arrays(x, y, match):
    with pytest.raises(ValidationError, match=match):
        validate_arrays(x, y, num_classes=10)


def test_dataset_validates_on_construction():
    x = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ValidationError, match="y_test"):
        Dataset("bad", x, np.zeros(4, int), x, np.array([0, 0, 0, 12]), tuple("0123456789"))


def test_keras_loader_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: no network")

    monkeypatch.setattr(keras.src.datasets.mnist, "get_file", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load("mnist")
    message = str(info.value)
    assert str(tmp_path / "datasets" / "mnist.npz") in message
    assert "idx:<dir>" in message and "KERAS_HOME" in message


def test_shipped_sample_matches_readme_and_generator():
    path = ROOT / "datasets" / "digits-sample.npz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (ROOT / "datasets" / "README.md").read_text()
    data = load(f"npz:{path}")
    assert data.x_train.shape == (200, 8, 8, 1) and data.x_test.shape == (100, 8, 8, 1)
    full = load("digits")
    np.testing.assert_array_equal(data.x_test, full.x_test[:100])
    np.testing.assert_array_equal(data.y_train, full.y_train[:200])
