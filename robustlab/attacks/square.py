"""Square attack: black-box random search with square-shaped updates, model outputs only.

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search", https://arxiv.org/abs/1912.00049 (Algorithm 1 for L∞,
Algorithm 3 for L2). Needs no gradient, so gradient masking cannot hide examples from it.

Each example starts at the paper's initial point (L∞: vertical stripes of ±ε; L2: a grid of
tiles of pseudo-Gaussian bumps, normalised to ε) and then, once per iteration, proposes a
change on one random square window (L∞: ±ε per channel; L2: mass moved from a second window
into the first, the total length staying ε). A proposal is kept if it raises the attack loss
(:func:`~robustlab.attacks._core.per_example_loss`, by default the margin
``max_{j≠y} z_j - z_y``); an example stops as soon as it is fooled. The window side follows
the paper's schedule: a fraction ``p`` of the image, ``p_init`` halved at iterations 10, 50,
200, 500, 1000, 2000, 4000, 6000 and 8000 of 10000, rescaled to ``steps``.

Shapes: images ``(N, H, W, C)`` use ``s × s`` windows over ``H × W`` (every channel).
Anything else (tables ``(N, F)``, ``(N, H, W)``, ...) is treated as a ``1 × D`` image of
its ``D`` flattened features, one channel: windows are ``s`` contiguous features,
``s = round(p · D)``, and the L2 initial tiles are five runs of ``D // 5`` features.

Implementation: the iterations run inside one compiled graph per model and setting
(``tf.while_loop`` over a chunk of ``CHUNK_STEPS`` iterations); between chunks the fooled
examples leave the batch, as in :func:`~robustlab.attacks.pgd.native_pgd`. The random numbers
come from a counter-based hash of ``(key of the example, iteration, slot)``, the key derived
from ``(seed, restart, example id)``: TensorFlow's stateless samplers take one seed per call,
not one per example, and an example's run must not depend on which examples share its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from robustlab._validate import check_float, check_int, parse_enum
from robustlab.attacks._core import (
    _TINY,
    compiled,
    enforce_threat_model,
    per_example_loss,
    score_fn,
    threat_tensors,
)
from robustlab.attacks._runner import BatchAttack, boundary, padded_size, run_attack
from robustlab.attacks.catalogue import square_batch
from robustlab.errors import ValidationError
from robustlab.inference import GraphSafeNames
from robustlab.types import Backend, Constraints, Loss, Norm, ThreatModel

__all__ = ["square", "native_square", "art_square", "square_queries", "SQUARE_BACKENDS",
           "CHUNK_STEPS"]

# Iterations per compiled call. Between calls the fooled examples leave the batch; inside a
# call an example that is fooled stops changing and stops counting queries at once.
CHUNK_STEPS = 25

# L∞: sign vectors drawn per iteration; the first that changes the current point is used (the
# reference code redraws until one does; 8 tries leave a useless query with probability
# 2^-8 in the worst case, a single channel whose one useful sign is the other one).
_SIGN_TRIES = 8

# The schedule of p: p_init is halved each time the iteration, rescaled to 10000 iterations,
# passes one of these.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # odd constant spreading consecutive counters apart
_INIT_COUNTER = 0xFFFFFFFF  # the counter value of the initial point's random numbers


# ---------------------------------------------------------------------------------------------
# randomness: a counter-based hash, one stream per example


def _mix_np(h: np.ndarray) -> np.ndarray:
    """A 32-bit integer finaliser (Wellons' ``lowbias32``) on uint32 arrays."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def _mix_tf(h: Any) -> Any:
    """:func:`_mix_np` in TensorFlow (uint32 arithmetic wraps modulo 2^32)."""
    import tensorflow as tf

    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
    h = h * tf.constant(0x7FEB352D, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(15, tf.uint32)))
    h = h * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))


def example_keys(seed: int, restart: int, ids: np.ndarray) -> np.ndarray:
    """``(N, 2)`` uint32: each example's stream key, a function of ``(seed, restart, id)``."""
    base = np.random.SeedSequence([int(seed), int(restart)]).generate_state(4).astype(np.uint32)
    ids = np.asarray(ids, np.int64)
    lo = (ids & _MASK32).astype(np.uint32)
    hi = ((ids >> 32) & _MASK32).astype(np.uint32)
    with np.errstate(over="ignore"):
        k0 = _mix_np(_mix_np(_mix_np(lo + base[0]) ^ hi) + base[1])
        k1 = _mix_np(_mix_np(_mix_np(lo + base[2]) ^ hi) + base[3])
    return np.stack([k0, k1], axis=1)


