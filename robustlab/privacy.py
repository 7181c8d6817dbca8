"""Differentially private training (DP-SGD): per-example clipping, Gaussian noise, Poisson
sampling and the privacy accountant.

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy",
https://arxiv.org/abs/1607.00133) makes each training step a Gaussian mechanism: every
example's gradient is clipped to L2 norm ``C`` (``l2_clip``), the clipped gradients are summed,
noise ``N(0, σ²C²)`` is added to the sum (``σ`` = ``noise_multiplier``), and the result is
divided by the *expected* batch size. The batches are Poisson samples (each training example
joins each step independently with probability ``q``), which is what the accountants below
assume: no fixed-size shuffled batches, no silent mismatch between what runs and what is
accounted.

The accountant is Google's ``dp-accounting`` package: Rényi DP (Mironov 2017,
https://arxiv.org/abs/1702.07476; Mironov, Talwar & Zhang 2019 for the subsampled Gaussian)
or privacy-loss distributions (PLD, Koskela et al. 2020; tighter, slower). ``ε`` is reported
for the run's ``δ`` after every epoch.

Per-example gradients (the cost of DP-SGD) come from one of two engines:

- ``ghost``: one forward and one backward pass of the whole batch; the per-example gradients
  of ``Dense`` and ``Conv2D`` layers are never materialised for the norms when that is cheaper:
  ``‖A_iᵀ G_i‖²_F = ⟨A_i A_iᵀ, G_i G_iᵀ⟩`` from the layer's inputs ``A_i`` (conv: their
  patches) and output gradients ``G_i`` ("ghost clipping": Goodfellow 2015,
  https://arxiv.org/abs/1510.01799; Li et al. 2022, https://arxiv.org/abs/2110.05679;
  Bu et al. 2023 "book-keeping", https://arxiv.org/abs/2210.00038). The clipped sum is then
  one weighted matrix product per layer.
- ``vectorized``: ``tf.vectorized_map`` over the examples (any layer TensorFlow can
  vectorise), the reference engine.

``auto`` uses ``ghost`` when every trainable weight belongs to a ``Dense`` or ``Conv2D`` layer
of a functional or sequential Keras model, else ``vectorized``. Layers that mix examples
(``BatchNormalization`` in training) break per-example sensitivity and are refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from robustlab._validate import check_float, check_int, check_seed, parse_enum
from robustlab.errors import InputTypeError, RobustlabWarning, ValidationError

__all__ = ["Accountant", "Clipping", "DPConfig", "DPPlan", "epsilon_spent",
           "noise_multiplier_for", "default_delta", "plan_dp", "private_gradients",
           "poisson_batches", "ghost_supported"]

log = logging.getLogger(__name__)


class Accountant(str, Enum):
    """Privacy accountant of ``dp-accounting``: Rényi DP or privacy-loss distributions."""

    RDP = "rdp"
    PLD = "pld"


class Clipping(str, Enum):
    """Per-example gradient engine (see the module doc)."""

    AUTO = "auto"
    GHOST = "ghost"
    VECTORIZED = "vectorized"


@dataclass(frozen=True)
class DPConfig:
    """What the user asks of DP-SGD.

    Attributes:
        l2_clip: per-example gradient L2 norm bound ``C`` (> 0; ``inf`` = no clipping, only
            with ``noise_multiplier=0``).
        noise_multiplier: ``σ``, noise std as a multiple of ``C`` (>= 0; 0 = no privacy). None
            with ``target_epsilon``: calibrated before training.
        target_epsilon: the ε the run may spend at ``delta``. Alone: ``σ`` is calibrated so
            that the whole run (all its epochs) spends exactly this. With
            ``noise_multiplier``: training stops before the epoch that would exceed it.
        delta: δ of the (ε, δ) guarantee; None picks :func:`default_delta` (< 1/n). A δ >=
            1/n is allowed with a warning (it permits leaking one example outright).
        accountant: ``rdp`` or ``pld``.
        clipping: ``auto``, ``ghost`` or ``vectorized`` (see the module doc).

    Raises:
        ValidationError: a value out of range or a missing ``noise_multiplier`` /
            ``target_epsilon`` (the message names the parameter).
    """

    l2_clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: Accountant = Accountant.RDP
    clipping: Clipping = Clipping.AUTO

    def __post_init__(self) -> None:
        unbounded = isinstance(self.l2_clip, int | float) and math.isinf(self.l2_clip) \
            or str(self.l2_clip).strip().lower() in ("inf", "infinity")
        clip = math.inf if unbounded else check_float("l2_clip", self.l2_clip, low=0.0,
                                                      low_open=True)
        object.__setattr__(self, "l2_clip", clip)
        sigma = None if self.noise_multiplier is None else check_float(
            "noise_multiplier", self.noise_multiplier, low=0.0)
        object.__setattr__(self, "noise_multiplier", sigma)
        target = None if self.target_epsilon is None else check_float(
            "target_epsilon", self.target_epsilon, low=0.0, low_open=True)
        object.__setattr__(self, "target_epsilon", target)
        if sigma is None and target is None:
            raise ValidationError("expected noise_multiplier or target_epsilon (or both) for "
                                  "DP-SGD, got neither")
        if math.isinf(clip) and (sigma is None or sigma > 0):
            raise ValidationError("expected a finite l2_clip with noise (the noise std is "
                                  "noise_multiplier * l2_clip), got l2_clip=inf; use "
                                  "l2_clip=inf only with noise_multiplier=0")
        if self.delta is not None:
            object.__setattr__(self, "delta", check_float("delta", self.delta, low=0.0,
                                                          low_open=True, high=1.0))
        object.__setattr__(self, "accountant",
                           parse_enum("accountant", self.accountant, Accountant))
        object.__setattr__(self, "clipping", parse_enum("clipping", self.clipping, Clipping))


def default_delta(n: int) -> float:
    """A δ well below ``1/n``: the largest power of ten at most ``0.1/n`` (8,000 → 1e-5,
    60,000 → 1e-6, 1,437 → 1e-5, 1,000 → 1e-4), so that δ never comes near the ``1/n`` at
    which publishing one record outright would meet the guarantee."""
    n = check_int("n", n, low=1)
    return 10.0 ** math.floor(math.log10(0.1 / n) + 1e-12)


def _event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    import dp_accounting as dpa

    step = dpa.PoissonSampledDpEvent(sample_rate, dpa.GaussianDpEvent(noise_multiplier))
    return dpa.SelfComposedDpEvent(step, steps)


def _accountant(kind: Accountant) -> Any:
    import dp_accounting as dpa

    if kind is Accountant.PLD:
        return dpa.pld.PLDAccountant()
    return dpa.rdp.RdpAccountant()


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
                  accountant: Any = "rdp") -> float:
    """ε of ``steps`` DP-SGD steps with Poisson sampling rate ``q`` and noise ``σ``, at δ.

    Args:
        noise_multiplier: σ (>= 0; 0 gives ``inf``).
        sample_rate: q in (0, 1], the chance that an example joins a step.
        steps: number of steps (>= 0; 0 gives 0).
        delta: δ in (0, 1).
        accountant: ``rdp`` or ``pld``.

    Example (Abadi et al.'s MNIST setting, ε ≈ 2.6 under RDP):
        >>> epsilon_spent(1.1, 256 / 60_000, 60 * 60_000 // 256, 1e-5)
    """
    sigma = check_float("noise_multiplier", noise_multiplier, low=0.0)
    q = check_float("sample_rate", sample_rate, low=0.0, low_open=True, high=1.0)
    steps = check_int("steps", steps, low=0)
    delta = check_float("delta", delta, low=0.0, low_open=True, high=1.0)
    kind = parse_enum("accountant", accountant, Accountant)
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    acc = _accountant(kind)
    acc.compose(_event(sigma, q, steps))
    return float(acc.get_epsilon(delta))


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                         *, accountant: Any = "rdp") -> float:
    """The smallest σ whose run of ``steps`` steps at rate ``q`` spends at most
    ``target_epsilon`` at ``delta`` (``dp_accounting.calibrate_dp_mechanism``, Brent's
    method, tolerance 1e-4 in σ, rounded up).

    Raises:
        ValidationError: a value out of range.
    """
    import dp_accounting as dpa

    target = check_float("target_epsilon", target_epsilon, low=0.0, low_open=True)
    delta = check_float("delta", delta, low=0.0, low_open=True, high=1.0)
    q = check_float("sample_rate", sample_rate, low=0.0, low_open=True, high=1.0)
    steps = check_int("steps", steps, low=1)
    kind = parse_enum("accountant", accountant, Accountant)
    bracket: Any = dpa.LowerEndpointAndGuess(1e-3, 1.0)
    if kind is Accountant.PLD:
        # PLD discretises the privacy loss: a tiny σ in the search makes it enormous. RDP's
        # σ is an upper bound (PLD is tighter), and half of it a safe lower end.
        upper = noise_multiplier_for(target, delta, q, steps, accountant="rdp")
        bracket = dpa.ExplicitBracketInterval(upper / 2, upper)
        if epsilon_spent(upper / 2, q, steps, delta, accountant=kind) <= target:
            return upper / 2
    sigma = dpa.calibrate_dp_mechanism(
        lambda: _accountant(kind), lambda s: _event(s, q, steps), target, delta,
        bracket_interval=bracket, tol=1e-4)
    sigma = float(sigma)
    # Brent's answer lies within tol of the optimum: step up until the budget holds
    while epsilon_spent(sigma, q, steps, delta, accountant=kind) > target:
        sigma += 1e-4
    return sigma


@dataclass(frozen=True)
class DPPlan:
    """What a DP-SGD run does and what it spends: the resolved settings (``σ`` calibrated if
    asked), the Poisson rate ``q = batch_size / n``, the steps per epoch
    ``ceil(n / batch_size)`` (an epoch is ``1/q`` steps in expectation, as in Abadi et al.),
    and the accountant. :meth:`epsilon_after` gives ε at δ after any number of epochs."""

    l2_clip: float
    noise_multiplier: float
    delta: float
    sample_rate: float
    expected_batch_size: int
    steps_per_epoch: int
    epochs: int
    n: int
    accountant: Accountant
    clipping: Clipping
    target_epsilon: float | None = None
    sampling: str = "poisson"

    def epsilon_after(self, epochs: int) -> float:
        """ε (at this plan's δ) spent after ``epochs`` completed epochs."""
        return epsilon_spent(self.noise_multiplier, self.sample_rate,
                             epochs * self.steps_per_epoch, self.delta,
                             accountant=self.accountant)

    @property
    def steps(self) -> int:
        """Steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """A JSON record (what the report's Privacy section shows)."""
        eps = self.epsilon_after(self.epochs)
        return {"l2_clip": self.l2_clip, "noise_multiplier": self.noise_multiplier,
                "delta": self.delta, "sample_rate": self.sample_rate,
                "expected_batch_size": self.expected_batch_size,
                "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
                "steps": self.steps, "n": self.n, "accountant": self.accountant.value,
                "clipping": self.clipping.value, "target_epsilon": self.target_epsilon,
                "sampling": self.sampling, "epsilon": None if math.isinf(eps) else eps}


def plan_dp(config: DPConfig, *, n: int, batch_size: int, epochs: int) -> DPPlan:
    """Resolve ``config`` for ``n`` training examples, an expected batch of ``batch_size``
    and ``epochs`` epochs: δ (default < 1/n, a :class:`~robustlab.errors.RobustlabWarning`
    when >= 1/n) and σ (calibrated to ``target_epsilon`` over the whole run when not given).
    """
    import warnings

    if not isinstance(config, DPConfig):
        raise InputTypeError(f"expected dp to be a robustlab DPConfig, got "
                             f"{type(config).__name__}")
    n = check_int("n", n, low=1)
    batch_size = check_int("batch_size", batch_size, low=1, high=n)
    epochs = check_int("epochs", epochs, low=1)
    delta = default_delta(n) if config.delta is None else config.delta
    if delta >= 1.0 / n:
        warnings.warn(f"delta={delta:g} is >= 1/n = {1 / n:g}: an (ε, δ) guarantee with such "
                      f"a δ allows publishing some training examples outright; the usual "
                      f"choice is δ < 1/n (e.g. {default_delta(n):g})", RobustlabWarning,
                      stacklevel=3)
    q = batch_size / n
    steps_per_epoch = math.ceil(n / batch_size)
    sigma = config.noise_multiplier
    if sigma is None:
        assert config.target_epsilon is not None  # DPConfig checked: one of them is set
        sigma = noise_multiplier_for(config.target_epsilon, delta, q, epochs * steps_per_epoch,
                                     accountant=config.accountant)
        log.info("DP-SGD: noise multiplier %.4f spends ε = %.3g at δ = %g over %d epochs",
                 sigma, config.target_epsilon, delta, epochs)
    return DPPlan(l2_clip=config.l2_clip, noise_multiplier=sigma, delta=delta, sample_rate=q,
                  expected_batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                  epochs=epochs, n=n, accountant=config.accountant, clipping=config.clipping,
                  target_epsilon=config.target_epsilon)


# ---------------------------------------------------------------------------------------------
# Poisson sampling


def poisson_batches(n: int, sample_rate: float, steps: int, *, seed: int, epoch: int
                    ) -> list[np.ndarray]:
    """The Poisson-sampled batches of epoch ``epoch``: ``steps`` index arrays, each holding
    every example of ``range(n)`` independently with probability ``sample_rate`` (drawn as a
    Binomial size and a uniform subset of that size, the same distribution). Depends only on
    ``(seed, epoch)``, so a resumed run draws the batches an uninterrupted one draws."""
    rng = np.random.default_rng([check_seed(seed), check_int("epoch", epoch, low=0), 0xD9])
    q = check_float("sample_rate", sample_rate, low=0.0, low_open=True, high=1.0)
    out = []
    for _ in range(check_int("steps", steps, low=1)):
        k = int(rng.binomial(n, q))
        out.append(np.sort(rng.choice(n, size=k, replace=False)))
    return out


# ---------------------------------------------------------------------------------------------
# per-example gradients

# A loss function for private_gradients: (forward, *tensors) -> (per-example losses (B,),
# auxiliary output (B, ...) that is not differentiated, e.g. the logits for metrics).
LossFn = Callable[..., tuple[Any, Any]]


def _layers(model: Any) -> list[Any] | None:
    """Every layer of a functional (or built sequential) model, nested models flattened; None
    when the model is not a graph the ghost engine can run through."""
    import keras

    graph = _graph(model)
    if graph is None:
        return None
    out: list[Any] = []
    for layer in graph.layers:
        if isinstance(layer, keras.Model):
            inner = _layers(layer)
            if inner is None:
                return None
            out += inner
        else:
            out.append(layer)
    return out


def _graph(model: Any) -> Any:
    """The Functional graph behind ``model`` (itself, or a Sequential's), or None."""
    from keras.src.models.functional import Functional

    if isinstance(model, Functional):
        return model
    inner = getattr(model, "_functional", None)
    return inner if isinstance(inner, Functional) else None


def _ghost_kind(layer: Any) -> str | None:
    """``dense`` / ``conv2d`` for the layers the ghost engine differentiates itself."""
    import keras

    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        return "dense"
    if (type(layer) is keras.layers.Conv2D and layer.data_format == "channels_last"
            and layer.groups == 1):
        return "conv2d"
    return None


def _check_per_example(model: Any) -> None:
    """Refuse layers whose training-mode output mixes the examples of a batch."""
    import keras

    for layer in getattr(model, "_flatten_layers", lambda: [])():
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            raise ValidationError(
                f"expected a model without trainable BatchNormalization for DP-SGD (layer "
                f"{layer.name!r} normalises each example by its batch's statistics, so one "
                f"example's gradient depends on the others and clipping it bounds nothing); "
                f"use GroupNormalization / LayerNormalization, or freeze it "
                f"(layer.trainable = False)")


def ghost_supported(model: Any) -> bool:
    """Whether the ghost engine can compute ``model``'s per-example gradients: a functional or
    built sequential model (nested ones too) whose trainable weights all belong to ``Dense``
    or ``Conv2D`` (channels-last, ungrouped) layers."""
    layers = _layers(model)
    if layers is None:
        return False
    covered: set[int] = set()
    for layer in layers:
        if _ghost_kind(layer) is not None and layer.trainable:
            covered |= {id(w) for w in layer.trainable_weights}
    return all(id(v) in covered for v in model.trainable_variables)


def private_gradients(model: Any, loss_fn: LossFn, tensors: Sequence[Any], *, l2_clip: float,
                      weights: Any = None, method: Any = "auto"
                      ) -> tuple[list[Any], Any, Any, Any]:
    """Per-example clipped gradient sums of ``model``'s trainable variables (before noise).

    Args:
        model: the Keras model (called with ``training=True``).
        loss_fn: ``(forward, *tensors) -> (losses (B,), aux)``; ``forward(x)`` returns the
            model's logits; example ``i``'s loss must depend on row ``i`` of each tensor only.
        tensors: the batch, each ``(B, ...)``.
        l2_clip: C; each example's gradient (over all variables) is scaled by
            ``min(1, C / ‖g_i‖)``.
        weights: optional ``(B,)`` per-example multipliers (0 drops a padding row).
        method: ``auto``, ``ghost`` or ``vectorized``.

    Returns:
        ``(sums, norms, losses, aux)``: one summed clipped gradient per trainable variable (in
        ``model.trainable_variables`` order), the unclipped per-example norms ``(B,)``, the
        per-example losses ``(B,)`` and ``loss_fn``'s auxiliary output.

    Raises:
        ValidationError: ``method='ghost'`` for a model it cannot run (see
            :func:`ghost_supported`), or a BatchNormalization layer in training.
    """
    import tensorflow as tf

    kind = parse_enum("method", method, Clipping)
    _check_per_example(model)
    if kind is Clipping.AUTO:
        kind = Clipping.GHOST if ghost_supported(model) else Clipping.VECTORIZED
    elif kind is Clipping.GHOST and not ghost_supported(model):
        raise ValidationError("expected a model whose trainable weights are all in Dense or "
                              "Conv2D layers for clipping='ghost'; use clipping='vectorized' "
                              "(or 'auto')")
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    engine = _ghost if kind is Clipping.GHOST else _vectorized
    grads_fn, norms, losses, aux = engine(model, loss_fn, tensors)
    factors = tf.minimum(1.0, tf.cast(l2_clip, tf.float32) / (norms + 1e-12))
    if weights is not None:
        factors = factors * tf.cast(tf.reshape(weights, [-1]), tf.float32)
    return grads_fn(factors), norms, losses, aux


def _vectorized(model: Any, loss_fn: LossFn, tensors: list[Any]
                ) -> tuple[Callable[[Any], list[Any]], Any, Any, Any]:
    """Per-example gradients with ``tf.vectorized_map`` (materialised: B × parameters)."""
    import tensorflow as tf

    variables = model.trainable_variables

    def one(args: Any) -> tuple[Any, ...]:
        batch = [a[None] for a in args]
        with tf.GradientTape() as tape:
            loss, aux = loss_fn(lambda v: model(v, training=True), *batch)
            loss = tf.reshape(loss, [])
        grads = tape.gradient(loss, variables,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return (*grads, loss, tf.reshape(aux, tf.shape(aux)[1:]))

    out = tf.vectorized_map(one, tuple(tensors), fallback_to_while_loop=False)
    grads, losses, aux = list(out[:-2]), out[-2], out[-1]
    batch = tf.shape(losses)[0]
    norms = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.reshape(g, [batch, -1])), axis=1)
                              for g in grads]))

    def sums(factors: Any) -> list[Any]:
        return [tf.tensordot(factors, g, axes=1) for g in grads]

    return sums, norms, losses, aux


