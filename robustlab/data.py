"""Datasets: ``load(name)`` returns a validated :class:`Dataset`.

Every dataset is float32 of shape ``(N, ...)`` (any rank: images ``(N, H, W, C)``, tables
``(N, F)``) within its ``bounds`` (``[0, 1]`` for the built-in image sets), with integer labels
in ``[0, num_classes)``. Tabular datasets carry :class:`~robustlab.types.Constraints`: feature
names, per-feature bounds and ε scale, immutable, integer and one-hot (categorical) features.
Names understood by :func:`load`:

``digits``
    scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 with a fixed stratified
    shuffle. Works offline; the default.
``breast_cancer``
    scikit-learn's bundled copy of the UCI Wisconsin Diagnostic Breast Cancer data (569
    tumours x 30 real-valued features, ``malignant`` / ``benign``), split 80/20 with a fixed
    stratified shuffle, features in their original units. Works offline.
``mnist``, ``fashion_mnist``, ``cifar10``
    Keras' own download-and-cache loaders (files cached under ``~/.keras/datasets``). Offline,
    they raise :class:`~robustlab.errors.DatasetUnavailableError` saying where to put the files.
``idx:<dir>``
    MNIST-format gzipped IDX files in ``<dir>``. With ``train-*`` and ``t10k-*`` pairs, those
    are the splits; with a single pair, ``split=k`` makes the first ``k`` images the training
    set and the rest the test set.
``npz:<path>``
    A ``.npz`` file with arrays ``x_train, y_train, x_test, y_test`` of any rank (loaded
    without pickle; uint8 arrays are scaled by 1/255 and ``(N, H, W)`` uint8 images get a
    channel axis; other arrays are kept as stored and must lie in ``[0, 1]`` unless bounds are
    given). Optional arrays: ``class_names``, and per-feature constraints ``low``, ``high``
    (broadcastable to one example), ``scale``, ``immutable`` and ``integer`` (bool masks),
    ``feature_names``. An encrypted one (:mod:`robustlab.crypto`) is decrypted in memory with
    the configured key or ``key``.
``csv:<path>``
    A table read with pandas: one row per example, one column per feature, plus the label
    column ``target`` (default: a column named ``target`` or ``label``). Options
    ``immutable``, ``integer``, ``categorical`` (column names) and ``test_size``; categorical
    columns are one-hot encoded. See :func:`load`.

Loader options may also be written into the name, URL-query style, for callers that pass a
single string (papermill notebooks, the CLI): ``csv:data.csv?target=y&immutable=age,sex``,
``idx:mnist?split=8000``.
"""

from __future__ import annotations

import gzip
import inspect
import io
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from robustlab import crypto
from robustlab._validate import (
    check_float,
    check_int,
    check_optional_int,
    check_seed,
    validate_arrays,
)
from robustlab.errors import DatasetUnavailableError, InputTypeError, ValidationError
from robustlab.types import Constraints, is_image_shape

__all__ = ["Dataset", "load", "DATASETS", "require_dataset", "resize_images"]

