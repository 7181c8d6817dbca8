"""Model builders, seeded training, safe save/load and the logits check.

Models are Keras 3 models mapping ``(N, H, W, C)`` float32 images to ``(N, K)`` *logits*.
Attacks differentiate cross-entropy computed from logits; a softmax at the end makes those
gradients vanish for confident predictions, a classic source of false robustness
(Carlini & Wagner 2017, https://arxiv.org/abs/1608.04644), hence :func:`check_logits`.
"""

from __future__ import annotations

import logging
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from robustlab._io import atomic_path, sha256_file
from robustlab._validate import check_int, check_seed
from robustlab.data import Dataset
from robustlab.errors import InputTypeError, RobustlabWarning, UnsafeModelError, ValidationError

__all__ = ["build_model", "build_small_cnn", "build_resnet", "train", "save_model",
           "load_model", "load_or_train", "check_logits", "num_outputs", "sha256_file"]

log = logging.getLogger(__name__)

_KERAS_MEMBERS = {"config.json", "metadata.json"}


def _policy(mixed_precision: bool) -> str | None:
    """Per-layer dtype policy: ``mixed_float16`` (float16 compute, float32 weights; for GPUs)
    or None (the global default). Set per layer, so no global Keras state changes."""
    return "mixed_float16" if mixed_precision else None