class _Uses:
    """Inputs (flattened to ``(B, T, p)``) and pre-activation outputs of each use of each
    ghost layer during one forward pass (a layer called twice, as TRADES does, has two)."""

    def __init__(self, tape: Any) -> None:
        self.tape = tape
        self.inputs: dict[int, list[Any]] = {}
        self.outputs: dict[int, list[Any]] = {}
        self.layers: dict[int, Any] = {}

    def record(self, layer: Any, a: Any, z: Any) -> None:
        self.tape.watch(z)
        key = id(layer)
        self.layers[key] = layer
        self.inputs.setdefault(key, []).append(a)
        self.outputs.setdefault(key, []).append(z)


def _dense(layer: Any, uses: _Uses) -> Callable[..., Any]:
    from keras import ops

    def call(a: Any, **_: Any) -> Any:
        z = ops.matmul(a, ops.cast(layer.kernel, a.dtype))
        uses.record(layer, a, z)
        if layer.use_bias:
            z = ops.add(z, ops.cast(layer.bias, z.dtype))
        return layer.activation(z) if layer.activation is not None else z

    return call


def _conv2d(layer: Any, uses: _Uses) -> Callable[..., Any]:
    from keras import ops

    def call(a: Any, **_: Any) -> Any:
        z = layer.convolution_op(a, ops.cast(layer.kernel, a.dtype))
        uses.record(layer, a, z)
        if layer.use_bias:
            z = ops.add(z, ops.reshape(ops.cast(layer.bias, z.dtype), (1, 1, 1, -1)))
        return layer.activation(z) if layer.activation is not None else z

    return call


