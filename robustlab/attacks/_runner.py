"""The attack engine: what every attack shares around its math. At the boundary
(:func:`prepare`) arguments and arrays are checked once and labels defaulted; inside
(:func:`attack_arrays`) batching, restarts with the per-example strongest result, the
out-of-memory fallback and the threat model enforced on every output, on validated objects."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._env import default_jit_compile
from robustlab._validate import check_int, check_seed, parse_enum, validate_arrays
from robustlab.attacks._core import enforce_threat_model, score_fn
from robustlab.distribute import each_batch
from robustlab.errors import ValidationError
from robustlab.inference import (
    GraphSafeNames,
    check_input_shape,
    num_outputs,
    predict_labels,
    resolve_batch_size,
)
from robustlab.types import Constraints, Loss, ThreatModel

log = logging.getLogger(__name__)

# A batch implementation: (model, x, y, *, threat, targeted, loss, seed, restart, ids,
# random_start, jit, **attack params) -> x_adv, all numpy, for one batch and one restart;
# ``ids`` (the examples' numbers in the caller's whole set) seed per-example randomness.
BatchAttack = Callable[..., np.ndarray]


def padded_size(m: int, n: int) -> int:
    """Padded batch size for ``m`` examples still attacked out of ``n`` under XLA: ``n / 2^k``
    rounded up to a multiple of 8, so a batch that sheds its fooled examples takes only about
    log2(n) shapes (each new shape is a new XLA compilation)."""
    size = n
    while size // 2 >= m and size > 8:
        size //= 2
    return max(m, -(-size // 8) * 8) if size < n else n


def prepare(model: Any, x: Any, y: Any, *, threat: ThreatModel, targeted: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """Validate the batch against the model, the bounds and the feature constraints (which
    must be fitted to the batch's shape, :meth:`~robustlab.types.ThreatModel.fit`); default
    labels for untargeted attacks are the model's own predictions (avoids label leaking,
    Kurakin et al. 2016)."""
    num_classes = num_outputs(model)
    if y is None:
        if targeted:
            raise ValidationError("expected y (target labels) for a targeted attack, got None")
        x_checked, _ = validate_arrays(x, np.zeros(len(np.asarray(x)), np.int64),
                                       bounds=threat.bounds)
    else:
        x_checked, y_checked = validate_arrays(x, y, num_classes=num_classes,
                                               bounds=threat.bounds)
    if threat.constraints is not None:
        threat.constraints.fit(x_checked.shape[1:]).check_inputs(x_checked)
    check_input_shape(model, x_checked)
    if y is None:
        y_checked = predict_labels(model, x_checked)
    return x_checked, y_checked


def check_ids(ids: Any, n: int) -> np.ndarray:
    """``ids`` as ``(n,)`` non-negative int64 (default ``0..n-1``): the examples' numbers
    for their random starts."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(ids)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise ValidationError(f"expected ids to be {n} non-negative integers (one per "
                              f"example), got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_attack_options(*, loss: Loss, restarts: int, random_start: bool, seed: Any,
                         num_classes: int) -> int:
    """The checks every attack's options need whatever the attack; returns the seed."""
    if loss is Loss.KL:
        raise ValidationError("expected loss 'ce', 'margin' or 'dlr' for an attack on labels, got "
                              "'kl' (it compares with reference logits: adversarial training)")
    if restarts > 1 and not random_start:
        raise ValidationError(f"expected random_start=True when restarts > 1 (without a random "
                              f"start every restart is the same), got restarts={restarts}")
    check_loss_for(loss, num_classes)
    return check_seed(seed)


def check_loss_for(loss: Loss, num_classes: int) -> None:
    """Refuse a loss the model's class count cannot support (DLR divides by z1 - z3)."""
    if loss is Loss.DLR and num_classes < 3:
        raise ValidationError(f"expected a model with at least 3 classes for loss='dlr' (it "
                              f"divides by z1 - z3), got {num_classes}")


