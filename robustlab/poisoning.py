"""Poisoning attacks on a training set, with the ground truth a defence is scored against.

- Patch backdoor (BadNets: Gu et al. 2017, https://arxiv.org/abs/1708.06733): a small trigger
  stamped on training inputs of other classes, relabelled to the target class.
- Blended backdoor (Chen et al. 2017, https://arxiv.org/abs/1712.05526): a faint full-input
  pattern mixed in with weight ``alpha``.
- Label flipping: a share of the training labels (of one source class, or of every class)
  changed to a target class or to a random other class.

Every attack returns a :class:`PoisonedDataset`: the poisoned training split (the test split
is untouched), the indices of the poisoned training examples, and the trigger, so that a
detector can be scored (precision, recall, AUROC) and the attack measured (attack success
rate, :func:`attack_success`). Every random choice takes a ``seed``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from robustlab._validate import check_float, check_int, check_seed, parse_enum
from robustlab.data import Dataset, require_dataset
from robustlab.errors import InputTypeError, ValidationError
from robustlab.inference import predict_labels
from robustlab.stats import wilson_interval

__all__ = ["TriggerKind", "Trigger", "PoisonedDataset", "backdoor", "flip_labels",
           "attack_success", "Detector", "Inspection", "inspect_training_set",
           "penultimate_features", "spectral_scores", "spectre_scores"]

log = logging.getLogger(__name__)


class TriggerKind(str, Enum):
    """How a trigger is applied: stamped (``patch``) or mixed in (``blend``)."""

    PATCH = "patch"
    BLEND = "blend"


@dataclass(frozen=True, eq=False)
class Trigger:
    """A backdoor trigger for inputs of one shape: ``x' = (1 − m) · x + m · pattern``.

    ``pattern`` and ``mask`` have one example's shape; ``mask`` is 1 on a patch's pixels
    (0 elsewhere) or ``alpha`` everywhere for a blend. Build one with :meth:`patch` or
    :meth:`blend`; :meth:`apply` stamps it on a batch and clips to the data's bounds."""

    kind: TriggerKind
    pattern: np.ndarray
    mask: np.ndarray
    bounds: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def patch(cls, input_shape: tuple[int, ...], *, size: int = 2, value: float | None = None,
              bounds: tuple[float, float] = (0.0, 1.0)) -> Trigger:
        """A ``size × size`` square of ``value`` (default: the upper bound, white) in the
        bottom-right corner of an image ``(H, W, C)`` or ``(H, W)``, over every channel; for
        other inputs (tables ``(F,)``), the last ``size`` features set to ``value``."""
        shape = tuple(int(d) for d in input_shape)
        size = check_int("size", size, low=1)
        fill = float(bounds[1]) if value is None else check_float("value", value)
        mask = np.zeros(shape, np.float32)
        if len(shape) in (2, 3) and min(shape[:2]) > 1:
            if size >= min(shape[:2]):
                raise ValidationError(f"expected size < {min(shape[:2])} (the image's smaller "
                                      f"side), got {size}")
            mask[shape[0] - size:, shape[1] - size:, ...] = 1.0
        else:
            flat = mask.reshape(-1)
            if size >= flat.size:
                raise ValidationError(f"expected size < {flat.size} features, got {size}")
            flat[-size:] = 1.0
        return cls(TriggerKind.PATCH, np.full(shape, fill, np.float32), mask, bounds)

    @classmethod
    def blend(cls, input_shape: tuple[int, ...], *, alpha: float = 0.1, seed: int = 0,
              bounds: tuple[float, float] = (0.0, 1.0)) -> Trigger:
        """A uniform-noise pattern over the whole input (seeded), mixed in with weight
        ``alpha`` in (0, 1) (Chen et al. 2017 blend a random pattern at 0.1–0.2)."""
        shape = tuple(int(d) for d in input_shape)
        alpha = check_float("alpha", alpha, low=0.0, low_open=True, high=1.0)
        rng = np.random.default_rng([check_seed(seed), 0xB1E])
        pattern = rng.uniform(bounds[0], bounds[1], shape).astype(np.float32)
        return cls(TriggerKind.BLEND, pattern, np.full(shape, alpha, np.float32), bounds)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x`` ``(N, *shape)`` with the trigger: float32, clipped to the bounds."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.pattern.shape:
            raise ValidationError(f"expected inputs of shape (N, {self.pattern.shape}) for "
                                  f"this trigger, got {x.shape}")
        out = (1.0 - self.mask) * x + self.mask * self.pattern
        return np.clip(out, self.bounds[0], self.bounds[1]).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "shape": list(self.pattern.shape),
                "mask_sum": float(self.mask.sum()), "bounds": list(self.bounds)}