def _hooked(model: Any, uses: _Uses) -> Callable[[Any], Any]:
    """``model``'s forward pass in training mode, with every Dense / Conv2D computed here so
    that its input and pre-activation output are recorded."""
    graph = _graph(model)

    def operation(op: Any) -> Callable[..., Any]:
        kind = _ghost_kind(op) if getattr(op, "trainable", False) else None
        if kind == "dense":
            return _dense(op, uses)
        if kind == "conv2d":
            return _conv2d(op, uses)
        if _graph(op) is not None:
            inner = _hooked(op, uses)
            return lambda inputs, *_, **__: inner(inputs)

        def call(*args: Any, **kwargs: Any) -> Any:
            if "training" in getattr(op, "_call_context_args", {}):
                kwargs["training"] = True
            return op(*args, **kwargs)

        return call

    def forward(x: Any) -> Any:
        out = graph._run_through_graph(x, operation_fn=operation)
        return out[0] if isinstance(out, list | tuple) and len(out) == 1 else out

    return forward


def _patches(layer: Any, a: Any) -> Any:
    """Conv2D input ``(B, H, W, C)`` → patches ``(B, H', W', kh·kw·C)`` in the kernel's
    order (one row per output position)."""
    import tensorflow as tf

    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    return tf.image.extract_patches(a, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1],
                                    rates=[1, dh, dw, 1], padding=layer.padding.upper())


