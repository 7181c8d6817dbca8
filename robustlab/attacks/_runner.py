"""What every attack shares around its math: argument checks, labels, batch size, batching,
restarts with the per-example strongest result, and the threat model enforced on the output."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np

from robustlab._env import default_jit_compile, device_info
from robustlab._validate import check_int, check_optional_int, check_seed, parse_enum
from robustlab.attacks._core import Loss, ThreatModel, enforce_threat_model, score_fn
from robustlab.data import validate_arrays
from robustlab.errors import ValidationError
from robustlab.models import num_outputs

log = logging.getLogger(__name__)

# Batch size when the model's memory needs cannot be estimated (a subclassed model).
DEFAULT_BATCH_SIZE = 500
# Memory an attack batch may use: on a CPU an eighth of what is available, at most 256 MiB
# (beyond a few hundred examples a CPU step costs the same per example, measured from 64 to
# 2,000 on MNIST); on a GPU 4 GiB, where big batches do pay (the ResourceExhausted fallback
# below halves the batch if even that is too much).
_CPU_BUDGET, _GPU_BUDGET = 256 << 20, 4 << 30
_MAX_BATCH = 4096


class Backend(str, Enum):
    """Which implementation runs the attack: robustlab's own, CleverHans 4 or ART."""

    NATIVE = "native"
    CLEVERHANS = "cleverhans"
    ART = "art"


# A batch implementation: (model, x, y, *, threat, targeted, loss, seed, restart, ids,
# random_start, jit, **attack params) -> x_adv, all numpy, for one batch and one restart;
# ``ids`` (the examples' numbers in the caller's whole set) seed per-example randomness.
BatchAttack = Callable[..., np.ndarray]


def batched_logits(model: Any, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
                   ) -> np.ndarray:
    """The model's logits for ``x`` in inference mode, batched; shape ``(N, K)`` float32."""
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False),
                                      dtype=np.float32)
                           for i in range(0, len(x), batch_size)])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits (NumPy, numerically stable)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def predict_labels(model: Any, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
                   ) -> np.ndarray:
    """``argmax`` of the model's logits, batched; shape ``(N,)`` int64."""
    return batched_logits(model, x, batch_size).argmax(axis=1).astype(np.int64)