@dataclass(frozen=True, eq=False)
class AttackInput:
    """An attack's arguments after the boundary checks: arrays validated against the model
    and the bounds (``x`` float32, ``y`` int64, ``ids`` int64), options parsed, batch size
    and XLA resolved; ``dtype`` is the caller's input dtype, restored on the output."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    threat: ThreatModel
    loss: Loss
    restarts: int
    seed: int
    batch_size: int
    jit: bool
    dtype: np.dtype[Any]


def boundary(model: Any, x: Any, y: Any, *, epsilon: Any, norm: Any, bounds: Any,
             targeted: bool, loss: Any, restarts: Any, random_start: bool, seed: Any,
             batch_size: Any, jit_compile: bool | None, ids: Any,
             constraints: Constraints | None = None) -> AttackInput:
    """Check and parse a public attack call's arguments once (names in every error); warn
    if ε exceeds the input box (the attack then uses the box's size). The threat model is
    fitted to the examples' shape (per-feature arrays broadcast, constraints checked)."""
    threat = ThreatModel.parse(epsilon, norm, bounds, constraints)
    shape = np.shape(x)[1:]
    if len(np.shape(x)) >= 2:
        threat = threat.fit(shape)
    loss = parse_enum("loss", loss, Loss)
    restarts = check_int("restarts", restarts, low=1)
    seed = check_attack_options(loss=loss, restarts=restarts, random_start=random_start,
                                seed=seed, num_classes=num_outputs(model))
    raw = np.asarray(x)
    dtype = raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.dtype(np.float32)
    x_np, y_np = prepare(model, x, y, threat=threat, targeted=targeted)
    threat.capped(x_np.shape[1:], warn=True)
    return AttackInput(
        x=x_np, y=y_np, ids=check_ids(ids, len(x_np)), threat=threat, loss=loss,
        restarts=restarts, seed=seed,
        batch_size=resolve_batch_size(batch_size, model, x_np.shape[1:]),
        jit=default_jit_compile() if jit_compile is None else bool(jit_compile), dtype=dtype)


def run_attack(impl: BatchAttack, model: Any, given: AttackInput, *, targeted: bool,
               random_start: bool, **params: Any) -> np.ndarray:
    """:func:`attack_arrays` on a checked call (:func:`boundary`); the output has the
    caller's dtype."""
    out = attack_arrays(impl, model, given.x, given.y, threat=given.threat, targeted=targeted,
                        loss=given.loss, restarts=given.restarts, random_start=random_start,
                        seed=given.seed, batch_size=given.batch_size, jit=given.jit,
                        ids=given.ids, **params)
    return out.astype(given.dtype, copy=False)


def _attack_split_on_oom(impl: BatchAttack, model: Any, x: np.ndarray, y: np.ndarray,
                         ids: np.ndarray, state: dict[str, int], **kwargs: Any) -> np.ndarray:
    """Run ``impl`` on the batch; if the device runs out of memory, halve the batch size (for
    every later batch too, via ``state["batch_size"]``) and run the batch in parts of that
    size (a batch longer than an earlier halving left it runs in parts at once)."""
    import tensorflow as tf

    if len(x) <= state["batch_size"]:
        try:
            with GraphSafeNames(model):  # CleverHans and ART trace the model too
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


def _finite(cand: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``cand`` with every example that holds a NaN or infinite value (ART's L2 Square
    returns NaN images on small inputs) put back to its clean ``x``, with a warning: no
    attack can report a point the projection cannot judge."""
    bad = ~np.isfinite(cand).reshape(len(cand), -1).all(axis=1)
    if not bad.any():
        return cand
    log.warning("the attack returned %d of %d examples with NaN or infinite values; they "
                "are counted as not attacked (their clean input)", int(bad.sum()), len(cand))
    return np.where(bad.reshape((-1,) + (1,) * (cand.ndim - 1)), x, cand)


def attack_arrays(impl: BatchAttack, model: Any, x: np.ndarray, y: np.ndarray, *,
                  threat: ThreatModel, targeted: bool, loss: Loss, restarts: int,
                  random_start: bool, seed: int, batch_size: int, jit: bool, ids: np.ndarray,
                  **params: Any) -> np.ndarray:
    """Run ``impl`` over batches and restarts and return the strongest result per example.

    Everything here is already checked (:func:`prepare`, :func:`check_attack_options`):
    ``x`` ``(N, ...)`` float32 inside ``threat.bounds``, ``y`` ``(N,)`` int64, ``ids``
    ``(N,)`` int64. "Strongest": a successful example (misclassified, or classified as the
    target) beats an unsuccessful one; between failures, the higher attack loss wins. A
    restart runs only on the examples no earlier restart has fooled. ``threat`` is capped at
    the box (:meth:`~robustlab.types.ThreatModel.capped`); the output is re-projected onto
    it and is float32 of ``x``'s shape.
    """
    threat = threat.capped(x.shape[1:])
    if threat.epsilon == 0.0:
        return x.copy()
    state = {"batch_size": batch_size}
    out = x.copy()
    fooled = np.zeros(len(x), bool)
    objective = np.full(len(x), -np.inf, np.float32)
    outputs: list[tuple[tuple[int, ...], Any]] = [(x.shape[1:], np.float32)]
    if restarts > 1:
        outputs += [((), np.bool_), ((), np.float32)]
    for restart in range(restarts):
        todo = np.flatnonzero(~fooled)

        def work(replica: Any, rows: np.ndarray, restart: int = restart) -> list[np.ndarray]:
            xb = x[rows]
            cand = _attack_split_on_oom(
                impl, replica, xb, y[rows], ids[rows], state, threat=threat,
                targeted=targeted, loss=loss, seed=seed, restart=restart,
                random_start=random_start, jit=jit, **params)
            cand = enforce_threat_model(_finite(np.asarray(cand, dtype=np.float32), xb),
                                        xb, threat)
            if restarts == 1:
                return [cand]
            success, obj, _ = score_fn(replica, loss, targeted, jit)(cand, y[rows])
            return [cand, np.asarray(success), np.asarray(obj)]

        def keep(rows: np.ndarray, found: Sequence[np.ndarray]) -> None:
            if restarts == 1:
                out[rows] = found[0]
                return
            cand, success, obj = found
            # every row here is unfooled so far: a success, or a higher loss, is better
            better = success | (obj > objective[rows])
            out[rows[better]] = cand[better]
            fooled[rows] |= success
            objective[rows] = np.where(better, obj, objective[rows])

        # the batches go to the current replicas (robustlab.distribute; one device unless a
        # strategy is current): every example's result depends on itself alone
        each_batch(work, model, todo, state["batch_size"], outputs, keep)
    return out