def _positions(t: Any) -> int:
    """Positions per example of ``t`` ``(B, ..., C)``: the product of the middle dimensions
    when they are static (-1, for reshape to infer, when not)."""
    middle = t.shape[1:-1]
    if any(d is None for d in middle):
        return -1
    return math.prod(int(d) for d in middle)


def _ghost(model: Any, loss_fn: LossFn, tensors: list[Any]
           ) -> tuple[Callable[[Any], list[Any]], Any, Any, Any]:
    """Per-example gradient norms and clipped sums from each layer's inputs and output
    gradients (one forward, one backward pass of the batch; see the module doc)."""
    import tensorflow as tf

    with tf.GradientTape(persistent=False, watch_accessed_variables=False) as tape:
        uses = _Uses(tape)
        losses, aux = loss_fn(_hooked(model, uses), *tensors)
        total = tf.reduce_sum(losses)
    keys = list(uses.layers)
    grads = tape.gradient(total, [uses.outputs[k] for k in keys],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    batch = tf.shape(losses)[0]
    squared = tf.zeros_like(losses, dtype=tf.float32)
    parts: dict[int, tuple[Any, Any, Any]] = {}  # layer -> (A, G, per-example kernel grads)
    for key, out_grads in zip(keys, grads, strict=True):
        layer = uses.layers[key]
        a_list, g_list = [], []
        for a, g in zip(uses.inputs[key], out_grads, strict=True):
            a = tf.cast(a, tf.float32)
            if _ghost_kind(layer) == "conv2d":
                a = _patches(layer, a)
            # the positions T of one example, static where the shapes are (the batch is not)
            a_list.append(tf.reshape(a, [batch, _positions(a), a.shape[-1]]))
            g_list.append(tf.reshape(tf.cast(g, tf.float32), [batch, _positions(g),
                                                               g.shape[-1]]))
        a_all, g_all = tf.concat(a_list, axis=1), tf.concat(g_list, axis=1)  # (B, T, p/o)
        p, o = int(a_all.shape[-1]), int(g_all.shape[-1])
        t = a_all.shape[1]
        explicit = None
        if t == 1:  # ‖a gᵀ‖ = ‖a‖·‖g‖
            squared += tf.reduce_sum(tf.square(a_all), [1, 2]) * \
                tf.reduce_sum(tf.square(g_all), [1, 2])
        elif t is not None and p * o <= t * t:  # per-example kernel grads are the smaller
            explicit = tf.einsum("btp,bto->bpo", a_all, g_all)
            squared += tf.reduce_sum(tf.square(explicit), [1, 2])
        else:  # the ghost norm: <A Aᵀ, G Gᵀ> (B × T × T)
            squared += tf.reduce_sum(tf.matmul(a_all, a_all, transpose_b=True)
                                     * tf.matmul(g_all, g_all, transpose_b=True), [1, 2])
        if layer.use_bias:
            squared += tf.reduce_sum(tf.square(tf.reduce_sum(g_all, axis=1)), axis=1)
        parts[key] = (a_all, g_all, explicit)
    norms = tf.sqrt(tf.maximum(squared, 0.0))  # <AAᵀ, GGᵀ> may round below 0
    owner = {id(v): (key, name) for key in keys for name, v in
             (("kernel", uses.layers[key].kernel), ("bias", uses.layers[key].bias))
             if v is not None}

    def sums(factors: Any) -> list[Any]:
        out = []
        for variable in model.trainable_variables:
            if id(variable) not in owner:  # a layer the forward pass never used
                out.append(tf.zeros(variable.shape, tf.float32))
                continue
            key, name = owner[id(variable)]
            a_all, g_all, explicit = parts[key]
            if name == "bias":
                grad = tf.einsum("b,bto->o", factors, g_all)
            elif explicit is not None:
                grad = tf.tensordot(factors, explicit, axes=1)
            else:
                grad = tf.einsum("btp,bto->po", a_all, g_all * factors[:, None, None])
            out.append(tf.reshape(grad, variable.shape))
        return out

    return sums, norms, losses, aux
