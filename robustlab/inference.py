"""Running a model for predictions: class count, batched logits, labels, softmax, how many
examples fit in one batch, and names TensorFlow accepts while it traces the model. Every
layer above uses these; none of them differentiates.

Models are Keras classifiers mapping inputs ``(N, ...)`` to logits ``(N, K)``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from robustlab._env import device_info
from robustlab._validate import check_int, check_optional_int
from robustlab.distribute import map_batches
from robustlab.errors import InputTypeError, ValidationError

__all__ = ["GraphSafeNames", "graph_scope_name", "num_outputs", "batched_logits",
           "predict_labels", "softmax", "check_input_shape", "resolve_batch_size",
           "auto_batch_size", "bytes_per_example", "DEFAULT_BATCH_SIZE", "feature_model",
           "penultimate_features", "weights_sha256"]

# Batch size when the model's memory needs cannot be estimated (a subclassed model).
DEFAULT_BATCH_SIZE = 500
# Memory an attack batch may use: on a CPU an eighth of what is available, at most 256 MiB
# (beyond a few hundred examples a CPU step costs the same per example, measured from 64 to
# 2,000 on MNIST); on a GPU 4 GiB, where big batches do pay (the ResourceExhausted fallback
# below halves the batch if even that is too much).
_CPU_BUDGET, _GPU_BUDGET = 256 << 20, 4 << 30
_MAX_BATCH = 4096


def num_outputs(model: Any) -> int:
    """Number of classes the model predicts (size of its last output axis)."""
    shape = getattr(model, "output_shape", None)
    if not callable(model) or not shape or shape[-1] is None:
        raise InputTypeError(f"expected model to be a Keras classifier with a (N, K) output, "
                             f"got {type(model).__name__} with output shape {shape}")
    return int(shape[-1])


def check_input_shape(model: Any, x: np.ndarray, *, name: str = "x") -> None:
    """Refuse inputs whose shape (after the batch axis) differs from what ``model`` declares
    (``model.input_shape``; unknown dimensions match anything), before Keras fails deep
    inside with a message that names neither the input nor the model."""
    expected = getattr(model, "input_shape", None)
    if isinstance(expected, list):  # several inputs: not a single-input classifier
        return
    if not expected or len(expected) < 2:
        return
    want = tuple(expected[1:])
    got = tuple(x.shape[1:])
    if len(want) != len(got) or any(w is not None and w != g
                                    for w, g in zip(want, got, strict=True)):
        shown = tuple("any" if w is None else w for w in want)
        raise ValidationError(f"expected {name} with input shape {shown} for model "
                              f"{getattr(model, 'name', type(model).__name__)!r}, got "
                              f"{got} (full shape {tuple(x.shape)})")


def batched_logits(model: Any, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
                   ) -> np.ndarray:
    """The model's logits for ``x`` in inference mode, batched; shape ``(N, K)`` float32.
    The batches go to the current replicas (:func:`robustlab.distribute.across`)."""

    def work(replica: Any, rows: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(replica(x[rows[0]:rows[-1] + 1], training=False), np.float32)]

    shape = getattr(model, "output_shape", None)
    classes = int(shape[-1]) if isinstance(shape, tuple) and shape and shape[-1] else \
        int(np.shape(model(x[:1], training=False))[-1]) if len(x) else 0
    return map_batches(work, model, np.arange(len(x)), batch_size,
                       [((classes,), np.float32)])[0]


def feature_model(model: Any, layers: Any = ()) -> Any:
    """A Keras model sharing ``model``'s layers that returns ``[features, logits, *hidden]``:
    the input of the last layer ``(N, D)`` (the features the logits are computed from), the
    logits ``(N, K)`` and the outputs of the layers named in ``layers``, in one forward
    pass. For functional and sequential Keras models."""
    import keras

    try:
        last = model.layers[-1]
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        hidden = [model.get_layer(name).output for name in layers]
        return keras.Model(inputs, [last.input, model.outputs[0], *hidden])
    except (AttributeError, ValueError, IndexError, TypeError) as exc:
        raise InputTypeError(f"expected a functional or sequential Keras model whose last "
                             f"layer computes the logits, got {type(model).__name__} "
                             f"({exc})") from None


def penultimate_features(model: Any, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """The input of ``model``'s last layer (the features its logits are computed from),
    ``(N, D)`` float64, for a functional or sequential Keras model."""
    extractor = feature_model(model)
    x = np.asarray(x, np.float32)
    with GraphSafeNames(extractor):
        feats = [np.asarray(extractor(x[i:i + batch_size], training=False)[0])
                 for i in range(0, len(x), batch_size)]
    return np.concatenate(feats).astype(np.float64).reshape(len(x), -1)


def weights_sha256(model: Any) -> str:
    """SHA-256 of the model's weight arrays (shapes, dtypes and bytes, in layer order): the
    same for the same weights whatever file format or name the model came from."""
    import hashlib

    digest = hashlib.sha256()
    for weight in getattr(model, "weights", []):
        arr = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits (NumPy, numerically stable)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def predict_labels(model: Any, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
                   ) -> np.ndarray:
    """``argmax`` of the model's logits, batched; shape ``(N,)`` int64."""
    return batched_logits(model, x, batch_size).argmax(axis=1).astype(np.int64)


