"""CleverHans 4 and ART implementations behind robustlab's attack signature, so every
native result can be cross-checked against two independent implementations.

They take their randomness from global seeds (TensorFlow's for CleverHans, NumPy's for ART),
which these adapters set from ``seed``, the restart and the batch's first example id, for the
call only (:func:`robustlab._env.seeded_globals` gives the caller's state back). Both
support the cross-entropy loss only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._env import seeded_globals
from robustlab.attacks._core import batch_seed
from robustlab.errors import ValidationError
from robustlab.types import Loss, Norm, ThreatModel

# The global generators are one per process: replicas running peer attacks in their own
# threads (robustlab.distribute) take turns, so each batch sees exactly its own seed.
GLOBAL_RNG = threading.Lock()


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
    with GLOBAL_RNG, seeded_globals(batch_seed(seed, restart, ids), tensorflow=True):
        out = projected_gradient_descent(
            model, x, threat.epsilon, step_size, steps, numpy_norm(threat.norm), clip_min=low,
            clip_max=high, y=y, targeted=targeted, rand_init=random_start,
            rand_minmax=threat.epsilon if random_start else None, sanity_checks=False)
    return np.asarray(out)


def art_classifier(model: Any, input_shape: tuple[int, ...], clip: tuple[Any, Any]) -> Any:
    """``model`` (inputs ``(N, *input_shape)`` -> logits ``(N, K)``) as ART's
    ``TensorFlowV2Classifier`` with cross-entropy on logits and clip values ``clip`` (the
    inputs' ``(low, high)``): how every ART attack and check in robustlab sees a model."""
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=model, nb_classes=int(model.output_shape[-1]), input_shape=tuple(input_shape),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=clip)


def sequential_copy(model: Any, input_shape: tuple[int, ...]) -> Any:
    """``model`` as a ``keras.Sequential`` sharing its layers (ART reads the activations of
    Sequential models only); ``model`` itself if it already is one.

    Raises:
        InputTypeError: the model's layers do not form a chain.
    """
    import keras

    from robustlab.errors import InputTypeError

    if isinstance(model, keras.Sequential):
        return model
    try:
        return keras.Sequential([keras.Input(tuple(input_shape)), *[
            layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]])
    except (ValueError, TypeError) as exc:
        raise InputTypeError(f"expected a model whose layers form a chain for ART's "
                             f"detectors, got {type(model).__name__} ({exc})") from None


def _art_classifier(model: Any, x: np.ndarray, clip: tuple[Any, Any]) -> Any:
    return art_classifier(model, x.shape[1:], clip)


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[y]


@dataclass(frozen=True, eq=False)
class _ArtView:
    """What ART sees of a batch: images ``(N, H, W, C)`` as they are; other inputs of ``D``
    values as ``(N, s, s, 1)`` images, ``s = max(5, ceil(sqrt(D)))``, zero-padded with values the
    model never reads (ART's Square attack, also inside its AutoAttack, takes images only
    and squares smaller than the image: s >= 5); and with a per-feature scale, in scaled units
    ``u = x / scale`` (so ART's ε-ball, steps and random starts are measured as robustlab's
    are, in L∞ and L2). ``model`` maps the view back to the model's input; :meth:`back`
    maps ART's output back."""

    model: Any
    x: np.ndarray
    clip: tuple[Any, Any]
    mask: np.ndarray | None
    scale: np.ndarray | None
    shape: tuple[int, ...]

    @classmethod
    def of(cls, model: Any, x: np.ndarray, threat: ThreatModel) -> _ArtView:
        c = threat.constraints
        shape = tuple(x.shape[1:])
        if c is None and x.ndim == 4:
            return cls(model, x, threat.bounds, None, None, shape)
        scale = None if c is None or bool(np.all(c.scale == 1)) else c.scale
        low, high = (np.broadcast_to(v, shape) for v in threat.limits)
        if scale is not None:
            x, low, high = x / scale, low / scale, high / scale
        mask = np.ones(shape, np.float32) if c is None else c.mutable.astype(np.float32)
        if x.ndim == 4:
            view, flat = shape, None
        else:
            size = int(np.prod(shape))
            side = max(5, int(np.ceil(np.sqrt(size))))
            view, flat = (side, side, 1), side * side - size
        def fit(a: np.ndarray, fill: float, lead: tuple[int, ...] = ()) -> np.ndarray:
            if flat is None:
                return np.asarray(a, np.float32)
            rows = np.asarray(a, np.float32).reshape((*lead, -1))
            pad = np.full((*lead, flat), fill, np.float32)
            return np.concatenate([rows, pad], axis=-1).reshape((*lead, *view))
        clip = (fit(low, 0.0), fit(high, 1.0)) if c is not None else threat.bounds
        return cls(_view_model(model, shape, view, scale), fit(x, 0.0, (len(x),)), clip,
                   fit(mask, 0.0) if c is not None else None, scale, shape)

    def back(self, out: Any) -> np.ndarray:
        size = int(np.prod(self.shape))
        arr = np.asarray(out, np.float32).reshape(len(out), -1)[:, :size]
        arr = arr.reshape((-1, *self.shape))
        return arr if self.scale is None else (arr * self.scale).astype(np.float32)


