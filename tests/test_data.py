import gzip
import hashlib
import struct

import numpy as np
import pytest
from conftest import ROOT

from robustlab._validate import validate_arrays
from robustlab.data import Dataset, load
from robustlab.errors import DatasetUnavailableError, ValidationError
from robustlab.types import Constraints


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
    with pytest.raises(ValidationError,
                       match="expected name to be one of digits, mnist.*breast_cancer.*csv:<path>"):
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
    queried = load(f"idx:{tmp_path}?split=20")  # the option in the name, as papermill passes
    np.testing.assert_array_equal(queried.x_train, data.x_train)
    with pytest.raises(ValidationError, match="options among split, key"):
        load(f"idx:{tmp_path}?splt=20")
    with pytest.raises(ValidationError, match="expected no split for a Dataset object"):
        load(data, split=3)
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
    (np.zeros(4), np.zeros(4, int), r"shape \(N, \.\.\.\)"),
    (np.full((4, 8, 8, 1), np.nan), np.zeros(4, int), "finite"),
    (np.full((4, 8, 8, 1), 1.5), np.zeros(4, int), r"within bounds \[0, 1\]"),
    (np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 10]), r"in \[0, 10\)"),
    (np.zeros((4, 8, 8, 1)), np.array([0.5, 1, 2, 3]), "integer labels"),
    (np.zeros((4, 8, 8, 1)), np.zeros(3, int), "one label per example"),
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


# -- tabular data and any-rank inputs (issue 14) ----------------------------------------------


@pytest.fixture(scope="module")
def cancer():
    return load("breast_cancer")


