"""CleverHans 4 and ART implementations behind robustlab's attack signature, so every
native result can be cross-checked against two independent implementations.

They take their randomness from global seeds (TensorFlow's for CleverHans, NumPy's for ART),
which these adapters set from ``seed``, the restart and the batch's first example id, for the
call only (:func:`robustlab._env.seeded_globals` gives the caller's state back). Both
support the cross-entropy loss only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robustlab._env import seeded_globals
from robustlab.attacks._core import batch_seed
from robustlab.errors import ValidationError
from robustlab.types import Loss, Norm, ThreatModel


def _ce_only(loss: Loss, backend: str) -> None:
    if loss is not Loss.CE:
        raise ValidationError(f"expected loss='ce' with backend={backend!r} (only the native "
                              f"backend has loss={loss.value!r})")


def _plain_only(threat: ThreatModel, backend: str) -> None:
    if threat.constraints is not None:
        raise ValidationError(f"expected no feature constraints with backend={backend!r} (it "
                              f"has one scalar clip range and no mask); use backend='native' "
                              f"or 'art'")


def numpy_norm(norm: Norm) -> float:
    return np.inf if norm is Norm.LINF else 2.0


def cleverhans_fgsm(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
                    targeted: bool, loss: Loss, **_: Any) -> np.ndarray:
    """CleverHans 4 ``fast_gradient_method`` on one batch."""
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

    _ce_only(loss, "cleverhans")
    _plain_only(threat, "cleverhans")
    low, high = threat.bounds
    out = fast_gradient_method(model, x, threat.epsilon, numpy_norm(threat.norm), clip_min=low,
                               clip_max=high, y=y, targeted=targeted, sanity_checks=False)
    return np.asarray(out)


def cleverhans_pgd(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
                   targeted: bool, loss: Loss, seed: int, restart: int, ids: np.ndarray,
                   random_start: bool, step_size: float, steps: int, **_: Any) -> np.ndarray:
    """CleverHans 4 ``projected_gradient_descent`` on one batch (one restart)."""
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    _ce_only(loss, "cleverhans")
    _plain_only(threat, "cleverhans")
    low, high = threat.bounds
    with seeded_globals(batch_seed(seed, restart, ids), tensorflow=True):
        out = projected_gradient_descent(
            model, x, threat.epsilon, step_size, steps, numpy_norm(threat.norm), clip_min=low,
            clip_max=high, y=y, targeted=targeted, rand_init=random_start,
            rand_minmax=threat.epsilon if random_start else None, sanity_checks=False)
    return np.asarray(out)


def _art_classifier(model: Any, x: np.ndarray, threat: ThreatModel) -> Any:
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=model, nb_classes=int(model.output_shape[-1]), input_shape=x.shape[1:],
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=threat.limits if threat.constraints is not None else threat.bounds)


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[y]


def art_batch(make: Callable[..., Any], *, masks: bool = False) -> Callable[..., np.ndarray]:
    """A batch implementation for :func:`~robustlab.attacks._runner.run_attack` from
    ``make(classifier, threat, n, **params)``, which builds the ART attack (``params``: the
    attack's own settings, e.g. ``steps``, ``loss``). ART draws from NumPy's global
    generator: seeded per batch and restart (:func:`batch_seed`) for the call only.

    With feature constraints the classifier gets per-feature ``clip_values``, and, if
    ``masks`` (the attack's ``generate`` takes ``mask``), the mutable features as its mask;
    any other constraint is enforced on the output by the engine."""

    def run(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel, targeted: bool,
            seed: int, restart: int, ids: np.ndarray, **params: Any) -> np.ndarray:
        with seeded_globals(batch_seed(seed, restart, ids)):  # ART uses NumPy's global RNG
            clf = _art_classifier(model, x, threat)
            attack = make(clf, threat, len(x), **params)
            if targeted:
                attack.set_params(targeted=True)
            extra = {}
            if threat.constraints is not None and masks:  # ART leaves mask-0 features alone
                extra["mask"] = np.broadcast_to(threat.constraints.mutable.astype(np.float32),
                                                x.shape).copy()
            return np.asarray(attack.generate(x, _onehot(y, clf.nb_classes), **extra),
                              np.float32)

    return run


def _art_eps(threat: ThreatModel, step: float | None = None) -> Any:
    """ART's ``eps`` (or ``eps_step``): a number, or with a per-feature scale (L∞ only: ART
    has no scaled L2 ball) the array ``ε · scale``."""
    value = threat.epsilon if step is None else step
    c = threat.constraints
    if c is None or bool(np.all(c.scale == 1)):
        return value
    if threat.norm is not Norm.LINF:
        raise ValidationError("expected norm='linf' with backend='art' and a per-feature "
                              "scale (ART measures L2 in raw units); use backend='native'")
    return (np.float32(value) * c.scale).astype(np.float32)


def _art_fgsm(clf: Any, threat: ThreatModel, n: int, *, loss: Loss, **_: Any) -> Any:
    from art.attacks.evasion import FastGradientMethod

    _ce_only(loss, "art")
    return FastGradientMethod(clf, norm=numpy_norm(threat.norm), eps=_art_eps(threat),
                              eps_step=_art_eps(threat), batch_size=n)


def _art_pgd(clf: Any, threat: ThreatModel, n: int, *, loss: Loss, random_start: bool,
             step_size: float, steps: int, **_: Any) -> Any:
    from art.attacks.evasion import ProjectedGradientDescent

    _ce_only(loss, "art")
    return ProjectedGradientDescent(
        clf, norm=numpy_norm(threat.norm), eps=_art_eps(threat),
        eps_step=_art_eps(threat, step_size),
        max_iter=steps, num_random_init=1 if random_start else 0, batch_size=n,
        verbose=False)


# ART ``FastGradientMethod`` / ``ProjectedGradientDescent`` (TensorFlow v2) on one batch.
art_fgsm = art_batch(_art_fgsm, masks=True)
art_pgd = art_batch(_art_pgd, masks=True)
