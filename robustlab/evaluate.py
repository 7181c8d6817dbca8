"""Robustness evaluation: clean accuracy, robust accuracy per attack per ε, and the
per-example worst case over attacks, with 95% Wilson confidence intervals.

The result is a small frozen dataclass (:class:`EvaluationResult`) with ``to_dict()`` for
JSON and ``_repr_html_`` for Jupyter; reports are rendered from it alone.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from robustlab._env import device_info, package_versions
from robustlab._validate import check_optional_int, check_seed, parse_epsilons
from robustlab.attacks._core import (
    Norm,
    ThreatModel,
    parse_norm,
    perturbation_norms,
)
from robustlab.attacks._runner import DEFAULT_BATCH_SIZE
from robustlab.attacks.spec import AttackSpec, parse_attacks
from robustlab.data import Dataset, validate_arrays
from robustlab.errors import RobustlabError, ValidationError
from robustlab.models import num_outputs

__all__ = ["evaluate", "EvaluationResult", "CurvePoint", "AttackCurve", "Example",
           "wilson_interval"]

log = logging.getLogger(__name__)

# Examples the report grid is picked from (bounds the adversarial copies kept in memory).
_SHOW_POOL = 4096
# Tolerance of the re-check that every adversarial example respects the threat model.
_BUDGET_TOL = 1e-5


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion ``successes / n``.

    Wilson 1927, https://doi.org/10.1080/01621459.1927.10502953; unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0% and 100%.
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class CurvePoint:
    """Robust accuracy at one ε. Norms are of ``x_adv - x`` in pixel units over all examples."""

    epsilon: float
    accuracy: float
    ci_low: float
    ci_high: float
    n_correct: int
    mean_linf: float = 0.0
    max_linf: float = 0.0
    mean_l2: float = 0.0
    max_l2: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class AttackCurve:
    """Robust accuracy vs ε for one attack (or the worst case over attacks)."""

    label: str
    spec: dict[str, Any]
    points: tuple[CurvePoint, ...]

    def accuracy_at(self, epsilon: float) -> float:
        for point in self.points:
            if math.isclose(point.epsilon, epsilon, rel_tol=1e-9, abs_tol=1e-12):
                return point.accuracy
        raise ValidationError(f"expected epsilon to be one of "
                              f"{[p.epsilon for p in self.points]}, got {epsilon}")


@dataclass(frozen=True)
class Example:
    """One example shown in the report: what the model said before and after the attack."""

    index: int
    label: int
    clean_pred: int
    clean_confidence: float
    adv_pred: int
    adv_confidence: float
    epsilon: float
    attack: str


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Everything a robustness report shows. ``example_images`` (clean and adversarial
    arrays of the shown examples) stays out of ``to_dict()``."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    norm: str
    epsilons: tuple[float, ...]
    n_examples: int
    clean_accuracy: float
    clean_ci: tuple[float, float]
    curves: tuple[AttackCurve, ...]
    worst_case: AttackCurve
    seed: int
    versions: dict[str, str]
    device: dict[str, Any]
    seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)
    examples: tuple[Example, ...] = ()
    example_images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no arrays, no NaN)."""
        out = {k: v for k, v in asdict(self).items() if k != "example_images"}
        out["clean_ci"] = list(self.clean_ci)
        return out

    def _repr_html_(self) -> str:
        from robustlab.report import render_summary_html

        return render_summary_html(self)


def _model_info(model: Any) -> dict[str, Any]:
    return {"name": str(getattr(model, "name", type(model).__name__)),
            "class": type(model).__name__,
            "parameters": int(model.count_params()) if hasattr(model, "count_params") else None,
            "input_shape": list(getattr(model, "input_shape", None) or [])[1:],
            "num_classes": num_outputs(model)}


def _logits(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False),
                                      dtype=np.float32)
                           for i in range(0, len(x), batch_size)])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check_budget(x_adv: np.ndarray, x: np.ndarray, threat: ThreatModel, label: str) -> None:
    """Re-check the threat model on an attack's output: no attack reports outside the budget."""
    linf, l2 = perturbation_norms(x_adv, x)
    used = linf if threat.norm is Norm.LINF else l2
    low, high = threat.bounds
    if used.max() > threat.epsilon * (1 + _BUDGET_TOL) + _BUDGET_TOL or x_adv.min() < low \
            or x_adv.max() > high:
        raise RobustlabError(f"{label} returned examples outside the threat model "
                             f"(max {threat.norm.value} norm {used.max():.6g} > epsilon "
                             f"{threat.epsilon:g}, or outside bounds {threat.bounds})")


