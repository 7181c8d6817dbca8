"""Fast Gradient (Sign) Method: one step of size ε along the steepest-ascent direction.

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
https://arxiv.org/abs/1412.6572 (L∞: the sign of the gradient; L2: the normalised gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab._validate import parse_enum
from robustlab.attacks import peers
from robustlab.attacks._core import ascent_fn, threat_tensors
from robustlab.attacks._runner import BatchAttack, boundary, run_attack
from robustlab.types import Backend, Constraints, Loss, ThreatModel


def native_fgsm(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
                targeted: bool, loss: Loss, jit: bool, **_: Any) -> np.ndarray:
    """One batch of native FGSM (see :func:`fgsm`): one ascent step of size ε from ``x``."""
    import tensorflow as tf

    low, high, weight, weighted = threat_tensors(threat)
    ascend = ascent_fn(model, threat.norm, loss, targeted, jit, 1, weighted)
    xt = tf.constant(x)
    eps = tf.constant(threat.epsilon, tf.float32)
    found = tf.zeros(len(x), tf.bool)
    return ascend(xt, xt, found, xt, tf.constant(y), eps, eps, low, high, weight)[0].numpy()


FGSM_BACKENDS: dict[Backend, BatchAttack] = {
    Backend.NATIVE: native_fgsm,
    Backend.CLEVERHANS: peers.cleverhans_fgsm,
    Backend.ART: peers.art_fgsm,
}


def fgsm(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
         targeted: bool = False, loss: Any = "ce", bounds: Any = None,
         backend: Any = "native", batch_size: int | None = None,
         jit_compile: bool | None = None, seed: int = 0, ids: Any = None,
         constraints: Constraints | None = None) -> np.ndarray:
    """Fast Gradient Sign Method (L∞) / Fast Gradient Method (L2).

    Args:
        model: Keras model mapping ``(N, ...)`` inputs (images ``(N, H, W, C)``, tables
            ``(N, F)``) to ``(N, K)`` logits.
        x: clean inputs, shape ``(N, ...)``, inside ``bounds``.
        y: labels ``(N,)``: true labels (untargeted; None = the model's predictions) or
            target labels (targeted).
        epsilon: budget in pixel units of ``bounds`` (e.g. 0.3 or ``"8/255"``), >= 0.
        norm: ``"linf"`` or ``"l2"``.
        targeted: move towards ``y`` instead of away from it.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` / ``"dlr"`` (native backend only).
        bounds: ``(low, high)`` valid input range: numbers, or arrays broadcastable to one
            example's shape (per-feature bounds); None: the constraints' bounds, else
            ``(0, 1)``.
        backend: ``"native"``, ``"cleverhans"`` or ``"art"``.
        batch_size: examples per batch (None: sized from available memory).
        jit_compile: XLA on/off; None chooses per device (on for GPUs).
        constraints: per-feature threat model (:class:`~robustlab.types.Constraints`:
            bounds, scale of ε, immutable, integer and one-hot features); the output then
            keeps immutable features bit-identical and is mapped to the feasible set.
        seed, ids: unused by FGSM (deterministic); accepted for a uniform signature.

    Returns:
        Adversarial inputs, same shape and dtype as ``x``, inside the ε-ball and bounds.

    Example:
        >>> x_adv = fgsm(model, data.x_test, data.y_test, epsilon=0.1)
        >>> float(abs(x_adv - data.x_test).max()) <= 0.1
        True
    """
    given = boundary(model, x, y, epsilon=epsilon, norm=norm, bounds=bounds,
                     targeted=targeted, loss=loss, restarts=1, random_start=False, seed=seed,
                     batch_size=batch_size, jit_compile=jit_compile, ids=ids,
                     constraints=constraints)
    impl = FGSM_BACKENDS[parse_enum("backend", backend, Backend)]
    return run_attack(impl, model, given, targeted=targeted, random_start=False)