def _view_model(model: Any, shape: tuple[int, ...], view: tuple[int, ...],
                scale: np.ndarray | None) -> Any:
    """``model`` behind the map from ``view`` to ``shape`` (flatten, drop the padding,
    reshape) and a multiplication by ``scale`` (a Keras model, so ART treats it as one)."""
    import keras

    if view == shape and scale is None:
        return model
    inputs = keras.Input(shape=view)
    z = inputs
    if view != shape:
        size = int(np.prod(shape))
        z = keras.layers.Reshape((int(np.prod(view)),))(z)
        z = keras.layers.Lambda(lambda t: t[:, :size])(z)
        z = keras.layers.Reshape(shape)(z)
    if scale is not None:
        factor = keras.ops.convert_to_tensor(scale, "float32")
        z = keras.layers.Lambda(lambda t: t * factor)(z)
    return keras.Model(inputs, model(z), name="art_view")


def art_batch(make: Callable[..., Any], *, masks: bool = False) -> Callable[..., np.ndarray]:
    """A batch implementation for :func:`~robustlab.attacks._runner.run_attack` from
    ``make(classifier, threat, n, **params)``, which builds the ART attack (``params``: the
    attack's own settings, e.g. ``steps``, ``loss``). ART draws from NumPy's global
    generator: seeded per batch and restart (:func:`batch_seed`) for the call only.

    Non-image inputs and feature constraints reach ART through :class:`_ArtView` (per-feature
    clip values, scaled units) and, if ``masks`` (the attack's ``generate`` takes ``mask``),
    the mutable features as its mask; integer and one-hot features, and immutable ones for
    the attacks without a mask, are enforced on the output by the engine."""

    def run(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel, targeted: bool,
            seed: int, restart: int, ids: np.ndarray, **params: Any) -> np.ndarray:
        # ART uses NumPy's global RNG
        with GLOBAL_RNG, seeded_globals(batch_seed(seed, restart, ids)):
            view = _ArtView.of(model, x, threat)
            clf = _art_classifier(view.model, view.x, view.clip)
            attack = make(clf, threat, len(x), **params)
            if targeted:
                attack.set_params(targeted=True)
            extra = {}
            if view.mask is not None and masks:  # ART leaves mask-0 features alone
                extra["mask"] = view.mask  # one example's shape: broadcast over the batch
            return view.back(attack.generate(view.x, _onehot(y, clf.nb_classes), **extra))
    return run


def _art_fgsm(clf: Any, threat: ThreatModel, n: int, *, loss: Loss, **_: Any) -> Any:
    from art.attacks.evasion import FastGradientMethod

    _ce_only(loss, "art")
    return FastGradientMethod(clf, norm=numpy_norm(threat.norm), eps=threat.epsilon,
                              batch_size=n)


def _art_pgd(clf: Any, threat: ThreatModel, n: int, *, loss: Loss, random_start: bool,
             step_size: float, steps: int, **_: Any) -> Any:
    from art.attacks.evasion import ProjectedGradientDescent

    _ce_only(loss, "art")
    return ProjectedGradientDescent(
        clf, norm=numpy_norm(threat.norm), eps=threat.epsilon, eps_step=step_size,
        max_iter=steps, num_random_init=1 if random_start else 0, batch_size=n,
        verbose=False)


# ART ``FastGradientMethod`` / ``ProjectedGradientDescent`` (TensorFlow v2) on one batch.
art_fgsm = art_batch(_art_fgsm, masks=True)
art_pgd = art_batch(_art_pgd, masks=True)
