"""Auto-PGD: PGD with momentum and a step size that halves itself at checkpoints, no step
size to tune; on cross-entropy (APGD-CE), the DLR loss (APGD-DLR) or, targeted at the
classes the model ranks next (APGD-T), the targeted DLR loss.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", https://arxiv.org/abs/2003.01690, Algorithm 1: step size 2ε,
momentum 0.75, checkpoints after 22 % of the iterations, then intervals shrinking by 3 % to
at least 6 %; at a checkpoint an example halves its step size and restarts from its best
point if fewer than 75 % of the steps since the last checkpoint raised its loss, or if its
step size was not halved last time and its best loss did not improve since.

Native and compiled on robustlab's engine: the iterations between two checkpoints run in
one compiled loop (the one input-gradient function, the one projection, per-feature
constraints), the checkpoint logic runs in the same graph, and between checkpoints the
examples already fooled leave the batch. Each example returns the first iterate that fooled
it, else the iterate of highest loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robustlab.attacks._core import (
    compiled,
    enforce_threat_model,
    input_gradient,
    per_example_loss,
    project,
    score_fn,
    steepest_direction,
    threat_tensors,
)
from robustlab.attacks._core import random_start as random_point
from robustlab.attacks._runner import boundary, padded_size, run_attack
from robustlab.errors import ValidationError
from robustlab.inference import GraphSafeNames, batched_logits, num_outputs
from robustlab.types import Constraints, Loss, ThreatModel

__all__ = ["apgd", "native_apgd", "checkpoints", "check_targets"]

# Algorithm 1's constants: step size 2ε, momentum, the fraction of loss increases below which
# a checkpoint halves the step, the first interval and how the intervals shrink.
STEP_FACTOR, MOMENTUM, RHO = 2.0, 0.75, 0.75
FIRST, SHRINK, SHORTEST = 0.22, 0.03, 0.06


def checkpoints(steps: int) -> list[int]:
    """The lengths of the intervals between checkpoints for ``steps`` iterations (the last
    one may be cut short): ``0.22·N`` first, then 3 % of N shorter each time, at least 6 %
    (the reference implementation's integer rounding)."""
    interval = max(int(FIRST * steps), 1)
    shrink, shortest = max(int(SHRINK * steps), 1), max(int(SHORTEST * steps), 1)
    out, done = [], 0
    while done < steps:
        out.append(min(interval, steps - done))
        done += out[-1]
        interval = max(interval - shrink, shortest)
    return out


def _apgd_fn(model: Any, norm: Any, loss: Loss, jit: bool, weighted: bool, k: int
             ) -> Callable[..., Any]:
    """The compiled interval: ``k`` APGD iterations unrolled in one graph (no host round
    trip, no loop overhead between them; one trace per interval length, about 9 for a run)
    and the checkpoint at its end, on the state of a batch."""
    import tensorflow as tf

    def build() -> Callable[..., Any]:
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def interval(state: dict[str, Any], x: Any, labels: Any, y_true: Any,
                     first: Any, epsilon: Any, low: Any, high: Any, weight: Any
                     ) -> dict[str, Any]:
            w = weight if weighted else None
            shape = [-1] + [1] * (len(x.shape) - 1)

            def step(i: Any, s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
                # momentum from the second iteration of the run on (Algorithm 1, line 6)
                a = tf.where(first & tf.equal(i, 0), 1.0, MOMENTUM)
                size = tf.reshape(s["step"], shape)
                z = project(s["x"] + size * steepest_direction(s["grad"], norm, w), x,
                            epsilon, norm, low, high, w)
                moved = s["x"] + a * (z - s["x"]) + (1.0 - a) * (s["x"] - s["x_old"])
                x_new = project(moved, x, epsilon, norm, low, high, w)
                grad, logits = input_gradient(model, x_new, labels, loss, False)
                value = per_example_loss(logits, labels, loss, False)
                fooled = tf.not_equal(tf.argmax(logits, axis=-1, output_type=y_true.dtype),
                                      y_true)
                new = tf.reshape(fooled & ~s["found"], shape)
                better = value > s["best_loss"]
                keep = tf.reshape(better, shape)
                return i + 1, {
                    **s, "x_old": s["x"], "x": x_new, "grad": grad,
                    "x_found": tf.where(new, x_new, s["x_found"]),
                    "found": s["found"] | fooled,
                    "rises": s["rises"] + tf.cast(value > s["last_loss"], tf.float32),
                    "last_loss": value,
                    "x_best": tf.where(keep, x_new, s["x_best"]),
                    "grad_best": tf.where(keep, grad, s["grad_best"]),
                    "best_loss": tf.where(better, value, s["best_loss"])}

            with GraphSafeNames(model):  # runs while tracing only
                i, s = tf.constant(0), state
                for _ in range(k):
                    i, s = step(i, s)
            # the checkpoint (Algorithm 1, lines 10-13)
            few_rises = s["rises"] <= RHO * k
            stalled = ~s["halved"] & (s["check_loss"] >= s["best_loss"])
            halve = few_rises | stalled
            back = tf.reshape(halve, shape)
            return {**s, "step": tf.where(halve, s["step"] / 2.0, s["step"]),
                    "x": tf.where(back, s["x_best"], s["x"]),
                    "grad": tf.where(back, s["grad_best"], s["grad"]),
                    "halved": halve, "check_loss": s["best_loss"],
                    "rises": tf.zeros_like(s["rises"])}
        return interval

    return compiled(model, ("apgd", norm, loss, jit, weighted, k), build)


def _labels(model: Any, x: np.ndarray, y: np.ndarray, loss: Loss, target_rank: int
            ) -> np.ndarray:
    """The labels the loss takes: ``y``, or for the targeted DLR loss the pairs
    ``(y, the class the model ranks target_rank-th on the clean x)`` (2nd, 3rd, ...)."""
    if loss is not Loss.DLR_T:
        return y
    logits = batched_logits(model, x)
    order = np.argsort(-logits, axis=1, kind="stable")
    return np.stack([y, order[:, target_rank - 1]], axis=1).astype(np.int64)


def native_apgd(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
                targeted: bool, loss: Loss, seed: int, restart: int, ids: np.ndarray,
                random_start: bool, jit: bool, steps: int, targets: int = 0,
                early_stop: bool = True, **_: Any) -> np.ndarray:
    """One batch, one restart of native APGD (see :func:`apgd`) on ``loss``; with
    ``targets`` > 0, APGD-T: the targeted DLR loss, one run per target class (the 2nd to the
    ``targets + 1``-th class the model ranks highest on the clean input), each on the
    examples the earlier ones left (the engine's ``loss`` then only ranks restarts).
    ``early_stop=False`` keeps fooled examples stepping (same result, for timing)."""
    if targeted:
        raise ValidationError("expected an untargeted attack for APGD (APGD-T picks its own "
                              "targets), got targeted=True")
    if targets:
        loss = Loss.DLR_T
    out = x.copy()
    todo = np.arange(len(x))
    for target in range(max(targets, 1)):
        if not len(todo):
            break
        labels = _labels(model, x[todo], y[todo], loss, target + 2)
        found, x_adv = _apgd_batch(model, x[todo], y[todo], labels, threat=threat, loss=loss,
                                   seed=seed, restart=restart * 64 + target, ids=ids[todo],
                                   random_start=random_start, jit=jit, steps=steps,
                                   early_stop=early_stop)
        out[todo] = x_adv
        todo = todo[~found]
    return out


def _apgd_batch(model: Any, x: np.ndarray, y: np.ndarray, labels: np.ndarray, *,
                threat: ThreatModel, loss: Loss, seed: int, restart: int, ids: np.ndarray,
                random_start: bool, jit: bool, steps: int, early_stop: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """APGD on one batch: ``(fooled (N,) bool, output (N, ...))``."""
    import tensorflow as tf

    start = random_point(x, threat, seed=seed, restart=restart, ids=ids) if random_start \
        else x
    low, high, weight, weighted = threat_tensors(threat)
    eps = tf.constant(threat.epsilon, tf.float32)
    discrete = threat.constraints is not None and threat.constraints.discrete
    n = len(x)
    x_t, labels_t, y_t = tf.constant(x), tf.constant(labels), tf.constant(y)
    start_t = tf.constant(start)
    grad, logits = input_gradient(model, start_t, labels_t, loss, False)
    value = per_example_loss(logits, labels_t, loss, False)
    fooled = tf.not_equal(tf.argmax(logits, axis=-1, output_type=y_t.dtype), y_t)
    state = {"x": start_t, "x_old": start_t, "grad": grad, "x_best": start_t,
             "grad_best": grad, "best_loss": value, "last_loss": value,
             "check_loss": value, "rises": tf.zeros(n), "halved": tf.zeros(n, tf.bool),
             "step": tf.fill([n], STEP_FACTOR * threat.epsilon), "found": fooled,
             "x_found": start_t}
    out, done = np.empty_like(x), np.zeros(n, bool)
    active = np.arange(n)  # rows of x still attacked
    score = score_fn(model, Loss.CE, False, jit)  # used only for discrete features
    for number, k in enumerate(checkpoints(steps)):
        interval = _apgd_fn(model, threat.norm, loss, jit, weighted, k)
        state = interval(state, x_t, labels_t, y_t, tf.constant(number == 0),
                         eps, low, high, weight)
        hit = state["found"].numpy()[:len(active)] & ~done[active]
        if discrete and hit.any():  # success counts where it is feasible
            rows = np.flatnonzero(hit)
            mapped = enforce_threat_model(state["x_found"].numpy()[rows], x[active[rows]],
                                          threat)
            really = np.asarray(score(mapped, y[active[rows]])[0])
            hit[rows[~really]] = False
            state = {**state, "found": tf.constant(np.r_[hit, state["found"].numpy()[
                len(active):]])}
            out[active[rows[really]]] = mapped[really]
        elif hit.any():
            out[active[hit]] = state["x_found"].numpy()[:len(active)][hit]
        done[active[hit]] = True
        if not early_stop:
            continue
        keep = np.flatnonzero(~hit)
        if not len(keep):
            return done, out
        if len(keep) < len(active):  # fooled examples leave the batch
            active = active[keep]
            pad = padded_size(len(keep), n) - len(keep) if jit else 0
            rows_t = tf.constant(np.r_[keep, np.full(pad, keep[0])].astype(np.int64))
            state = {key: tf.gather(value, rows_t) for key, value in state.items()}
            x_t, labels_t, y_t = (tf.gather(t, rows_t) for t in (x_t, labels_t, y_t))
    rest = ~done[active]
    out[active[rest]] = state["x_best"].numpy()[:len(active)][rest]
    return done, out


def apgd(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
         loss: Any = "ce", steps: int = 100, restarts: int = 1, targets: int | None = None,
         bounds: Any = None, seed: int = 0, batch_size: int | None = None,
         jit_compile: bool | None = None, ids: Any = None, backend: Any = "native",
         constraints: Constraints | None = None) -> np.ndarray:
    """Auto-PGD: APGD-CE (``loss="ce"``), APGD-DLR (``"dlr"``, >= 3 classes) or, with
    ``targets``, APGD-T (the targeted DLR loss towards each of the ``targets`` classes the
    model ranks next after the true one, >= 4 classes; the reference uses 9); ``steps``
    iterations per restart (and per target).

    Args:
        model, x, y, epsilon, norm, bounds, seed, batch_size, jit_compile, ids, constraints:
            as for :func:`~robustlab.attacks.pgd`; ``y`` are true labels (untargeted).
        loss: ``"ce"`` or ``"dlr"`` (with ``targets``: ``"dlr"``, the targeted DLR loss).
        steps: iterations per restart (the reference: 100).
        restarts: random restarts; the strongest per example is kept.
        targets: None for APGD-CE / APGD-DLR; a number of target classes (1 to K - 1) for
            APGD-T.
        backend: ``"native"`` (compiled, on robustlab's engine) or ``"art"`` (ART's APGD,
            the cross-check; no APGD-T).

    Returns:
        Adversarial inputs, shape and dtype of ``x``, inside the ε-ball and bounds.

    Example:
        >>> x_adv = apgd(model, x, y, epsilon=0.1, loss="dlr", targets=9)   # APGD-T
    """
    from robustlab._validate import check_int, parse_enum
    from robustlab.attacks.catalogue import apgd_batch
    from robustlab.types import Backend

    steps = check_int("steps", steps, low=1)
    loss_enum = parse_enum("loss", loss, Loss)
    backend_enum = parse_enum("backend", backend, Backend)
    if loss_enum not in (Loss.CE, Loss.DLR):
        raise ValidationError(f"expected loss 'ce' or 'dlr' for APGD, got {loss!r}")
    n_targets = 0 if targets is None else check_targets(targets, num_outputs(model))
    if n_targets and (loss_enum is not Loss.DLR or backend_enum is not Backend.NATIVE):
        raise ValidationError("expected loss='dlr' and backend='native' for APGD-T (targets "
                              f"given), got loss={loss_enum.value!r}, "
                              f"backend={backend_enum.value!r}")
    if backend_enum is Backend.CLEVERHANS:
        raise ValidationError("expected backend 'native' or 'art' for APGD, got 'cleverhans'")
    given = boundary(model, x, y, epsilon=epsilon, norm=norm, bounds=bounds, targeted=False,
                     loss=loss_enum, restarts=restarts, random_start=True, seed=seed,
                     batch_size=batch_size, jit_compile=jit_compile, ids=ids,
                     constraints=constraints)
    if backend_enum is Backend.ART:
        return run_attack(apgd_batch(steps, loss_enum.value), model, given, targeted=False,
                          random_start=True)
    return run_attack(native_apgd, model, given, targeted=False, random_start=True,
                      steps=steps, targets=n_targets)


def check_targets(targets: Any, num_classes: int) -> int:
    """APGD-T's number of target classes, checked against the model: the targeted DLR loss
    reads the 4 largest logits (>= 4 classes), and there are ``K - 1`` other classes."""
    from robustlab._validate import check_int

    if num_classes < 4:
        raise ValidationError(f"expected a model with at least 4 classes for APGD-T (its "
                              f"targeted DLR loss reads the 4 largest logits), got "
                              f"{num_classes}")
    return check_int("targets", targets, low=1, high=num_classes - 1)
