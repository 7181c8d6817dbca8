"""What every attack shares around its math: argument checks, labels, batching, restarts
with the per-example strongest result, and the threat model enforced on the output."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np

from robustlab._env import default_jit_compile
from robustlab._validate import check_int, check_optional_int, check_seed, parse_enum
from robustlab.attacks._core import Loss, ThreatModel, enforce_threat_model, score_fn
from robustlab.data import validate_arrays
from robustlab.errors import ValidationError
from robustlab.models import num_outputs

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500


class Backend(str, Enum):
    """Which implementation runs the attack: robustlab's own, CleverHans 4 or ART."""

    NATIVE = "native"
    CLEVERHANS = "cleverhans"
    ART = "art"


# A batch implementation: (model, x, y, *, threat, targeted, loss, seed, random_start, jit,
# **attack params) -> x_adv, all numpy, for one batch and one restart.
BatchAttack = Callable[..., np.ndarray]


def predict_labels(model: Any, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
                   ) -> np.ndarray:
    """``argmax`` of the model's logits, batched; shape ``(N,)`` int64."""
    out = [np.argmax(np.asarray(model(x[i:i + batch_size], training=False)), axis=-1)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.int64)


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


def run_attack(impl: BatchAttack, model: Any, x: Any, y: Any, *, threat: ThreatModel,
               targeted: bool, loss: Any, restarts: int, random_start: bool, seed: Any,
               batch_size: Any, jit_compile: bool | None, **params: Any) -> np.ndarray:
    """Run ``impl`` over batches and restarts and return the strongest result per example.

    "Strongest": a successful example (misclassified, or classified as the target) beats an
    unsuccessful one; between equals, the higher attack loss wins. The output is re-projected
    onto the threat model and has the input's shape and dtype.
    """
    loss = parse_enum("loss", loss, Loss)
    restarts = check_int("restarts", restarts, low=1)
    seed = check_seed(seed)
    batch_size = check_optional_int("batch_size", batch_size, low=1) or DEFAULT_BATCH_SIZE
    if restarts > 1 and not random_start:
        raise ValidationError(f"expected random_start=True when restarts > 1 (without a random "
                              f"start every restart is the same), got restarts={restarts}")
    dtype = np.asarray(x).dtype if np.issubdtype(np.asarray(x).dtype, np.floating) \
        else np.float32
    x_np, y_np = prepare(model, x, y, threat=threat, targeted=targeted)
    if threat.epsilon == 0.0:
        return x_np.astype(dtype, copy=True)
    jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
    score = score_fn(model, loss, targeted, jit)
    out = np.empty_like(x_np)
    for start in range(0, len(x_np), batch_size):
        xb, yb = x_np[start:start + batch_size], y_np[start:start + batch_size]
        best, best_success, best_obj = xb, None, None
        for restart in range(restarts):
            # One seed per (batch, restart) pair: results do not depend on earlier batches.
            run_seed = int(np.random.SeedSequence([seed, start, restart]).generate_state(1)[0])
            cand = impl(model, xb, yb, threat=threat, targeted=targeted, loss=loss,
                        seed=run_seed, random_start=random_start, jit=jit, **params)
            cand = enforce_threat_model(np.asarray(cand, dtype=np.float32), xb, threat)
            if restarts == 1:
                best = cand
                break
            success, obj, _ = (np.asarray(t) for t in score(cand, yb))
            if best_success is None:
                best, best_success, best_obj = cand, success, obj
                continue
            better = (success & ~best_success) | ((success == best_success) & (obj > best_obj))
            best = np.where(better[:, None, None, None], cand, best)
            best_success, best_obj = best_success | success, np.where(better, obj, best_obj)
        out[start:start + len(xb)] = best
    return out.astype(dtype, copy=False)