def test_breast_cancer_split_constraints_and_determinism(cancer):
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    assert cancer.x_train.shape == (455, 30) and cancer.x_test.shape == (114, 30)
    assert cancer.class_names == ("malignant", "benign") and not cancer.is_image
    assert cancer.feature_names == tuple(bunch.feature_names)
    # stratified: both splits keep the 212 / 357 class ratio
    for y in (cancer.y_train, cancer.y_test):
        assert abs(np.mean(y) - 357 / 569) < 0.01
    c = cancer.constraints
    np.testing.assert_allclose(c.scale, cancer.x_train.std(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(c.low, 0.0)
    np.testing.assert_allclose(c.high, 2 * cancer.x_train.max(axis=0), rtol=1e-6)
    assert (cancer.x_test >= c.low).all() and (cancer.x_test <= c.high).all()
    assert cancer.bounds == c.bounds and c.mutable.all() and not c.discrete
    # original units: mean area is in the hundreds, not standardised
    assert cancer.x_train[:, bunch.feature_names.tolist().index("mean area")].mean() > 100
    again = load("breast_cancer")
    np.testing.assert_array_equal(again.x_test, cancer.x_test)
    assert again.constraints == c
    info = cancer.describe()
    assert info["feature_names"][0] == "mean radius"
    assert info["constraints"]["fingerprint"] == c.fingerprint()


def test_image_describe_has_no_constraint_keys(digits):
    assert digits.is_image and digits.feature_names == () and digits.constraints is None
    assert set(digits.describe()) == {"name", "source", "input_shape", "num_classes",
                                      "class_names", "n_train", "n_test", "bounds"}


def test_constrain_and_subset_keep_constraints(cancer):
    fixed = cancer.constrain(immutable=["mean radius", "worst area"])
    assert fixed.constraints.name(int(np.flatnonzero(~fixed.constraints.mutable)[0])) \
        == "'mean radius'"
    assert (~fixed.constraints.mutable).sum() == 2 and cancer.constraints.mutable.all()
    small = fixed.subset(n_train=40, n_test=10, seed=1)
    assert len(small.x_train) == 40 and small.constraints == fixed.constraints
    assert small.feature_names == cancer.feature_names
    with pytest.raises(ValidationError, match="unknown feature 'nope'"):
        cancer.constrain(immutable=["nope"])
    with pytest.raises(ValidationError, match="expected no immutable for the 'digits'"):
        load("digits", immutable="a")
    # a plain image dataset gets constraints for its own shape and bounds
    digits = load("digits", n_train=20, n_test=10)
    pinned = digits.constrain(immutable=[0, 1])
    assert pinned.constraints.shape == (8, 8, 1) and pinned.bounds == (0.0, 1.0)
    assert not pinned.is_image or pinned.feature_names == ()


def test_feature_stats(cancer):
    mean, std = cancer.feature_stats()
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (30,)
    np.testing.assert_allclose(mean, cancer.x_train.mean(axis=0), rtol=1e-5)
    x = np.zeros((4, 3), np.float32)
    x[:, 0] = [0, 1, 0, 1]
    flat = Dataset("t", x, np.array([0, 1, 0, 1]), x, np.array([0, 1, 0, 1]), ("a", "b"))
    np.testing.assert_allclose(flat.feature_stats()[1], [0.5, 1e-6, 1e-6])


CSV = """age,income,city,kids,outcome
30,1000.5,Paris,1,yes
40,2000,Berlin,2,no
50,1500,Paris,0,yes
20,3000,Rome,3,no
35,2500,Berlin,1,yes
45,1200,Rome,2,no
33,1800,Paris,0,yes
28,2200,Berlin,1,no
52,900,Rome,2,yes
61,4000,Paris,4,no
"""


def _csv(tmp_path, text=CSV, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_loader(tmp_path):
    path = _csv(tmp_path)
    data = load(f"csv:{path}", target="outcome", immutable=["age", "city"],
                integer="kids", categorical="city", test_size=0.4)
    assert data.name == "csv:t.csv" and data.class_names == ("no", "yes")
    assert data.x_train.shape == (6, 6) and data.x_test.shape == (4, 6)
    assert data.feature_names == ("age", "income", "city=Berlin", "city=Paris", "city=Rome",
                                  "kids")
    c = data.constraints
    assert c.onehot == ((2, 3, 4),)
    np.testing.assert_array_equal(c.integer, [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(c.mutable, [0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(c.low, 0.0)
    top = 2 * data.x_train.max(axis=0)  # fitted on the training split only
    np.testing.assert_allclose(c.high, [top[0], top[1], 1, 1, 1, top[5]])
    np.testing.assert_allclose(c.scale[[0, 1, 5]], data.x_train[:, [0, 1, 5]].std(axis=0),
                               rtol=1e-5)
    np.testing.assert_array_equal(c.scale[2:5], 1.0)
    x = np.concatenate([data.x_train, data.x_test])
    np.testing.assert_array_equal(x[:, 2:5].sum(axis=1), 1.0)  # valid one-hot rows
    assert sorted(x[:, 0].tolist()) == [20, 28, 30, 33, 35, 40, 45, 50, 52, 61]
    assert [np.sum(data.y_train == k) for k in (0, 1)] == [3, 3]  # stratified
    # the same options, URL-query style (how a papermill notebook passes them)
    queried = load(f"csv:{path}?target=outcome&immutable=age,city&integer=kids"
                   f"&categorical=city&test_size=0.4")
    np.testing.assert_array_equal(queried.x_test, data.x_test)
    assert queried.constraints == c
    with pytest.raises(ValidationError, match="target once"):
        load(f"csv:{path}?target=outcome", target="outcome")
    with pytest.raises(ValidationError, match="expected no split for csv: datasets"):
        load(f"csv:{path}?target=outcome", split=3)


def test_csv_default_target_and_negative_columns(tmp_path):
    text = "t,label\n" + "\n".join(f"{v},{i % 2}" for i, v in enumerate(
        [-3, -1, 2, 5, 0, 1, -2, 4, 3, -4]))
    data = load(f"csv:{_csv(tmp_path, text)}")
    assert data.class_names == ("0", "1") and data.feature_names == ("t",)
    assert data.constraints.bounds == (-8.0, 10.0)


@pytest.mark.parametrize(("text", "options", "match"), [
    (CSV, {}, "expected target to name the label column .* columns: age, income"),
    (CSV, {"target": "y"}, "expected target to name a column of t.csv, got 'y'"),
    (CSV, {"target": "outcome", "immutable": "age,zip"},
     "expected immutable to name columns of t.csv, got unknown 'zip'; columns: age"),
    (CSV, {"target": "outcome"}, "expected column 'city' of t.csv to be numeric"),
    (CSV.replace("1000.5", ""), {"target": "outcome", "categorical": "city"},
     "column 'income' of t.csv to have no missing values, got 1 NaN"),
    (CSV, {"target": "outcome", "categorical": "city", "integer": "income"},
     "integer column 'income' of t.csv to hold whole numbers, got 1000.5 in row 0"),
    (CSV, {"target": "outcome", "categorical": "city", "test_size": 1.5},
     "expected test_size <= 1"),
])
def test_csv_errors(tmp_path, text, options, match):
    with pytest.raises(ValidationError, match=match):
        load(f"csv:{_csv(tmp_path, text)}", **options)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load(f"csv:{tmp_path / 'nope.csv'}?target=y")


def test_npz_any_rank_with_constraints(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tab.npz"
    low, high = np.array([0.0, -5.0, 0.0]), np.array([10.0, 5.0, 100.0])
    x_train = rng.uniform(low, high, (20, 3)).astype(np.float32)
    x_train[:, 2] = np.round(x_train[:, 2])
    x_test = x_train[:6] + 0.0
    np.savez(path, x_train=x_train, y_train=np.arange(20) % 2, x_test=x_test,
             y_test=np.arange(6) % 2, low=low, high=high, immutable=np.array([1, 0, 0], bool),
             integer=np.array([False, False, True]), feature_names=np.array(["a", "b", "c"]))
    data = load(f"npz:{path}")
    assert data.input_shape == (3,) and data.feature_names == ("a", "b", "c")
    assert data.bounds == (-5.0, 100.0) and not data.is_image
    c = data.constraints
    np.testing.assert_array_equal(c.mutable, [False, True, True])
    np.testing.assert_array_equal(c.integer, [False, False, True])
    # float (N, H, W) arrays are kept at their rank; uint8 ones still get a channel axis
    grey = tmp_path / "grey.npz"
    np.savez(grey, x_train=rng.uniform(size=(8, 4, 5)), y_train=np.arange(8) % 2,
             x_test=rng.uniform(size=(3, 4, 5)), y_test=np.arange(3) % 2)
    data = load(f"npz:{grey}")
    assert data.input_shape == (4, 5) and data.is_image and data.constraints is None
    cube = tmp_path / "cube.npz"
    np.savez(cube, x_train=rng.uniform(size=(8, 2, 3, 4, 2)), y_train=np.arange(8) % 2,
             x_test=rng.uniform(size=(3, 2, 3, 4, 2)), y_test=np.arange(3) % 2)
    assert load(f"npz:{cube}").input_shape == (2, 3, 4, 2)
    outside = tmp_path / "out.npz"
    np.savez(outside, x_train=x_train, y_train=np.arange(20) % 2, x_test=x_test + 200,
             y_test=np.arange(6) % 2, low=low, high=high)
    with pytest.raises(ValidationError, match="x_test to satisfy the feature constraints"):
        load(f"npz:{outside}")


def test_dataset_checks_constraints():
    x = np.array([[0.0, 1.0], [0.5, 2.0], [1.0, 3.0]], np.float32)
    y = np.array([0, 1, 0])
    c = Constraints.build((2,), bounds=([0, 0], [1, 5]), integer=[1], names=["p", "n"])
    data = Dataset("t", x, y, x, y, ("a", "b"), constraints=c)
    assert data.bounds == (0.0, 5.0) and data.describe()["feature_names"] == ["p", "n"]
    bad = x.copy()
    bad[2, 1] = 2.5
    with pytest.raises(ValidationError, match="x_test to satisfy the feature constraints.*'n'"):
        Dataset("t", x, y, bad, y, ("a", "b"), constraints=c)
    with pytest.raises(ValidationError, match=r"constraints built for one example's shape"):
        Dataset("t", x, y, x, y, ("a", "b"),
                constraints=Constraints.build((3,), bounds=(0, 5), names=["a", "b", "c"]))


def test_csv_bounds_come_from_the_training_split_and_test_outliers_are_named(tmp_path):
    lines = [f"{i % 7},{'yes' if i % 2 else 'no'}" for i in range(40)]
    outlier = _csv(tmp_path, "\n".join(["dose,outcome", *lines[:10], "500,yes", *lines[10:]]))
    # the 500 lands in the test split (stratified, random_state=0)
    with pytest.raises(ValidationError, match=r"'dose' = 500 outside .*fitted on its training"):
        load(f"csv:{outlier}", target="outcome", test_size=0.25)
    plain = _csv(tmp_path, "\n".join(["dose,outcome", *lines]), name="plain.csv")
    data = load(f"csv:{plain}", target="outcome", test_size=0.25)
    assert data.constraints.high[0] == 2 * data.x_train[:, 0].max() == 12