log = logging.getLogger(__name__)

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays, validated on construction.

    Attributes:
        name: short name (``"digits"``, ``"breast_cancer"``, ``"idx:..."``, ``"csv:..."``).
        x_train, x_test: float32 inputs of shape ``(N, ...)``, any rank >= 2 (images
            ``(N, H, W, C)``, tables ``(N, F)``), within ``bounds``.
        y_train, y_test: int64 labels, shape ``(N,)``.
        class_names: one display name per class.
        bounds: ``(low, high)`` value range, ``(0.0, 1.0)`` for the built-in image sets; with
            ``constraints``, their envelope (set from them).
        source: where the data came from (for reports).
        constraints: per-feature threat model facts (names, bounds, ε scale, immutable,
            integer and categorical features), fitted to one example's shape; both splits
            must satisfy them. None for plain images.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    bounds: tuple[float, float] = (0.0, 1.0)
    source: str = field(default="")
    constraints: Constraints | None = None

    def __post_init__(self) -> None:
        k = len(self.class_names)
        if k < 2:
            raise ValidationError(f"expected at least 2 class_names, got {k}")
        constraints = self.constraints
        if constraints is not None:
            if not isinstance(constraints, Constraints):
                raise InputTypeError(f"expected constraints to be a robustlab Constraints or "
                                     f"None, got {type(constraints).__name__}")
            object.__setattr__(self, "bounds", constraints.bounds)
        # with constraints, their per-feature check (which names the feature) does the bounds
        box = self.bounds if constraints is None else (-np.inf, np.inf)
        xtr, ytr = validate_arrays(self.x_train, self.y_train, num_classes=k,
                                   bounds=box, name="x_train", label_name="y_train")
        xte, yte = validate_arrays(self.x_test, self.y_test, num_classes=k,
                                   bounds=box, name="x_test", label_name="y_test")
        if xtr.shape[1:] != xte.shape[1:]:
            raise ValidationError(f"expected x_train and x_test to share an example shape, got "
                                  f"{xtr.shape[1:]} and {xte.shape[1:]}")
        if constraints is not None:
            constraints = constraints.fit(xtr.shape[1:], "constraints")
            constraints.check_inputs(xtr, "x_train")
            constraints.check_inputs(xte, "x_test")
            object.__setattr__(self, "constraints", constraints)
        for attr, value in (("x_train", xtr), ("y_train", ytr), ("x_test", xte),
                            ("y_test", yte)):
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: ``(H, W, C)`` for images, ``(F,)`` for tables, any rank."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per flat feature (from the constraints), or ``()`` when unnamed."""
        return self.constraints.names if self.constraints is not None else ()

    @property
    def is_image(self) -> bool:
        """True for unnamed images: examples ``(H, W, C)`` with 1, 3 or 4 channels, or
        greyscale ``(H, W)``; False for feature vectors ``(F,)``, named features and other
        shapes. Tabular models standardise their inputs (:meth:`feature_stats`); image
        models do not."""
        return is_image_shape(self.input_shape, self.feature_names)

    def constrain(self, **changes: Any) -> Dataset:
        """A copy with changed constraints: the keyword arguments of
        :meth:`Constraints.replace <robustlab.types.Constraints.replace>` (``immutable``,
        ``integer``, ``categorical``, ``scale``, ``bounds``, ``names``; features by mask, flat
        index or name). A dataset without constraints first gets plain ones for its shape and
        ``bounds``. Both splits are re-checked against the result.

        Example:
            >>> data = load("breast_cancer").constrain(immutable=["mean radius"])
            >>> int(data.constraints.mutable.sum())
            29
        """
        base = self.constraints if self.constraints is not None else \
            Constraints.build(self.input_shape, bounds=self.bounds)
        return replace(self, constraints=base.replace(**changes))

    def feature_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and standard deviation (population, ddof 0) of ``x_train``, each
        float32 of shape ``input_shape``, in the features' own units. The standard deviation
        is floored at 1e-6 so that a constant feature standardises to 0 instead of dividing
        by zero. What :func:`~robustlab.models.build_mlp` standardises its inputs with."""
        x = self.x_train.astype(np.float64)
        mean = x.mean(axis=0).astype(np.float32)
        std = np.maximum(x.std(axis=0), 1e-6).astype(np.float32)
        return mean, std

    def subset(self, *, n_train: int | None = None, n_test: int | None = None,
               seed: int = 0) -> Dataset:
        """A seeded random subset (``None`` keeps a split whole); constraints are kept."""
        rng = np.random.default_rng(check_seed(seed))
        n_train = check_optional_int("n_train", n_train, low=1)
        n_test = check_optional_int("n_test", n_test, low=1)

        def pick(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
            if n is None or n >= len(x):
                return x, y
            idx = np.sort(rng.choice(len(x), size=n, replace=False))
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train)
        xte, yte = pick(self.x_test, self.y_test, n_test)
        return replace(self, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (no arrays); ``feature_names`` and ``constraints``
        (:meth:`Constraints.to_dict <robustlab.types.Constraints.to_dict>`) only for a
        dataset with constraints."""
        out = {"name": self.name, "source": self.source, "input_shape": list(self.input_shape),
               "num_classes": self.num_classes, "class_names": list(self.class_names),
               "n_train": len(self.x_train), "n_test": len(self.x_test),
               "bounds": list(self.bounds)}
        if self.constraints is not None:
            out["feature_names"] = list(self.feature_names)
            out["constraints"] = self.constraints.to_dict()
        return out


# ---------------------------------------------------------------------------------------------
# loaders


