"""Adversarial training inside Keras ``fit``: PGD-AT, FGSM with random start, and TRADES.

:class:`AdversarialModel` wraps a Keras classifier; its ``train_step`` crafts each batch's
adversarial examples with the attack engine's own steps (model in inference mode) and then
updates the weights on them (training mode), so ``fit``, ``evaluate``, callbacks, ``History``
and distribution strategies work as for any Keras model.

- PGD-AT: Madry et al. 2018, https://arxiv.org/abs/1706.06083 (train on the PGD example).
- FGSM-RS: Wong, Rice & Kolter 2020, "Fast is better than free",
  https://arxiv.org/abs/2001.03994 (one FGSM step of 1.25·ε from a uniform random start).
- TRADES: Zhang et al. 2019, https://arxiv.org/abs/1901.08573 (clean cross-entropy plus
  β·KL(f(x) ‖ f(x')), x' maximising that KL).
- DP-SGD (any method, ``standard`` included): Abadi et al. 2016,
  https://arxiv.org/abs/1607.00133; with ``dp=`` each update clips every example's gradient
  (of its adversarial loss) and adds Gaussian noise, on Poisson-sampled batches, and ε is
  accounted after every epoch (:mod:`robustlab.privacy`).

Inputs may have any rank (images ``(N, H, W, C)``, tables ``(N, F)``, ``(N, H, W)``, ...).
With per-feature :class:`~robustlab.types.Constraints` (tabular data) the inner maximisation uses
the same threat model as the evaluation: per-feature bounds, ε measured in each feature's
``scale``, immutable features left exactly as they are. The training examples stay
continuous (integer and one-hot features are not rounded during training: standard practice
for constrained adversarial training, e.g. Simonetto et al. 2022,
https://arxiv.org/abs/2112.01156); the evaluation maps its attacks to the feasible set.

:func:`train_adversarial` adds what a long run needs: checkpoints every epoch that a rerun of
the same call resumes from exactly (each epoch's order depends only on the seed and the
epoch, and the checkpoint holds the trainer's whole state, random generators included), a
catastrophic-overfitting guard, one log line per epoch, and the final model written
atomically.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import keras
import numpy as np

from robustlab import audit, crypto, distribute
from robustlab._env import default_jit_compile, device_info, seeded_globals
from robustlab._validate import check_float, check_int, check_seed, parse_enum, validate_arrays
from robustlab.attacks import ascent_steps, per_example_loss, pgd, threat_tensors
from robustlab.data import Dataset
from robustlab.errors import (
    CheckpointError,
    DecryptionError,
    InputTypeError,
    RobustlabWarning,
    ValidationError,
)
from robustlab.inference import GraphSafeNames, predict_labels
from robustlab.models import save_model
from robustlab.privacy import DPConfig, DPPlan, plan_dp, poisson_batches, private_gradients
from robustlab.types import Constraints, Loss, Norm, ThreatModel, parse_norm

__all__ = ["Method", "TrainingConfig", "AdversarialModel", "OverfitGuard", "EpochLogger",
           "EpochProgress", "Checkpoint", "TimeBudget", "TrainingResult", "PrivacyLog",
           "train_adversarial", "training_dataset", "distributed_dataset", "private_dataset",
           "epoch_order", "train", "default_epochs"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _audited(command: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Append one record per call of the decorated training function to the audit log
    (:mod:`robustlab.audit`): its settings, the training data's fingerprint in, the saved
    model's sha256 (``save_to``) and the trained weights' digest out, and the outcome
    (``ok``, ``failed: <error>`` or ``interrupted``). Nothing is computed when the log is
    off; a log that cannot be written is a warning, never a failed training run."""

    def wrap(func: Callable[_P, _R]) -> Callable[_P, _R]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if audit.log_path() is None:
                return func(*args, **kwargs)
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:  # wrong arguments: the call itself says so
                return func(*args, **kwargs)
            bound.apply_defaults()
            given = dict(bound.arguments)
            model, data = given.pop("model", None), given.pop("data", None)
            given.pop("callbacks", None)
            params: dict[str, Any] = {**given, "model": getattr(model, "name", None),
                                      "data": getattr(data, "name", None)}
            inputs: dict[str, str] = {}
            try:
                found = _data_fingerprint(data.x_train, data.y_train)
                inputs[f"training data {params['data']}"] = found["data_sha256"]
                params["data_shapes"] = found["data_shapes"]
                constraints = getattr(data, "constraints", None)
                if constraints is not None:
                    params["constraints"] = constraints.fingerprint()
            except Exception:  # noqa: BLE001 - not a Dataset: the call itself will say so
                inputs["training data"] = "unknown"
            outcome, outputs = "crashed", {}
            try:
                result = func(*args, **kwargs)
                outcome = "ok"
                save_to = given.get("save_to")
                if save_to:
                    outputs.update(audit.digests([save_to]))
                outputs["model weights (in memory)"] = _weights_digest(model)
                return result
            except KeyboardInterrupt:
                outcome = "interrupted"
                raise
            except Exception as exc:
                outcome = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                raise
            finally:
                audit.record(command, parameters=params, inputs=inputs, outputs=outputs,
                             outcome=outcome)

        return call

    return wrap


