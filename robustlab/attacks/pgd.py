"""Projected Gradient Descent: repeated gradient steps projected onto the ε-ball.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", https://arxiv.org/abs/1706.06083.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab._validate import check_float, check_int, parse_enum
from robustlab.attacks import peers
from robustlab.attacks._core import Loss, ThreatModel
from robustlab.attacks._core import random_start as random_point
from robustlab.attacks._runner import Backend, BatchAttack, run_attack
from robustlab.attacks.fgsm import step_fn
from robustlab.errors import ValidationError

# Madry et al.'s step size: 2.5 * epsilon / steps, so the walk can cross the whole ball.
DEFAULT_REL_STEP = 2.5


def native_pgd(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
               targeted: bool, loss: Loss, seed: int, random_start: bool, jit: bool,
               step_size: float, steps: int, keep_best: bool = True, **_: Any) -> np.ndarray:
    """One batch, one restart of native PGD (see :func:`pgd`).

    With ``keep_best`` each example returns its first iterate that fooled the model (else the
    last iterate); without it, the last iterate, exactly as CleverHans and Madry et al.
    """
    import tensorflow as tf

    step = step_fn(model, threat.norm, loss, targeted, jit)
    start = random_point(np.random.default_rng(seed), x, threat) if random_start else x
    xt, yt = tf.constant(x), tf.constant(y)
    eps, alpha = tf.constant(threat.epsilon, tf.float32), tf.constant(step_size, tf.float32)
    low, high = (tf.constant(b, tf.float32) for b in threat.bounds)
    x_adv = tf.constant(start)
    best, found = x_adv, tf.zeros(len(x), tf.bool)
    for _ in range(steps):
        x_next, success = step(x_adv, xt, yt, eps, alpha, low, high)
        if keep_best:
            new = success & ~found
            best = tf.where(new[:, None, None, None], x_adv, best)
            found = found | success
        x_adv = x_next
    if not keep_best:
        return x_adv.numpy()
    # examples no iterate fooled (the last one is unscored) keep the last iterate
    return tf.where(found[:, None, None, None], best, x_adv).numpy()


PGD_BACKENDS: dict[Backend, BatchAttack] = {
    Backend.NATIVE: native_pgd,
    Backend.CLEVERHANS: peers.cleverhans_pgd,
    Backend.ART: peers.art_pgd,
}


def resolve_step_size(epsilon: float, steps: int, step_size: Any) -> float:
    """Check ``0 < step_size <= epsilon``; None gives Madry's ``2.5 * epsilon / steps``."""
    if step_size is None:
        return DEFAULT_REL_STEP * epsilon / steps
    value = check_float("step_size", step_size, low=0.0, low_open=True)
    if epsilon > 0 and value > epsilon:
        raise ValidationError(f"expected step_size <= epsilon ({epsilon:g}), got {value:g}")
    return value


def pgd(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
        steps: int = 40, step_size: Any = None, random_start: bool = True, restarts: int = 1,
        targeted: bool = False, loss: Any = "ce", bounds: tuple[float, float] = (0.0, 1.0),
        seed: int = 0, backend: Any = "native", batch_size: int | None = None,
        jit_compile: bool | None = None, keep_best: bool = True) -> np.ndarray:
    """Projected Gradient Descent with random start and restarts (L∞ or L2).

    Each restart runs ``steps`` steps of size ``step_size`` from a uniform random point of
    the ball (or from ``x`` if ``random_start`` is False); per example, the strongest restart
    is kept (a success beats a failure, then the higher loss), and within a restart the
    first iterate that fooled the model (``keep_best``).

    Args:
        model: Keras model mapping ``(N, H, W, C)`` images to ``(N, K)`` logits.
        x: clean images, shape ``(N, H, W, C)``, inside ``bounds``.
        y: labels ``(N,)`` (None = the model's predictions) or targets if ``targeted``.
        epsilon: budget in pixel units (e.g. 0.3 or ``"8/255"``), >= 0; 0 returns ``x``.
        norm: ``"linf"`` or ``"l2"``.
        steps: gradient steps per restart, >= 1.
        step_size: step length in pixel units, ``0 < step_size <= epsilon``;
            default ``2.5 * epsilon / steps``.
        random_start: start each restart at a uniform random point of the ball.
        restarts: independent runs, >= 1 (needs ``random_start``).
        targeted: move towards ``y`` instead of away from it.
        loss: ``"ce"`` or ``"margin"`` (native backend only).
        bounds: ``(low, high)`` valid pixel range.
        seed: seeds the random starts (same seed, same output).
        backend: ``"native"``, ``"cleverhans"`` or ``"art"``.
        batch_size: examples per batch (default 500).
        jit_compile: XLA on/off; None chooses per device (on for GPUs).
        keep_best: native backend: return each example's first iterate that fooled the model
            rather than the last iterate (which can drift back to the right class); the
            peers always return their last iterate. False reproduces CleverHans exactly.

    Returns:
        Adversarial images, same shape and dtype as ``x``, inside the ε-ball and bounds.

    Example:
        >>> x_adv = pgd(model, data.x_test, data.y_test, epsilon=0.3, steps=40, restarts=5)
        >>> float(abs(x_adv - data.x_test).max()) <= 0.3
        True
    """
    threat = ThreatModel.parse(epsilon, norm, bounds)
    steps = check_int("steps", steps, low=1)
    alpha = resolve_step_size(threat.epsilon, steps, step_size)
    impl = PGD_BACKENDS[parse_enum("backend", backend, Backend)]
    return run_attack(impl, model, x, y, threat=threat, targeted=targeted, loss=loss,
                      restarts=restarts, random_start=bool(random_start), seed=seed,
                      batch_size=batch_size, jit_compile=jit_compile, step_size=alpha,
                      steps=steps, keep_best=bool(keep_best))
