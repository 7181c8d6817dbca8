"""Projected Gradient Descent: repeated gradient steps projected onto the ε-ball.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", https://arxiv.org/abs/1706.06083.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab._validate import check_int, parse_enum
from robustlab.attacks import peers
from robustlab.attacks._core import ascent_fn, enforce_threat_model, score_fn, threat_tensors
from robustlab.attacks._core import random_start as random_point
from robustlab.attacks._runner import BatchAttack, boundary, padded_size, run_attack
from robustlab.types import Backend, Constraints, Loss, ThreatModel

# Steps per compiled call. Between calls the engine reads which examples are fooled and drops
# them; 8 keeps the per-call overhead under 1% of a small CNN's step on a CPU.
CHUNK_STEPS = 8


def native_pgd(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
               targeted: bool, loss: Loss, seed: int, restart: int, ids: np.ndarray,
               random_start: bool, jit: bool, step_size: float, steps: int,
               keep_best: bool = True, early_stop: bool = True, **_: Any) -> np.ndarray:
    """One batch, one restart of native PGD (see :func:`pgd`).

    The steps run in compiled chunks of ``CHUNK_STEPS``. With ``keep_best`` each example
    returns its first iterate that fooled the model (else its last iterate); with
    ``early_stop`` too, examples found between chunks leave the batch, which is compacted,
    so they stop costing gradient steps. That changes no result: a found example's output
    is already fixed, and every example's steps depend on itself alone.
    """
    import tensorflow as tf

    start = random_point(x, threat, seed=seed, restart=restart, ids=ids) if random_start \
        else x
    if threat.constraints is not None and threat.constraints.discrete:
        return _feasible_pgd(model, x, y, start, threat=threat, targeted=targeted, loss=loss,
                             jit=jit, step_size=step_size, steps=steps, keep_best=keep_best,
                             early_stop=early_stop)
    eps, alpha = tf.constant(threat.epsilon, tf.float32), tf.constant(step_size, tf.float32)
    low, high, weight, weighted = threat_tensors(threat)
    n = len(x)
    out = np.empty_like(x)
    active = np.arange(n)  # rows of x still being attacked
    x_t, y_t = tf.constant(x), tf.constant(y)
    x_adv, best, found = tf.constant(start), tf.constant(start), tf.zeros(n, tf.bool)
    done = 0
    while done < steps:
        k = min(CHUNK_STEPS, steps - done)
        ascend = ascent_fn(model, threat.norm, loss, targeted, jit, k, weighted)
        x_adv, best, found = ascend(x_adv, best, found, x_t, y_t, eps, alpha, low, high,
                                    weight)
        done += k
        if not (keep_best and early_stop) or done >= steps:
            continue
        hit = found.numpy()[:len(active)]  # the one host read per chunk: N booleans
        if not hit.any():
            continue
        out[active[hit]] = tf.boolean_mask(best[:len(active)], hit).numpy()
        keep = np.flatnonzero(~hit)
        if not len(keep):
            return out
        active = active[keep]
        # under XLA pad with copies of the first row (ignored) to one of few shapes
        rows = np.concatenate([keep, np.full(padded_size(len(keep), n) - len(keep), keep[0])]) \
            if jit else keep
        x_adv, best, found, x_t, y_t = (tf.gather(t, rows) for t in
                                        (x_adv, best, found, x_t, y_t))
    m = len(active)
    last = x_adv[:m] if not keep_best else \
        tf.where(tf.reshape(found[:m], [-1] + [1] * (x.ndim - 1)), best[:m], x_adv[:m])
    out[active] = last.numpy()
    return out


def _feasible_pgd(model: Any, x: np.ndarray, y: np.ndarray, start: np.ndarray, *,
                  threat: ThreatModel, targeted: bool, loss: Loss, jit: bool,
                  step_size: float, steps: int, keep_best: bool = True,
                  early_stop: bool = True) -> np.ndarray:
    """PGD under constraints with integer or one-hot features: the steps run on the
    continuous relaxation, and after every chunk of ``CHUNK_STEPS`` the iterate is mapped to
    the feasible set (:func:`~robustlab.attacks._core.enforce_threat_model`) and scored
    there. Each example keeps its best *feasible* point (one that fools the model, else the
    highest loss) and stops once one fools it: a relaxed iterate that crosses the decision
    boundary may fall back across it when rounded, so success is judged where it counts.
    Without ``keep_best`` each example returns its last iterate's feasible point; without
    ``early_stop`` fooled examples keep stepping (same result with ``keep_best``, for
    timing)."""
    import tensorflow as tf

    eps, alpha = tf.constant(threat.epsilon, tf.float32), tf.constant(step_size, tf.float32)
    low, high, weight, weighted = threat_tensors(threat)
    score = score_fn(model, loss, targeted, jit)
    out = enforce_threat_model(start, x, threat)
    success, objective, _ = (np.array(t) for t in score(out, y))
    active = np.flatnonzero(~success) if keep_best else np.arange(len(x))
    x_adv = tf.constant(start[active])
    done = 0
    while done < steps and len(active):
        k = min(CHUNK_STEPS, steps - done)
        ascend = ascent_fn(model, threat.norm, loss, targeted, jit, k, weighted)
        x_t, y_t = tf.constant(x[active]), tf.constant(y[active])
        x_adv = ascend(x_adv, x_adv, tf.zeros(len(active), tf.bool), x_t, y_t, eps, alpha,
                       low, high, weight)[0]
        done += k
        cand = enforce_threat_model(x_adv.numpy(), x[active], threat)
        if not keep_best:
            out[active] = cand
            continue
        hit, obj, _ = (np.asarray(t) for t in score(cand, y[active]))
        better = (hit | (obj > objective[active])) & ~success[active]
        out[active[better]] = cand[better]
        objective[active] = np.where(better, obj, objective[active])
        success[active] |= hit
        if early_stop:
            x_adv = tf.boolean_mask(x_adv, ~hit)
            active = active[~hit]
    return out


PGD_BACKENDS: dict[Backend, BatchAttack] = {
    Backend.NATIVE: native_pgd,
    Backend.CLEVERHANS: peers.cleverhans_pgd,
    Backend.ART: peers.art_pgd,
}


def pgd(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
        steps: int = 40, step_size: Any = None, random_start: bool = True, restarts: int = 1,
        targeted: bool = False, loss: Any = "ce", bounds: Any = None,
        seed: int = 0, backend: Any = "native", batch_size: int | None = None,
        jit_compile: bool | None = None, keep_best: bool = True, early_stop: bool = True,
        ids: Any = None, constraints: Constraints | None = None) -> np.ndarray:
    """Projected Gradient Descent with random start and restarts (L∞ or L2).

    Each restart runs ``steps`` steps of size ``step_size`` from a uniform random point of
    the ball (or from ``x`` if ``random_start`` is False); per example, the strongest restart
    is kept (a success beats a failure, then the higher loss), and within a restart the
    first iterate that fooled the model (``keep_best``).

    Args:
        model: Keras model mapping ``(N, ...)`` inputs (images ``(N, H, W, C)``, tables
            ``(N, F)``) to ``(N, K)`` logits.
        x: clean inputs, shape ``(N, ...)``, inside ``bounds``.
        y: labels ``(N,)`` (None = the model's predictions) or targets if ``targeted``.
        epsilon: budget in pixel units (e.g. 0.3 or ``"8/255"``), >= 0; 0 returns ``x``.
        norm: ``"linf"`` or ``"l2"``.
        steps: gradient steps per restart, >= 1.
        step_size: step length in pixel units, ``0 < step_size <= epsilon``;
            default ``2.5 * epsilon / steps`` (at most ``epsilon``).
        random_start: start each restart at a uniform random point of the ball.
        restarts: independent runs, >= 1 (needs ``random_start``).
        targeted: move towards ``y`` instead of away from it.
        loss: ``"ce"`` or ``"margin"`` / ``"dlr"`` (native backend only).
        bounds: ``(low, high)`` valid input range: numbers, or arrays broadcastable to one
            example's shape (per-feature bounds); None: the constraints' bounds, else
            ``(0, 1)``.
        seed: seeds the random starts (same seed, same output).
        backend: ``"native"``, ``"cleverhans"`` or ``"art"``.
        batch_size: examples per batch (None: sized from available memory).
        jit_compile: XLA on/off; None chooses per device (on for GPUs).
        constraints: per-feature threat model (:class:`~robustlab.types.Constraints`:
            bounds, scale of ε, immutable, integer and one-hot features); the output then
            keeps immutable features bit-identical and is mapped to the feasible set.
        keep_best: native backend: return each example's first iterate that fooled the model
            rather than the last iterate (which can drift back to the right class); the
            peers always return their last iterate. False reproduces CleverHans exactly.
        early_stop: native backend with ``keep_best``: stop stepping examples once they are
            fooled (their result is final). Same output; False runs every step (for timing).
        ids: ``(N,)`` non-negative ints numbering the examples (default ``0..N-1``); an
            example's random starts depend only on ``seed`` and its id, so attacking a
            subset with the matching ids reproduces the whole set's result on it.

    Returns:
        Adversarial inputs, same shape and dtype as ``x``, inside the ε-ball and bounds.

    Example:
        >>> x_adv = pgd(model, data.x_test, data.y_test, epsilon=0.3, steps=40, restarts=5)
        >>> float(abs(x_adv - data.x_test).max()) <= 0.3
        True
    """
    steps = check_int("steps", steps, low=1)
    given = boundary(model, x, y, epsilon=epsilon, norm=norm, bounds=bounds,
                     targeted=targeted, loss=loss, restarts=restarts,
                     random_start=bool(random_start), seed=seed, batch_size=batch_size,
                     jit_compile=jit_compile, ids=ids, constraints=constraints)
    alpha = given.threat.step_length(steps, absolute=step_size, image_shape=given.x.shape[1:])
    impl = PGD_BACKENDS[parse_enum("backend", backend, Backend)]
    return run_attack(impl, model, given, targeted=targeted, random_start=bool(random_start),
                      step_size=alpha, steps=steps, keep_best=bool(keep_best),
                      early_stop=bool(early_stop))