def build_small_cnn(input_shape: tuple[int, int, int], num_classes: int, *,
                    seed: int = 0, mixed_precision: bool = False) -> Any:
    """A small CNN for greyscale 8x8 or 28x28 images, returning float32 logits.

    Two 3x3 convolutions (32 and 64 filters, ReLU); images of 16 pixels or more are
    max-pooled after each; then a 128-unit dense layer and a linear output of ``num_classes``,
    with dropout 0.3 before and after the dense layer (inactive at attack time).
    ``mixed_precision`` computes the hidden layers in float16 (a GPU speed-up; the logits
    layer stays float32, and attacks take their gradients in float32).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(check_seed(seed))
    dt = _policy(mixed_precision)
    big = min(input_shape[:2]) >= 16
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1", dtype=dt)(inputs)
    if big:
        x = layers.MaxPooling2D(name="pool1", dtype=dt)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2", dtype=dt)(x)
    x = layers.MaxPooling2D(name="pool2", dtype=dt)(x)
    x = layers.Flatten(name="flatten", dtype=dt)(x)
    x = layers.Dropout(0.3, name="dropout1", dtype=dt)(x)
    x = layers.Dense(128, activation="relu", name="dense", dtype=dt)(x)
    x = layers.Dropout(0.3, name="dropout2", dtype=dt)(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def build_resnet(input_shape: tuple[int, int, int], num_classes: int, *, width: int = 32,
                 blocks_per_stage: int = 1, seed: int = 0, mixed_precision: bool = False) -> Any:
    """A small residual net (He et al. 2016, https://arxiv.org/abs/1512.03385) for 32x32
    colour images: a stem convolution, three stages of residual blocks (``width``,
    ``2*width``, ``4*width`` filters, stride 2 between stages), global pooling, linear logits
    (float32; ``mixed_precision`` as in :func:`build_small_cnn`).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(check_seed(seed))
    dt = _policy(mixed_precision)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem", dtype=dt)(inputs)
    x = layers.BatchNormalization(name="stem_bn", dtype=dt)(x)
    x = layers.ReLU(name="stem_relu", dtype=dt)(x)
    for stage in range(3):
        filters = width * 2**stage
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            prefix = f"s{stage}b{block}"
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{prefix}_conv1", dtype=dt)(x)
            y = layers.BatchNormalization(name=f"{prefix}_bn1", dtype=dt)(y)
            y = layers.ReLU(name=f"{prefix}_relu1", dtype=dt)(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"{prefix}_conv2", dtype=dt)(y)
            y = layers.BatchNormalization(name=f"{prefix}_bn2", dtype=dt)(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                         name=f"{prefix}_proj", dtype=dt)(shortcut)
            x = layers.Add(name=f"{prefix}_add", dtype=dt)([y, shortcut])
            x = layers.ReLU(name=f"{prefix}_out", dtype=dt)(x)
    x = layers.GlobalAveragePooling2D(name="pool", dtype=dt)(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet_small")


def build_model(input_shape: tuple[int, int, int], num_classes: int, *, seed: int = 0,
                mixed_precision: bool = False) -> Any:
    """The default architecture for an input shape: a residual net for colour images of
    32x32 or more, the small CNN otherwise. ``mixed_precision``: float16 compute (GPUs)."""
    if len(input_shape) != 3:
        raise ValidationError(f"expected input_shape (H, W, C), got {input_shape!r}")
    num_classes = check_int("num_classes", num_classes, low=2)
    if input_shape[2] == 3 and min(input_shape[:2]) >= 32:
        return build_resnet(input_shape, num_classes, seed=seed,
                            mixed_precision=mixed_precision)
    return build_small_cnn(input_shape, num_classes, seed=seed, mixed_precision=mixed_precision)


def num_outputs(model: Any) -> int:
    """Number of classes the model predicts (size of its last output axis)."""
    shape = getattr(model, "output_shape", None)
    if not callable(model) or not shape or shape[-1] is None:
        raise InputTypeError(f"expected model to be a Keras classifier with a (N, K) output, "
                             f"got {type(model).__name__} with output shape {shape}")
    return int(shape[-1])


def default_epochs(n_train: int) -> int:
    """About 45,000 example presentations, between 3 and 30 epochs (digits: 30, MNIST-8k: 5)."""
    return max(3, min(30, 45_000 // max(1, n_train)))


def train(model: Any, data: Dataset, *, epochs: int | None = None, batch_size: int = 32,
          learning_rate: float = 1e-3, seed: int = 0, verbose: int = 0) -> dict[str, Any]:
    """Train ``model`` on ``data.x_train`` with Adam and cross-entropy on logits (seeded).

    ``epochs`` None picks :func:`default_epochs`. Returns a dict with the Keras history,
    seconds taken and the final test accuracy.
    """
    import keras

    epochs = default_epochs(len(data.x_train)) if epochs is None else \
        check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    keras.utils.set_random_seed(check_seed(seed))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=verbose)
    seconds = time.perf_counter() - start
    _, test_acc = model.evaluate(data.x_test, data.y_test, verbose=0,
                                 batch_size=max(batch_size, 256))
    log.info("trained %s for %d epochs in %.1f s; test accuracy %.4f", model.name, epochs,
             seconds, test_acc)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "seconds": seconds, "test_accuracy": float(test_acc)}


def save_model(model: Any, path: str | Path) -> Path:
    """Save ``model`` as a ``.keras`` archive, atomically (temporary file + rename)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValidationError(f"expected path to end in .keras (the only format robustlab "
                              f"writes), got {str(path)!r}")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def _check_keras_archive(path: Path) -> None:
    """Refuse anything that is not a `.keras` zip archive, by content, before Keras parses it."""
    if not path.exists():
        raise UnsafeModelError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise UnsafeModelError(
            f"model path {str(path)!r} is a directory (a SavedModel?). SavedModels can run "
            f"arbitrary TensorFlow ops; robustlab loads only .keras archives: rebuild the "
            f"architecture in code and load the weights, then save it with save_model().")
    head = path.read_bytes()[:8]
    if not head:
        raise UnsafeModelError(f"model file {str(path)!r} is empty")
    if head.startswith(b"\x89HDF"):
        raise UnsafeModelError(
            f"model file {str(path)!r} is HDF5 (.h5); Keras' HDF5 loader ignores safe_mode. "
            f"Rebuild the architecture in code, load_weights() it, and save as .keras.")
    if head[:1] == b"\x80" or head.startswith((b"(dp", b"cnumpy")):
        raise UnsafeModelError(f"model file {str(path)!r} is a pickle; unpickling runs code, "
                               f"so robustlab refuses it. Save the model as .keras instead.")
    if not zipfile.is_zipfile(path):
        raise UnsafeModelError(f"model file {str(path)!r} is not a .keras archive (not a zip "
                               f"file, or truncated)")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    missing = _KERAS_MEMBERS - names
    if missing:
        raise UnsafeModelError(f"model file {str(path)!r} is a zip but not a .keras archive: "
                               f"missing {', '.join(sorted(missing))}")


# What a model's config.json may name: classes from Keras' own public modules, and classes
# robustlab registers itself ("robustlab>Name"). Everything else is refused before Keras
# parses the file: Keras' own safe_mode is a denylist that has been bypassed repeatedly
# (CVE-2024-3660, CVE-2025-1550, CVE-2025-8747, CVE-2025-9906, CVE-2026-1462).
_ALLOWED_MODULES = ("keras", "keras.layers", "keras.models", "keras.initializers",
                    "keras.regularizers", "keras.constraints", "keras.activations",
                    "keras.losses", "keras.metrics", "keras.optimizers",
                    "keras.optimizers.schedules", "keras.src.models.functional",
                    "keras.src.models.sequential", "keras.src.models.model")
# Classes that run code of the file's author, or load other files: refused even from Keras.
_REFUSED_CLASSES = {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer",
                    "__lambda__", "function"}
_REFUSED_KEYS = {"safe_mode", "enable_unsafe_deserialization", "unsafe", "function_type",
                 "filepath", "call_endpoint"}


def _check_config(node: Any, where: str = "config") -> None:
    """Walk a ``.keras`` ``config.json`` and refuse anything outside the allowlist."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_config(item, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key in node:
        if str(key) in _REFUSED_KEYS:
            raise UnsafeModelError(f"model config has {key!r} at {where}: robustlab refuses "
                                   f"settings that change how a model file is deserialized")
    if "class_name" in node:
        name = str(node.get("class_name"))
        module = node.get("module")
        registered = node.get("registered_name")
        if name in _REFUSED_CLASSES:
            raise UnsafeModelError(
                f"model config uses {name!r} at {where}: it runs code stored in (or loaded "
                f"by) the file. Rebuild the architecture in code and load only the weights.")
        if registered not in (None, name) and not str(registered).startswith("robustlab>"):
            raise UnsafeModelError(f"model config uses custom object {registered!r} at "
                                   f"{where}; robustlab loads only Keras' own classes and its "
                                   f"own registered ones")
        if module is not None and (not isinstance(module, str) or module not in
                                   _ALLOWED_MODULES and not module.startswith("robustlab.")):
            raise UnsafeModelError(f"model config imports from module {module!r} at {where} "
                                   f"({name}); allowed: Keras' own modules and robustlab")
    for key, value in node.items():
        _check_config(value, f"{where}.{key}")


def load_model(path: str | Path, *, sha256: str | None = None) -> Any:
    """Load a ``.keras`` model with Keras' ``safe_mode`` on (never off).

    Before Keras sees the file, robustlab checks it by content (HDF5, pickles, SavedModel
    directories and zips that are not Keras archives are refused), optionally pins its
    SHA-256 (``sha256``: the expected hex digest; a mismatch is refused), and walks its
    ``config.json``: only classes from Keras' own modules and robustlab's are allowed; Lambda,
    TFSMLayer, TorchModuleWrapper, other modules and any unsafe-deserialization switch are
    refused. Every refusal is an :class:`~robustlab.errors.UnsafeModelError` naming the
    reason.
    """
    import json

    import keras

    path = Path(path)
    _check_keras_archive(path)
    if sha256 is not None:
        expected = str(sha256).strip().lower()
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise ValidationError(f"expected sha256 to be 64 hex digits, got {sha256!r}")
        actual = sha256_file(path)
        if actual != expected:
            raise UnsafeModelError(f"model file {str(path)!r} has sha256 {actual}, expected "
                                   f"{expected}: refusing a file that is not the pinned one")
    with zipfile.ZipFile(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnsafeModelError(f"model file {str(path)!r} has an unreadable config.json: "
                                   f"{exc}") from None
    _check_config(config)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; name the file
        raise UnsafeModelError(f"Keras refused to load {str(path)!r}: {exc}") from exc


def check_logits(model: Any, x: np.ndarray, *, atol: float = 1e-3) -> bool:
    """Warn when ``model`` looks like it outputs probabilities rather than logits.

    Returns True if the outputs look like logits. The detection is
    :func:`robustlab.checks.probability_outputs` (a softmax last layer, or outputs in [0, 1]
    summing to 1 per row on the sample ``x``, shape ``(N, H, W, C)``).
    """
    from robustlab.checks import Status, probability_outputs

    if probability_outputs(model, x, atol=atol).status is Status.FAIL:
        warnings.warn(
            f"model {model.name!r} seems to output probabilities (softmax) instead of logits. "
            "Cross-entropy gradients through a softmax vanish for confident predictions, "
            "which makes attacks fail and robustness look better than it is. Remove the "
            "softmax (attacks and training here expect logits).",
            RobustlabWarning, stacklevel=2)
        return False
    return True


def load_or_train(model_path: str | Path | None, data: Dataset, *, epochs: int | None = None,
                  batch_size: int = 32, seed: int = 0, save_to: str | Path | None = None,
                  sha256: str | None = None) -> Any:
    """Load ``model_path`` if given (non-empty; pinned to ``sha256`` when given, see
    :func:`load_model`), else build and train the default model.

    A trained model is saved to ``save_to`` when given. The logits check runs either way.
    """
    if model_path:
        model = load_model(model_path, sha256=sha256 or None)
        outputs = num_outputs(model)
        if outputs != data.num_classes:
            raise ValidationError(f"expected a model with {data.num_classes} outputs for "
                                  f"{data.name}, got {outputs} outputs from {model_path}")
    else:
        model = build_model(data.input_shape, data.num_classes, seed=seed)
        train(model, data, epochs=epochs, batch_size=batch_size, seed=seed)
        if save_to:
            save_model(model, save_to)
    check_logits(model, data.x_test)
    return model