def _available_memory() -> int:
    """Bytes of memory available to this process now (Linux ``MemAvailable``; else 4 GiB)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def bytes_per_example(model: Any, image_shape: tuple[int, ...]) -> int | None:
    """Estimated memory one example needs in a PGD step, in bytes, or None if unknown.

    A gradient step keeps every layer's activation for the backward pass and makes a gradient
    of each; counted as 3 float32 copies of all layer outputs plus 8 copies of the image
    (clean, iterate, best, gradient, noise and temporaries).
    """
    total = 0
    for layer in getattr(model, "layers", []):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is None:
            return None
        try:
            total += int(np.prod([d for d in shape[1:]]))
        except TypeError:  # an unknown (None) dimension
            return None
    if total == 0:
        return None
    return 4 * (3 * total + 8 * int(np.prod(image_shape)))


def auto_batch_size(model: Any, image_shape: tuple[int, ...]) -> int:
    """Examples per attack batch that fit the memory budget (see ``_CPU_BUDGET``).

    ``ROBUSTLAB_BATCH_SIZE`` overrides it; a model whose layer sizes are unknown gets
    ``DEFAULT_BATCH_SIZE``. The result is between 1 and 4096.
    """
    forced = os.environ.get("ROBUSTLAB_BATCH_SIZE", "").strip()
    if forced:
        return check_int("ROBUSTLAB_BATCH_SIZE", forced, low=1)
    per_example = bytes_per_example(model, image_shape)
    if per_example is None:
        return DEFAULT_BATCH_SIZE
    budget = _GPU_BUDGET if device_info()["type"] == "GPU" else \
        min(_CPU_BUDGET, _available_memory() // 8)
    size = max(1, min(_MAX_BATCH, budget // per_example))
    return size - size % 32 if size >= 64 else size


def resolve_batch_size(batch_size: Any, model: Any, image_shape: tuple[int, ...]) -> int:
    """``batch_size`` checked, or :func:`auto_batch_size` when it is None."""
    size = check_optional_int("batch_size", batch_size, low=1)
    return size if size is not None else auto_batch_size(model, image_shape)


# ---------------------------------------------------------------------------------------------
# model names inside traced code

_GRAPH_SCOPE_NAME = r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*"
# layers renamed by open GraphSafeNames: id -> [own name, openings holding it]
_RENAMED: dict[int, list[Any]] = {}
_RENAMED_LOCK = threading.Lock()


def graph_scope_name(name: str) -> str:
    """``name`` as TensorFlow accepts it for a graph name scope: valid names unchanged, else
    every character outside ``[A-Za-z0-9_.-]`` becomes ``_`` (``"my model"`` ->
    ``"my_model"``, ``"modèle"`` -> ``"mod_le"``, ``"cnn(1)"`` -> ``"cnn_1_"``) and a name
    that would start with ``_`` or ``-`` gets an ``x`` in front."""
    import re

    if not name or re.fullmatch(_GRAPH_SCOPE_NAME, name):
        return name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return safe if re.match(r"[A-Za-z0-9.]", safe) else "x" + safe


class GraphSafeNames:
    """While open, every layer of ``model`` (itself and nested models included) whose name
    TensorFlow refuses as a graph name scope is called :func:`graph_scope_name` of it; on exit,
    error or not, each gets its own name back, so ``model.name`` is unchanged afterwards.

    Why: Keras opens a TensorFlow name scope named after each layer it calls. Eager calls do not
    check the name, but inside ``tf.function`` (every compiled attack, and Keras' ``fit``)
    TensorFlow refuses anything outside ``[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*``: a model named
    ``"my model"``, ``"modèle"`` or ``"cnn(1)"`` evaluated fine and then failed every attack
    with "'my model' is not a valid root scope name". A name is only a label, so users are not
    asked to rename. (Keras also leaves the failed scope on its own name-scope stack, which is
    why a second attack on the same model then seemed to work.)

    TensorFlow reads the names only while it traces, so a caller may open this around every
    call of a compiled function (as :func:`compiled` does) or only inside the traced code (as
    adversarial training's steps do). Openings nest and overlap, across threads too: each
    renamed layer counts the openings that hold it and gets its name back when the last one
    closes. No lock is held while open, so the replicas of a ``tf.distribute`` strategy can
    trace the same model at once in their own threads and meet in its collectives.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._held: list[Any] = []

    def __enter__(self) -> GraphSafeNames:
        with _RENAMED_LOCK:
            try:
                flatten = getattr(self.model, "_flatten_layers", None)  # Keras 3: sublayers
                for layer in flatten(include_self=True, recursive=True) if flatten \
                        else [self.model]:
                    entry = _RENAMED.get(id(layer))
                    if entry is not None:
                        entry[1] += 1
                        self._held.append(layer)
                        continue
                    name = getattr(layer, "name", None)
                    # Input layers are never called (so never open a scope) and name the inputs
                    if (isinstance(name, str) and graph_scope_name(name) != name
                            and type(layer).__name__ != "InputLayer"):
                        _RENAMED[id(layer)] = [name, 1]
                        self._held.append(layer)
                        layer.name = graph_scope_name(name)
            except BaseException:
                self._release()
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        with _RENAMED_LOCK:
            self._release()

    def _release(self) -> None:
        for layer in reversed(self._held):
            entry = _RENAMED[id(layer)]
            entry[1] -= 1
            if entry[1] == 0:
                layer.name = entry[0]
                del _RENAMED[id(layer)]
        self._held.clear()