def evaluate(model: Any, data: Dataset | tuple[Any, Any], attacks: Any = ("fgsm", "pgd"),
             epsilons: Any = (0.0, 0.05, 0.1, 0.2, 0.3), *, norm: Any = "linf",
             n: int | None = None, seed: int = 0, batch_size: int | None = None,
             bounds: tuple[float, float] | None = None, n_show: int = 8,
             jit_compile: bool | None = None, progress: bool | None = None,
             parameters: dict[str, Any] | None = None) -> EvaluationResult:
    """Measure clean and robust accuracy of ``model`` on the test split of ``data``.

    For every attack and every ε, the attack runs on all ``n`` examples against their true
    labels; an example counts as robust at ε if it is still classified correctly. The worst
    case at ε counts an example as robust only if *every* attack failed on it.

    Args:
        model: Keras model returning logits, ``(N, H, W, C) -> (N, K)``.
        data: a :class:`~robustlab.data.Dataset` (its test split is used) or ``(x, y)``.
        attacks: names (``"fgsm, pgd"``), dicts or :class:`~robustlab.attacks.AttackSpec`.
        epsilons: budgets in pixel units, e.g. ``"0, 0.1, 0.3"`` or ``[0, 8/255]``.
        norm: ``"linf"`` or ``"l2"`` (one threat model for the whole evaluation).
        n: evaluate the first ``n`` test examples (None: all).
        seed: seeds the attacks' random starts.
        batch_size: examples per batch (default 500; memory grows linearly with it).
        bounds: pixel range (default: the dataset's, else ``(0, 1)``).
        n_show: number of examples kept for the report's grid.
        jit_compile: XLA on/off; None chooses per device.
        progress: show a tqdm progress bar (None: unless ``ROBUSTLAB_PROGRESS=0``).
        parameters: free-form run parameters recorded in the result.

    Returns:
        :class:`EvaluationResult`.

    Example:
        >>> result = evaluate(model, load("digits"), "fgsm, pgd", "0, 0.1, 0.3")
        >>> result.worst_case.accuracy_at(0.3) <= result.clean_accuracy
        True
    """
    start_time = time.perf_counter()
    seed = check_seed(seed)
    eps_list = parse_epsilons(epsilons)
    norm_enum = parse_norm(norm)
    specs = parse_attacks(attacks)
    batch_size = check_optional_int("batch_size", batch_size, low=1) or DEFAULT_BATCH_SIZE
    n = check_optional_int("n", n, low=1)
    if isinstance(data, Dataset):
        x, y, bounds = data.x_test, data.y_test, bounds or data.bounds
        dataset_info = data.describe()
        class_names = list(data.class_names)
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValidationError("expected data to be a Dataset or an (x, y) pair") from None
        bounds = bounds or (0.0, 1.0)
        dataset_info = {"name": "arrays"}
        class_names = None
    num_classes = num_outputs(model)
    x, y = validate_arrays(x, y, num_classes=num_classes, bounds=bounds, name="x",
                           label_name="y")
    if n is not None:
        x, y = x[:n], y[:n]
    dataset_info = {**dataset_info, "n_evaluated": len(x)}
    if class_names is not None:
        dataset_info["class_names"] = class_names

    clean_logits = _logits(model, x, batch_size)
    clean_pred = clean_logits.argmax(axis=1)
    clean_correct = clean_pred == y
    n_total = len(x)
    n_clean = int(clean_correct.sum())
    log.info("clean accuracy %.4f on %d examples", n_clean / n_total, n_total)

    robust = {spec: {} for spec in specs}   # spec -> eps -> bool array
    norms: dict[AttackSpec, dict[float, tuple[np.ndarray, np.ndarray, float]]] = \
        {spec: {} for spec in specs}
    shown_adv: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    if progress is None:
        progress = os.environ.get("ROBUSTLAB_PROGRESS", "1") != "0"
    bar = tqdm(total=len(specs) * len(eps_list), desc="attacks", disable=not progress,
               leave=False)
    for spec in specs:
        for eps in eps_list:
            bar.set_postfix_str(f"{spec.label} eps={eps:g}")
            t0 = time.perf_counter()
            threat = ThreatModel(eps, norm_enum, tuple(bounds))
            if eps == 0.0:
                x_adv = x
            else:
                x_adv = spec.run(model, x, y, epsilon=eps, norm=norm_enum, bounds=bounds,
                                 seed=seed, batch_size=batch_size, jit_compile=jit_compile)
                _check_budget(x_adv, x, threat, spec.label)
            pred = _logits(model, x_adv, batch_size).argmax(axis=1)
            robust[spec][eps] = pred == y
            norms[spec][eps] = (*perturbation_norms(x_adv, x), time.perf_counter() - t0)
            if spec is specs[-1]:  # the grid draws from the first 4,096 examples only
                shown_adv[eps] = (x_adv[:_SHOW_POOL], pred[:_SHOW_POOL])
            bar.update(1)
    bar.close()

    def make_point(eps: float, correct: np.ndarray, stats: tuple[Any, ...] | None) -> CurvePoint:
        k = int(correct.sum())
        lo, hi = wilson_interval(k, n_total)
        extra = {}
        if stats is not None:
            linf, l2, secs = stats
            extra = dict(mean_linf=float(linf.mean()), max_linf=float(linf.max()),
                         mean_l2=float(l2.mean()), max_l2=float(l2.max()), seconds=float(secs))
        return CurvePoint(epsilon=eps, accuracy=k / n_total, ci_low=lo, ci_high=hi,
                          n_correct=k, **extra)

    curves = tuple(
        AttackCurve(spec.label, spec.to_dict(),
                    tuple(make_point(e, robust[spec][e], norms[spec][e]) for e in eps_list))
        for spec in specs)
    worst_points = []
    for eps in eps_list:
        correct = clean_correct.copy()
        for spec in specs:
            correct &= robust[spec][eps]
        worst_points.append(make_point(eps, correct, None))
    worst = AttackCurve("worst case over attacks", {"attacks": [s.label for s in specs]},
                        tuple(worst_points))

    examples, images = _pick_examples(model, x, y, clean_logits, shown_adv, eps_list,
                                      specs[-1].label, n_show, batch_size)
    result = EvaluationResult(
        dataset=dataset_info, model=_model_info(model), norm=norm_enum.value,
        epsilons=eps_list, n_examples=n_total, clean_accuracy=n_clean / n_total,
        clean_ci=wilson_interval(n_clean, n_total), curves=curves, worst_case=worst,
        seed=seed, versions=package_versions(), device=dict(device_info()),
        seconds=time.perf_counter() - start_time, parameters=dict(parameters or {}),
        examples=examples, example_images=images)
    log.info("evaluation done in %.1f s", result.seconds)
    return result