def prepare(model: Any, x: Any, y: Any, *, threat: ThreatModel, targeted: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """Validate the batch against the model and the bounds; default labels for untargeted
    attacks are the model's own predictions (avoids label leaking, Kurakin et al. 2016)."""
    num_classes = num_outputs(model)
    if y is None:
        if targeted:
            raise ValidationError("expected y (target labels) for a targeted attack, got None")
        x_checked, _ = validate_arrays(x, np.zeros(len(np.asarray(x)), np.int64),
                                       bounds=threat.bounds)
        y_checked = predict_labels(model, x_checked)
    else:
        x_checked, y_checked = validate_arrays(x, y, num_classes=num_classes,
                                               bounds=threat.bounds)
    expected = getattr(model, "input_shape", None)
    if expected and len(expected) == 4 and tuple(expected[1:]) != x_checked.shape[1:] \
            and None not in expected[1:]:
        raise ValidationError(f"expected x with image shape {tuple(expected[1:])} for this "
                              f"model, got {x_checked.shape[1:]}")
    return x_checked, y_checked


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


def _attack_split_on_oom(impl: BatchAttack, model: Any, x: np.ndarray, y: np.ndarray,
                         ids: np.ndarray, state: dict[str, int], **kwargs: Any) -> np.ndarray:
    """Run ``impl``; if the device runs out of memory, halve the batch size (for every later
    batch too, via ``state["batch_size"]``) and run the batch in parts of that size."""
    import tensorflow as tf

    try:
        return impl(model, x, y, ids=ids, **kwargs)
    except tf.errors.ResourceExhaustedError:
        if len(x) == 1:
            raise
        state["batch_size"] = max(1, min(state["batch_size"], len(x) // 2))
        log.warning("out of device memory with a batch of %d; retrying with %d", len(x),
                    state["batch_size"])
    parts, start = [], 0
    while start < len(x):  # re-read the size: a part may halve it again
        sl = slice(start, start + state["batch_size"])
        parts.append(_attack_split_on_oom(impl, model, x[sl], y[sl], ids[sl], state, **kwargs))
        start = sl.stop
    return np.concatenate(parts)


def run_attack(impl: BatchAttack, model: Any, x: Any, y: Any, *, threat: ThreatModel,
               targeted: bool, loss: Any, restarts: int, random_start: bool, seed: Any,
               batch_size: Any, jit_compile: bool | None, ids: Any = None,
               **params: Any) -> np.ndarray:
    """Run ``impl`` over batches and restarts and return the strongest result per example.

    "Strongest": a successful example (misclassified, or classified as the target) beats an
    unsuccessful one; between failures, the higher attack loss wins. A restart runs only on
    the examples no earlier restart has fooled. ``ids`` (N,) numbers the examples for their
    random starts (default ``0..N-1``). The output is re-projected onto the threat model and
    has the input's shape and dtype.
    """
    loss = parse_enum("loss", loss, Loss)
    if loss is Loss.KL:
        raise ValidationError("expected loss 'ce', 'margin' or 'dlr' for an attack on labels, got "
                              "'kl' (it compares with reference logits: adversarial training)")
    restarts = check_int("restarts", restarts, low=1)
    seed = check_seed(seed)
    if restarts > 1 and not random_start:
        raise ValidationError(f"expected random_start=True when restarts > 1 (without a random "
                              f"start every restart is the same), got restarts={restarts}")
    dtype = np.asarray(x).dtype if np.issubdtype(np.asarray(x).dtype, np.floating) \
        else np.float32
    x_np, y_np = prepare(model, x, y, threat=threat, targeted=targeted)
    if loss is Loss.DLR and num_outputs(model) < 3:
        raise ValidationError(f"expected a model with at least 3 classes for loss='dlr' (it "
                              f"divides by z1 - z3), got {num_outputs(model)}")
    ids = _check_ids(ids, len(x_np))
    threat = threat.capped(x_np.shape[1:])
    if "step_size" in params and params["step_size"] is not None:
        params["step_size"] = min(float(params["step_size"]), threat.epsilon)
    state = {"batch_size": resolve_batch_size(batch_size, model, x_np.shape[1:])}
    if threat.epsilon == 0.0:
        return x_np.astype(dtype, copy=True)
    jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
    score = score_fn(model, loss, targeted, jit)
    out = x_np.copy()
    fooled = np.zeros(len(x_np), bool)
    objective = np.full(len(x_np), -np.inf, np.float32)
    for restart in range(restarts):
        todo = np.flatnonzero(~fooled)
        start = 0
        while start < len(todo):
            rows = todo[start:start + state["batch_size"]]
            start += len(rows)
            xb = x_np[rows]
            cand = _attack_split_on_oom(
                impl, model, xb, y_np[rows], ids[rows], state, threat=threat,
                targeted=targeted, loss=loss, seed=seed, restart=restart,
                random_start=random_start, jit=jit, **params)
            cand = enforce_threat_model(np.asarray(cand, dtype=np.float32), xb, threat)
            if restarts == 1:
                out[rows] = cand
                continue
            success, obj, _ = (np.asarray(t) for t in score(cand, y_np[rows]))
            # every row here is unfooled so far: a success, or a higher loss, is better
            better = success | (obj > objective[rows])
            out[rows[better]] = cand[better]
            fooled[rows] |= success
            objective[rows] = np.where(better, obj, objective[rows])
    return out.astype(dtype, copy=False)


def _check_ids(ids: Any, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(ids)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise ValidationError(f"expected ids to be {n} non-negative integers (one per "
                              f"example), got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)