@dataclass(frozen=True, eq=False)
class PoisonedDataset:
    """A dataset whose training split was poisoned (``data``; the test split is the
    original's), the indices of the poisoned training examples (``poison``, sorted), their
    original labels (``original_labels``), and how (``attack``, ``target``, ``source``,
    ``rate``, ``trigger``, ``seed``)."""

    data: Dataset
    poison: np.ndarray
    original_labels: np.ndarray
    attack: str
    target: int | None
    source: int | None
    rate: float
    seed: int
    trigger: Trigger | None = None

    @property
    def is_poison(self) -> np.ndarray:
        """Bool ``(N_train,)``: True for the poisoned training examples."""
        out = np.zeros(len(self.data.x_train), bool)
        out[self.poison] = True
        return out

    def triggered_test(self) -> tuple[np.ndarray, np.ndarray]:
        """The test inputs whose true class is not the target (of ``source`` only, when
        the attack had one), with the trigger stamped on, and their true labels: what
        :func:`attack_success` measures on."""
        if self.trigger is None or self.target is None:
            raise ValidationError(f"expected a backdoor attack for triggered test inputs, got "
                                  f"{self.attack!r}")
        keep = self.data.y_test != self.target
        if self.source is not None:
            keep &= self.data.y_test == self.source
        return self.trigger.apply(self.data.x_test[keep]), self.data.y_test[keep]

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "target": self.target, "source": self.source,
                "rate": self.rate, "seed": self.seed, "n_poison": int(len(self.poison)),
                "n_train": int(len(self.data.x_train)),
                "trigger": None if self.trigger is None else self.trigger.to_dict()}


def _check_class(name: str, value: Any, data: Dataset) -> int | None:
    if value is None:
        return None
    return check_int(name, value, low=0, high=data.num_classes - 1)


def backdoor(data: Dataset, *, trigger: Any = "patch", target: int = 0,
             source: int | None = None, rate: float = 0.1, size: int = 2,
             alpha: float = 0.1, seed: int = 0) -> PoisonedDataset:
    """Poison ``data``'s training split with a backdoor.

    ``round(rate × n_target)`` training examples (``n_target``: the target class's size in
    the training split) of class ``source`` (or of any class but the target) get the trigger
    and the label ``target``.

    Args:
        data: the clean dataset.
        trigger: ``"patch"`` (:meth:`Trigger.patch` of ``size``), ``"blend"``
            (:meth:`Trigger.blend` with ``alpha``) or a :class:`Trigger`.
        target: the class the trigger should cause.
        source: poison only examples of this class (None: every other class).
        rate: poison count as a share of the target class's size, in (0, 1].
        seed: which examples are poisoned (and the blend pattern).

    Returns:
        :class:`PoisonedDataset` with the ground-truth indices.

    Raises:
        ValidationError: a class out of range, ``source == target``, a rate out of range or
            more poison than candidate examples.

    Example:
        >>> poisoned = backdoor(load("digits"), trigger="patch", target=0, rate=0.1)
        >>> x_trig, y_true = poisoned.triggered_test()
    """
    require_dataset(data)
    target_class = _check_class("target", target, data)
    assert target_class is not None
    source_class = _check_class("source", source, data)
    if source_class == target_class:
        raise ValidationError(f"expected source != target, got both {target_class}")
    rate = check_float("rate", rate, low=0.0, low_open=True, high=1.0)
    seed = check_seed(seed)
    if isinstance(trigger, Trigger):
        trig = trigger
    else:
        kind = parse_enum("trigger", trigger, TriggerKind)
        trig = (Trigger.patch(data.input_shape, size=size, bounds=data.bounds)
                if kind is TriggerKind.PATCH else
                Trigger.blend(data.input_shape, alpha=alpha, seed=seed, bounds=data.bounds))
    y = data.y_train
    candidates = np.flatnonzero(y != target_class if source_class is None
                                else y == source_class)
    count = int(round(rate * int(np.sum(y == target_class))))
    if count < 1 or count > len(candidates):
        raise ValidationError(f"expected rate to poison between 1 and {len(candidates)} "
                              f"examples, got {count} (rate {rate} of the "
                              f"{int(np.sum(y == target_class))} of class {target_class})")
    rng = np.random.default_rng([seed, 0xBAD])
    chosen = np.sort(rng.choice(candidates, size=count, replace=False))
    x_train, y_train = data.x_train.copy(), y.copy()
    x_train[chosen] = trig.apply(x_train[chosen])
    y_train[chosen] = target_class
    log.info("backdoor (%s): %d of %d training examples poisoned to class %d", trig.kind.value,
             count, len(y), target_class)
    return PoisonedDataset(
        data=dataclasses.replace(data, x_train=x_train, y_train=y_train),
        poison=chosen, original_labels=y[chosen], attack=f"backdoor-{trig.kind.value}",
        target=target_class, source=source_class, rate=rate, seed=seed, trigger=trig)