def _pick_examples(model: Any, x: np.ndarray, y: np.ndarray, clean_logits: np.ndarray,
                   adv_by_eps: dict[float, tuple[np.ndarray, np.ndarray]],
                   eps_list: Sequence[float],
                   attack: str, n_show: int, batch_size: int
                   ) -> tuple[tuple[Example, ...], dict[str, np.ndarray]]:
    """Pick examples for the grid at the smallest ε > 0 where the last attack broke at least
    ``n_show`` correctly classified examples (else the largest ε): broken ones first."""
    if n_show <= 0 or not adv_by_eps:
        return (), {}
    clean_pred = clean_logits.argmax(axis=1)
    positive = [e for e in eps_list if e > 0] or list(eps_list)
    chosen_eps, adv_pred = positive[-1], None
    for eps in positive:
        pred = adv_by_eps[eps][1]  # predictions already made by evaluate()
        broken = (clean_pred[: len(pred)] == y[: len(pred)]) & (pred != y[: len(pred)])
        if broken.sum() >= n_show or eps == positive[-1]:
            chosen_eps = eps
            adv_pred = pred
            break
    if adv_pred is None:
        return (), {}
    m = len(adv_pred)
    broken = np.flatnonzero((clean_pred[:m] == y[:m]) & (adv_pred != y[:m]))
    rest = np.setdiff1d(np.arange(m), broken)
    idx = np.concatenate([broken, rest])[:n_show]
    x_adv = adv_by_eps[chosen_eps][0][idx]
    adv_prob = _softmax(_logits(model, x_adv, batch_size))
    clean_prob = _softmax(clean_logits[idx])
    examples = tuple(Example(
        index=int(i), label=int(y[i]), clean_pred=int(clean_prob[j].argmax()),
        clean_confidence=float(clean_prob[j].max()), adv_pred=int(adv_prob[j].argmax()),
        adv_confidence=float(adv_prob[j].max()), epsilon=float(chosen_eps), attack=attack)
        for j, i in enumerate(idx))
    return examples, {"clean": x[idx], "adversarial": x_adv}