def require_dataset(value: Any, name: str = "data") -> Dataset:
    """``value`` itself if it is a :class:`Dataset`, else an InputTypeError naming ``name``."""
    if not isinstance(value, Dataset):
        raise InputTypeError(f"expected {name} to be a robustlab Dataset, got "
                             f"{type(value).__name__}")
    return value


def _to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]; add a channel axis to (N, H, W)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return x.astype(np.float32) / np.float32(255.0)


def resize_images(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Images ``(N, H, W, C)`` resized (bilinear) to ``shape`` ``(H', W', C')`` in
    ``[0, 1]``: channels averaged to 1 or repeated to 3 as needed (e.g. the 8×8 digits as
    28×28 MNIST-shaped inputs, a shifted dataset for a monitor)."""
    from scipy.ndimage import zoom

    arr = np.asarray(x, np.float32)
    if arr.ndim != 4 or len(shape) != 3:
        raise ValidationError(f"expected images (N, H, W, C) and a target shape (H, W, C), "
                              f"got {arr.shape} and {tuple(shape)}")
    h, w, c = (int(v) for v in shape)
    if arr.shape[3] != c:
        if c == 1:
            arr = arr.mean(axis=3, keepdims=True)
        elif arr.shape[3] == 1:
            arr = np.repeat(arr, c, axis=3)
        else:
            raise ValidationError(f"expected images with 1 or {c} channels, got "
                                  f"{arr.shape[3]}")
    if arr.shape[1:3] != (h, w):
        arr = zoom(arr, (1, h / arr.shape[1], w / arr.shape[2], 1), order=1)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Dataset("digits", xtr, ytr, xte, yte, DIGIT_NAMES,
                   source="scikit-learn load_digits (UCI optical digits, 8x8, 0-16 scaled to 0-1)")


BREAST_CANCER_NAMES = ("malignant", "benign")


def _load_breast_cancer() -> Dataset:
    """scikit-learn's bundled Wisconsin Diagnostic Breast Cancer data: 569 x 30 features in
    their original units (millimetres, pixels of the digitised image, ...), labels 0
    malignant / 1 benign, split 80/20 stratified with ``random_state=0`` (455 / 114).

    Constraints, all fitted on the training split only: bounds ``low = 0`` for every
    feature (each is a non-negative measurement: a physical lower bound) and ``high = 2 x``
    the training maximum (a generous upper bound that still rules out absurd values; every
    test value lies inside, checked on construction); ``scale`` = the training standard
    deviation, so ε is measured in standard deviations of each feature. No feature is
    immutable, integer or categorical; add such facts with :meth:`Dataset.constrain`.
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    x = np.asarray(bunch.data, np.float32)
    y = np.asarray(bunch.target, np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    constraints = Constraints.build(
        x.shape[1:], bounds=(0.0, 2.0 * xtr.max(axis=0)), scale=xtr.std(axis=0, dtype=np.float64),
        names=[str(n) for n in bunch.feature_names])
    return Dataset("breast_cancer", xtr, ytr, xte, yte, BREAST_CANCER_NAMES,
                   source="scikit-learn load_breast_cancer (UCI Wisconsin Diagnostic Breast "
                          "Cancer, 30 features in original units)", constraints=constraints)


_OFFLINE_HELP = (
    "could not load the {name} dataset through Keras ({error}). Keras downloads it once and "
    "caches it as {cache}. Offline, copy that file there from a machine that has it (or set "
    "KERAS_HOME to a folder that holds datasets/{fname}), or load the data from local files "
    "with 'idx:<dir>' (MNIST-format IDX files) or 'npz:<path>' (x_train, y_train, x_test, "
    "y_test)."
)


def _keras_loader(name: str, fname: str, class_names: tuple[str, ...]) -> Callable[..., Dataset]:
    def load_fn() -> Dataset:
        import os

        import keras

        module = getattr(keras.datasets, name)
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / fname
        try:
            (xtr, ytr), (xte, yte) = module.load_data()
        except Exception as exc:  # noqa: BLE001 - Keras raises bare Exception on fetch failure
            raise DatasetUnavailableError(_OFFLINE_HELP.format(
                name=name, error=f"{type(exc).__name__}: {exc}", cache=cache, fname=fname)
            ) from exc
        return Dataset(name, _to_unit(xtr), np.ravel(ytr), _to_unit(xte), np.ravel(yte),
                       class_names, source=f"keras.datasets.{name} (cached at {cache})")
    return load_fn


def _read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise ValidationError(f"could not read IDX file {path}: {exc}") from exc
    if len(data) < 4:
        raise ValidationError(f"IDX file {path} is truncated ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValidationError(f"IDX file {path} has an unsupported header (expected unsigned "
                              f"bytes, magic 0x0008, got 0x{zero:04x}{dtype_code:02x})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValidationError(f"IDX file {path} is truncated: header says shape {shape}, "
                              f"found {body.size} values")
    return body.reshape(shape)


def _find_idx(directory: Path, prefix: str, kind: str) -> Path | None:
    for pattern in (f"{prefix}-{kind}-idx*-ubyte.gz", f"{prefix}-{kind}-idx*-ubyte",
                    f"{prefix}-{kind}.idx*-ubyte.gz"):
        hits = sorted(directory.glob(pattern))
        if hits:
            return hits[0]
    return None


def _load_idx(spec: str, *, split: int | None = None) -> Dataset:
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise DatasetUnavailableError(f"expected idx:<dir> to name a directory of IDX files, "
                                      f"got {str(directory)!r}, which does not exist")
    pairs = {}
    for prefix in ("train", "t10k"):
        images, labels = _find_idx(directory, prefix, "images"), _find_idx(directory, prefix,
                                                                           "labels")
        if images and labels:
            pairs[prefix] = (_read_idx(images), _read_idx(labels))
    if not pairs:
        raise DatasetUnavailableError(
            f"found no '<train|t10k>-images-idx3-ubyte[.gz]' with matching labels file in "
            f"{directory}")
    for key, (imgs, labs) in pairs.items():
        if len(imgs) != len(labs):
            raise ValidationError(f"IDX {key} images ({len(imgs)}) and labels ({len(labs)}) "
                                  f"differ in length in {directory}")
    if len(pairs) == 2 and split is None:
        (xtr, ytr), (xte, yte) = pairs["train"], pairs["t10k"]
    else:
        x, y = next(iter(pairs.values())) if len(pairs) == 1 else pairs["t10k"]
        if split is None:
            raise ValidationError(f"{directory} holds a single IDX split; pass split=<number "
                                  f"of leading images to train on> (e.g. split=8000)")
        split = check_int("split", split, low=1, high=len(x) - 1)
        xtr, ytr, xte, yte = x[:split], y[:split], x[split:], y[split:]
    num_classes = int(max(ytr.max(), yte.max())) + 1
    names = DIGIT_NAMES if num_classes <= 10 else tuple(str(i) for i in range(num_classes))
    return Dataset(f"idx:{directory.name}", _to_unit(xtr), ytr, _to_unit(xte), yte,
                   names[:max(num_classes, 2)], source=f"IDX files in {directory}")


def _load_npz(spec: str, *, key: crypto.Key | None = None) -> Dataset:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DatasetUnavailableError(f"expected npz:<path> to name a file, got {str(path)!r}, "
                                      f"which does not exist")
    content = crypto.read_buffer(path, key)  # decrypted in memory (in place) when encrypted
    try:
        with np.load(crypto.MemoryFile(content), allow_pickle=False) as archive:
            arrays = {member: archive[member] for member in archive.files}
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise ValidationError(f"could not load {path} without pickle: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise ValidationError(f"could not read {path} as a .npz archive: {exc}") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValidationError(f"expected {path} to contain arrays x_train, y_train, x_test, "
                              f"y_test; missing {', '.join(missing)}")
    xs = []
    for member in ("x_train", "x_test"):
        x = arrays[member]
        if x.dtype == np.uint8:  # images in [0, 255]; (N, H, W) gets a channel axis
            xs.append(_to_unit(x) if x.ndim == 3 else x.astype(np.float32) / np.float32(255))
        elif x.dtype == object or not np.issubdtype(x.dtype, np.number):
            raise InputTypeError(f"expected {member} in {path} to be a numeric array, got "
                                 f"dtype {x.dtype}")
        else:
            xs.append(x.astype(np.float32))
    ytr, yte = np.ravel(arrays["y_train"]), np.ravel(arrays["y_test"])
    if "class_names" in arrays:
        names = tuple(str(c) for c in arrays["class_names"])
    else:
        top = max(int(np.max(ytr)), int(np.max(yte)), 1) + 1 if ytr.size and yte.size else 2
        names = tuple(str(i) for i in range(top))
    constraints = _npz_constraints(path, arrays, xs[0].shape[1:])
    return Dataset(f"npz:{path.name}", xs[0], ytr, xs[1], yte, names, source=f"npz file {path}",
                   constraints=constraints)


_NPZ_CONSTRAINTS = ("low", "high", "scale", "immutable", "integer", "feature_names")


def _npz_constraints(path: Path, arrays: dict[str, np.ndarray],
                     shape: tuple[int, ...]) -> Constraints | None:
    """Constraints from the optional arrays of an npz file (None when it has none): ``low``,
    ``high`` (default 0 and 1), ``scale`` (default 1), bool masks ``immutable``, ``integer``
    and ``feature_names``, in the units of ``x`` as loaded (after uint8 scaling)."""
    if not any(k in arrays for k in _NPZ_CONSTRAINTS):
        return None
    masks = {}
    for member in ("immutable", "integer"):
        if member in arrays:
            mask = arrays[member]
            if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.integer)
                                           and np.isin(mask, (0, 1)).all()):
                raise ValidationError(f"expected {member} in {path} to be a bool mask of one "
                                      f"example's shape {shape}, got dtype {mask.dtype}")
            masks[member] = mask.astype(bool)
    names = arrays.get("feature_names")
    try:
        return Constraints.build(
            shape, bounds=(arrays.get("low", 0.0), arrays.get("high", 1.0)),
            scale=arrays.get("scale", 1.0), immutable=masks.get("immutable"),
            integer=masks.get("integer"),
            names=None if names is None else [str(n) for n in np.ravel(names)])
    except ValidationError as exc:
        raise ValidationError(f"npz file {path}: {exc}") from None


# -- csv tables --------------------------------------------------------------------------------


def _columns(option: str, value: Any, columns: list[str], path: Path) -> list[str]:
    """Column names of ``option`` (a list or a comma-separated string), all present."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise ValidationError(f"expected {option} to name columns of {path.name}, got unknown "
                              f"{', '.join(repr(u) for u in unknown)}; columns: "
                              f"{_listing(columns)}")
    return list(dict.fromkeys(names))


def _listing(columns: list[str], limit: int = 20) -> str:
    return ", ".join(columns[:limit]) + (f" and {len(columns) - limit} more"
                                         if len(columns) > limit else "")


def _sorted_values(values: Any) -> list[Any]:
    """Distinct values, numbers in numeric order (whole floats as ints), else as text."""
    unique = list(dict.fromkeys(values.tolist()))
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
           for v in unique):
        return sorted(int(v) if float(v).is_integer() else float(v) for v in unique)
    return sorted(str(v) for v in unique)


def _codes(values: Any, levels: list[Any]) -> np.ndarray:
    """The index of each value in ``levels`` (as returned by :func:`_sorted_values`)."""
    index = {str(v): i for i, v in enumerate(levels)}
    if isinstance(levels[0], str):
        return np.array([index[str(v)] for v in values.tolist()], np.int64)
    return np.array([index[str(int(v) if float(v).is_integer() else float(v))]
                     for v in values.tolist()], np.int64)


def _load_csv(spec: str, *, target: str | None = None, immutable: Any = None,
              integer: Any = None, categorical: Any = None, test_size: Any = None,
              key: crypto.Key | None = None) -> Dataset:
    """A table as a :class:`Dataset` with :class:`~robustlab.types.Constraints`.

    Numeric columns are features in their own units; ``categorical`` columns (text or
    integer codes) become one-hot columns ``"<col>=<value>"`` (values sorted), one
    categorical group each; ``integer`` columns must hold whole numbers; ``immutable`` columns
    (a categorical one: all its one-hot columns) cannot be changed by an attacker. The target
    (text or integer labels) maps to ``0..K-1`` in sorted order, ``class_names`` the values as
    text. Split: ``test_size`` (default 0.2), stratified, ``random_state=0``.

    Per-column constraints, fitted on the training split only: bounds
    ``[2 min(x_min, 0), 2 max(x_max, 0)]``, i.e. 0 is the bound of a non-negative
    (non-positive) column and the other side is twice the largest magnitude seen in training
    (a column of zeros gets ``[0, 1]``); one-hot columns ``[0, 1]``. A test value outside
    them is an error naming the column (pass the data as ``npz:`` with explicit ``low`` /
    ``high`` arrays when the domain's bounds are known).
    Scale: the training split's standard deviation (1 for one-hot and constant columns).
    """
    import pandas as pd

    path = Path(spec).expanduser()
    if not path.is_file():
        raise DatasetUnavailableError(f"expected csv:<path> to name a file, got {str(path)!r}, "
                                      f"which does not exist")
    content = crypto.read_buffer(path, key)  # decrypted in memory when encrypted
    try:
        frame = pd.read_csv(io.BufferedReader(crypto.MemoryFile(content)))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValidationError(f"could not read {path} as a CSV table: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    columns = list(frame.columns)
    if target is None:
        found = [c for c in ("target", "label") if c in columns]
        if not found:
            raise ValidationError(f"expected target to name the label column of {path.name} "
                                  f"(no column is named 'target' or 'label'); columns: "
                                  f"{_listing(columns)}")
        target = found[0]
    target = str(target).strip()
    if target not in columns:
        raise ValidationError(f"expected target to name a column of {path.name}, got "
                              f"{target!r}; columns: {_listing(columns)}")
    chosen = {opt: _columns(opt, val, columns, path) for opt, val in
              (("immutable", immutable), ("integer", integer), ("categorical", categorical))}
    for opt, cols in chosen.items():
        if target in cols:
            raise ValidationError(f"expected {opt} to name feature columns, got the target "
                                  f"column {target!r}")
    both = sorted(set(chosen["integer"]) & set(chosen["categorical"]))
    if both:
        raise ValidationError(f"expected integer and categorical columns to differ, got "
                              f"{', '.join(repr(c) for c in both)} in both")
    size = check_float("test_size", 0.2 if test_size is None else test_size,
                       low=0.0, high=1.0, low_open=True)
    if size >= 1.0:
        raise ValidationError(f"expected test_size < 1, got {size:g}")
    for col in columns:
        missing = int(frame[col].isna().sum())
        if missing:
            raise ValidationError(f"expected column {col!r} of {path.name} to have no missing "
                                  f"values, got {missing} NaN")
    levels = _sorted_values(frame[target])
    y = _codes(frame[target], levels)
    parts, names, groups, fixed, ints = [], [], [], [], []
    for col in (c for c in columns if c != target):
        series = frame[col]
        if col in chosen["categorical"]:
            values = _sorted_values(series)
            if len(values) < 2:
                raise ValidationError(f"expected categorical column {col!r} of {path.name} to "
                                      f"hold at least 2 values, got only {values[0]!r}")
            onehot = np.eye(len(values), dtype=np.float32)[_codes(series, values)]
            cols = [f"{col}={v}" for v in values]
            groups.append(cols)
        else:
            if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
                raise ValidationError(
                    f"expected column {col!r} of {path.name} to be numeric, got values such as "
                    f"{series.iloc[0]!r}; list it in categorical to one-hot encode it")
            onehot = series.to_numpy(np.float64)[:, None]
            if not np.isfinite(onehot).all():
                raise ValidationError(f"expected column {col!r} of {path.name} to be finite, "
                                      f"got {int((~np.isfinite(onehot)).sum())} infinite values")
            if col in chosen["integer"]:
                frac = onehot[:, 0] != np.round(onehot[:, 0])
                if frac.any():
                    row = int(np.flatnonzero(frac)[0])
                    raise ValidationError(
                        f"expected integer column {col!r} of {path.name} to hold whole numbers, "
                        f"got {onehot[row, 0]:g} in row {row} ({int(frac.sum())} fractional)")
                ints.append(col)
            cols = [col]
        parts.append(onehot)
        names.extend(cols)
        if col in chosen["immutable"]:
            fixed.extend(cols)
    if not parts:
        raise ValidationError(f"expected {path.name} to have feature columns besides the "
                              f"target {target!r}")
    x = np.concatenate(parts, axis=1)
    try:
        from sklearn.model_selection import train_test_split

        xtr, xte, ytr, yte = train_test_split(x, y, test_size=size, random_state=0, stratify=y)
    except ValueError as exc:  # too few rows per class for a stratified split
        raise ValidationError(f"could not split {path.name} (stratified, test_size "
                              f"{size:g}, {len(x)} rows, {len(levels)} classes): {exc}") from None
    in_group = {n for g in groups for n in g}
    numeric = np.array([n not in in_group for n in names])
    low = np.where(numeric, 2.0 * np.minimum(xtr.min(axis=0), 0.0), 0.0)
    high = np.where(numeric, 2.0 * np.maximum(xtr.max(axis=0), 0.0), 1.0)
    high = np.where(high > low, high, low + 1.0)  # a column of zeros
    std = xtr.std(axis=0)
    scale = np.where(numeric & (std > 0), std, 1.0)
    constraints = Constraints.build((len(names),), bounds=(low, high), scale=scale,
                                    immutable=fixed, integer=ints, categorical=groups,
                                    names=names)
    try:
        return Dataset(f"csv:{path.name}", xtr.astype(np.float32), ytr,
                       xte.astype(np.float32), yte, tuple(str(v) for v in levels),
                       constraints=constraints,
                       source=f"csv file {path} (target column {target!r})")
    except ValidationError as exc:
        raise ValidationError(f"{exc} (the bounds of {path.name}'s columns are fitted on its "
                              f"training split: twice the largest magnitude seen there)"
                              ) from None


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist": _keras_loader("mnist", "mnist.npz", DIGIT_NAMES),
    "fashion_mnist": _keras_loader("fashion_mnist", "fashion-mnist", FASHION_NAMES),
    "cifar10": _keras_loader("cifar10", "cifar-10-batches-py-target", CIFAR10_NAMES),
    "breast_cancer": _load_breast_cancer,
}
_PREFIXED: dict[str, Callable[..., Dataset]] = {"idx": _load_idx, "npz": _load_npz,
                                                "csv": _load_csv}
_PREFIX_HELP = {"idx": "idx:<dir>", "npz": "npz:<path>", "csv": "csv:<path>"}
_OPTIONS = ("split", "key", "target", "immutable", "integer", "categorical", "test_size")


def _given(value: Any) -> bool:
    """An option counts as given unless None or empty / "none" text (papermill's blanks)."""
    return value is not None and not (isinstance(value, str)
                                      and value.strip().lower() in ("", "none"))


def _accepted(loader: Callable[..., Dataset]) -> set[str]:
    """The options a loader takes: its keyword-only parameters."""
    return {p.name for p in inspect.signature(loader).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _query(name: str, rest: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split ``path?opt=value&...`` into the path and the options (merged with ``options``;
    an option given both ways is refused)."""
    path, _, query = rest.partition("?")
    merged = dict(options)
    for pair in (p for p in query.split("&") if p.strip()):
        opt, sep, value = pair.partition("=")
        opt = unquote(opt).strip()
        if not sep or opt not in _OPTIONS:
            raise ValidationError(f"expected the options in name to be <option>=<value> with "
                                  f"options among {', '.join(_OPTIONS)}, got {pair!r} in "
                                  f"{name!r}")
        if _given(merged.get(opt)):
            raise ValidationError(f"expected {opt} once, got it both in name {name!r} and as "
                                  f"a keyword argument")
        merged[opt] = unquote(value)
    return path, merged


def load(name: str | Dataset = "digits", *, n_train: int | None = None,
         n_test: int | None = None, seed: int = 0, split: int | None = None,
         key: crypto.Key | None = None, target: str | None = None,
         immutable: str | list[str] | None = None, integer: str | list[str] | None = None,
         categorical: str | list[str] | None = None,
         test_size: float | str | None = None) -> Dataset:
    """Load a dataset by name (see the module docstring for the names).

    Args:
        name: ``digits``, ``breast_cancer``, ``mnist``, ``fashion_mnist``, ``cifar10``,
            ``idx:<dir>``, ``npz:<path>`` or ``csv:<path>``. A prefixed name may carry its
            loader's options URL-query style (papermill passes one string):
            ``csv:data.csv?target=y&immutable=age,sex&test_size=0.25`` (values
            percent-decoded; an option given both there and as a keyword is refused). A
            :class:`Dataset` is passed through (subset applied).
        n_train, n_test: keep a seeded random subset of this many examples (None: all).
        seed: seed of the subset choice.
        split: for ``idx:`` with a single split, the number of leading images to train on.
        key: for an encrypted ``npz:`` or ``csv:`` file, its key (a
            :class:`~robustlab.crypto.KeyProvider` or a key file's path); default: the
            configured key (``ROBUSTLAB_KEY_FILE`` / ``ROBUSTLAB_KEY``).
        target: for ``csv:``, the label column (default: the column ``target`` or
            ``label``).
        immutable, integer, categorical: for ``csv:``, column names (a list, or one string
            separated by commas): features the attacker cannot change, whole-number features,
            categorical features (one-hot encoded as ``"<col>=<value>"``). Other datasets
            take such facts through :meth:`Dataset.constrain`.
        test_size: for ``csv:``, the fraction of rows in the test split (default 0.2;
            stratified, ``random_state=0``).

    Returns:
        A validated :class:`Dataset`.

    Raises:
        ValidationError: unknown name, an option the dataset does not take, malformed data
            (the message names the column or array).
        DatasetUnavailableError: files missing or not downloadable (offline).
        KeyRequiredError, DecryptionError: an encrypted file without its key, or damaged.

    Example:
        >>> data = load("digits", n_test=200)
        >>> data.x_test.shape
        (200, 8, 8, 1)
        >>> load("csv:patients.csv?target=outcome&immutable=age").feature_names[:2]
        ('age', 'dose')
    """
    options = {"split": split, "key": key, "target": target, "immutable": immutable,
               "integer": integer, "categorical": categorical, "test_size": test_size}
    if isinstance(name, Dataset):
        _refuse(options, set(), "a Dataset object")
        return name.subset(n_train=n_train, n_test=n_test, seed=seed)
    if not isinstance(name, str):
        raise InputTypeError(f"expected name to be a dataset name string, got "
                             f"{type(name).__name__}")
    text = name.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in _PREFIXED:
        loader = _PREFIXED[prefix.lower()]
        rest, options = _query(name, rest, options)
        if not rest.strip():
            raise ValidationError(f"expected a path after '{prefix}:' in name, got {name!r}")
        accepted = _accepted(loader)
        _refuse(options, accepted, f"{prefix.lower()}: datasets")
        dataset = loader(rest, **{k: v for k, v in options.items()
                                  if k in accepted and _given(v)})
    elif text.lower().replace("-", "_") in DATASETS:
        _refuse(options, set(), f"the {text!r} dataset")
        dataset = DATASETS[text.lower().replace("-", "_")]()
    else:
        choices = ", ".join([*DATASETS, *_PREFIX_HELP.values()])
        raise ValidationError(f"expected name to be one of {choices}, got {name!r}")
    log.info("loaded dataset %s: %d train, %d test, shape %s", dataset.name,
             len(dataset.x_train), len(dataset.x_test), dataset.input_shape)
    return dataset.subset(n_train=n_train, n_test=n_test, seed=seed)


def check_name(value: Any, name: str = "dataset") -> str:
    """``value`` if it is a dataset name :func:`load` understands (checked without loading:
    a built-in name, or a known prefix followed by a path), else a ValidationError naming
    ``name`` and the choices."""
    text = str(value).strip() if isinstance(value, str) else ""
    prefix, sep, rest = text.partition(":")
    if (sep and prefix.lower() in _PREFIXED and rest.strip()) or \
            text.lower().replace("-", "_") in DATASETS:
        return text
    choices = ", ".join([*DATASETS, *_PREFIX_HELP.values()])
    raise ValidationError(f"expected {name} to be one of {choices}, got {value!r}")


def _refuse(options: dict[str, Any], accepted: set[str], what: str) -> None:
    """Refuse options a loader does not take (rather than ignore them silently)."""
    extra = sorted(k for k, v in options.items() if _given(v) and k not in accepted)
    if extra:
        takes = f"takes only {', '.join(sorted(accepted))}" if accepted else "takes no options"
        hint = ("; set feature constraints with Dataset.constrain(...)"
                if {"immutable", "integer", "categorical"} & set(extra) else "")
        raise ValidationError(f"expected no {', '.join(extra)} for {what}, which {takes}, got "
                              f"{', '.join(f'{k}={options[k]!r}' for k in extra)}{hint}")
