"""The shared math under every attack: the one input-gradient function, the steepest-ascent
direction per norm, and the threat model (projection onto the epsilon-ball and clipping to
the input bounds), enforced here and nowhere else.

Shapes: inputs ``x`` are ``(N, ...)`` float32 of any rank (images ``(N, H, W, C)``, tables
``(N, F)``); labels ``y`` are ``(N,)`` int. A plain threat model treats every input value
alike; with per-feature :class:`~robustlab.types.Constraints` the math takes a ``weight``
(each feature's scale, 0 where immutable) and per-feature ``low``/``high`` arrays, and the
output is mapped to the feasible set (integers, one-hot groups) by
:func:`enforce_threat_model`. ``weight=None`` traces exactly the plain math.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from robustlab.inference import GraphSafeNames
from robustlab.types import Constraints, Loss, Norm, ThreatModel

# Numerical floor used in L2 normalisations (same value as CleverHans' avoid_zero_div).
_TINY = 1e-12


# ---------------------------------------------------------------------------------------------
# TensorFlow math (called inside tf.function)


def per_example_loss(logits: Any, y: Any, loss: Loss, targeted: bool) -> Any:
    """The quantity the attack maximises, one value per example, shape ``(N,)``.

    Untargeted: cross-entropy of the true label (or the margin of the best other class).
    Targeted: minus the cross-entropy of the target (or the target's margin). For
    ``Loss.KL``, ``y`` holds reference logits ``(N, K)`` and the loss is the KL divergence of
    the model's distribution from the reference one; for ``Loss.DLR_T``, ``y`` holds ``(N, 2)``
    pairs (true class, target class) and the loss (maximised) pulls towards the target.
    """
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    if loss is Loss.DLR_T:  # y: (N, 2) pairs (true class, target class); Croce & Hein 2020
        top = tf.math.top_k(logits, k=4).values
        true = tf.gather(logits, y[:, 0], axis=1, batch_dims=1)
        target = tf.gather(logits, y[:, 1], axis=1, batch_dims=1)
        value = -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
        return -value if targeted else value
    if loss is Loss.KL:
        ref = tf.cast(y, tf.float32)
        kl = tf.reduce_sum(tf.nn.softmax(ref) * (tf.nn.log_softmax(ref)
                                                 - tf.nn.log_softmax(logits)), axis=-1)
        return -kl if targeted else kl
    if loss is Loss.CE:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return -ce if targeted else ce
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    label_logit = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    margin = label_logit - other if targeted else other - label_logit
    if loss is Loss.DLR:  # z sorted descending: z1 - z3 measures the logits' scale
        top = tf.math.top_k(logits, k=3).values
        margin = margin / (top[:, 0] - top[:, 2] + 1e-12)
    return margin


# float16 gradients underflow (below 6e-8 they are 0, and sign(0) = 0 moves nothing): models
# computing in float16 get their attack objective scaled by this before the backward pass.
# The steepest direction is scale-free, so the attack is unchanged; non-finite values are 0.
FLOAT16_LOSS_SCALE = 1024.0


def computes_in_float16(model: Any) -> bool:
    """True if any layer of ``model`` computes in float16 (Keras ``mixed_float16``)."""
    layers = getattr(model, "layers", None) or [model]
    return any(str(getattr(layer, "compute_dtype", "")) == "float16" for layer in layers)


def input_gradient(model: Any, x: Any, y: Any, loss: Loss, targeted: bool) -> tuple[Any, Any]:
    """Gradient of :func:`per_example_loss` w.r.t. the input ``x`` (the only one in robustlab).

    The model runs with ``training=False`` (no dropout noise, frozen batch-norm statistics).
    The loss is computed in float32 from the logits whatever the model's precision; for a
    mixed-float16 model the backward pass is loss-scaled (``FLOAT16_LOSS_SCALE``), so the
    returned gradient has the right direction but not the true magnitude.
    Returns ``(gradient (N, ...) float32 of x's shape, logits (N, K))``.
    """
    import tensorflow as tf

    half = computes_in_float16(model)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=False)
        objective = per_example_loss(logits, y, loss, targeted)
        if half:
            objective = objective * FLOAT16_LOSS_SCALE
    grad = tf.cast(tape.gradient(objective, x), tf.float32)
    if half:
        grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
    return grad, logits


def steepest_direction(grad: Any, norm: Norm, weight: Any = None) -> Any:
    """Unit-norm steepest-ascent direction: ``sign(g)`` for L∞, ``g / ||g||_2`` for L2.

    With a per-feature ``weight`` (scale, 0 where immutable) the direction is the steepest
    one in scaled units ``u = δ / scale`` mapped back to input units: ``weight · sign(g)``,
    or ``weight · (g·weight) / ||g·weight||_2``; immutable features get 0."""
    import tensorflow as tf

    if weight is not None:
        if norm is Norm.LINF:
            return tf.sign(grad) * weight
        return steepest_direction(grad * weight, norm) * weight
    if norm is Norm.LINF:
        return tf.sign(grad)
    axes = list(range(1, len(grad.shape)))
    sq = tf.maximum(_TINY, tf.reduce_sum(tf.square(grad), axis=axes, keepdims=True))
    return grad / tf.sqrt(sq)


def project(x_adv: Any, x: Any, epsilon: Any, norm: Norm, low: Any, high: Any,
            weight: Any = None) -> Any:
    """The threat model: move ``x_adv`` back into the ``epsilon``-ball around ``x`` and into
    ``[low, high]`` (scalars, or per-feature arrays of one example's shape). Clipping to the
    box after the ball cannot leave the ball (the box contains ``x``, so clipping only
    shortens each coordinate of the perturbation).

    With ``weight`` the ball is measured in scaled units ``δ / weight`` over the features
    whose weight is positive; features of weight 0 (immutable) keep ``x``'s value exactly."""
    import tensorflow as tf

    delta = x_adv - x
    axes = list(range(1, len(delta.shape)))
    if weight is not None:
        if norm is Norm.LINF:
            delta = tf.clip_by_value(delta, -epsilon * weight, epsilon * weight)
        else:
            units = tf.math.divide_no_nan(delta, weight * tf.ones_like(delta))
            length = tf.sqrt(tf.maximum(_TINY, tf.reduce_sum(tf.square(units), axis=axes,
                                                              keepdims=True)))
            delta = units * tf.minimum(1.0, epsilon / length) * weight
        return tf.clip_by_value(x + delta, low, high)
    if norm is Norm.LINF:
        delta = tf.clip_by_value(delta, -epsilon, epsilon)
    else:
        length = tf.sqrt(tf.maximum(_TINY, tf.reduce_sum(tf.square(delta), axis=axes,
                                                          keepdims=True)))
        delta = delta * tf.minimum(1.0, epsilon / length)
    return tf.clip_by_value(x + delta, low, high)


def enforce_threat_model(x_adv: np.ndarray, x: np.ndarray, threat: ThreatModel) -> np.ndarray:
    """NumPy twin of :func:`project`, applied to every attack's output (whatever the backend),
    so no attack can report an example outside the budget. With constraints it also puts
    immutable features back bit-identical and maps to the feasible set
    (:func:`_feasible`)."""
    delta = x_adv.astype(np.float32) - x.astype(np.float32)
    eps = np.float32(threat.epsilon)
    c = threat.constraints
    if c is not None:
        weight = c.weight
        if threat.norm is Norm.LINF:
            delta = np.clip(delta, -eps * weight, eps * weight)
        else:
            units = np.divide(delta, weight, out=np.zeros_like(delta), where=weight > 0)
            length = np.sqrt(np.maximum(_TINY, np.sum(
                units.reshape(len(delta), -1).astype(np.float64) ** 2, axis=1)))
            factor = np.minimum(1.0, threat.epsilon / length).astype(np.float32)
            delta = units * factor.reshape((-1,) + (1,) * (delta.ndim - 1)) * weight
        out = _not_beyond(np.clip(x.astype(np.float32) + delta, c.low, c.high), x, delta,
                          _coarse(c, threat.epsilon * weight.ravel().astype(np.float64)))
        out = np.where(c.mutable, out, x.astype(np.float32))
        return _feasible(out, x.astype(np.float32), threat) if c.discrete else out
    if threat.norm is Norm.LINF:
        delta = np.clip(delta, -eps, eps)
    else:
        flat = delta.reshape(len(delta), -1)
        length = np.sqrt(np.maximum(_TINY, np.sum(flat.astype(np.float64) ** 2, axis=1)))
        factor = np.minimum(1.0, threat.epsilon / length).astype(np.float32)
        delta = delta * factor.reshape((-1,) + (1,) * (delta.ndim - 1))
    low, high = (np.float32(b) for b in threat.bounds)
    return np.clip(x.astype(np.float32) + delta, low, high)


# Relative tolerance on ε·scale when rounding integers: float32 round-off of ε·scale must not
# keep a count from moving by exactly its budget (ε = 1 with scale 1 allows ±1). The
# evaluation's re-check allows 1e-5.
_ROUND_SLACK = 1e-6


def _not_beyond(out: np.ndarray, x: np.ndarray, delta: Any, coarse: np.ndarray
                ) -> np.ndarray:
    """``out`` (float32) with every coordinate that float32 rounding carried further from
    ``x`` than the intended change ``delta`` moved back one representable step towards
    ``x``: between ``x`` and the rounded value, so no further than ``delta`` (large values,
    e.g. a timestamp near 1.7e9, are 128 apart in float32). Only the flat features marked
    ``coarse`` (:func:`_coarse`) can be carried out, so only those are checked (usually
    none)."""
    n = len(out)
    flat_out, flat_x = out.reshape(n, -1), np.asarray(x, np.float32).reshape(n, -1)
    cols = np.flatnonzero(coarse)
    if not len(cols):
        return out
    d = np.broadcast_to(np.asarray(delta, np.float64).reshape(n, -1) if np.ndim(delta)
                        else np.float64(delta), flat_out.shape)[:, cols]
    sub_out, sub_x = flat_out[:, cols], flat_x[:, cols]
    grew = np.abs(sub_out.astype(np.float64) - sub_x) > np.abs(d)
    if not grew.any():
        return out
    fixed = flat_out.copy()
    fixed[:, cols] = np.where(grew, np.nextafter(sub_out, sub_x), sub_out)
    return fixed.reshape(out.shape)


def _coarse(c: Constraints, reach: np.ndarray) -> np.ndarray:
    """Per flat feature: True where the float32 spacing at the largest magnitude its bounds
    allow exceeds 1e-5 of its ``reach`` (ε·scale). Elsewhere rounding moves a value at most
    half a spacing, under half the evaluation re-check's relative tolerance (1e-5)."""
    top = np.maximum(np.abs(c.low), np.abs(c.high)).ravel().astype(np.float32)
    return np.spacing(top).astype(np.float64) > 1e-5 * np.maximum(reach, 0.0)


def _feasible(out: np.ndarray, x: np.ndarray, threat: ThreatModel) -> np.ndarray:
    """Map a continuous attack output (inside the ball and bounds) to the feasible set of its
    constraints: integer features rounded to the nearest whole number that stays inside the
    ball and the bounds; each one-hot group set to its largest entry when that switch fits the
    budget (L∞: both changed columns allow a move of 1), else back to the clean category. In
    L2, if the rounded point leaves the ball, categories go back and integers round towards
    the clean value instead (which never lengthens a coordinate). The clean ``x`` satisfies
    the constraints, so the result always does. Only the integer and one-hot columns are
    touched (and, in L2, the length of the whole change is measured)."""
    c = threat.constraints
    assert c is not None  # noqa: S101 - called only with constraints
    n = len(x)
    flat = out.reshape(n, -1).copy()
    clean = np.asarray(x, np.float32).reshape(n, -1)
    eps = float(threat.epsilon)
    reach = eps * c.weight.ravel().astype(np.float64) * (1 + _ROUND_SLACK)  # per coordinate
    ints = np.flatnonzero(c.integer.ravel() & c.mutable.ravel())
    relaxed = flat[:, ints].astype(np.float64)
    base = clean[:, ints].astype(np.float64)
    target = relaxed  # the integer features' values, exactly (float64)
    if len(ints):
        lo = np.ceil(np.maximum(base - reach[ints], c.low.ravel()[ints]))
        hi = np.floor(np.minimum(base + reach[ints], c.high.ravel()[ints]))
        target = np.clip(np.round(relaxed), lo, hi)
        flat[:, ints] = target
    rows = np.arange(n)
    for group in c.onehot:
        cols = list(group)
        if not c.mutable.ravel()[cols[0]]:
            continue
        pick = np.zeros((n, len(cols)), np.float32)
        pick[rows, np.argmax(flat[:, cols], axis=1)] = 1.0
        if threat.norm is Norm.LINF:  # a switch moves two columns by 1 each
            moved = pick != clean[:, cols]
            fits = ~(moved & (reach[cols] < 1.0)).any(axis=1)
            pick = np.where(fits[:, None], pick, clean[:, cols])
        flat[:, cols] = pick
    if threat.norm is Norm.L2:
        weight = c.weight.ravel()
        units = np.divide(flat.astype(np.float64) - clean, weight,
                          out=np.zeros(flat.shape), where=weight > 0)
        over = np.sqrt((units ** 2).sum(axis=1)) > eps * (1 + _ROUND_SLACK)
        if over.any():
            for group in c.onehot:
                flat[np.ix_(over, list(group))] = clean[np.ix_(over, list(group))]
            target = np.where(over[:, None], base + np.trunc(relaxed - base), target)
            flat[:, ints] = target
    if len(ints):  # huge counts: float32 may round a whole number past the budget
        flat[:, ints] = _not_beyond(flat[:, ints], clean[:, ints], target - base,
                                    _coarse(c, reach)[ints])
    return flat.reshape(out.shape)


# Random starts are drawn in blocks of this many examples, one generator per block, so that an
# example's start depends on (seed, restart, its id) only, never on which examples share a call.
_NOISE_BLOCK = 64


def random_start(x: np.ndarray, threat: ThreatModel, *, seed: int, restart: int = 0,
                 ids: np.ndarray | None = None) -> np.ndarray:
    """A uniform random point of the ε-ball around each input of ``x`` (clipped to bounds).

    L∞: uniform in the cube. L2: uniform in the ball (Gaussian direction, radius
    ``ε·u^(1/d)``). Example ``i`` of ``x`` gets the point numbered ``ids[i]`` (default
    ``0..N-1``) of the stream ``(seed, restart)``, so attacking a subset of a dataset (as the
    robustness curve and restarts do) starts every example exactly where attacking the whole
    set would have. With constraints the ball is measured in scale units over the mutable
    features (``d`` counts those) and immutable features stay exactly as in ``x``.
    """
    ids = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)
    dim = int(np.prod(x.shape[1:]))
    eps = threat.epsilon
    weight = threat.weight
    free = None if weight is None else (weight.ravel() > 0).astype(np.float64)
    delta = np.empty((len(x), dim), np.float32)
    blocks = ids // _NOISE_BLOCK
    for block in np.unique(blocks):
        rng = np.random.default_rng([seed, restart, int(block)])
        if threat.norm is Norm.LINF:
            noise = rng.uniform(-eps, eps, size=(_NOISE_BLOCK, dim))
        else:
            noise = rng.standard_normal(size=(_NOISE_BLOCK, dim))
            used = dim
            if free is not None:
                noise *= free
                used = max(1, int(free.sum()))
            noise /= np.maximum(_TINY, np.linalg.norm(noise, axis=1, keepdims=True))
            noise *= eps * rng.uniform(size=(_NOISE_BLOCK, 1)) ** (1.0 / used)
        rows = blocks == block
        delta[rows] = noise[ids[rows] % _NOISE_BLOCK]
    low, high = threat.limits
    if weight is not None:
        start = np.clip(x + delta.reshape(x.shape) * weight, low, high).astype(np.float32)
        return np.where(threat.constraints.mutable, start, x).astype(np.float32)  # type: ignore[union-attr]
    return np.clip(x + delta.reshape(x.shape), low, high).astype(np.float32)


def batch_seed(seed: int, restart: int, ids: np.ndarray) -> int:
    """One integer seed for a whole batch and restart, for implementations that draw from a
    global generator (CleverHans, ART): fixed by the seed, the restart and the first id."""
    first = int(ids[0]) if len(ids) else 0
    return int(np.random.SeedSequence([seed, restart, first]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------
# compiled functions, cached per model

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Callable[..., Any]]] = \
    weakref.WeakKeyDictionary()

def compiled(model: Any, key: tuple[Any, ...], build: Callable[[], Callable[..., Any]]
             ) -> Callable[..., Any]:
    """Return the compiled function ``key`` for ``model``, building it once.

    Compiled functions take their scalars (epsilon, step size, bounds) as tensors so that a
    new epsilon does not retrace. Their bodies run the model inside
    :class:`~robustlab.inference.GraphSafeNames`: TensorFlow reads layer names only while it
    traces, so a model (or layer) named ``"my model"`` is traced with valid names and the
    compiled calls themselves cost nothing extra.
    """
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]


def score_fn(model: Any, loss: Loss, targeted: bool, jit: bool) -> Callable[..., Any]:
    """Compiled ``(x, y) -> (success (N,) bool, objective (N,) float32, logits)``."""
    import tensorflow as tf

    def build() -> Callable[..., Any]:
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def score(x: Any, y: Any) -> tuple[Any, Any, Any]:
            with GraphSafeNames(model):  # runs while tracing only
                logits = model(x, training=False)
            pred = tf.argmax(logits, axis=-1, output_type=y.dtype)
            success = tf.equal(pred, y) if targeted else tf.not_equal(pred, y)
            return success, per_example_loss(logits, y, loss, targeted), logits
        return score

    return compiled(model, ("score", loss, targeted, jit), build)


def ascent_steps(model: Any, x_adv: Any, x: Any, y: Any, *, steps: int, epsilon: Any,
                 step_size: Any, low: Any, high: Any, norm: Norm, loss: Loss,
                 targeted: bool = False, best: Any = None, found: Any = None,
                 weight: Any = None) -> Any:
    """``steps`` projected steepest-ascent steps from ``x_adv`` (TensorFlow ops, traced into
    the caller's graph): each ascends the attack loss by ``step_size`` along
    :func:`steepest_direction` and projects onto the threat model (:func:`project`).

    Without ``best``/``found`` returns the last iterate (as adversarial training uses it).
    ``low``/``high`` are scalars or per-feature arrays; ``weight`` the per-feature factor of
    the constraints (:func:`steepest_direction`, :func:`project`; None: plain).

    With them (``(N, ...)`` and ``(N,)`` bool), also tracks each example's first iterate
    that fooled the model, read off the logits of the forward pass the gradient needs anyway
    (free), and returns ``(x_adv, best, found)``; whether the returned ``x_adv`` fools the
    model is not yet known. Tracking needs labels ``y`` (not ``Loss.KL``).
    """
    import tensorflow as tf

    track = found is not None
    for _ in range(steps):
        grad, logits = input_gradient(model, x_adv, y, loss, targeted)
        if track:
            pred = tf.argmax(logits, axis=-1, output_type=y.dtype)
            success = tf.equal(pred, y) if targeted else tf.not_equal(pred, y)
            new = tf.reshape(success & ~found, [-1] + [1] * (len(x_adv.shape) - 1))
            best = tf.where(new, x_adv, best)
            found = found | success
        moved = x_adv + step_size * steepest_direction(grad, norm, weight)
        x_adv = project(moved, x, epsilon, norm, low, high, weight)
    return (x_adv, best, found) if track else x_adv


def ascent_fn(model: Any, norm: Norm, loss: Loss, targeted: bool, jit: bool, steps: int,
              weighted: bool = False) -> Callable[..., Any]:
    """:func:`ascent_steps` with first-success tracking, compiled once per model and
    setting, all ``steps`` unrolled in one graph (no host round trip between them); shared
    by FGSM (one step of size ε from ``x``) and PGD (chunks of steps).

    ``(x_adv, best, found, x, y, epsilon, step_size, low, high, weight) ->
    (x_adv', best', found')``; ``weight`` is read only if ``weighted`` (per-feature
    constraints; pass any tensor otherwise, e.g. ``1.0``).
    """
    import tensorflow as tf

    def build() -> Callable[..., Any]:
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def ascend(x_adv: Any, best: Any, found: Any, x: Any, y: Any, epsilon: Any,
                   step_size: Any, low: Any, high: Any, weight: Any) -> tuple[Any, Any, Any]:
            with GraphSafeNames(model):  # runs while tracing only
                return ascent_steps(model, x_adv, x, y, steps=steps, epsilon=epsilon,
                                    step_size=step_size, low=low, high=high, norm=norm,
                                    loss=loss, targeted=targeted, best=best, found=found,
                                    weight=weight if weighted else None)
        return ascend

    return compiled(model, ("ascent", norm, loss, targeted, jit, steps, weighted), build)


def threat_tensors(threat: ThreatModel) -> tuple[Any, Any, Any, bool]:
    """``(low, high, weight, weighted)`` as float32 tensors for :func:`ascent_fn`: scalar
    bounds and weight 1 for a plain threat model, per-feature arrays with constraints."""
    import tensorflow as tf

    low, high = (tf.constant(v, tf.float32) for v in threat.limits)
    weight = threat.weight
    return low, high, tf.constant(1.0 if weight is None else weight, tf.float32), \
        weight is not None
