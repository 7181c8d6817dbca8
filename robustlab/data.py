"""Datasets: ``load(name)`` returns a validated :class:`Dataset`.

Every dataset is float32 NHWC in its ``bounds`` (``[0, 1]`` for the built-in ones) with
integer labels in ``[0, num_classes)``. Names understood by :func:`load`:

``digits``
    scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 with a fixed stratified
    shuffle. Works offline; the default.
``mnist``, ``fashion_mnist``, ``cifar10``
    Keras' own download-and-cache loaders (files cached under ``~/.keras/datasets``). Offline,
    they raise :class:`~robustlab.errors.DatasetUnavailableError` saying where to put the files.
``idx:<dir>``
    MNIST-format gzipped IDX files in ``<dir>``. With ``train-*`` and ``t10k-*`` pairs, those
    are the splits; with a single pair, ``split=k`` makes the first ``k`` images the training
    set and the rest the test set.
``npz:<path>``
    A ``.npz`` file with arrays ``x_train, y_train, x_test, y_test`` (loaded without pickle;
    uint8 images are scaled by 1/255, float images must already lie in [0, 1]). An encrypted
    one (:mod:`robustlab.crypto`) is decrypted in memory with the configured key or ``key``.
"""

from __future__ import annotations

import gzip
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from robustlab import crypto
from robustlab._validate import check_int, check_optional_int, check_seed, validate_arrays
from robustlab.errors import DatasetUnavailableError, InputTypeError, ValidationError

__all__ = ["Dataset", "load", "DATASETS"]

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
        name: short name (``"digits"``, ``"mnist"``, ``"idx:..."``).
        x_train, x_test: float32 images, shape ``(N, H, W, C)``, within ``bounds``.
        y_train, y_test: int64 labels, shape ``(N,)``.
        class_names: one display name per class.
        bounds: ``(low, high)`` pixel range, ``(0.0, 1.0)`` for built-in datasets.
        source: where the data came from (for reports).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    bounds: tuple[float, float] = (0.0, 1.0)
    source: str = field(default="")

    def __post_init__(self) -> None:
        k = len(self.class_names)
        if k < 2:
            raise ValidationError(f"expected at least 2 class_names, got {k}")
        xtr, ytr = validate_arrays(self.x_train, self.y_train, num_classes=k,
                                   bounds=self.bounds, name="x_train", label_name="y_train")
        xte, yte = validate_arrays(self.x_test, self.y_test, num_classes=k,
                                   bounds=self.bounds, name="x_test", label_name="y_test")
        if xtr.shape[1:] != xte.shape[1:]:
            raise ValidationError(f"expected x_train and x_test to share an image shape, got "
                                  f"{xtr.shape[1:]} and {xte.shape[1:]}")
        for attr, value in (("x_train", xtr), ("y_train", ytr), ("x_test", xte),
                            ("y_test", yte)):
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, *, n_train: int | None = None, n_test: int | None = None,
               seed: int = 0) -> Dataset:
        """A seeded random subset (``None`` keeps a split whole)."""
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
        """A JSON-friendly summary (no arrays)."""
        return {"name": self.name, "source": self.source, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "class_names": list(self.class_names),
                "n_train": len(self.x_train), "n_test": len(self.x_test),
                "bounds": list(self.bounds)}


# ---------------------------------------------------------------------------------------------
# loaders


def _to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]; add a channel axis to (N, H, W)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return x.astype(np.float32) / np.float32(255.0)


def _load_digits(**_: Any) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Dataset("digits", xtr, ytr, xte, yte, DIGIT_NAMES,
                   source="scikit-learn load_digits (UCI optical digits, 8x8, 0-16 scaled to 0-1)")


_OFFLINE_HELP = (
    "could not load the {name} dataset through Keras ({error}). Keras downloads it once and "
    "caches it as {cache}. Offline, copy that file there from a machine that has it (or set "
    "KERAS_HOME to a folder that holds datasets/{fname}), or load the data from local files "
    "with 'idx:<dir>' (MNIST-format IDX files) or 'npz:<path>' (x_train, y_train, x_test, "
    "y_test)."
)