def _weights_digest(model: Any) -> str:
    """SHA-256 over the model's weight arrays (shape, dtype and bytes, in order)."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype} {array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


class Method(str, Enum):
    """Adversarial training method (``standard`` trains on clean examples only)."""

    STANDARD = "standard"
    PGD = "pgd"
    FGSM_RS = "fgsm_rs"
    TRADES = "trades"


# Wong et al.'s FGSM-RS step: 1.25·ε (larger steps overfit catastrophically, smaller are weak).
FGSM_RS_REL_STEP = 1.25
# TRADES starts its inner maximisation at x + 0.001·N(0, 1) (Zhang et al.'s code).
TRADES_START_STD = 0.001


@dataclass(frozen=True)
class TrainingConfig:
    """How each training batch is made adversarial.

    Attributes:
        method: ``standard``, ``pgd``, ``fgsm_rs`` or ``trades``.
        epsilon: budget in input units (e.g. 0.3 for MNIST; with ``constraints``, in units of
            each feature's ``scale``), > 0 unless ``standard``.
        norm: ``linf`` or ``l2``.
        steps: PGD / TRADES inner steps (FGSM-RS always takes one).
        rel_step_size: step as a fraction of ε (default: PGD ``2.5/steps``, FGSM-RS 1.25,
            TRADES ``2.5/steps``).
        beta: TRADES trade-off β (Zhang et al.: 6 on MNIST and CIFAR-10).
        clean_fraction: share of each batch left clean (0 = all adversarial), in [0, 1).
        ramp_epochs: ε grows linearly from ε/ramp_epochs to ε over the first ``ramp_epochs``
            epochs (0 = full ε from the start).
        bounds: valid input range ``(low, high)``; with ``constraints``, their envelope
            (set from them, whatever is given).
        seed: seeds the random starts (and nothing else: set Keras' seed for the weights).
        constraints: per-feature threat model (:class:`~robustlab.types.Constraints`:
            bounds, ε scale, immutable features), or None (every feature alike, ``bounds``).
            Integer and one-hot features are not rounded during training (see the module
            doc).

    Raises:
        ValidationError: a value out of range (the message names the parameter).
        InputTypeError: ``constraints`` that is not a :class:`~robustlab.types.Constraints`.
    """

    method: Method = Method.PGD
    epsilon: float = 0.3
    norm: Norm = Norm.LINF
    steps: int = 10
    rel_step_size: float | None = None
    beta: float = 6.0
    clean_fraction: float = 0.0
    ramp_epochs: int = 0
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    constraints: Constraints | None = None

    def __post_init__(self) -> None:
        method = parse_enum("method", self.method, Method)
        object.__setattr__(self, "method", method)
        low = 0.0 if method is Method.STANDARD else None
        eps = check_float("epsilon", self.epsilon, low=0.0)
        if low is None and eps <= 0:
            raise ValidationError(f"expected epsilon > 0 for method={method.value!r}, got {eps}")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "norm", parse_norm(self.norm))
        object.__setattr__(self, "steps", check_int("steps", self.steps, low=1))
        if self.rel_step_size is not None:
            object.__setattr__(self, "rel_step_size", check_float(
                "rel_step_size", self.rel_step_size, low=0.0, low_open=True, high=2.0))
        object.__setattr__(self, "beta", check_float("beta", self.beta, low=0.0))
        object.__setattr__(self, "clean_fraction", check_float(
            "clean_fraction", self.clean_fraction, low=0.0, high=0.999))
        if method is Method.TRADES and self.clean_fraction:
            raise ValidationError("expected clean_fraction=0 with method='trades' (its loss "
                                  f"already has a clean term), got {self.clean_fraction}")
        object.__setattr__(self, "ramp_epochs", check_int("ramp_epochs", self.ramp_epochs,
                                                          low=0))
        constraints = self.constraints
        if constraints is not None and not isinstance(constraints, Constraints):
            raise InputTypeError(f"expected constraints to be a robustlab Constraints or None, "
                                 f"got {type(constraints).__name__}")
        bounds = constraints.bounds if constraints is not None else self.bounds
        object.__setattr__(self, "bounds", ThreatModel.parse(0.0, bounds=bounds).bounds)
        object.__setattr__(self, "seed", check_seed(self.seed))

    @property
    def threat(self) -> ThreatModel:
        """The threat model at full ε (with the constraints, if any)."""
        return ThreatModel(self.epsilon, self.norm, self.bounds, self.constraints)

    @property
    def step_size(self) -> float:
        """Absolute step size at full ε, in input units (with constraints, in units of each
        feature's ``scale``, like ε)."""
        if self.rel_step_size is not None:
            return self.rel_step_size * self.epsilon
        if self.method is Method.FGSM_RS:
            return FGSM_RS_REL_STEP * self.epsilon
        return ThreatModel(self.epsilon, self.norm, self.bounds).step_length(self.steps)

    def epsilon_at(self, epoch: int) -> float:
        """ε used in ``epoch`` (0-based) under the ramp."""
        if self.ramp_epochs <= 0:
            return self.epsilon
        return self.epsilon * min(1.0, (epoch + 1) / self.ramp_epochs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON record of the settings; ``constraints`` (their own record,
        :meth:`~robustlab.types.Constraints.to_dict`) only when there are some, so runs
        without them record what they always did."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "constraints"}
        out.update(method=self.method.value, norm=self.norm.value, bounds=list(self.bounds),
                   step_size=self.step_size)
        if self.constraints is not None:
            out["constraints"] = self.constraints.to_dict()
        return out

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` with the constraints as their fingerprint: what a resumed run
        must share with its checkpoint (a mismatch message then names a short value)."""
        out = self.to_dict()
        if self.constraints is not None:
            out["constraints"] = self.constraints.fingerprint()
        return out


class AdversarialModel(keras.Model):
    """A Keras model that trains ``model`` on adversarial examples (see the module doc).

    Call it, ``evaluate`` it or ``predict`` with it as with ``model`` (it returns ``model``'s
    logits); ``fit`` trains ``model``'s weights in place. Training metrics: ``loss``,
    ``clean_accuracy`` and ``adv_accuracy`` (on each batch, before the update).

    With a :class:`~robustlab.privacy.DPPlan` (``dp=``) each update is DP-SGD's: every
    example's gradient of its own (adversarial) loss is clipped to ``l2_clip``, the clipped
    sum gets Gaussian noise of std ``noise_multiplier * l2_clip`` and is divided by the
    expected batch size. Feed it Poisson-sampled batches with per-example weights (0 marks a
    padding row): :func:`private_dataset`, as :func:`train_adversarial` does; the accounting
    assumes them. The noise comes from Keras' seeded generator (Philox): reproducible, not a
    cryptographic source.

    Example:
        >>> trainer = AdversarialModel(model, TrainingConfig("pgd", epsilon=0.3, steps=10))
        >>> trainer.compile(optimizer="adam")
        >>> trainer.fit(data.x_train, data.y_train, epochs=10, batch_size=64)
    """

    def __init__(self, model: Any, config: TrainingConfig | None = None, *,
                 dp: DPPlan | None = None, **kwargs: Any) -> None:
        super().__init__(name=f"adversarial_{model.name}", **kwargs)
        self.model = model
        self.config = config or TrainingConfig()
        if dp is not None and not isinstance(dp, DPPlan):
            raise InputTypeError(f"expected dp to be a robustlab DPPlan (robustlab.privacy."
                                 f"plan_dp) or None, got {type(dp).__name__}")
        if dp is not None and self.config.clean_fraction:
            # which rows stay clean depends on the batch's size and order, so one example's
            # presence would change another's loss: the sensitivity would exceed C
            raise ValidationError(f"expected clean_fraction=0 with DP-SGD (each example's "
                                  f"loss must depend on that example alone), got "
                                  f"{self.config.clean_fraction}")
        self.dp = dp
        self.epsilon_var = keras.Variable(self.config.epsilon_at(0), trainable=False,
                                          dtype="float32", name="epsilon")
        self.seed_generator = keras.random.SeedGenerator(self.config.seed)
        # DP-SGD's noise: its own stream (the random starts' stay as without DP)
        self.noise_generator = keras.random.SeedGenerator(self.config.seed + 0x5EED) \
            if dp is not None else None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clean_accuracy = keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy")
        self.adv_accuracy = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")
        # The wrapper adds no layers: it is built when the model it wraps is (so that its
        # weights, optimizer included, can be saved and restored before any call).
        self.built = bool(getattr(model, "built", False))

    @property
    def metrics(self) -> list[Any]:
        return [self.loss_tracker, self.clean_accuracy, self.adv_accuracy]

    def call(self, x: Any, training: bool = False) -> Any:
        return self.model(x, training=training)

    def compile(self, optimizer: Any = "adam", jit_compile: Any = None, **kwargs: Any) -> None:
        """``keras.Model.compile`` with XLA chosen per device (see ``ROBUSTLAB_JIT``); the
        loss is the method's own, so ``loss=`` is refused."""
        if "loss" in kwargs:
            raise ValidationError("expected no loss= for an AdversarialModel (its method "
                                  "defines the loss)")
        jit = default_jit_compile() if jit_compile is None else jit_compile
        super().compile(optimizer=optimizer, jit_compile=jit, **kwargs)

    def fit(self, *args: Any, callbacks: Any = None, **kwargs: Any) -> Any:
        """``keras.Model.fit``, with the ε ramp of the config applied at each epoch.

        The optimizer's variables are created here, eagerly, when Keras would create them
        inside the traced first step: their names derive from the model's variable paths
        (``"my model/dense/kernel"``), which TensorFlow refuses as graph scope names."""
        if (getattr(self, "optimizer", None) is not None and not self.optimizer.built
                and getattr(self.model, "built", False)):
            with self.distribute_strategy.scope():
                self.optimizer.build(self.model.trainable_variables)
        callbacks = [*(callbacks or []), _EpsilonSchedule(self)]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # -- the training step -------------------------------------------------------------------

    def craft(self, x: Any, y: Any) -> Any:
        """Adversarial versions of the batch ``x`` (N, ...) for labels ``y`` (N,), at the
        current ε, crafted with the model in inference mode; no gradient flows through.

        With the config's constraints the steps, the ball and the random starts are measured
        in each feature's ``scale``, every feature stays within its own bounds, and immutable
        features come back bit-identical; integer and one-hot features stay continuous (the
        evaluation, not the training, maps to the feasible set)."""
        import tensorflow as tf

        cfg = self.config
        eps = tf.cast(self.epsilon_var, tf.float32)
        if cfg.method is Method.STANDARD:
            return x
        threat = cfg.threat
        shape = tuple(x.shape[1:])
        if threat.constraints is not None and all(d is not None for d in shape):
            threat = threat.fit(tuple(int(d) for d in shape))  # e.g. per-channel bounds
        low, high, weight_t, weighted = threat_tensors(threat)
        # weight None: the plain threat model, the very graph of a run without constraints
        weight = weight_t if weighted else None
        step = eps * (cfg.step_size / cfg.epsilon)
        if cfg.method is Method.TRADES:
            target = tf.stop_gradient(self.model(x, training=False))
            noise = TRADES_START_STD * self._random("normal", tf.shape(x))
            start = x + (noise if weight is None else noise * weight)
            start = tf.clip_by_value(start, low, high)
            loss, steps = Loss.KL, cfg.steps
        else:
            target = y
            start = self._random_start(x, eps, low, high, weight)
            loss, steps = Loss.CE, (1 if cfg.method is Method.FGSM_RS else cfg.steps)
        x_adv = ascent_steps(self.model, start, x, target, steps=steps, epsilon=eps,
                             step_size=step, low=low, high=high, norm=cfg.norm, loss=loss,
                             weight=weight)
        if weight is not None:  # immutable features exactly as given, whatever the round-off
            x_adv = tf.where(weight > 0, x_adv, x)
        return tf.stop_gradient(x_adv)

    def _random(self, kind: str, shape: Any, low: float = 0.0, high: float = 1.0) -> Any:
        """A ``"uniform"`` (in ``[low, high)``) or standard ``"normal"`` draw of ``shape``
        from the random starts' generator. Under a strategy of several replicas each
        replica's draw is its own (the generator's state is the same on every replica, so
        the replica's number goes into the seed); with one, Keras' draw as it always was."""
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            if kind == "normal":
                return keras.random.normal(shape, seed=self.seed_generator)
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)
        replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
        seed = tf.cast(self.seed_generator.next(), tf.int64) \
            + tf.stack([tf.constant(0, tf.int64), replica + 1])
        if kind == "normal":
            return tf.random.stateless_normal(shape, seed=seed)
        return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)

    def _random_start(self, x: Any, eps: Any, low: Any, high: Any, weight: Any = None) -> Any:
        """Uniform point of the ε-ball (L∞ cube, or L2 ball), clipped to the bounds.

        With a per-feature ``weight`` (scale, 0 where immutable) the ball is measured in
        scaled units over the mutable features: L∞ ``x + ε·weight·U(-1, 1)``; L2 a direction
        over the mutable features (``d`` counts those) scaled by ``weight``. Immutable
        features stay as in ``x``."""
        import tensorflow as tf

        if self.config.norm is Norm.LINF:
            delta = self._random("uniform", tf.shape(x), -1.0, 1.0)
            if weight is not None:
                delta = delta * weight
            return tf.clip_by_value(x + eps * delta, low, high)
        rank = len(x.shape)
        axes = list(range(1, rank))
        direction = self._random("normal", tf.shape(x))
        if weight is None:
            dim = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        else:
            free = tf.cast(weight > 0, tf.float32)  # one example's shape
            direction *= free
            dim = tf.maximum(1.0, tf.reduce_sum(free))  # the mutable features
        direction /= tf.sqrt(tf.reduce_sum(tf.square(direction), axis=axes, keepdims=True)
                             + 1e-12)
        if weight is not None:
            direction *= weight
        radius = self._random("uniform", (tf.shape(x)[0],)) ** (1 / dim)
        radius = tf.reshape(radius, [-1] + [1] * (rank - 1))
        return tf.clip_by_value(x + eps * radius * direction, low, high)

    # Keras traces the steps below into graphs, where TensorFlow refuses layer names such as
    # "my model" as name scopes: each runs inside GraphSafeNames (the model's names, and this
    # wrapper's "adversarial_<name>", are only swapped while Keras traces).

    def train_step(self, data: Any) -> dict[str, Any]:
        with GraphSafeNames(self):
            return _across_workers(self._adversarial_train_step(data))

    def test_step(self, data: Any) -> dict[str, Any]:
        with GraphSafeNames(self):
            return _across_workers(self._adversarial_test_step(data))

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        """Keras (3.15) builds a model made under a strategy from its first batch, which it
        first reduces with a MEAN over the replicas; ``MultiWorkerMirroredStrategy`` cannot
        reduce a nested batch. Only the shapes matter: this worker's first replica's batch
        has them."""
        import tensorflow as tf

        if iterator is not None and self._distribute_strategy is not None:
            strategy = self._distribute_strategy
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(batches))
                break
        super()._maybe_symbolic_build(data_batch=data_batch)

    def predict_step(self, data: Any) -> Any:
        with GraphSafeNames(self):
            return super().predict_step(data)

    def _adversarial_train_step(self, data: Any) -> dict[str, Any]:
        """One update on the batch's adversarial examples (see the module doc)."""
        import tensorflow as tf

        x, y = data[0], data[1]
        x = tf.cast(x, tf.float32)
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
        cfg = self.config
        standard = cfg.method is Method.STANDARD
        clean_logits = None if standard else self.model(x, training=False)
        x_adv = self.craft(x, y)
        if cfg.clean_fraction and cfg.method in (Method.PGD, Method.FGSM_RS):
            keep = tf.cast(tf.round(cfg.clean_fraction * tf.cast(tf.shape(x)[0], tf.float32)),
                           tf.int32)
            x_adv = tf.concat([x[:keep], x_adv[keep:]], axis=0)
        if self.dp is not None:
            if len(data) < 3 or data[2] is None:
                raise ValidationError(
                    "expected Poisson-sampled batches with per-example weights for DP-SGD "
                    "(x, y, weights), got fixed batches: the accountant assumes Poisson "
                    "sampling; feed robustlab.training.private_dataset(...) to fit, or use "
                    "train_adversarial(..., dp=...)")
            return self._private_update(x, x_adv, y, data[2], clean_logits)
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            adv_logits = self.model(x_adv, training=True)
            if cfg.method is Method.TRADES:
                train_clean = self.model(x, training=True)
                kl = per_example_loss(adv_logits, train_clean, Loss.KL, False)
                loss = _global_mean(per_example_loss(train_clean, y, Loss.CE, False)) \
                    + cfg.beta * _global_mean(kl)
            else:
                loss = _global_mean(per_example_loss(adv_logits, y, Loss.CE, False))
            scaled = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)  # Keras sums the replicas' gradients
        # this replica's share of the global mean, times the replicas: the metric averages
        # the replicas' values, so it reports the global batch's mean loss
        self.loss_tracker.update_state(loss * replicas)
        self.clean_accuracy.update_state(y, adv_logits if standard else clean_logits)
        if standard:
            return {m.name: m.result() for m in self.metrics[:2]}
        self.adv_accuracy.update_state(y, adv_logits)
        return {m.name: m.result() for m in self.metrics}

    def _private_update(self, x: Any, x_adv: Any, y: Any, weights: Any, clean_logits: Any
                        ) -> dict[str, Any]:
        """DP-SGD's update (see the class doc) on the crafted batch; ``weights`` (B,) mark the
        real rows (1) and the padding (0)."""
        import tensorflow as tf

        cfg, plan = self.config, self.dp
        assert plan is not None and self.noise_generator is not None

        def losses(forward: Any, x: Any, x_adv: Any, y: Any) -> tuple[Any, Any]:
            adv_logits = forward(x_adv)
            if cfg.method is Method.TRADES:
                clean = forward(x)
                return (per_example_loss(clean, y, Loss.CE, False)
                        + cfg.beta * per_example_loss(adv_logits, clean, Loss.KL, False),
                        adv_logits)
            return per_example_loss(adv_logits, y, Loss.CE, False), adv_logits

        sums, _, loss, adv_logits = private_gradients(
            self.model, losses, (x, x_adv, y), l2_clip=plan.l2_clip, weights=weights,
            method=plan.clipping)
        std = plan.noise_multiplier * plan.l2_clip
        variables = self.model.trainable_variables
        grads = []
        for total, variable in zip(sums, variables, strict=True):
            if std > 0:
                total = total + std * keras.random.normal(variable.shape,
                                                          seed=self.noise_generator)
            grads.append(tf.cast(total / plan.expected_batch_size, variable.dtype))
        self.optimizer.apply(grads, variables)
        self.loss_tracker.update_state(loss, sample_weight=weights)
        standard = cfg.method is Method.STANDARD
        self.clean_accuracy.update_state(y, adv_logits if standard else clean_logits,
                                         sample_weight=weights)
        if standard:
            return {m.name: m.result() for m in self.metrics[:2]}
        self.adv_accuracy.update_state(y, adv_logits, sample_weight=weights)
        return {m.name: m.result() for m in self.metrics}

    def _adversarial_test_step(self, data: Any) -> dict[str, Any]:
        """Clean loss and accuracy of the batch (no attack: ``evaluate`` measures the model)."""
        import tensorflow as tf

        x, y = data[0], data[1]
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
        logits = self.model(tf.cast(x, tf.float32), training=False)
        self.loss_tracker.update_state(
            tf.reduce_mean(per_example_loss(logits, y, Loss.CE, False)))
        self.clean_accuracy.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics[:2]}


def _across_workers(logs: dict[str, Any]) -> dict[str, Any]:
    """The step's metric values as Keras (3.15) can reduce them over the workers of a
    ``MultiWorkerMirroredStrategy``: it takes their MEAN along axis 0, so each replica's
    scalar goes out as a vector of one (the per-step value is then the replicas' mean; the
    epoch's logs are the metrics' own totals). Elsewhere, as they are."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or \
            strategy.num_replicas_in_sync == len(strategy.extended.worker_devices):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def _global_mean(values: Any) -> Any:
    """This replica's share of the mean of the per-example ``values`` ``(B,)`` over the
    whole global batch: its sum divided by the global batch's size. Keras sums the
    replicas' gradients, so the update is the gradient of the global batch's mean loss
    however it was split (with one replica: the plain mean); what each example's loss is
    (its random start, dropout mask, batch-norm statistics) is the replica's."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tf.reduce_mean(values)
    size = ctx.all_reduce("sum", tf.cast(tf.shape(values)[0], tf.float32))
    return tf.reduce_sum(values) / tf.maximum(size, 1.0)


class _EpsilonSchedule(keras.callbacks.Callback):
    """Sets the trainer's ε for each epoch from its config's ramp (added by ``fit``)."""

    def __init__(self, trainer: AdversarialModel) -> None:
        super().__init__()
        self.trainer = trainer

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.trainer.epsilon_var.assign(self.trainer.config.epsilon_at(epoch))


class PrivacyLog(keras.callbacks.Callback):
    """Adds ``epsilon`` (ε spent at the plan's δ after the epoch) to each epoch's logs, so it
    shows in the log line, the progress bar and the History (added before
    :class:`EpochLogger` and :class:`EpochProgress`, which show the logs they are given)."""

    def __init__(self, plan: DPPlan) -> None:
        super().__init__()
        self.plan = plan
        self.epsilon: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.plan.noise_multiplier == 0:  # no privacy: ε is infinite, nothing to log
            return
        self.epsilon = self.plan.epsilon_after(epoch + 1)
        if logs is not None:
            logs["epsilon"] = self.epsilon


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (``epoch 3/10: loss 0.41, clean_accuracy 0.97, ... (12.3 s)``):
    readable in executed notebooks and CI logs, where a per-batch bar would flood."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())
        log.info("epoch %d/%d: %s (%.1f s)", epoch + 1, self.epochs, metrics,
                 time.perf_counter() - self._start)


class EpochProgress(keras.callbacks.Callback):
    """A ``tqdm.auto`` bar over each epoch's batches with the running metrics (a widget in
    Jupyter, a text bar in a terminal). :func:`train_adversarial` uses it unless
    ``ROBUSTLAB_PROGRESS=0`` (set by ``robustlab run``, where :class:`EpochLogger`'s one
    line per epoch is the readable record)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._bar: Any = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=(self.params or {}).get("steps"), leave=False, unit="batch",
                         desc=f"epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{float(v):.3f}" for k, v in (logs or {}).items()},
                                  refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the first epoch that ends past ``seconds`` of training (a
    budget: e.g. "the best model 5 minutes buy"). Sets ``stopped_epoch`` when it stops."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = check_float("max_seconds", seconds, low=0.0, low_open=True)
        self.stopped_epoch: int | None = None
        self._start = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        spent = time.perf_counter() - self._start >= self.seconds
        # with several workers, all stop when the first one's budget is spent
        if distribute.any_worker(getattr(self.model, "distribute_strategy", None), spent):
            self.stopped_epoch = epoch
            self.model.stop_training = True
            log.info("time budget of %.0f s used up after epoch %d", self.seconds, epoch + 1)


class OverfitGuard(keras.callbacks.Callback):
    """Watches PGD accuracy on a small held-out batch after every epoch and acts when it
    collapses, the sign of catastrophic overfitting in FGSM training (Wong et al. 2020, §5).

    Collapse: PGD accuracy falls more than ``drop`` (absolute, e.g. 0.2 = 20 points) below
    the best seen so far. Then a :class:`~robustlab.errors.RobustlabWarning` is issued and,
    with ``restore_best``, the weights of the best epoch are put back and training stops.
    The PGD accuracy of each epoch is added to the logs as ``guard_pgd_accuracy``. With
    ``constraints`` (per-feature threat model) the PGD attack respects them and ``bounds``
    is their envelope.
    """

    def __init__(self, x: Any, y: Any, *, epsilon: float, norm: Any = "linf", steps: int = 10,
                 drop: float = 0.2, restore_best: bool = True, seed: int = 0,
                 bounds: tuple[float, float] = (0.0, 1.0),
                 constraints: Constraints | None = None) -> None:
        super().__init__()
        if constraints is not None and not isinstance(constraints, Constraints):
            raise InputTypeError(f"expected constraints to be a robustlab Constraints or None, "
                                 f"got {type(constraints).__name__}")
        if constraints is not None:
            bounds = constraints.bounds
        self.x, self.y = validate_arrays(x, y, bounds=bounds, name="x", label_name="y")
        self.epsilon = check_float("epsilon", epsilon, low=0.0, low_open=True)
        self.norm = parse_norm(norm)
        self.steps = check_int("steps", steps, low=1)
        self.drop = check_float("drop", drop, low=0.0, high=1.0)
        self.restore_best = bool(restore_best)
        self.seed = check_seed(seed)
        self.bounds = bounds
        self.constraints = constraints
        self.best_accuracy = -1.0
        self.best_epoch = -1
        self.collapsed_epoch: int | None = None
        self._best_weights: list[np.ndarray] | None = None

    def _inner(self) -> Any:
        return getattr(self.model, "model", self.model)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import warnings


        model = self._inner()
        x_adv = pgd(model, self.x, self.y, epsilon=self.epsilon, norm=self.norm,
                    steps=self.steps, seed=self.seed,
                    bounds=self.bounds if self.constraints is None else None,
                    constraints=self.constraints)
        acc = float(np.mean(predict_labels(model, x_adv) == self.y))
        if logs is not None:
            logs["guard_pgd_accuracy"] = acc
        improved = acc > self.best_accuracy
        # every worker of a strategy decides alike (one stopping alone would leave the others
        # waiting in a collective): each one asks, on every path
        collapsed = distribute.any_worker(getattr(self.model, "distribute_strategy", None),
                                          not improved and acc < self.best_accuracy - self.drop)
        if improved and not collapsed:
            self.best_accuracy, self.best_epoch = acc, epoch
            self._best_weights = [np.array(w) for w in model.get_weights()]
            return
        if collapsed:
            self.collapsed_epoch = epoch
            action = ""
            if self.restore_best and self._best_weights is not None:
                model.set_weights(self._best_weights)
                self.model.stop_training = True
                action = f"; restored the weights of epoch {self.best_epoch + 1} and stopped"
            warnings.warn(f"catastrophic overfitting: PGD-{self.steps} accuracy on the guard "
                          f"batch fell from {self.best_accuracy:.1%} (epoch "
                          f"{self.best_epoch + 1}) to {acc:.1%} (epoch {epoch + 1}){action}",
                          RobustlabWarning, stacklevel=2)


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train_adversarial` did: the config, per-epoch history (Keras logs),
    seconds of training in this call, the first epoch it ran (> 0 after a resume), where the
    model was saved, the guard's verdict, and with DP-SGD the privacy record (the
    :class:`~robustlab.privacy.DPPlan` settings, ``epochs_trained`` and the ``epsilon``
    spent by them at ``delta``), and under a strategy of several replicas its
    ``distribution`` (strategy, replicas, workers: the numbers depend on it, through the
    per-replica batch-norm statistics and dropout masks and random starts)."""

    config: dict[str, Any]
    history: dict[str, list[float]]
    seconds: float
    initial_epoch: int
    epochs: int
    model_path: str | None
    collapsed_epoch: int | None = None
    privacy: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@_audited("robustlab.train_adversarial")
def train_adversarial(model: Any, data: Dataset, *, method: Any = "pgd", epsilon: Any = 0.3,
                      norm: Any = "linf", steps: int = 10, rel_step_size: float | None = None,
                      beta: float = 6.0, clean_fraction: float = 0.0, ramp_epochs: int = 0,
                      epochs: int = 10, batch_size: int = 64, learning_rate: float = 1e-3,
                      seed: int = 0, checkpoint_dir: str | os.PathLike[str] | None = None,
                      save_to: str | os.PathLike[str] | None = None, guard: bool | None = None,
                      guard_size: int = 256, max_seconds: float | None = None,
                      dp: DPConfig | None = None, callbacks: list[Any] | None = None,
                      strategy: Any = None) -> tuple[Any, TrainingResult]:
    """Adversarially train ``model`` on ``data.x_train`` (in place) and return it.

    Args:
        model: Keras classifier returning logits.
        data: a :class:`~robustlab.data.Dataset` of any input rank; the guard batch is cut
            from the end of its training split when ``guard`` is on (and is then not trained
            on). Its ``constraints`` (tables) become the config's: ε is then measured in each
            feature's scale and immutable features are never perturbed.
        method, epsilon, norm, steps, rel_step_size, beta, clean_fraction, ramp_epochs: see
            :class:`TrainingConfig`; epsilon accepts strings like ``"8/255"``.
        epochs: total epochs (a resumed run counts those already done).
        batch_size, learning_rate: Adam on mini-batches of this size.
        seed: seeds the training order (each epoch's, see :func:`epoch_order`) and the random
            starts.
        checkpoint_dir: where a :class:`Checkpoint` is kept after every epoch. Running the
            same call again after a crash resumes from the last completed epoch and ends
            with the weights an uninterrupted run ends with (bit for bit on a CPU); a rerun
            with a larger ``epochs`` continues the run. A checkpoint made with other
            settings, data or architecture is refused. The checkpoint is removed once the
            model is saved to ``save_to``; without ``save_to`` the final one is kept (a rerun
            then returns the trained model without training): delete it when done. One run
            uses a checkpoint directory at a time.
        save_to: write the trained model here (``.keras``, atomically).
        guard: run :class:`OverfitGuard` (default: on for ``fgsm_rs``).
        guard_size: examples in the guard batch.
        max_seconds: stop after the first epoch that ends past this training time (counted
            per call: a rerun resumes with a new budget).
        dp: train with DP-SGD (:class:`~robustlab.privacy.DPConfig`): Poisson-sampled batches
            of expected size ``batch_size`` (:func:`private_dataset`), per-example clipping
            and noise, ε after every epoch in the History (``epsilon``) and the log line;
            ``target_epsilon`` alone calibrates σ for ``epochs`` epochs. Works with every
            ``method`` (DP + PGD-AT clips each example's adversarial gradient), checkpoints
            (the sampler depends only on the seed and the epoch, the noise generator's state
            is saved) and ``max_seconds``. The result's ``privacy`` records what was spent.
            ε covers the trained weights; the per-epoch training metrics (loss, batch
            accuracies) are computed on the private batches without noise: do not publish
            them with the model. ``clean_fraction`` must be 0 with DP.
        callbacks: more Keras callbacks.
        strategy: train data-parallel under a ``tf.distribute`` strategy (a strategy, or
            ``"auto"``, ``"mirrored"``, ``"multiworker"``:
            :func:`robustlab.distribute.make_strategy`; None: the strategy of the current
            :func:`robustlab.distribute.across` block, else the one
            :func:`robustlab.distribute.use_strategy` set, else one device). Each global
            batch of ``batch_size`` (the batches of a one-device run, a last batch smaller
            than the replica count joining the one before) is split by example over the
            replicas and the update is the global batch's mean gradient; batch-norm
            statistics, dropout masks and random starts are per replica, so the numbers
            depend on the replica count (``TrainingResult.distribution`` records it).
            With ``MultiWorkerMirroredStrategy`` every worker
            runs this same call; the chief alone writes the checkpoints and ``save_to``, and
            every worker resumes from ``checkpoint_dir``, which must be storage they all read
            (as for Keras ``BackupAndRestore``): after a worker dies, restart them all with
            the same command. Not with ``dp``. The trained weights are copied back into
            ``model``. A strategy of one replica trains on the plain path (the same
            computation), unless ``model`` was made under its scope.

    Returns:
        ``(model, TrainingResult)``.

    Example:
        >>> model = build_model(data.input_shape, data.num_classes)
        >>> model, info = train_adversarial(model, data, method="pgd", epsilon=0.3, epochs=20)
    """
    cfg = TrainingConfig(method=method, epsilon=epsilon, norm=norm, steps=steps,
                         rel_step_size=rel_step_size, beta=beta, clean_fraction=clean_fraction,
                         ramp_epochs=ramp_epochs, bounds=data.bounds, seed=seed,
                         constraints=getattr(data, "constraints", None))
    epochs = check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    learning_rate = check_float("learning_rate", learning_rate, low=0.0, low_open=True)
    strategy = distribute.current().strategy if strategy is None else \
        distribute.make_strategy(strategy)
    replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
    if replicas > 1 and dp is not None:
        raise ValidationError(f"expected strategy=None with dp (DP-SGD's noise and its "
                              f"accounting are for one device), got a strategy of {replicas} "
                              f"replicas")
    if batch_size < replicas:
        raise ValidationError(f"expected batch_size >= {replicas} (the strategy's replicas: "
                              f"each needs examples), got {batch_size}")
    if replicas == 1 and strategy is not None \
            and getattr(model, "_distribute_strategy", None) is not strategy:
        # one replica in sync is the plain computation: train without Keras' strategy
        # machinery (0.96x to 1.16x the plain epoch in runs on a CPU: benchmarks/DISTRIBUTED.md)
        strategy = None
    chief = strategy is None or distribute.is_chief()
    x, y = data.x_train, data.y_train
    use_guard = (cfg.method is Method.FGSM_RS) if guard is None else bool(guard)
    extra: list[Any] = []
    guard_cb = None
    if use_guard:
        guard_size = check_int("guard_size", guard_size, low=1)
        if guard_size >= len(x):
            raise ValidationError(f"expected guard_size < {len(x)} training examples, got "
                                  f"{guard_size}")
        guard_cb = OverfitGuard(x[-guard_size:], y[-guard_size:], epsilon=cfg.epsilon,
                                norm=cfg.norm, seed=cfg.seed, bounds=cfg.bounds,
                                constraints=cfg.constraints)
        x, y = x[:-guard_size], y[:-guard_size]
        extra.append(guard_cb)
    plan, fit_epochs = None, epochs
    if dp is not None:
        plan = plan_dp(dp, n=len(x), batch_size=min(batch_size, len(x)), epochs=epochs)
        if dp.noise_multiplier is not None and dp.target_epsilon is not None:
            # a fixed σ and a budget: train the epochs that stay within it (a rerun too)
            within = [e for e in range(1, epochs + 1)
                      if plan.epsilon_after(e) <= dp.target_epsilon]
            if not within:
                raise ValidationError(
                    f"expected a noise_multiplier that lets one epoch stay within "
                    f"target_epsilon={dp.target_epsilon:g}, but one epoch at noise_multiplier="
                    f"{plan.noise_multiplier:g} spends ε = {plan.epsilon_after(1):.3g}; raise "
                    f"noise_multiplier or leave it out to calibrate it")
            if within[-1] < epochs:
                log.info("DP-SGD: training %d of %d epochs: epoch %d would spend ε = %.3g > "
                         "target_epsilon = %g", within[-1], epochs, within[-1] + 1,
                         plan.epsilon_after(within[-1] + 1), dp.target_epsilon)
            fit_epochs = within[-1]
        extra.append(PrivacyLog(plan))

    def scope() -> Any:
        return contextlib.nullcontext() if strategy is None else strategy.scope()

    inner = model
    # a model made under the strategy's scope already holds its variables (Keras records
    # the strategy it was made under; the public property falls back to the current one)
    if strategy is not None and getattr(model, "_distribute_strategy", None) is not strategy:
        try:
            with scope():  # the weights as the strategy's variables (one copy per replica)
                inner = keras.models.clone_model(model)
                inner.set_weights(model.get_weights())
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise InputTypeError(f"expected a functional or sequential Keras model to train "
                                 f"under a strategy (it is copied into the strategy's "
                                 f"variables), got {type(model).__name__} ({exc}); or build "
                                 f"the model under strategy.scope()") from None
    with scope():
        trainer = AdversarialModel(inner, cfg, dp=plan)
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    start_epoch, checkpoint = 0, None
    if checkpoint_dir is not None:
        # what a resumed run must share with the checkpoint (not epochs: a rerun may extend)
        settings = {**cfg.identity(), "batch_size": batch_size, "learning_rate": learning_rate,
                    "n_train": len(x), "guard_size": guard_size if use_guard else 0,
                    "model": _model_fingerprint(model),
                    **_data_fingerprint(data.x_train, data.y_train)}
        if plan is not None:  # not the epochs: a rerun may extend a run of fixed σ
            settings["dp"] = {k: v for k, v in plan.to_dict().items()
                              if k not in ("epochs", "steps", "epsilon")}
        failure: Exception | None = None
        try:
            with scope():  # every worker restores the chief's checkpoint
                start_epoch = Checkpoint.restore(checkpoint_dir, trainer, settings,
                                                 epochs=epochs, tidy=chief)
        except Exception as exc:  # noqa: BLE001 - raised below, once every worker knows
            failure, start_epoch = exc, -1
        seen = distribute.worker_values(strategy, start_epoch)
        if failure is not None:
            raise failure
        if -1 in seen:
            raise CheckpointError(f"another worker could not restore the checkpoint in "
                                  f"{str(checkpoint_dir)!r} (see its log); this one stops too")
        if len(set(seen)) > 1:
            raise CheckpointError(f"expected every worker to see the same checkpoint in "
                                  f"{str(checkpoint_dir)!r}, but they found {seen} completed "
                                  f"epochs: checkpoint_dir must be storage every worker "
                                  f"reads (a shared volume)")
        if start_epoch:
            log.info("resuming from %s after epoch %d of %d", checkpoint_dir, start_epoch,
                     epochs)
        checkpoint = Checkpoint(checkpoint_dir, settings) if chief else None
    budget = TimeBudget(max_seconds) if max_seconds is not None else None
    if budget is not None:
        extra.append(budget)
    if os.environ.get("ROBUSTLAB_PROGRESS", "1") != "0":
        extra.append(EpochProgress(epochs))
    extra.append(EpochLogger(epochs))
    if checkpoint is not None:  # after the guard (it may restore the best weights), before
        extra.append(checkpoint)  # the caller's callbacks (an epoch survives their crash)
    extra += callbacks or []
    start = time.perf_counter()
    history: dict[str, list[Any]] = {}
    if start_epoch < fit_epochs:
        # Keras and third-party callbacks may draw from the global generators: seeded for
        # this call only (the batches' order and the random starts draw from their own)
        with seeded_globals(cfg.seed, tensorflow=True):
            steps_per_epoch = math.ceil(len(x) / batch_size)
            if replicas > 1:
                batches, steps_per_epoch = distributed_dataset(
                    strategy, x, y, batch_size, seed=cfg.seed, epochs=epochs,
                    initial_epoch=start_epoch)
            elif plan is None:
                batches = training_dataset(x, y, batch_size, seed=cfg.seed, epochs=epochs,
                                           initial_epoch=start_epoch)
            else:
                batches = private_dataset(x, y, plan, seed=cfg.seed, epochs=fit_epochs,
                                          initial_epoch=start_epoch)
            history = trainer.fit(
                batches, epochs=fit_epochs, initial_epoch=start_epoch, verbose=0, shuffle=False,
                steps_per_epoch=steps_per_epoch, callbacks=extra).history
    seconds = time.perf_counter() - start
    if inner is not model:
        model.set_weights(inner.get_weights())
    path = str(save_model(model, save_to)) if save_to else None  # the chief writes it
    stopped_early = budget is not None and budget.stopped_epoch is not None
    privacy = None
    if plan is not None:
        trained = start_epoch + len(next(iter(history.values()), []))
        spent = plan.epsilon_after(trained) if plan.noise_multiplier > 0 else math.inf
        privacy = {**plan.to_dict(), "epochs_trained": trained,
                   "steps": trained * plan.steps_per_epoch,
                   "epsilon": None if math.isinf(spent) else spent}
    if checkpoint_dir is not None and chief:
        if path is not None and not stopped_early:  # in save_to: nothing left to resume
            _remove_checkpoint(Path(checkpoint_dir))
        elif stopped_early:
            log.info("the time budget stopped training after epoch %d of %d: the checkpoint "
                     "in %s stays, and a rerun of this call continues from there",
                     (budget.stopped_epoch or 0) + 1 if budget else 0, epochs, checkpoint_dir)
        else:
            log.info("kept the final checkpoint in %s (a rerun of this call returns the "
                     "trained model); delete it once the model is saved", checkpoint_dir)
    result = TrainingResult(
        config=cfg.to_dict(),
        history={k: [float(v) for v in vals] for k, vals in history.items()},
        seconds=seconds, initial_epoch=start_epoch, epochs=epochs, model_path=path,
        collapsed_epoch=guard_cb.collapsed_epoch if guard_cb else None, privacy=privacy,
        distribution=None if strategy is None else distribute.Replicas(strategy).describe())
    return model, result


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` (0-based) visits ``n`` training examples: a
    permutation drawn from a generator seeded with ``(seed, epoch)`` alone, so an epoch
    sees the same batches whether or not the run was interrupted (and resumed) before it."""
    rng = np.random.default_rng([check_seed(seed), check_int("epoch", epoch, low=0)])
    return rng.permutation(check_int("n", n, low=0))


def training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int = 0,
                     epochs: int = 1, initial_epoch: int = 0) -> Any:
    """A ``tf.data`` pipeline of the batches of epochs ``initial_epoch`` to ``epochs - 1``
    over ``(x, y)``, one epoch after the other: epoch ``e`` visits the examples in the
    order :func:`epoch_order` ``(len(x), seed, e)``, in ``ceil(len(x) / batch_size)``
    batches (the last one smaller). Fit it with that ``steps_per_epoch`` and
    ``initial_epoch``: an epoch's batches then depend only on the seed and the epoch, so a
    resumed run trains on the batches of an uninterrupted one. Each batch is gathered from
    the arrays by index (no shuffle buffer).

    On a CPU it runs without tf.data's autotuning and on one private thread: on 2 cores the
    default pipeline competes with the training step and made PGD-10 epochs 1.5x slower
    (13.7 s vs 20.5 s for 8,000 MNIST images, alternating between runs). On a GPU it
    prefetches, so input and compute overlap.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    epochs = check_int("epochs", epochs, low=1)
    initial_epoch = check_int("initial_epoch", initial_epoch, low=0, high=epochs)
    n = len(x)
    if n == 0 or len(y) != n:
        raise ValidationError(f"expected x and y to hold the same number (> 0) of examples, "
                              f"got {n} and {len(y)}")
    offsets = np.arange(0, n, batch_size)
    batches = [order[begin:begin + batch_size] for e in range(initial_epoch, epochs)
               for order in [epoch_order(n, seed, e)] for begin in offsets]
    return _index_dataset(x, y, batches)


def distributed_dataset(strategy: Any, x: np.ndarray, y: np.ndarray, batch_size: int, *,
                        seed: int = 0, epochs: int = 1, initial_epoch: int = 0
                        ) -> tuple[Any, int]:
    """:func:`training_dataset`'s global batches for a ``tf.distribute`` strategy, each split
    by example over its replicas (consecutive slices of the batch,
    :func:`robustlab.distribute.replica_slices`): every worker builds the same batches from
    the seed and the epoch and keeps its own replicas' slices. A last batch with fewer
    examples than replicas joins the batch before it (every replica needs an example: the
    batch-norm statistics of an empty batch are NaN). Returns the distributed dataset and
    its steps per epoch."""
    batch_size = check_int("batch_size", batch_size, low=1)
    epochs = check_int("epochs", epochs, low=1)
    initial_epoch = check_int("initial_epoch", initial_epoch, low=0, high=epochs)
    replicas, n = int(strategy.num_replicas_in_sync), len(x)
    if n < replicas or len(y) != n:
        raise ValidationError(f"expected x and y to hold the same number (>= {replicas}, the "
                              f"replicas) of examples, got {n} and {len(y)}")
    offsets = list(range(0, n, batch_size))
    if len(offsets) > 1 and n - offsets[-1] < replicas:
        offsets.pop()
    ends = [*offsets[1:], n]

    def per_worker(ctx: Any) -> Any:
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        first = ctx.input_pipeline_id * local
        parts = []
        for epoch in range(initial_epoch, epochs):
            order = epoch_order(n, seed, epoch)
            for begin, end in zip(offsets, ends, strict=True):
                cut = distribute.replica_slices(end - begin, replicas)
                parts += [order[begin:end][cut[first + j]] for j in range(local)]
        return _index_dataset(x, y, parts)

    return strategy.distribute_datasets_from_function(per_worker), len(offsets)


def private_dataset(x: np.ndarray, y: np.ndarray, plan: DPPlan, *, seed: int = 0,
                    epochs: int = 1, initial_epoch: int = 0) -> Any:
    """A ``tf.data`` pipeline of DP-SGD's Poisson-sampled batches ``(x, y, weights)`` for
    epochs ``initial_epoch`` to ``epochs - 1``: ``plan.steps_per_epoch`` batches an epoch,
    each holding every example independently with probability ``plan.sample_rate``
    (:func:`~robustlab.privacy.poisson_batches`, depending only on the seed and the epoch, so
    a resumed run trains on an uninterrupted run's batches). Batch sizes vary; under XLA
    (``ROBUSTLAB_JIT``, the GPU default) each is padded with rows of weight 0 to a multiple of
    32 so that few shapes compile; an empty draw is one padding row (a noise-only step, as
    the accountant assumes)."""
    if not isinstance(plan, DPPlan):
        raise InputTypeError(f"expected plan to be a robustlab DPPlan, got "
                             f"{type(plan).__name__}")
    epochs = check_int("epochs", epochs, low=1)
    initial_epoch = check_int("initial_epoch", initial_epoch, low=0, high=epochs)
    n = len(x)
    if n != plan.n or len(y) != n:
        raise ValidationError(f"expected x and y to hold the plan's {plan.n} examples, got "
                              f"{n} and {len(y)}")
    multiple = 32 if default_jit_compile() else 1
    batches, weights = [], []
    for epoch in range(initial_epoch, epochs):
        for rows in poisson_batches(n, plan.sample_rate, plan.steps_per_epoch, seed=seed,
                                    epoch=epoch):
            padded = max(1, -(-len(rows) // multiple) * multiple)
            batches.append(np.concatenate([rows, np.zeros(padded - len(rows), rows.dtype)]))
            weights.append(np.arange(padded) < len(rows))
    return _index_dataset(x, y, batches, weights)


def _index_dataset(x: np.ndarray, y: np.ndarray, batches: list[np.ndarray],
                   weights: list[np.ndarray] | None = None) -> Any:
    """``tf.data`` batches ``(x[rows], y[rows])`` (and ``weights``, float32) for each index
    array of ``batches``, gathered from the arrays by index on the host (see
    :func:`training_dataset` for the CPU / GPU options)."""
    import tensorflow as tf

    index = np.int32 if len(x) < 2**31 else np.int64
    sizes = np.array([len(b) for b in batches], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    order = np.concatenate([np.empty(0, index), *(b.astype(index) for b in batches)])
    with tf.device("/cpu:0"):  # tf.data runs on the host: keep the arrays there
        xs, ys, rows = tf.constant(x), tf.constant(y), tf.constant(order)
        ws = None if weights is None else tf.constant(
            np.concatenate([np.empty(0, np.float32), *weights]).astype(np.float32))

    def gather(begin: Any, size: Any) -> tuple[Any, ...]:
        take = rows[begin:begin + size]
        if ws is None:
            return tf.gather(xs, take), tf.gather(ys, take)
        return tf.gather(xs, take), tf.gather(ys, take), ws[begin:begin + size]

    ds = tf.data.Dataset.from_tensor_slices((starts, sizes)).map(gather)
    if device_info()["type"] == "GPU":
        return ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    return ds.with_options(options)


def _data_fingerprint(x: np.ndarray, y: np.ndarray) -> dict[str, str]:
    """SHA-256 of the training arrays' bytes, shapes and dtypes (a checkpoint setting: the
    same number of different examples must not resume silently)."""
    digest = hashlib.sha256()
    shapes = []
    for name, array in (("x", x), ("y", y)):
        array = np.ascontiguousarray(array)
        shapes.append(f"{name} {array.dtype} {tuple(array.shape)}")
        digest.update(f"{shapes[-1]};".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return {"data_sha256": digest.hexdigest(), "data_shapes": ", ".join(shapes)}


def _model_fingerprint(model: Any) -> str:
    """The architecture as far as the weights tell it: parameter count and a digest of the
    weight arrays' shapes and dtypes (layer names are left out: Keras numbers unnamed layers
    per process, so they differ between runs of the same code)."""
    shapes = [(tuple(int(d) for d in w.shape), str(w.dtype)) for w in model.weights]
    digest = hashlib.sha256(repr(shapes).encode()).hexdigest()[:12]
    count = sum(math.prod(shape) for shape, _ in shapes)
    return f"{count} parameters in {len(shapes)} arrays (shapes {digest})"


def _seed_states(trainer: Any) -> list[Any]:
    """The state variables of the trainer's random generators, in a fixed order: those of
    its own ``SeedGenerator`` (the random starts) and of its layers' (dropout). Keras'
    weights files leave them out (they hold the weights and the optimizer)."""
    saved = {id(v) for v in trainer.weights}
    return [v for v in trainer.variables if id(v) not in saved]


class Checkpoint(keras.callbacks.Callback):
    """Saves the trainer's whole state after every epoch into ``directory``: the weights,
    optimizer and ε (a Keras ``epoch-<n>.weights.h5`` file) and a small JSON record of the
    completed epochs, the settings and the states of the random generators (the random
    starts', the dropout layers'), each written to a temporary file and renamed, the weights
    first, so a crash at any moment leaves the previous complete checkpoint.
    :meth:`restore` loads it into a new trainer, which then continues exactly as the saved
    one would have.

    Assumes one run uses a checkpoint directory at a time: a starting run deletes the
    temporary files that an interrupted write left there (those named as
    :func:`~robustlab._io.atomic_path` names the checkpoint's files), and would delete
    those of another run writing there too.

    Only :meth:`_write`, :meth:`_read_record` and :meth:`_read_weights` touch the files.
    """

    RECORD = "checkpoint.json"
    # the temporary files atomic_path makes for the record and the weights files
    _TEMPORARY = re.compile(r"\.(?:checkpoint\.json|epoch-\d+\.weights\.h5)\..+\.tmp(?:\..+)?")
    _WEIGHTS = re.compile(r"epoch-\d+\.weights\.h5")

    def __init__(self, directory: str | os.PathLike[str], config: dict[str, Any]) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.config = config

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.save(self.model, epoch + 1)

    def save(self, trainer: Any, completed_epochs: int) -> None:
        """Write ``trainer``'s state after ``completed_epochs`` epochs (then delete the
        previous weights file)."""
        weights = f"epoch-{completed_epochs}.weights.h5"
        self._write(trainer, weights, {
            "completed_epochs": completed_epochs, "weights": weights, "config": self.config,
            "random_state": [np.asarray(v).tolist() for v in _seed_states(trainer)]})
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != weights:
                old.unlink(missing_ok=True)

    @classmethod
    def restore(cls, directory: str | os.PathLike[str] | None, trainer: Any,
                config: dict[str, Any], *, epochs: int | None = None,
                tidy: bool = True) -> int:
        """Load the checkpoint in ``directory`` into ``trainer``; returns the number of
        completed epochs (0 when there is none). First deletes the temporary files a crash
        during a write left in ``directory`` (see the class doc), unless ``tidy`` is False
        (a worker that is not the chief only reads the chief's checkpoint).

        Raises:
            CheckpointError: the checkpoint was made with other settings (``config``; the
                message names those that differ), it has completed more than ``epochs``, or
                its files are damaged, missing or made for another architecture. The message
                names the file and says to delete the directory to start afresh.
        """
        if directory is None:
            return 0
        return cls(directory, config)._restore(trainer, epochs, tidy)

    def _restore(self, trainer: Any, epochs: int | None, tidy: bool = True) -> int:
        if tidy:
            _remove_temporary_files(self.directory)
        record = self._read_record()
        if record is None:
            return 0
        where = self.directory / self.RECORD
        afresh = f"delete the directory {str(self.directory)!r} to start afresh"
        completed, name = record.get("completed_epochs"), record.get("weights")
        if not isinstance(completed, int) or completed < 1 or not isinstance(name, str) \
                or not self._WEIGHTS.fullmatch(name):
            raise CheckpointError(f"checkpoint record {str(where)!r} is malformed (expected "
                                  f"completed_epochs >= 1 and an epoch-<n>.weights.h5 file "
                                  f"name); {afresh}")
        differences = _differences(record.get("config"), self.config)
        if differences:
            raise CheckpointError(
                f"expected the checkpoint in {str(self.directory)!r} to come from the same "
                f"training settings, but {len(differences)} differ: "
                f"{'; '.join(differences)}. Run with the checkpoint's settings to resume, or "
                f"{afresh}")
        if epochs is not None and completed > epochs:
            raise CheckpointError(f"expected epochs >= {completed}: the checkpoint in "
                                  f"{str(self.directory)!r} has completed {completed} epochs, "
                                  f"got epochs={epochs}; ask for at least {completed}, or "
                                  f"{afresh}")
        weights = self.directory / name
        if not weights.is_file():
            raise CheckpointError(f"checkpoint weights file {str(weights)!r} (named by "
                                  f"{str(where)!r}) is missing; {afresh}")
        states, saved = _seed_states(trainer), record.get("random_state")
        if not isinstance(saved, list) or len(saved) != len(states):
            raise CheckpointError(f"checkpoint record {str(where)!r} holds "
                                  f"{len(saved) if isinstance(saved, list) else 'no'} random "
                                  f"generator states, the model has {len(states)} (another "
                                  f"architecture?); {afresh}")
        trainer.optimizer.build(trainer.model.trainable_variables)
        blob = self._read_weights(weights)  # a missing key or a tampered file: its own error
        try:
            trainer.load_weights(_H5Buffer(blob))
            for variable, value in zip(states, saved, strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))
        except Exception as exc:  # noqa: BLE001 - h5py, Keras and NumPy raise many types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(f"could not load checkpoint weights file {str(weights)!r} "
                                  f"({type(exc).__name__}: {reason[:300]}): it is damaged "
                                  f"(truncated?) or was made for another architecture; "
                                  f"{afresh}") from exc
        return completed

    # -- the only methods that read or write the checkpoint's files -------------------------

    def _write(self, trainer: Any, weights: str, record: dict[str, Any]) -> None:
        """Write the weights file ``weights`` and then the record, each atomically and
        encrypted when a key is configured (:mod:`robustlab.crypto`): the weights go through
        memory, never a plaintext file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = _H5Buffer()
        trainer.save_weights(buffer)
        crypto.write_bytes(self.directory / weights, buffer.getvalue())
        crypto.write_json(self.directory / self.RECORD, record)

    def _read_record(self) -> dict[str, Any] | None:
        """The JSON record (None when there is none)."""
        path = self.directory / self.RECORD
        try:
            record = json.loads(crypto.read_text(path))
        except FileNotFoundError:
            return None
        except DecryptionError:  # no key, wrong key, tampered: named by robustlab.crypto
            raise
        except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise CheckpointError(f"checkpoint record {str(path)!r} is unreadable ({exc}): it "
                                  f"is damaged (truncated?); delete the directory "
                                  f"{str(self.directory)!r} to start afresh") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"checkpoint record {str(path)!r} is not a JSON object; "
                                  f"delete the directory {str(self.directory)!r} to start "
                                  f"afresh")
        return record

    def _read_weights(self, path: Path) -> bytes:
        """The weights file's bytes, decrypted when it is encrypted."""
        return crypto.read_bytes(path)


class _H5Buffer(io.BytesIO):
    """An in-memory ``.weights.h5`` for Keras' ``save_weights`` / ``load_weights``, which
    check the suffix of ``str(path)``: checkpoints are encrypted without a plaintext file."""

    def __str__(self) -> str:
        return "checkpoint.weights.h5"


_ABSENT = object()


def _differences(old: Any, new: dict[str, Any]) -> list[str]:
    """``"epsilon: 0.1 in the checkpoint, 0.2 now"`` for each setting that differs."""
    old = old if isinstance(old, dict) else {}

    def show(value: Any) -> str:
        return "absent" if value is _ABSENT else repr(value)

    out = []
    for key in sorted(set(old) | set(new)):
        before, now = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before != now:
            out.append(f"{key}: {show(before)} in the checkpoint, {show(now)} now")
    return out


def _remove_temporary_files(directory: Path) -> list[Path]:
    """Delete the temporary files an interrupted checkpoint write left in ``directory``
    (only those named as the checkpoint's own; see :class:`Checkpoint`) and return them."""
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir()
             if Checkpoint._TEMPORARY.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) an interrupted checkpoint write left in %s",
                 len(stale), directory)
    return stale


def _remove_checkpoint(directory: Path) -> None:
    """Delete a finished run's checkpoint files (and the directory if that empties it)."""
    _remove_temporary_files(directory)
    for path in [directory / Checkpoint.RECORD, *directory.glob("epoch-*.weights.h5")]:
        path.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# standard training


def default_epochs(n_train: int) -> int:
    """About 45,000 example presentations, between 3 and 30 epochs (digits: 30, MNIST-8k: 5)."""
    return max(3, min(30, 45_000 // max(1, n_train)))


@_audited("robustlab.train")
def train(model: Any, data: Dataset, *, epochs: int | None = None, batch_size: int = 32,
          learning_rate: float = 1e-3, seed: int = 0, verbose: int = 0) -> dict[str, Any]:
    """Train ``model`` on ``data.x_train`` with Adam and cross-entropy on logits (seeded).

    ``epochs`` None picks :func:`default_epochs`. Returns a dict with the Keras history,
    seconds taken and the final test accuracy.
    """
    epochs = default_epochs(len(data.x_train)) if epochs is None else \
        check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    # Keras' fit shuffles with TensorFlow's global generator: seeded for this call only
    with seeded_globals(check_seed(seed), tensorflow=True), GraphSafeNames(model):
        history = model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                            shuffle=True, verbose=verbose)
    seconds = time.perf_counter() - start
    with GraphSafeNames(model):
        _, test_acc = model.evaluate(data.x_test, data.y_test, verbose=0,
                                     batch_size=max(batch_size, 256))
    log.info("trained %s for %d epochs in %.1f s; test accuracy %.4f", model.name, epochs,
             seconds, test_acc)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "seconds": seconds, "test_accuracy": float(test_acc)}
