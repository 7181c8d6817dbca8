"""Model builders and safe save/load.

Models are Keras 3 models mapping ``(N, ...)`` float32 inputs (images ``(N, H, W, C)``,
feature vectors ``(N, F)``, any rank) to ``(N, K)`` *logits*: convolutional nets for images,
a small MLP that standardises its own inputs for tables (so attacks and reports work in the
features' original units).
Attacks differentiate cross-entropy computed from logits; a softmax at the end makes those
gradients vanish for confident predictions, a classic source of false robustness
(Carlini & Wagner 2017, https://arxiv.org/abs/1608.04644; see
:func:`robustlab.checks.check_logits`). Training lives in :mod:`robustlab.training`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from robustlab import crypto
from robustlab._io import atomic_path
from robustlab._validate import check_int, check_seed, check_sha256
from robustlab.distribute import is_chief
from robustlab.errors import InputTypeError, ModelNotFoundError, UnsafeModelError, ValidationError

__all__ = ["build_model", "build_small_cnn", "build_resnet", "build_mlp", "save_model",
           "load_model"]

log = logging.getLogger(__name__)

_KERAS_MEMBERS = {"config.json", "metadata.json"}


def _policy(mixed_precision: bool) -> str | None:
    """Per-layer dtype policy: ``mixed_float16`` (float16 compute, float32 weights; for GPUs)
    or None (the global default). Set per layer, so no global Keras state changes."""
    return "mixed_float16" if mixed_precision else None


class _Seeds:
    """Integer seeds for a model's random parts (weight initializers, dropout), drawn from a
    local generator in the order the layers are built, so building a model touches no
    global random state. The numbers are those Keras draws itself after
    ``keras.utils.set_random_seed(seed)`` (``random.randint(1, 10**9)`` per random part),
    so the weights equal those of earlier robustlab versions for the same seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(check_seed(seed))  # noqa: S311  # nosec B311 - weights, not secrets

    def glorot(self) -> Any:
        import keras

        return keras.initializers.GlorotUniform(seed=self._rng.randint(1, int(1e9)))

    def dropout(self) -> int:
        return self._rng.randint(1, int(1e9))


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

    seeds = _Seeds(seed)
    dt = _policy(mixed_precision)
    big = min(input_shape[:2]) >= 16
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1", dtype=dt,
                      kernel_initializer=seeds.glorot())(inputs)
    if big:
        x = layers.MaxPooling2D(name="pool1", dtype=dt)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2", dtype=dt,
                      kernel_initializer=seeds.glorot())(x)
    x = layers.MaxPooling2D(name="pool2", dtype=dt)(x)
    x = layers.Flatten(name="flatten", dtype=dt)(x)
    x = layers.Dropout(0.3, name="dropout1", dtype=dt, seed=seeds.dropout())(x)
    x = layers.Dense(128, activation="relu", name="dense", dtype=dt,
                     kernel_initializer=seeds.glorot())(x)
    x = layers.Dropout(0.3, name="dropout2", dtype=dt, seed=seeds.dropout())(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32",
                           kernel_initializer=seeds.glorot())(x)
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

    seeds = _Seeds(seed)
    dt = _policy(mixed_precision)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem", dtype=dt,
                      kernel_initializer=seeds.glorot())(inputs)
    x = layers.BatchNormalization(name="stem_bn", dtype=dt)(x)
    x = layers.ReLU(name="stem_relu", dtype=dt)(x)
    for stage in range(3):
        filters = width * 2**stage
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            prefix = f"s{stage}b{block}"
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{prefix}_conv1", dtype=dt,
                              kernel_initializer=seeds.glorot())(x)
            y = layers.BatchNormalization(name=f"{prefix}_bn1", dtype=dt)(y)
            y = layers.ReLU(name=f"{prefix}_relu1", dtype=dt)(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"{prefix}_conv2", dtype=dt,
                              kernel_initializer=seeds.glorot())(y)
            y = layers.BatchNormalization(name=f"{prefix}_bn2", dtype=dt)(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                         name=f"{prefix}_proj", dtype=dt,
                                         kernel_initializer=seeds.glorot())(shortcut)
            x = layers.Add(name=f"{prefix}_add", dtype=dt)([y, shortcut])
            x = layers.ReLU(name=f"{prefix}_out", dtype=dt)(x)
    x = layers.GlobalAveragePooling2D(name="pool", dtype=dt)(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32",
                           kernel_initializer=seeds.glorot())(x)
    return keras.Model(inputs, outputs, name="resnet_small")