def flip_labels(data: Dataset, *, rate: float = 0.1, source: int | None = None,
                target: int | None = None, seed: int = 0) -> PoisonedDataset:
    """Flip the labels of ``round(rate × n)`` training examples (``n``: those of ``source``,
    or all), to ``target`` (a targeted flip) or to a uniformly random other class.

    Raises:
        ValidationError: a class out of range, ``source == target`` or a rate out of range.
    """
    require_dataset(data)
    source_class = _check_class("source", source, data)
    target_class = _check_class("target", target, data)
    if source_class is not None and source_class == target_class:
        raise ValidationError(f"expected source != target, got both {source_class}")
    rate = check_float("rate", rate, low=0.0, low_open=True, high=1.0)
    seed = check_seed(seed)
    y = data.y_train
    candidates = np.flatnonzero(np.ones(len(y), bool) if source_class is None
                                else y == source_class)
    if target_class is not None:
        candidates = candidates[y[candidates] != target_class]
    count = int(round(rate * len(candidates)))
    if count < 1:
        raise ValidationError(f"expected rate to flip at least one of {len(candidates)} "
                              f"labels, got rate {rate}")
    rng = np.random.default_rng([seed, 0xF11])
    chosen = np.sort(rng.choice(candidates, size=count, replace=False))
    y_train = y.copy()
    if target_class is not None:
        y_train[chosen] = target_class
    else:  # a uniformly random class other than the true one
        shift = rng.integers(1, data.num_classes, size=count)
        y_train[chosen] = (y[chosen] + shift) % data.num_classes
    return PoisonedDataset(
        data=dataclasses.replace(data, y_train=y_train), poison=chosen,
        original_labels=y[chosen], attack="label-flip" + ("-targeted" if target_class
                                                           is not None else ""),
        target=target_class, source=source_class, rate=rate, seed=seed)


def attack_success(model: Any, poisoned: PoisonedDataset) -> tuple[float, tuple[float, float]]:
    """Attack success rate of a backdoor: the share of triggered test inputs of other
    classes (:meth:`PoisonedDataset.triggered_test`) that ``model`` classifies as the
    target, with its 95% Wilson interval."""
    if not isinstance(poisoned, PoisonedDataset):
        raise InputTypeError(f"expected poisoned to be a PoisonedDataset, got "
                             f"{type(poisoned).__name__}")
    x, _ = poisoned.triggered_test()
    hits = int(np.sum(predict_labels(model, x) == poisoned.target))
    return hits / max(1, len(x)), wilson_interval(hits, len(x))


# ---------------------------------------------------------------------------------------------
# inspection: which training examples look poisoned (no ground truth needed)


class Detector(str, Enum):
    """Per-class poison scores from penultimate-layer features."""

    SPECTRAL = "spectral"
    SPECTRE = "spectre"