def _keras_loader(name: str, fname: str, class_names: tuple[str, ...]) -> Callable[..., Dataset]:
    def load_fn(**_: Any) -> Dataset:
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


def _load_idx(spec: str, *, split: int | None = None, **_: Any) -> Dataset:
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


def _load_npz(spec: str, *, key: crypto.Key | None = None, **_: Any) -> Dataset:
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
        xs.append(_to_unit(x) if x.dtype == np.uint8 else
                  (x[..., None] if x.ndim == 3 else x).astype(np.float32))
    ytr, yte = np.ravel(arrays["y_train"]), np.ravel(arrays["y_test"])
    if "class_names" in arrays:
        names = tuple(str(c) for c in arrays["class_names"])
    else:
        top = max(int(np.max(ytr)), int(np.max(yte)), 1) + 1 if ytr.size and yte.size else 2
        names = tuple(str(i) for i in range(top))
    return Dataset(f"npz:{path.name}", xs[0], ytr, xs[1], yte, names, source=f"npz file {path}")


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist": _keras_loader("mnist", "mnist.npz", DIGIT_NAMES),
    "fashion_mnist": _keras_loader("fashion_mnist", "fashion-mnist", FASHION_NAMES),
    "cifar10": _keras_loader("cifar10", "cifar-10-batches-py-target", CIFAR10_NAMES),
}
_PREFIXED: dict[str, Callable[..., Dataset]] = {"idx": _load_idx, "npz": _load_npz}


def load(name: str | Dataset = "digits", *, n_train: int | None = None,
         n_test: int | None = None, seed: int = 0, split: int | None = None,
         key: crypto.Key | None = None) -> Dataset:
    """Load a dataset by name (see the module docstring for the names).

    Args:
        name: ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``idx:<dir>`` or
            ``npz:<path>``. A :class:`Dataset` is passed through (subset applied).
        n_train, n_test: keep a seeded random subset of this many examples (None: all).
        seed: seed of the subset choice.
        split: for ``idx:`` with a single split, the number of leading images to train on.
        key: for an encrypted ``npz:`` file, its key (a
            :class:`~robustlab.crypto.KeyProvider` or a key file's path); default: the
            configured key (``ROBUSTLAB_KEY_FILE`` / ``ROBUSTLAB_KEY``).

    Returns:
        A validated :class:`Dataset`.

    Raises:
        ValidationError: unknown name, malformed data.
        DatasetUnavailableError: files missing or not downloadable (offline).
        KeyRequiredError, DecryptionError: an encrypted file without its key, or damaged.

    Example:
        >>> data = load("digits", n_test=200)
        >>> data.x_test.shape
        (200, 8, 8, 1)
    """
    if isinstance(name, Dataset):
        return name.subset(n_train=n_train, n_test=n_test, seed=seed)
    if not isinstance(name, str):
        raise InputTypeError(f"expected name to be a dataset name string, got "
                             f"{type(name).__name__}")
    text = name.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in _PREFIXED:
        if not rest:
            raise ValidationError(f"expected a path after '{prefix}:' in name, got {name!r}")
        dataset = _PREFIXED[prefix.lower()](rest, split=split, key=key)
    elif text.lower().replace("-", "_") in DATASETS:
        dataset = DATASETS[text.lower().replace("-", "_")]()
    else:
        choices = ", ".join([*DATASETS, "idx:<dir>", "npz:<path>"])
        raise ValidationError(f"expected name to be one of {choices}, got {name!r}")
    log.info("loaded dataset %s: %d train, %d test, shape %s", dataset.name,
             len(dataset.x_train), len(dataset.x_test), dataset.input_shape)
    return dataset.subset(n_train=n_train, n_test=n_test, seed=seed)