def _hash_np(keys: np.ndarray, counter: int, slots: int) -> np.ndarray:
    """``(N, slots)`` uint32 random words of the examples' streams at ``counter``."""
    with np.errstate(over="ignore"):
        c = _mix_np(np.uint32(counter) * np.uint32(_GOLDEN) + np.arange(slots, dtype=np.uint32))
        return _mix_np(_mix_np(c[None, :] ^ keys[:, :1]) + keys[:, 1:])


def _hash_tf(keys: Any, counter: Any, slots: int) -> Any:
    """:func:`_hash_np` in TensorFlow (``counter`` a scalar int32 tensor)."""
    import tensorflow as tf

    c = tf.cast(counter, tf.uint32) * tf.constant(_GOLDEN, tf.uint32) + \
        tf.constant(np.arange(slots, dtype=np.uint32))
    h = _mix_tf(tf.bitwise.bitwise_xor(c[None, :], keys[:, :1]))
    return _mix_tf(h + keys[:, 1:])


def _uniform_tf(words: Any) -> Any:
    """Uniform floats in ``[0, 1)`` from uint32 words (24 bits)."""
    import tensorflow as tf

    return tf.cast(tf.bitwise.right_shift(words, tf.constant(8, tf.uint32)), tf.float32) * \
        (2.0 ** -24)


# ---------------------------------------------------------------------------------------------
# the schedule and the pseudo-Gaussian bumps


def p_schedule(p_init: float, i: int, steps: int) -> float:
    """The fraction of the image a window covers at iteration ``i`` of ``steps``: ``p_init``
    halved at iterations 10, 50, 200, ... 8000 of 10000, rescaled to ``steps``."""
    it = int(i / steps * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVINGS)


def window_sides(p_init: float, steps: int, view: tuple[int, int, int], norm: Norm
                 ) -> np.ndarray:
    """``(steps,)`` int32: the window side at each iteration for a ``(H, W, C)`` view
    (``H == 1``: the flat ``1 × D`` view, where the side is a count of features).

    L∞: ``round(sqrt(p·H·W))`` (flat: ``round(p·D)``), at least 1 and at most
    ``min(H, W) - 1`` (flat: ``D - 1``). L2: at least 3, odd, at most ``min(H, W)``
    (flat: ``D``)."""
    h, w, _ = view
    flat = h == 1
    out = np.empty(steps, np.int32)
    for i in range(steps):
        p = p_schedule(p_init, i, steps)
        area = p * w if flat else math.sqrt(p * h * w)
        side = int(round(area))
        top = w if flat else min(h, w)
        if norm is Norm.LINF:
            side = min(max(side, 1), max(top - 1, 1))
        else:
            side = max(side, 3)
            side += side % 2 == 0
            side = max(1, min(side, top))
        out[i] = side
    return out


