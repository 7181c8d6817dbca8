"""Fast Gradient (Sign) Method: one step of size ε along the steepest-ascent direction.

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
https://arxiv.org/abs/1412.6572 (L∞: the sign of the gradient; L2: the normalised gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab._validate import parse_enum
from robustlab.attacks import peers
from robustlab.attacks._core import (
    Loss,
    Norm,
    ThreatModel,
    compiled,
    input_gradient,
    project,
    steepest_direction,
)
from robustlab.attacks._runner import Backend, BatchAttack, run_attack


def step_fn(model: Any, norm: Norm, loss: Loss, targeted: bool, jit: bool) -> Any:
    """Compiled gradient step ``(x_adv, x, y, eps, step, low, high) -> (x_adv', success)``:
    ascend the attack loss by ``step`` along the steepest direction, then project onto the
    threat model. ``success`` (N,) says whether the *input* iterate ``x_adv`` already fooled
    the model (read off the logits of the same forward pass, so it is free). PGD repeats the
    step; FGSM is one step of size ε from ``x``."""
    import tensorflow as tf

    def build() -> Any:
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def step(x_adv: Any, x: Any, y: Any, epsilon: Any, step_size: Any, low: Any,
                 high: Any) -> tuple[Any, Any]:
            grad, logits = input_gradient(model, x_adv, y, loss, targeted)
            moved = x_adv + step_size * steepest_direction(grad, norm)
            pred = tf.argmax(logits, axis=-1, output_type=y.dtype)
            success = tf.equal(pred, y) if targeted else tf.not_equal(pred, y)
            return project(moved, x, epsilon, norm, low, high), success
        return step

    return compiled(model, ("step", norm, loss, targeted, jit), build)


def native_fgsm(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
                targeted: bool, loss: Loss, jit: bool, **_: Any) -> np.ndarray:
    """One batch of native FGSM (see :func:`fgsm`)."""
    import tensorflow as tf

    step = step_fn(model, threat.norm, loss, targeted, jit)
    xt = tf.constant(x)
    eps = tf.constant(threat.epsilon, tf.float32)
    low, high = (tf.constant(b, tf.float32) for b in threat.bounds)
    return step(xt, xt, tf.constant(y), eps, eps, low, high)[0].numpy()


FGSM_BACKENDS: dict[Backend, BatchAttack] = {
    Backend.NATIVE: native_fgsm,
    Backend.CLEVERHANS: peers.cleverhans_fgsm,
    Backend.ART: peers.art_fgsm,
}


def fgsm(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
         targeted: bool = False, loss: Any = "ce", bounds: tuple[float, float] = (0.0, 1.0),
         backend: Any = "native", batch_size: int | None = None,
         jit_compile: bool | None = None, seed: int = 0) -> np.ndarray:
    """Fast Gradient Sign Method (L∞) / Fast Gradient Method (L2).

    Args:
        model: Keras model mapping ``(N, H, W, C)`` images to ``(N, K)`` logits.
        x: clean images, shape ``(N, H, W, C)``, inside ``bounds``.
        y: labels ``(N,)``: true labels (untargeted; None = the model's predictions) or
            target labels (targeted).
        epsilon: budget in pixel units of ``bounds`` (e.g. 0.3 or ``"8/255"``), >= 0.
        norm: ``"linf"`` or ``"l2"``.
        targeted: move towards ``y`` instead of away from it.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (native backend only).
        bounds: ``(low, high)`` valid pixel range.
        backend: ``"native"``, ``"cleverhans"`` or ``"art"``.
        batch_size: examples per batch (default 500).
        jit_compile: XLA on/off; None chooses per device (on for GPUs).
        seed: unused by FGSM (deterministic); accepted for a uniform signature.

    Returns:
        Adversarial images, same shape and dtype as ``x``, inside the ε-ball and bounds.

    Example:
        >>> x_adv = fgsm(model, data.x_test, data.y_test, epsilon=0.1)
        >>> float(abs(x_adv - data.x_test).max()) <= 0.1
        True
    """
    threat = ThreatModel.parse(epsilon, norm, bounds)
    impl = FGSM_BACKENDS[parse_enum("backend", backend, Backend)]
    return run_attack(impl, model, x, y, threat=threat, targeted=targeted, loss=loss,
                      restarts=1, random_start=False, seed=seed, batch_size=batch_size,
                      jit_compile=jit_compile)