def penultimate_features(model: Any, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """The input of ``model``'s last layer (the features its logits are computed from),
    ``(N, D)`` float64, for a functional or sequential Keras model."""
    import keras

    from robustlab.inference import GraphSafeNames

    try:
        last = model.layers[-1]
        extractor = keras.Model(model.inputs, last.input)
    except (AttributeError, ValueError, IndexError) as exc:
        raise InputTypeError(f"expected a functional or sequential Keras model whose last "
                             f"layer computes the logits, got {type(model).__name__} "
                             f"({exc})") from None
    with GraphSafeNames(extractor):
        feats = extractor.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(feats, np.float64).reshape(len(x), -1)


def spectral_scores(features: np.ndarray) -> np.ndarray:
    """Spectral-signature scores (Tran, Li & Madry 2018, https://arxiv.org/abs/1811.00636):
    the squared projection of each centred feature vector ``(N, D)`` on the top singular
    vector of the class's centred features; poison concentrates at the top."""
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


def spectre_scores(features: np.ndarray, *, dims: int = 32, poison_bound: float = 0.4,
                   alpha: float = 4.0, seed: int = 0) -> np.ndarray:
    """SPECTRE-style scores (Hayase et al. 2021, https://arxiv.org/abs/2104.11315): project
    the class's features on their top ``dims`` singular directions, estimate mean and
    covariance robustly (Minimum Covariance Determinant on ``1 − poison_bound`` of the
    examples, so up to that share of poison cannot steer it), whiten with them, and score
    each example by its QUantum-Entropy score ``zᵀQz / tr Q`` with
    ``Q = exp(α (Σ̃ − I) / (‖Σ̃‖₂ − 1))`` (Σ̃: covariance of the whitened features), which
    weighs every direction in which the whitened data spread more than clean data would."""
    from scipy.linalg import expm, sqrtm
    from sklearn.covariance import MinCovDet

    n = len(features)
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = max(1, min(dims, vt.shape[0], n // 4))
    reduced = centred @ vt[:k].T
    support = min(0.99, max(1.0 - poison_bound, (n + k + 1) / (2 * n)))
    mcd = MinCovDet(support_fraction=support, random_state=seed).fit(reduced)
    cov = mcd.covariance_ + 1e-6 * np.eye(k)
    inv_root = np.real(np.linalg.inv(sqrtm(cov)))
    z = (reduced - mcd.location_) @ inv_root
    sigma = np.cov(z, rowvar=False).reshape(k, k)
    top = float(np.linalg.eigvalsh(sigma)[-1])
    if top <= 1.0 + 1e-9:  # nothing spreads beyond the clean covariance: plain norms
        return np.einsum("ij,ij->i", z, z) / k
    q = expm(alpha * (sigma - np.eye(k)) / (top - 1.0))
    return np.einsum("ij,jk,ik->i", z, q, z) / np.trace(q)


_SCORERS = {Detector.SPECTRAL: lambda f, seed: spectral_scores(f),
            Detector.SPECTRE: lambda f, seed: spectre_scores(f, seed=seed)}


@dataclass(frozen=True, eq=False)
class Inspection:
    """Poison scores of a training set (:func:`inspect_training_set`): one score per
    training example (``scores``, higher = more suspicious, comparable within a class),
    per class a suspicion statistic (``class_scores``: the mean of the class's top
    ``1.5 × expected_rate`` scores over the class's median score) and the classes whose
    statistic stands out from the others (``flagged_classes``: robust z-score > 3.5)."""

    detector: str
    scores: np.ndarray
    labels: np.ndarray
    class_scores: dict[int, float]
    flagged_classes: tuple[int, ...]
    expected_rate: float

    def suspicious(self, fraction: float | None = None) -> np.ndarray:
        """Indices of the most suspicious examples of the flagged classes: the top
        ``fraction`` (default ``1.5 × expected_rate``, as in Tran et al.) of each, sorted."""
        share = 1.5 * self.expected_rate if fraction is None else check_float(
            "fraction", fraction, low=0.0, low_open=True, high=1.0)
        out = []
        for c in self.flagged_classes:
            idx = np.flatnonzero(self.labels == c)
            k = max(1, int(round(share * len(idx))))
            out.append(idx[np.argsort(self.scores[idx])[::-1][:k]])
        return np.sort(np.concatenate(out)) if out else np.empty(0, np.int64)


def inspect_training_set(model: Any, data: Dataset, *, detector: Any = "spectre",
                         expected_rate: float = 0.1, seed: int = 0) -> Inspection:
    """Score every training example of ``data`` for being poison, class by class, from
    ``model``'s penultimate-layer features (``model`` trained on ``data``), and flag the
    classes whose most suspicious examples stand out. No ground truth is used.

    Args:
        detector: ``spectre`` (robust whitening + QUE scores) or ``spectral``.
        expected_rate: the poison share of a class to guard against (the top
            ``1.5 × expected_rate`` of a class are its suspects).
        seed: seeds the robust covariance estimate.
    """
    require_dataset(data)
    kind = parse_enum("detector", detector, Detector)
    rate = check_float("expected_rate", expected_rate, low=0.0, low_open=True, high=0.5)
    seed = check_seed(seed)
    feats = penultimate_features(model, data.x_train)
    labels = np.asarray(data.y_train)
    scores = np.zeros(len(labels))
    stats: dict[int, float] = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 8:
            continue
        s = _SCORERS[kind](feats[idx], seed)
        scores[idx] = s
        k = max(1, int(round(1.5 * rate * len(idx))))
        stats[int(c)] = float(np.mean(np.sort(s)[-k:]) / max(np.median(s), 1e-12))
    values = np.array(list(stats.values()))
    median = float(np.median(values)) if len(values) else 0.0
    mad = float(np.median(np.abs(values - median))) * 1.4826 if len(values) else 0.0
    flagged = tuple(c for c, v in stats.items()
                    if mad > 0 and (v - median) / mad > 3.5)
    log.info("inspection (%s): class statistics %s; flagged %s", kind.value,
             {c: round(v, 2) for c, v in stats.items()}, list(flagged))
    return Inspection(detector=kind.value, scores=scores, labels=labels,
                      class_scores=stats, flagged_classes=flagged, expected_rate=rate)