def _sq_sums(n: int) -> np.ndarray:
    """``T[j] = sum_{i=1..j} 1/i²`` for ``j = 0..n``: a bump's values are ``T[K] - T[d]``."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1) ** 2)])


def bump(rows: int, cols: int) -> np.ndarray:
    """The paper's pseudo-Gaussian rectangle ``(rows, cols)``, unit L2 norm: the sum of
    ``1/(k+1)²`` over the nested centred rectangles ``k = 0, 1, ...`` that contain a point,
    i.e. ``T[K] - T[d]`` with ``d`` the point's Chebyshev distance from the centre
    ``(rows // 2, cols // 2)`` and ``K = max(rows // 2, cols // 2) + 1``."""
    if rows < 1 or cols < 1:
        return np.zeros((max(rows, 0), max(cols, 0)))
    k = max(rows // 2, cols // 2) + 1
    t = _sq_sums(k)
    d = np.maximum(np.abs(np.arange(rows)[:, None] - rows // 2),
                   np.abs(np.arange(cols)[None, :] - cols // 2))
    val = t[k] - t[d]
    return val / np.sqrt(np.sum(val ** 2))


def meta_bump(rows: int, cols: int) -> np.ndarray:
    """The paper's update shape on a ``(rows, cols)`` window, unit L2 norm: a bump on the
    first ``rows // 2`` rows and a negative bump on the others (each of unit norm first)."""
    half = rows // 2
    out = np.concatenate([bump(half, cols), -bump(rows - half, cols)], axis=0)
    return out / np.sqrt(np.sum(out ** 2))


# ---------------------------------------------------------------------------------------------
# the proposals (TensorFlow, traced into the compiled functions)


def _windows(view: tuple[int, int, int], h0: Any, w0: Any, side: Any) -> Any:
    """``(B, H, W, 1)`` bool: each example's window (``side`` rows from ``h0`` and
    ``side`` columns from ``w0``; the flat view has one row)."""
    import tensorflow as tf

    h, w, _ = view
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    hs = 1 if h == 1 else side
    inside = (rows >= h0[:, None, None]) & (rows < h0[:, None, None] + hs) & \
        (cols >= w0[:, None, None]) & (cols < w0[:, None, None] + side)
    return inside[..., None]


def _positions(u_h: Any, u_w: Any, view: tuple[int, int, int], side: Any) -> tuple[Any, Any]:
    """Window corners uniform over every place the window fits (``0..H-side``)."""
    import tensorflow as tf

    h, w, _ = view
    hs = 1 if h == 1 else side
    n_h, n_w = h - hs + 1, w - side + 1
    h0 = tf.minimum(tf.cast(u_h * tf.cast(n_h, tf.float32), tf.int32), n_h - 1)
    w0 = tf.minimum(tf.cast(u_w * tf.cast(n_w, tf.float32), tf.int32), n_w - 1)
    return h0, w0


def _propose_linf(x: Any, xb: Any, keys: Any, i: Any, side: Any, eps: Any, low: Any,
                  high: Any, weight: Any, view: tuple[int, int, int]) -> Any:
    """One L∞ proposal per example (Algorithm 1): on a random ``side``-window, every value
    set to ``x ± ε·weight`` with one random sign per channel, clipped to the bounds. Of
    :data:`_SIGN_TRIES` sign vectors the first that changes the current point ``xb`` is
    used (a proposal equal to ``xb`` would waste a query)."""
    import tensorflow as tf

    c = view[2]
    words = _hash_tf(keys, i, 2 + _SIGN_TRIES * c)
    u = _uniform_tf(words[:, :2])
    h0, w0 = _positions(u[:, 0], u[:, 1], view, side)
    win = _windows(view, h0, w0, side)
    step = eps * weight
    up = tf.clip_by_value(x + step, low, high)
    down = tf.clip_by_value(x - step, low, high)
    # per channel: does the + (or -) value change anything inside the window?
    changes_up = tf.reduce_any(win & (tf.abs(up - xb) > 1e-7), axis=[1, 2])  # (B, C)
    changes_down = tf.reduce_any(win & (tf.abs(down - xb) > 1e-7), axis=[1, 2])
    bits = tf.reshape(tf.bitwise.bitwise_and(words[:, 2:], tf.constant(1, tf.uint32)) > 0,
                      [-1, _SIGN_TRIES, c])  # True: +
    useful = tf.reduce_any(tf.where(bits, changes_up[:, None, :], changes_down[:, None, :]),
                           axis=-1)  # (B, tries)
    first = tf.argmax(tf.cast(useful, tf.int32), axis=1, output_type=tf.int32)
    sign = tf.gather(bits, first, axis=1, batch_dims=1)  # (B, C)
    new = tf.where(sign[:, None, None, :], up, down)
    return tf.where(win, new, xb)


def _pattern(view: tuple[int, int, int], h0: Any, w0: Any, side: Any, flip: Any,
             table: Any) -> Any:
    """``(B, H, W, 1)``: :func:`meta_bump` of each example's ``side``-window placed at
    ``(h0, w0)``, transposed where ``flip`` (images), 0 outside. The flat view's window is
    ``1 × side``, split along its length."""
    import tensorflow as tf

    h, w, _ = view
    a = tf.range(h)[None, :, None] - h0[:, None, None]  # local row, (B, H, 1)
    b = tf.range(w)[None, None, :] - w0[:, None, None]  # local column, (B, 1, W)
    a, b = a + tf.zeros_like(b), b + tf.zeros_like(a)  # (B, H, W)
    if h == 1:  # split along the window's length: rows of a (side, 1) rectangle
        la, lb, q = b, a, 1
    else:
        f = flip[:, None, None]
        la, lb, q = tf.where(f, b, a), tf.where(f, a, b), side
    inside = (la >= 0) & (la < side) & (lb >= 0) & (lb < q)
    half = side // 2
    top = la < half
    rows = tf.where(top, half, side - half)
    la = tf.where(top, la, la - half)
    d = tf.maximum(tf.abs(la - rows // 2), tf.abs(lb - q // 2))
    k = tf.maximum(rows // 2, q // 2) + 1
    size = table.shape[0] - 1
    val = tf.gather(table, tf.clip_by_value(k, 0, size)) - \
        tf.gather(table, tf.clip_by_value(d, 0, size))
    val = tf.where(inside, val, 0.0)
    norm_top = tf.sqrt(tf.reduce_sum(tf.where(top, val, 0.0) ** 2, axis=[1, 2], keepdims=True))
    norm_bot = tf.sqrt(tf.reduce_sum(tf.where(top, 0.0, val) ** 2, axis=[1, 2], keepdims=True))
    pat = tf.where(top, tf.math.divide_no_nan(val, norm_top),
                   -tf.math.divide_no_nan(val, norm_bot))
    total = tf.sqrt(tf.reduce_sum(pat ** 2, axis=[1, 2], keepdims=True))
    return tf.math.divide_no_nan(pat, total)[..., None]


def _propose_l2(x: Any, xb: Any, keys: Any, i: Any, side: Any, eps: Any, low: Any,
                high: Any, weight: Any, view: tuple[int, int, int]) -> Any:
    """One L2 proposal per example (Algorithm 3), in scaled units ``u = δ / weight``: per
    channel, the mass of the current change on two random windows (plus the unused budget,
    shared over the channels) goes to the first window as its old content (unit norm) plus
    a random-sign :func:`meta_bump`; the second window is emptied; the whole change is then
    rescaled to length ε and clipped to the bounds."""
    import tensorflow as tf

    h, w, c = view
    words = _hash_tf(keys, i, 5 + c)
    u = _uniform_tf(words[:, :4])
    h1, w1 = _positions(u[:, 0], u[:, 1], view, side)
    h2, w2 = _positions(u[:, 2], u[:, 3], view, side)
    flip = tf.bitwise.bitwise_and(words[:, 4], tf.constant(1, tf.uint32)) > 0
    sign = tf.where(tf.bitwise.bitwise_and(words[:, 5:], tf.constant(1, tf.uint32)) > 0,
                    1.0, -1.0)[:, None, None, :]  # (B, 1, 1, C)
    win1 = _windows(view, h1, w1, side)
    win2 = _windows(view, h2, w2, side)
    free = tf.cast(weight > 0, tf.float32) * tf.ones_like(x[:1])  # mutable features
    delta = tf.math.divide_no_nan(xb - x, weight * tf.ones_like(x))
    length2 = tf.reduce_sum(delta ** 2, axis=[1, 2, 3], keepdims=True)
    in1 = tf.where(win1, delta, 0.0)
    norm1 = tf.sqrt(tf.reduce_sum(in1 ** 2, axis=[1, 2], keepdims=True))  # (B, 1, 1, C)
    union2 = tf.reduce_sum(tf.where(win1 | win2, delta, 0.0) ** 2, axis=[1, 2], keepdims=True)
    table = tf.constant(_sq_sums(max(h, w) + 1), tf.float32)
    new = (_pattern(view, h1, w1, side, flip, table) * sign + in1 / (1e-10 + norm1)) * free
    new = tf.where(win1, new, 0.0)
    # the budget the current change leaves unused (rounding noise below 1e-5 of ε² is none:
    # its square root would amplify float round-off into visible changes)
    spare = eps ** 2 - length2
    spare = tf.where(spare > 1e-5 * eps ** 2, spare, 0.0)
    budget = tf.sqrt(spare / c + union2)
    new = new / tf.sqrt(tf.maximum(_TINY, tf.reduce_sum(new ** 2, axis=[1, 2],
                                                          keepdims=True))) * budget
    delta = tf.where(win1, new, tf.where(win2, 0.0, delta))
    length = tf.sqrt(tf.maximum(_TINY, tf.reduce_sum(delta ** 2, axis=[1, 2, 3],
                                                     keepdims=True)))
    return tf.clip_by_value(x + delta * (eps / length) * weight, low, high)


_PROPOSALS = {Norm.LINF: _propose_linf, Norm.L2: _propose_l2}


# ---------------------------------------------------------------------------------------------
# compiled functions


def _chunk_fn(model: Any, norm: Norm, loss: Loss, targeted: bool, jit: bool,
              view: tuple[int, int, int], shape: tuple[int, ...]) -> Callable[..., Any]:
    """Compiled ``(xb, obj, done, queries, x, y, keys, sides, first, eps, low, high,
    weight) -> (xb, obj, done, queries)``: ``len(sides)`` iterations (numbered from
    ``first``) in a ``tf.while_loop``, which ends early once every example is done.
    Arrays are in the ``(B, H, W, C)`` view; the model sees ``shape``."""
    import tensorflow as tf

    propose = _PROPOSALS[norm]

    def build() -> Callable[..., Any]:
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def chunk(xb: Any, obj: Any, done: Any, queries: Any, x: Any, y: Any, keys: Any,
                  sides: Any, first: Any, eps: Any, low: Any, high: Any, weight: Any
                  ) -> tuple[Any, Any, Any, Any]:
            def body(t: Any, xb: Any, obj: Any, done: Any, queries: Any
                     ) -> tuple[Any, Any, Any, Any, Any]:
                cand = propose(x, xb, keys, first + t, sides[t], eps, low, high, weight, view)
                with GraphSafeNames(model):  # runs while tracing only
                    logits = model(tf.reshape(cand, [-1, *shape]), training=False)
                pred = tf.argmax(logits, axis=-1, output_type=y.dtype)
                success = tf.equal(pred, y) if targeted else tf.not_equal(pred, y)
                value = per_example_loss(logits, y, loss, targeted)
                accept = ~done & (success | (value > obj))
                xb = tf.where(accept[:, None, None, None], cand, xb)
                obj = tf.where(accept, value, obj)
                queries = queries + tf.cast(~done, tf.int32)
                return t + 1, xb, obj, done | (accept & success), queries

            def cond(t: Any, xb: Any, obj: Any, done: Any, queries: Any) -> Any:
                return (t < tf.shape(sides)[0]) & ~tf.reduce_all(done)

            out = tf.while_loop(cond, body, (tf.constant(0), xb, obj, done, queries))
            return out[1], out[2], out[3], out[4]
        return chunk

    return compiled(model, ("square", norm, loss, targeted, jit, view, shape), build)


def _propose_fn(model: Any, norm: Norm, jit: bool, view: tuple[int, int, int]
                ) -> Callable[..., Any]:
    """One compiled proposal ``(x, xb, keys, i, side, eps, low, high, weight) -> cand``
    (for the host loop of the discrete case)."""
    import tensorflow as tf

    propose = _PROPOSALS[norm]

    def build() -> Callable[..., Any]:
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def one(x: Any, xb: Any, keys: Any, i: Any, side: Any, eps: Any, low: Any, high: Any,
                weight: Any) -> Any:
            return propose(x, xb, keys, i, side, eps, low, high, weight, view)
        return one

    return compiled(model, ("square-propose", norm, jit, view), build)


# ---------------------------------------------------------------------------------------------
# the initial point (NumPy)


def view_of(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The ``(H, W, C)`` view of one example's ``shape``: images as they are, anything else
    as ``(1, D, 1)``."""
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    return 1, int(np.prod(shape)), 1


def _init_linf(keys: np.ndarray, view: tuple[int, int, int]) -> np.ndarray:
    """``(N, H, W, C)`` signs ±1: one per (example, column, channel), the same down each
    column (vertical stripes; flat view: one per feature)."""
    _, w, c = view
    words = _hash_np(keys, _INIT_COUNTER, w * c)
    signs = np.where(words & 1, 1.0, -1.0).astype(np.float32)
    return signs.reshape(len(keys), 1, w, c)


def _init_l2(keys: np.ndarray, view: tuple[int, int, int]) -> np.ndarray:
    """``(N, H, W, C)`` directions (not normalised): tiles of side ``H // 5`` (flat view:
    runs of ``D // 5`` features), each a :func:`meta_bump` transposed at random, times a
    random sign per (tile, channel); tiles are laid from ``(H - 5·side) // 2`` and cut at
    the border."""
    h, w, c = view
    n = len(keys)
    flat = h == 1
    side = max((w if flat else h) // 5, 1)
    out = np.zeros((n, h, w, c), np.float32)
    starts_h = [0] if flat else [max((h - 5 * side) // 2, 0) + k * side
                                 for k in range(h // side)]
    starts_w = [max((w - 5 * side) // 2, 0) + k * side for k in range(w // side)]
    tiles = [(r, q) for r in starts_h for q in starts_w if r < h and q < w]
    words = _hash_np(keys, _INIT_COUNTER, len(tiles) * (c + 1)).reshape(n, len(tiles), c + 1)
    shape = meta_bump(side, 1).T if flat else meta_bump(side, side)
    for t, (r, q) in enumerate(tiles):
        sign = np.where(words[:, t, :c] & 1, 1.0, -1.0)[:, None, None, :]
        pat = np.broadcast_to(shape, (n, *shape.shape))
        if not flat:
            pat = np.where((words[:, t, c] & 1).astype(bool)[:, None, None],
                           np.transpose(pat, (0, 2, 1)), pat)
        hs, ws = min(shape.shape[0], h - r), min(shape.shape[1], w - q)
        out[:, r:r + hs, q:q + ws, :] += pat[:, :hs, :ws, None] * sign
    return out


def _start(x: np.ndarray, keys: np.ndarray, threat: ThreatModel, view: tuple[int, int, int]
           ) -> np.ndarray:
    """The paper's initial point for ``x`` (view shape), inside the ball and the bounds."""
    low, high = (np.asarray(v, np.float32).reshape((1, *view)) if np.ndim(v) else v
                 for v in threat.limits)
    weight = np.float32(1.0) if threat.weight is None else threat.weight.reshape((1, *view))
    eps = np.float32(threat.epsilon)
    if threat.norm is Norm.LINF:
        return np.clip(x + _init_linf(keys, view) * eps * weight, low, high).astype(np.float32)
    units = _init_l2(keys, view) * (np.asarray(weight) > 0)
    length = np.sqrt(np.maximum(_TINY, np.sum(units.reshape(len(x), -1).astype(np.float64) ** 2,
                                              axis=1))).reshape(-1, 1, 1, 1)
    return np.clip(x + (units * (eps / length)).astype(np.float32) * weight,
                   low, high).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the batch implementation


def native_square(model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
                  targeted: bool, loss: Loss, seed: int, restart: int, ids: np.ndarray,
                  random_start: bool, jit: bool, steps: int, p_init: float = 0.8,
                  stats: dict[str, Any] | None = None, **_: Any) -> np.ndarray:
    """One batch, one restart of the native Square attack (see :func:`square`).

    ``x`` ``(N, ...)`` float32 inside the bounds, ``y`` ``(N,)`` int64 labels (targets if
    ``targeted``), ``ids`` ``(N,)`` the examples' numbers: an example's random numbers depend
    on ``(seed, restart, id)`` only. ``steps`` >= 1 iterations after the initial point;
    ``p_init`` in ``(0, 1]`` the fraction of the image the first windows cover (paper:
    0.05 for L∞ / 0.1 for L2 on ImageNet; 0.3-0.8 on MNIST and CIFAR; ART's default 0.8).
    ``random_start``: start at the paper's initial point (stripes / bumps), else at ``x``.

    Queries: examples the model already gets wrong (untargeted) or right (targeted) are
    returned unchanged after one clean query; the others cost one query for the initial
    point and one per iteration until they are fooled, at most ``steps + 1``, the clean
    query not counted (the paper's convention, which attacks correctly classified points
    only). If ``stats`` is a dict, ``(ids, queries)`` of this call is appended to
    ``stats["square_queries"]``; :func:`square_queries` sums them per example (over
    batches and restarts).

    With integer or one-hot constraints every candidate is mapped to the feasible set
    (:func:`~robustlab.attacks._core.enforce_threat_model`) before it is queried, one
    iteration per compiled call (host loop). Returns ``(N, ...)`` float32 inside the ball
    and the bounds.
    """

    steps = check_int("steps", steps, low=1)
    p_init = check_float("p_init", p_init, low=0.0, low_open=True, high=1.0)
    n = len(x)
    shape = tuple(int(d) for d in x.shape[1:])
    view = view_of(shape)
    keys = example_keys(seed, restart, ids)
    score = score_fn(model, loss, targeted, jit)
    hit = np.asarray(score(x, y)[0])
    out = x.copy()
    queries = np.zeros(n, np.int64)
    rows = np.flatnonzero(~hit)
    discrete = threat.constraints is not None and threat.constraints.discrete
    if len(rows) and threat.epsilon > 0:
        xv = x[rows].reshape((len(rows), *view))
        if random_start:
            start = _start(xv, keys[rows], threat, view).reshape((len(rows), *shape))
            if discrete:
                start = enforce_threat_model(start, x[rows], threat)
            found, obj = (np.asarray(t) for t in score(start, y[rows])[:2])
            queries[rows] = 1
        else:
            start, found = x[rows], np.zeros(len(rows), bool)
            obj = np.asarray(score(start, y[rows])[1])
        out[rows] = start
        sides = window_sides(p_init, steps, view, threat.norm)
        go = ~found
        run = _host_loop if discrete else _graph_loop
        best, used = run(model, x[rows[go]], y[rows[go]], start[go], obj[go],
                         keys[rows[go]], sides, threat=threat, targeted=targeted, loss=loss,
                         jit=jit, view=view)
        out[rows[go]] = best
        queries[rows[go]] += used
    if stats is not None:
        stats.setdefault("square_queries", []).append((np.asarray(ids).copy(), queries))
    return out


def _tensors(threat: ThreatModel, view: tuple[int, int, int]) -> tuple[Any, Any, Any, Any]:
    """``(eps, low, high, weight)`` as float32 tensors shaped for the ``(B, H, W, C)``
    view (scalars for a plain threat model)."""
    import tensorflow as tf

    low, high, weight, weighted = threat_tensors(threat)
    if weighted:
        low, high, weight = (tf.reshape(t, (1, *view)) for t in (low, high, weight))
    return tf.constant(threat.epsilon, tf.float32), low, high, weight


def _graph_loop(model: Any, x: np.ndarray, y: np.ndarray, start: np.ndarray, obj: np.ndarray,
                keys: np.ndarray, sides: np.ndarray, *, threat: ThreatModel, targeted: bool,
                loss: Loss, jit: bool, view: tuple[int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The iterations in compiled chunks; fooled examples leave the batch between chunks
    (under XLA the batch is padded to one of few sizes,
    :func:`~robustlab.attacks._runner.padded_size`). Returns each example's final point
    and its queries (iterations while not fooled)."""
    import tensorflow as tf

    n = len(x)
    shape = x.shape[1:]
    out = start.copy()
    used = np.zeros(n, np.int64)
    if not n:
        return out, used
    chunk = _chunk_fn(model, threat.norm, loss, targeted, jit, view, tuple(shape))
    eps, low, high, weight = _tensors(threat, view)
    active = np.arange(n)
    state = (tf.constant(start.reshape((n, *view))), tf.constant(obj, tf.float32),
             tf.zeros(n, tf.bool), tf.zeros(n, tf.int32))
    fixed = (tf.constant(x.reshape((n, *view))), tf.constant(y), tf.constant(keys))
    done = 0
    while done < len(sides):
        k = min(CHUNK_STEPS, len(sides) - done)
        state = chunk(*state, *fixed, tf.constant(sides[done:done + k]), tf.constant(done),
                      eps, low, high, weight)
        done += k
        m = len(active)
        hit = state[2].numpy()[:m]
        if done >= len(sides) or not hit.any():
            continue
        out[active[hit]] = tf.boolean_mask(state[0][:m], hit).numpy().reshape(-1, *shape)
        used[active[hit]] = state[3].numpy()[:m][hit]
        keep = np.flatnonzero(~hit)
        if not len(keep):
            return out, used
        active = active[keep]
        pick = np.concatenate([keep, np.full(padded_size(len(keep), n) - len(keep), keep[0])]) \
            if jit else keep
        state = tuple(tf.gather(t, pick) for t in state)
        fixed = tuple(tf.gather(t, pick) for t in fixed)
    m = len(active)
    out[active] = state[0][:m].numpy().reshape(-1, *shape)
    used[active] = state[3].numpy()[:m]
    return out, used


def _host_loop(model: Any, x: np.ndarray, y: np.ndarray, start: np.ndarray, obj: np.ndarray,
               keys: np.ndarray, sides: np.ndarray, *, threat: ThreatModel, targeted: bool,
               loss: Loss, jit: bool, view: tuple[int, int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """The discrete case: each iteration's proposals (compiled) are mapped to the feasible
    set on the host and scored there, so acceptance and success are judged on the points
    that are returned."""
    import tensorflow as tf

    n = len(x)
    shape = x.shape[1:]
    out = start.copy()
    obj = obj.copy()
    used = np.zeros(n, np.int64)
    propose = _propose_fn(model, threat.norm, jit, view)
    score = score_fn(model, loss, targeted, jit)
    eps, low, high, weight = _tensors(threat, view)
    active = np.arange(n)
    for i, side in enumerate(sides):
        if not len(active):
            break
        cand = propose(tf.constant(x[active].reshape((-1, *view))),
                       tf.constant(out[active].reshape((-1, *view))),
                       tf.constant(keys[active]), tf.constant(i), tf.constant(side),
                       eps, low, high, weight)
        cand = enforce_threat_model(cand.numpy().reshape((-1, *shape)), x[active], threat)
        success, value, _ = (np.asarray(t) for t in score(cand, y[active]))
        accept = success | (value > obj[active])
        out[active[accept]] = cand[accept]
        obj[active] = np.where(accept, value, obj[active])
        used[active] += 1
        active = active[~(accept & success)]
    return out, used


def square_queries(stats: dict[str, Any], ids: Any) -> np.ndarray:
    """Queries per example, ``(len(ids),)`` int64, from the ``stats`` dict that
    :func:`native_square` (or :func:`square`) filled: the sum over batches and restarts of
    the initial-point query and the iterations each example ran (0 for an example never
    attacked)."""
    ids = np.asarray(ids, np.int64)
    total: dict[int, int] = {}
    for got, q in stats.get("square_queries", []):
        for i, v in zip(got.tolist(), q.tolist(), strict=True):
            total[i] = total.get(i, 0) + int(v)
    return np.array([total.get(int(i), 0) for i in ids], np.int64)


def art_square(model: Any, x: np.ndarray, y: np.ndarray, *, steps: int, **kwargs: Any
               ) -> np.ndarray:
    """ART's Square attack as a batch implementation (``steps``: ART's ``max_iter``; ART's
    own margin loss and ``p_init`` 0.8; no query count)."""
    return square_batch(steps)(model, x, y, **kwargs)


SQUARE_BACKENDS: dict[Backend, BatchAttack] = {
    Backend.NATIVE: native_square,
    Backend.ART: art_square,
}


def square(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
           steps: int = 1000, p_init: float = 0.8, restarts: int = 1, targeted: bool = False,
           loss: Any = "margin", bounds: Any = None, seed: int = 0, backend: Any = "native",
           batch_size: int | None = None, jit_compile: bool | None = None, ids: Any = None,
           constraints: Constraints | None = None, stats: dict[str, Any] | None = None
           ) -> np.ndarray:
    """Square attack (L∞ or L2): black-box random search with square-shaped updates.

    Andriushchenko, Croce, Flammarion & Hein 2020, https://arxiv.org/abs/1912.00049. Only
    the model's outputs are read, so gradient masking cannot hide examples from it.

    Args:
        model: Keras model mapping ``(N, ...)`` inputs to ``(N, K)`` logits.
        x: clean inputs ``(N, ...)`` (images ``(N, H, W, C)``; anything else is searched as
            ``1 × D`` rows of its flattened features), inside ``bounds``.
        y: labels ``(N,)`` (None = the model's predictions) or targets if ``targeted``.
        epsilon: budget in input units (e.g. ``0.1`` or ``"8/255"``), >= 0; 0 returns ``x``.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations after the initial point, >= 1: at most ``steps + 1`` queries per
            example and restart (ART's ``max_iter``); an example stops once fooled.
        p_init: native: fraction of the image the first windows cover, in ``(0, 1]``.
        restarts: independent runs from new random initial points, the strongest kept.
        targeted: move towards ``y`` instead of away from it (native only).
        loss: native: ``"margin"`` (the paper's), ``"ce"`` or ``"dlr"``; ART uses its own.
        bounds, seed, batch_size, jit_compile, ids, constraints: as for
            :func:`~robustlab.attacks.pgd`.
        backend: ``"native"`` or ``"art"``.
        stats: native: a dict that receives the queries (read them with
            :func:`square_queries`).

    Returns:
        Adversarial inputs, same shape and dtype as ``x``, inside the ε-ball and bounds.

    Example:
        >>> stats = {}
        >>> x_adv = square(model, data.x_test, data.y_test, epsilon=0.1, steps=300, stats=stats)
        >>> square_queries(stats, range(len(x_adv))).max() <= 301
        True
    """
    steps = check_int("steps", steps, low=1)
    p_init = check_float("p_init", p_init, low=0.0, low_open=True, high=1.0)
    chosen = parse_enum("backend", backend, Backend)
    if chosen not in SQUARE_BACKENDS:
        raise ValidationError(f"expected backend to be one of "
                              f"{[b.value for b in SQUARE_BACKENDS]} for square, got "
                              f"{chosen.value!r}")
    if chosen is Backend.ART and (targeted or parse_enum("loss", loss, Loss) is not Loss.MARGIN):
        raise ValidationError("expected targeted=False and loss='margin' with backend='art' "
                              "(ART's Square runs untargeted on its own margin loss)")
    given = boundary(model, x, y, epsilon=epsilon, norm=norm, bounds=bounds,
                     targeted=targeted, loss=loss, restarts=restarts, random_start=True,
                     seed=seed, batch_size=batch_size,
                     jit_compile=False if chosen is Backend.ART else jit_compile, ids=ids,
                     constraints=constraints)
    params: dict[str, Any] = {"steps": steps}
    if chosen is Backend.NATIVE:
        params.update(p_init=p_init, stats=stats)
    return run_attack(SQUARE_BACKENDS[chosen], model, given, targeted=targeted,
                      random_start=True, **params)