def _shape(input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (one example's shape)."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValidationError(f"expected input_shape to be a tuple of ints (one example's "
                              f"shape), got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValidationError(f"expected input_shape to have positive dimensions, got "
                              f"{input_shape!r}")
    return shape


def _stats(mean: Any, std: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``std`` as flat float32 arrays of ``size`` features (checked)."""
    if (mean is None) != (std is None):
        raise ValidationError(f"expected mean and std together (or neither), got "
                              f"{'mean' if std is None else 'std'} only")
    out = []
    for name, value in (("mean", mean), ("std", std)):
        try:
            arr = np.asarray(value, np.float32)
            arr = np.array(np.broadcast_to(arr.reshape(-1) if arr.size == size else arr,
                                           (size,)), np.float32)
        except (TypeError, ValueError):
            raise ValidationError(f"expected {name} to hold one number per feature ({size}), "
                                  f"got shape {np.shape(value)}") from None
        if not np.isfinite(arr).all():
            raise ValidationError(f"expected {name} to be finite")
        out.append(arr)
    if (out[1] <= 0).any():
        raise ValidationError(f"expected std > 0 for every feature, got minimum "
                              f"{float(out[1].min()):g} (Dataset.feature_stats floors it at "
                              f"1e-6)")
    return out[0], out[1]


def build_mlp(input_shape: tuple[int, ...], num_classes: int, *,
              hidden: tuple[int, ...] = (64, 32), mean: Any = None, std: Any = None,
              seed: int = 0, mixed_precision: bool = False) -> Any:
    """A small multilayer perceptron for feature vectors (or any shape), returning float32
    logits ``(N, num_classes)``.

    Layers: inputs ``(N, *input_shape)``, flattened when of rank > 1 to ``(N, F)``; with
    ``mean`` and ``std`` (one per flat feature, in the features' units, e.g. from
    :meth:`Dataset.feature_stats <robustlab.data.Dataset.feature_stats>` on the training
    split) a fixed, non-trainable ``Normalization`` layer ``(x - mean) / std``, so the model
    takes raw features and gradients flow back to their original units; then one ReLU
    ``Dense`` layer per entry of ``hidden`` and a linear ``Dense(num_classes)``. Seeded like
    :func:`build_small_cnn`; ``mixed_precision`` computes the hidden layers in float16
    (normalisation and logits stay float32). The model saves and loads through
    :func:`save_model` / :func:`load_model` (the statistics live in its config).

    Example:
        >>> mean, std = data.feature_stats()
        >>> model = build_mlp(data.input_shape, data.num_classes, mean=mean, std=std)
    """
    import keras
    from keras import layers

    shape = _shape(input_shape)
    num_classes = check_int("num_classes", num_classes, low=2)
    units = [check_int(f"hidden[{i}]", h, low=1) for i, h in enumerate(hidden)]
    size = int(np.prod(shape))
    stats = None if mean is None and std is None else _stats(mean, std, size)
    seeds = _Seeds(seed)
    dt = _policy(mixed_precision)
    inputs = keras.Input(shape=shape, name="features")
    x = layers.Flatten(name="flatten")(inputs) if len(shape) > 1 else inputs
    if stats is not None:
        x = layers.Normalization(mean=stats[0].tolist(), variance=(stats[1] ** 2).tolist(),
                                 name="standardize")(x)
    for i, width in enumerate(units):
        x = layers.Dense(width, activation="relu", name=f"dense{i + 1}", dtype=dt,
                         kernel_initializer=seeds.glorot())(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32",
                           kernel_initializer=seeds.glorot())(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_model(input_shape: tuple[int, ...], num_classes: int, *, seed: int = 0,
                mixed_precision: bool = False, mean: Any = None, std: Any = None) -> Any:
    """The default architecture for one example's shape.

    * ``(H, W, C)`` images: a residual net for colour images of 32x32 or more, the small
      CNN otherwise (``mean``/``std`` are refused: image models take pixels as they are);
    * feature vectors ``(F,)``, greyscale arrays ``(H, W)`` (a CNN needs a channel axis) and
      shapes of rank 4 or more: :func:`build_mlp` (flattening), standardising with ``mean``
      and ``std`` when given (e.g. :meth:`Dataset.feature_stats
      <robustlab.data.Dataset.feature_stats>`).

    ``mixed_precision``: float16 compute (GPUs).

    Example:
        >>> build_model((30,), 2, mean=mean, std=std).name
        'mlp'
    """
    shape = _shape(input_shape)
    num_classes = check_int("num_classes", num_classes, low=2)
    if len(shape) != 3:
        return build_mlp(shape, num_classes, mean=mean, std=std, seed=seed,
                         mixed_precision=mixed_precision)
    if mean is not None or std is not None:
        raise ValidationError(f"expected mean and std only for feature-vector models (input "
                              f"shapes (F,) or (H, W)), got them with the image shape {shape}; "
                              f"image models take pixels as they are")
    if shape[2] == 3 and min(shape[:2]) >= 32:
        return build_resnet(shape, num_classes, seed=seed,
                            mixed_precision=mixed_precision)
    return build_small_cnn(shape, num_classes, seed=seed,
                           mixed_precision=mixed_precision)


def save_model(model: Any, path: str | os.PathLike[str], *,
               key: crypto.Key | None = None) -> Path:
    """Save ``model`` as a ``.keras`` archive, atomically (temporary file + rename).

    With a key (``key``: a :class:`~robustlab.crypto.KeyProvider` or a key file's path;
    default: the configured one, see :mod:`robustlab.crypto`) the archive is built in memory
    and only its encryption reaches the disk; a model whose layers store assets (the
    vocabularies of StringLookup, TextVectorization) is then refused, as Keras writes those
    to a temporary directory in plaintext.

    On a worker of a ``TF_CONFIG`` cluster that is not the chief
    (:func:`robustlab.distribute.is_chief`; every worker holds the same model) nothing is
    written: the chief writes ``path``, which is returned."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValidationError(f"expected path to end in .keras (the only format robustlab "
                              f"writes), got {str(path)!r}")
    if not is_chief():
        log.warning("not the chief of the TF_CONFIG cluster: %s is not written here (the "
                    "chief writes it)", path)
        return path
    provider = crypto.resolve_key(key)
    if provider is not None:
        crypto.write_bytes(path, _keras_bytes(model), provider)
        return path
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def _keras_bytes(model: Any) -> bytes:
    """The ``.keras`` archive of ``model``, built in memory, for encryption. Keras writes into
    a file object without a ``name``, so it cannot put a temporary weights file beside it.
    Layers with assets (vocabularies of StringLookup, TextVectorization, ...) are refused:
    Keras writes assets to a temporary directory, in plaintext, while it builds the archive."""
    from keras.src.saving import saving_lib  # Keras 3's file-object API (keras==3.15.*)

    with_assets = [layer.name for layer in model._flatten_layers()
                   if hasattr(layer, "save_assets")]
    if with_assets:
        raise ValidationError(f"cannot save the model encrypted: its layers "
                              f"{', '.join(with_assets[:5])} store assets (vocabularies), "
                              f"which Keras writes to a temporary directory in plaintext while "
                              f"saving; save it without a key, or keep it on encrypted storage")
    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)
    return buffer.getvalue()


def _read_model_file(path: Path) -> bytearray:
    """The bytes of the model file ``path`` in one buffer (a missing file or a directory is
    refused)."""
    if not path.exists():  # missing, not unsafe: a FileNotFoundError callers can tell apart
        raise ModelNotFoundError(f"model file {str(path)!r} does not exist (check the path; "
                                 f"robustlab loads .keras archives written by save_model)")
    if path.is_dir():
        raise UnsafeModelError(
            f"model path {str(path)!r} is a directory (a SavedModel?). SavedModels can run "
            f"arbitrary TensorFlow ops; robustlab loads only .keras archives: rebuild the "
            f"architecture in code and load the weights, then save it with save_model().")
    return crypto.read_stored(path)


def _check_keras_archive(path: Path, data: bytes | bytearray) -> None:
    """Refuse anything that is not a `.keras` zip archive, by content (``data``: the bytes of
    ``path``, decrypted if it is encrypted), before Keras parses it."""
    head = bytes(data[:8])
    if not head:
        raise UnsafeModelError(f"model file {str(path)!r} is empty")
    if head.startswith(b"\x89HDF"):
        raise UnsafeModelError(
            f"model file {str(path)!r} is HDF5 (.h5); Keras' HDF5 loader ignores safe_mode. "
            f"Rebuild the architecture in code, load_weights() it, and save as .keras.")
    if head[:1] == b"\x80" or head.startswith((b"(dp", b"cnumpy")):
        raise UnsafeModelError(f"model file {str(path)!r} is a pickle; unpickling runs code, "
                               f"so robustlab refuses it. Save the model as .keras instead.")
    if not zipfile.is_zipfile(crypto.MemoryFile(data)):
        raise UnsafeModelError(f"model file {str(path)!r} is not a .keras archive (not a zip "
                               f"file, or truncated)")
    with zipfile.ZipFile(crypto.MemoryFile(data)) as archive:
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
# Deepest nesting of lists and dicts allowed in config.json. robustlab's own models nest 10
# (small CNN) and 11 (ResNet) levels, a model wrapping another about 3 more; 100 leaves room
# for deep stacks of nested models and stays far below Python's recursion limit (1000 frames),
# which a file nested thousands of levels deep would otherwise exhaust (a RecursionError).
_MAX_CONFIG_DEPTH = 100


def _check_config(node: Any, where: str = "config", depth: int = 1) -> None:
    """Walk a ``.keras`` ``config.json`` and refuse anything outside the allowlist, or nested
    deeper than ``_MAX_CONFIG_DEPTH`` (``depth`` is ``node``'s level, the root's is 1)."""
    if isinstance(node, (list, dict)) and depth > _MAX_CONFIG_DEPTH:
        at = where if len(where) <= 80 else f"{where[:40]}...{where[-30:]}"
        raise UnsafeModelError(f"model config nests lists/dicts deeper than "
                               f"{_MAX_CONFIG_DEPTH} levels (at {at}); real Keras configs "
                               f"nest about 10-15, so robustlab refuses the file")
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_config(item, f"{where}[{i}]", depth + 1)
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
        _check_config(value, f"{where}.{key}", depth + 1)


def _check_blessed(path: Path, data: bytes | bytearray, require_blessing: Any) -> None:
    """``load_model(require_blessing=(blessing, public_key))``: the bytes read must be the
    model that the signed blessing blesses (:func:`robustlab.signing.check_blessing`)."""
    from robustlab import signing

    if not (isinstance(require_blessing, (tuple, list)) and len(require_blessing) == 2):
        raise InputTypeError(f"expected require_blessing to be (blessing.json path, public "
                             f"key path), got {require_blessing!r}")
    blessing, public_key = require_blessing
    signing.check_blessing(blessing, public_key, hashlib.sha256(data).hexdigest(),
                           model_name=f"model file {str(path)!r}")


def load_model(path: str | os.PathLike[str], *, sha256: str | None = None,
               key: crypto.Key | None = None,
               require_blessing: tuple[str | os.PathLike[str], Any] | None = None) -> Any:
    """Load a ``.keras`` model with Keras' ``safe_mode`` on (never off).

    Before Keras sees the file, robustlab checks it by content (HDF5, pickles, SavedModel
    directories and zips that are not Keras archives are refused), optionally pins its
    SHA-256 (``sha256``: the expected hex digest; a mismatch is refused), and walks its
    ``config.json``: only classes from Keras' own modules and robustlab's are allowed; Lambda,
    TFSMLayer, TorchModuleWrapper, other modules and any unsafe-deserialization switch are
    refused, and so is a config nested deeper than 100 levels (robustlab's own models nest
    10-11; a file nested thousands deep would otherwise end in a bare ``RecursionError``).
    Every refusal is an :class:`~robustlab.errors.UnsafeModelError` naming the file and the
    reason; a file that does not exist is a :class:`~robustlab.errors.ModelNotFoundError`
    (also a ``FileNotFoundError``), and a ``path`` that is not a ``str`` or ``os.PathLike``
    an :class:`~robustlab.errors.InputTypeError`.

    An encrypted file (:mod:`robustlab.crypto`) is decrypted in memory with ``key`` (default:
    the configured key), never to a temporary file, and the checks above run on the decrypted
    bytes, which are exactly the bytes Keras then loads; ``sha256`` pins the file as stored.
    Without a key it is a :class:`~robustlab.errors.KeyRequiredError`; a wrong key or a
    damaged file a :class:`~robustlab.errors.DecryptionError`.

    ``require_blessing=(blessing, public_key)`` (a ``blessing.json`` written by ``robustlab
    gate --signing-key`` and the signer's public key PEM, see :mod:`robustlab.signing`)
    loads the model only when the blessing is signed by that key, says "blessed" and names
    the sha256 of the bytes just read (as stored), checked before they are decrypted or
    parsed: otherwise a :class:`~robustlab.signing.BlessingRefusedError` (an
    ``UnsafeModelError``) saying why, or a :class:`~robustlab.signing.SigningError` when the
    blessing or the key cannot be read.
    """
    import json

    from keras.src.saving import saving_lib  # Keras 3's file-object API (keras==3.15.*)

    if not isinstance(path, (str, os.PathLike)):
        shown = repr(path) if len(repr(path)) <= 80 else repr(path)[:77] + "..."
        raise InputTypeError(f"expected path to be a path to a .keras file, got "
                             f"{type(path).__name__} {shown}")
    path = Path(path)
    data = _read_model_file(path)
    if sha256 is not None:
        expected = check_sha256("sha256", sha256)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise UnsafeModelError(f"model file {str(path)!r} has sha256 {actual}, expected "
                                   f"{expected}: refusing a file that is not the pinned one")
    if require_blessing is not None:  # before anything parses the bytes
        _check_blessed(path, data, require_blessing)
    encrypted = crypto.looks_encrypted(data)
    if encrypted:  # in memory only, in place: no plaintext copy anywhere else
        crypto.decrypt_in_place(data, key, source=repr(str(path)))
    _check_keras_archive(path, data)
    with zipfile.ZipFile(crypto.MemoryFile(data)) as archive:
        if encrypted and len(archive.namelist()) > len(_KERAS_MEMBERS) + 1:
            raise UnsafeModelError(  # Keras would extract the assets to a temporary directory
                f"encrypted model file {str(path)!r} holds assets besides its config and "
                f"weights ({len(archive.namelist())} files); Keras extracts those to a "
                f"temporary directory in plaintext, so robustlab does not load it encrypted")
        try:
            config = json.loads(archive.read("config.json"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnsafeModelError(f"model file {str(path)!r} has an unreadable config.json: "
                                   f"{exc}") from None
        except RecursionError:  # the parser itself gives up (thousands of nested levels)
            raise UnsafeModelError(f"model file {str(path)!r} has a config.json that nests "
                                   f"lists/dicts too deeply to parse (more than "
                                   f"{_MAX_CONFIG_DEPTH} levels is refused; real Keras configs "
                                   f"nest about 10-15)") from None
    try:
        _check_config(config)
    except UnsafeModelError as exc:  # say which file, not only where in it
        raise UnsafeModelError(f"model file {str(path)!r}: {exc}") from None
    try:
        return saving_lib.load_model(crypto.MemoryFile(data), compile=False,
                                     safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; name the file
        raise UnsafeModelError(f"Keras refused to load {str(path)!r}: {exc}") from exc


