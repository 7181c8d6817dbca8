"""The result types of an evaluation: small frozen dataclasses with numeric fields,
``to_dict()`` for JSON (and nothing else), a short ``__repr__`` for a Python shell and
``_repr_html_`` for Jupyter (rendered by :mod:`robustlab.report` through the display
registry, :mod:`robustlab._display`, so this layer imports nothing above it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from robustlab._display import render_html
from robustlab._validate import check_float
from robustlab.attacks import AttackSpec
from robustlab.errors import ValidationError
from robustlab.stats import dp_tpr_bound, roc_auc
from robustlab.types import Constraints, Norm, ThreatModel, feature_labels, is_image_shape

__all__ = ["Status", "Check", "Convergence", "CurvePoint", "AttackCurve", "Example",
           "ClassAccuracy", "FeatureShift", "EvaluationResult", "Comparison",
           "FoldResult", "CrossValidationResult", "summary_text", "OperatingPoint",
           "MembershipAttack", "MembershipAudit", "PrivacyResult", "Inspection",
           "ModelOutcome", "PoisoningResult", "Detection", "DefendedAccuracy", "DriftRate",
           "MonitorEvaluation"]


def _lookup(items: Any, attr: str, value: float, *, name: str | None = None) -> Any:
    """The item of ``items`` whose ``attr`` equals ``value`` (to float round-off); a
    ValidationError naming ``name`` (default ``attr``) and the values there are otherwise."""
    for item in items:
        if math.isclose(getattr(item, attr), value, rel_tol=1e-9, abs_tol=1e-12):
            return item
    raise ValidationError(f"expected {name or attr} to be one of "
                          f"{[getattr(i, attr) for i in items]}, got {value}")


def _plain(value: Any) -> Any:
    """A field as JSON-ready data: dataclasses (also inside tuples) as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class Status(str, Enum):
    """Outcome of a check: ``pass``, ``warn`` (look closer), ``fail`` (the number is likely
    wrong) or ``skip`` (not applicable to this evaluation)."""

    PASS = "pass"  # a check status, not a password  # noqa: S105  # nosec B105
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One sanity check: its status, the measured evidence (``values`` holds the numbers)
    and what it means, with the paper that describes the symptom."""

    name: str
    title: str
    status: Status
    evidence: str
    explanation: str
    reference: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": self.status.value}


@dataclass(frozen=True)
class Convergence:
    """Robust accuracy of one attack at one ε as its steps grow (and with twice the
    restarts), on ``n`` examples: the data behind the convergence check and plot."""

    attack: str
    epsilon: float
    n: int
    steps: tuple[int, ...]
    accuracy: tuple[float, ...]
    restarts: int
    accuracy_double_restarts: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CurvePoint:
    """Robust accuracy at one ε. Norms are of ``x_adv - x`` in pixel units over all examples;
    ``n_attacked`` examples were attacked at this ε (the others were already misclassified
    at a smaller ε, or clean), ``seconds`` is the time that took."""

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
    n_attacked: int = 0


@dataclass(frozen=True)
class AttackCurve:
    """Robust accuracy vs ε for one attack (or the worst case over attacks)."""

    label: str
    points: tuple[CurvePoint, ...]
    spec: AttackSpec | None = None  # None: the worst case over ``attacks``
    attacks: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, Any]:
        """The attack's settings as shown in reports (JSON values)."""
        return self.spec.to_dict() if self.spec is not None else {"attacks": list(self.attacks)}

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "spec": self.settings,
                "points": [dataclasses.asdict(p) for p in self.points]}

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


@dataclass(frozen=True)
class ClassAccuracy:
    """Clean and worst-case robust accuracy (per ε of the evaluation) of one class, with
    95% Wilson intervals."""

    label: int
    name: str
    n: int
    clean: float
    clean_ci: tuple[float, float]
    robust: tuple[float, ...]
    robust_ci: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class FeatureShift:
    """How the attack moved one feature across the examples it broke (non-image data):
    ``moved`` the fraction of broken examples whose value changed, ``mean_change`` and
    ``max_change`` the mean and largest ``|adversarial - clean|`` over those, in the
    feature's own units, ``mean_scaled`` the mean change in units of the feature's scale
    (the unit of ε)."""

    index: int
    name: str
    moved: float
    mean_change: float
    max_change: float
    mean_scaled: float


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Everything a robustness report shows. ``example_images`` (clean and adversarial
    arrays of the shown examples), ``robust_mask`` (``(n_examples, len(epsilons))`` bool:
    example ``i`` survived every attack at ``epsilons[j]``) and ``attack_masks`` (the same
    per attack label) stay out of ``to_dict()``.

    ``constraints`` is the per-feature threat model (None: every input value alike);
    ``feature_shifts`` summarise, for non-image data, how the last attack moved each feature
    across the examples it broke at ``shift_epsilon``. ``breaks`` says which attack broke
    what: per attack label (in the evaluation's order), how many correctly classified
    examples it was the first to break at each ε; ``first_break`` (``(n_examples,
    len(epsilons))`` int, out of ``to_dict()``) is that attack's index per example and ε,
    -1 where none broke it.

    ``checks`` are the sanity checks (:mod:`robustlab.checks`) and ``convergence`` the
    accuracy-vs-steps data; ``cascade`` says whether each attack ran only on the examples
    the attacks before it left standing (then each curve is "robust to this attack and
    every attack before it")."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    norm: Norm
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
    per_class: tuple[ClassAccuracy, ...] = ()
    determinism: dict[str, Any] = field(default_factory=dict)
    cascade: bool = False
    checks: tuple[Check, ...] = ()
    convergence: Convergence | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    example_images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    robust_mask: np.ndarray | None = field(default=None, repr=False)
    attack_masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    constraints: Constraints | None = field(default=None, repr=False)
    feature_shifts: tuple[FeatureShift, ...] = ()
    shift_epsilon: float | None = None
    breaks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    first_break: np.ndarray | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape, as the evaluated arrays had it."""
        images = self.example_images.get("clean")
        if images is not None:
            return tuple(int(d) for d in images.shape[1:])
        return tuple(int(d) for d in self.dataset.get("input_shape") or
                     self.model.get("input_shape") or ())

    @property
    def is_image(self) -> bool:
        """True if the examples are shown as images (see
        :func:`~robustlab.types.is_image_shape`), False for feature tables."""
        return is_image_shape(self.input_shape, () if self.constraints is None
                              else self.constraints.names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per feature: the constraints' names, else ``feature 0``, ``feature 1``…"""
        return feature_labels(self.input_shape, self.constraints)

    @property
    def specs(self) -> tuple[AttackSpec, ...]:
        """The attacks the evaluation ran, in order."""
        return tuple(c.spec for c in self.curves if c.spec is not None)

    def threat(self, epsilon: float) -> ThreatModel:
        """The threat model the evaluation used at ``epsilon`` (its norm, bounds and
        feature constraints)."""
        return ThreatModel(float(epsilon), self.norm, self.bounds, self.constraints)

    @property
    def trust(self) -> Status:
        """The worst status over the checks (``skip`` if none ran): ``fail`` means some
        check found the robust accuracy too high."""
        order = [Status.FAIL, Status.WARN, Status.PASS]
        statuses = {c.status for c in self.checks}
        return next((s for s in order if s in statuses), Status.SKIP)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no arrays, no NaN). The bounds are the dataset's entry."""
        skip = {"example_images", "robust_mask", "attack_masks", "bounds", "curves",
                "worst_case", "checks", "convergence", "norm", "constraints",
                "feature_shifts", "shift_epsilon", "breaks", "first_break"}
        out = {f.name: _plain(getattr(self, f.name))
               for f in dataclasses.fields(self) if f.name not in skip}
        out.update(norm=self.norm.value, clean_ci=list(self.clean_ci),
                   curves=[c.to_dict() for c in self.curves],
                   worst_case=self.worst_case.to_dict(),
                   checks=[c.to_dict() for c in self.checks],
                   convergence=None if self.convergence is None else self.convergence.to_dict(),
                   trust=self.trust.value,
                   breaks={label: list(counts) for label, counts in self.breaks.items()})
        if self.constraints is not None:  # absent for plain threat models (images)
            out["constraints"] = {**self.constraints.to_dict(),
                                  "description": self.constraints.describe(self.norm)}
        if self.feature_shifts:
            out.update(feature_shifts=_plain(self.feature_shifts),
                       shift_epsilon=self.shift_epsilon)
        return out

    def __repr__(self) -> str:
        return summary_text(self)

    def _repr_html_(self) -> str | None:
        return render_html(self)


@dataclass(frozen=True, eq=False)
class Comparison:
    """Several models evaluated the same way (same data, attacks, ε): for side-by-side
    reports. The first model is the reference ("baseline").

    ``focus_epsilon`` is the ε > 0 where the best model gains most worst-case accuracy over
    the baseline; ``gained[name]`` lists examples (indices into the evaluated test examples)
    that the baseline gets wrong under attack at that ε and model ``name`` gets right.
    ``privacy`` (empty, or one entry per model, None where unknown) adds each model's DP
    guarantee and membership-audit numbers to the comparison.
    """

    names: tuple[str, ...]
    results: tuple[EvaluationResult, ...]
    training_seconds: tuple[float | None, ...]
    focus_epsilon: float
    gained: dict[str, tuple[int, ...]]
    privacy: tuple[PrivacyResult | None, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"names": list(self.names), "focus_epsilon": self.focus_epsilon,
               "training_seconds": list(self.training_seconds),
               "gained": {k: list(v) for k, v in self.gained.items()},
               "results": {n: r.to_dict() for n, r in zip(self.names, self.results,
                                                          strict=True)}}
        if any(p is not None for p in self.privacy):  # absent otherwise: records unchanged
            out["privacy"] = {n: None if p is None else p.to_dict()
                              for n, p in zip(self.names, self.privacy, strict=True)}
        return out

    def __repr__(self) -> str:
        return "\n".join(f"{name}: {summary_text(r).splitlines()[0]}"
                         for name, r in zip(self.names, self.results, strict=True))

    def _repr_html_(self) -> str | None:
        return render_html(self)


@dataclass(frozen=True)
class FoldResult:
    """One fold of a cross-validation (:func:`~robustlab.crossval.cross_validate`): a fresh
    model trained on the other folds and evaluated on this one.

    ``clean_ci`` and each worst-case point's ``ci_low``/``ci_high`` are 95% Wilson intervals
    over the ``n_test`` evaluated examples; ``worst_case`` has one point per ε of the
    cross-validation (the worst case over its attacks), in the same order for every fold.
    ``seconds`` covers training and evaluation; ``trust`` is the fold evaluation's checks
    verdict (``skip`` when the checks were off). ``test_indices`` are the evaluated examples'
    positions in the pooled data (train then test split), kept out of ``to_dict()``."""

    fold: int
    n_train: int
    n_test: int
    clean_accuracy: float
    clean_ci: tuple[float, float]
    worst_case: tuple[CurvePoint, ...]
    seconds: float
    trust: Status
    test_indices: tuple[int, ...] = field(default=(), repr=False)

    def accuracy_at(self, epsilon: float) -> float:
        """Worst-case robust accuracy at ``epsilon`` (one of the cross-validation's ε)."""
        return self.point_at(epsilon).accuracy

    def point_at(self, epsilon: float) -> CurvePoint:
        """The worst-case point at ``epsilon`` (accuracy and Wilson interval)."""
        return _lookup(self.worst_case, "epsilon", epsilon)

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "n_train": self.n_train, "n_test": self.n_test,
                "clean_accuracy": self.clean_accuracy, "clean_ci": list(self.clean_ci),
                "worst_case": [dataclasses.asdict(p) for p in self.worst_case],
                "seconds": self.seconds, "trust": self.trust.value}


def _sd(values: tuple[float, ...]) -> float:
    """Sample standard deviation (ddof 1) of two or more values."""
    return float(np.std(np.asarray(values, np.float64), ddof=1))


@dataclass(frozen=True, eq=False)
class CrossValidationResult:
    """Clean and worst-case robust accuracy of ``k`` models, each trained on ``k - 1``
    stratified folds of the pooled data and evaluated on the remaining one
    (:func:`~robustlab.crossval.cross_validate`).

    The spread of the per-fold accuracies (sample standard deviation, ddof 1) says how much
    the number depends on the split; each fold's Wilson interval says how much it depends on
    which examples were drawn. :meth:`spread_exceeds_sampling` compares the two: a standard
    deviation across folds larger than the mean Wilson half-width means the split (training
    data, training randomness) moves the number more than sampling the test examples does.

    ``method`` is the training method (``standard``, ``pgd``, ``trades``, ``fgsm_rs``),
    ``attacks`` the attack labels, ``dataset`` :meth:`Dataset.describe
    <robustlab.data.Dataset.describe>` of the pooled data, ``training`` the training
    settings (epochs, batch size, ε, ...)."""

    k: int
    seed: int
    method: str
    norm: Norm
    epsilons: tuple[float, ...]
    attacks: tuple[str, ...]
    dataset: dict[str, Any]
    folds: tuple[FoldResult, ...]
    seconds: float
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValidationError(f"expected k >= 2 folds (a standard deviation needs two), "
                                  f"got {self.k}")
        if len(self.folds) != self.k:
            raise ValidationError(f"expected k={self.k} folds, got {len(self.folds)}")
        for fold in self.folds:
            eps = tuple(p.epsilon for p in fold.worst_case)
            if len(eps) != len(self.epsilons) or not all(
                    math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                    for a, b in zip(eps, self.epsilons, strict=True)):
                raise ValidationError(f"expected fold {fold.fold}'s worst case at epsilons "
                                      f"{list(self.epsilons)}, got {list(eps)}")

    @property
    def clean(self) -> tuple[float, ...]:
        """Clean accuracy per fold."""
        return tuple(f.clean_accuracy for f in self.folds)

    @property
    def clean_mean(self) -> float:
        return float(np.mean(self.clean))

    @property
    def clean_sd(self) -> float:
        """Sample standard deviation (ddof 1) of the clean accuracy across folds."""
        return _sd(self.clean)

    @property
    def clean_halfwidth(self) -> float:
        """Mean over folds of the clean accuracy's Wilson half-width."""
        return float(np.mean([(f.clean_ci[1] - f.clean_ci[0]) / 2 for f in self.folds]))

    def robust_at(self, epsilon: float) -> tuple[float, ...]:
        """Worst-case robust accuracy per fold at ``epsilon``."""
        return tuple(f.accuracy_at(epsilon) for f in self.folds)

    def robust_mean(self, epsilon: float) -> float:
        return float(np.mean(self.robust_at(epsilon)))

    def robust_sd(self, epsilon: float) -> float:
        """Sample standard deviation (ddof 1) across folds at ``epsilon``."""
        return _sd(self.robust_at(epsilon))

    def sampling_halfwidth(self, epsilon: float) -> float:
        """Mean over folds of the Wilson interval's half-width ``(high - low) / 2`` at
        ``epsilon``: the spread that sampling the test examples alone would explain."""
        points = [f.point_at(epsilon) for f in self.folds]
        return float(np.mean([(p.ci_high - p.ci_low) / 2 for p in points]))

    def spread_exceeds_sampling(self, epsilon: float) -> bool:
        """True if the standard deviation across folds at ``epsilon`` is larger than the
        mean Wilson half-width (:meth:`sampling_halfwidth`)."""
        return self.robust_sd(epsilon) > self.sampling_halfwidth(epsilon)

    def summary(self) -> list[dict[str, Any]]:
        """One row per ε: ``epsilon``, ``mean``, ``sd``, ``min``, ``max`` (over folds),
        ``halfwidth`` (mean Wilson half-width) and ``spread_exceeds_sampling``."""
        rows = []
        for eps in self.epsilons:
            acc = self.robust_at(eps)
            rows.append({"epsilon": eps, "mean": self.robust_mean(eps),
                         "sd": self.robust_sd(eps), "min": float(min(acc)),
                         "max": float(max(acc)), "halfwidth": self.sampling_halfwidth(eps),
                         "spread_exceeds_sampling": self.spread_exceeds_sampling(eps)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no arrays, no NaN)."""
        return {"k": self.k, "seed": self.seed, "method": self.method,
                "norm": self.norm.value, "epsilons": list(self.epsilons),
                "attacks": list(self.attacks), "dataset": self.dataset,
                "training": _plain(self.training), "seconds": self.seconds,
                "clean_mean": self.clean_mean, "clean_sd": self.clean_sd,
                "clean_halfwidth": self.clean_halfwidth, "summary": self.summary(),
                "folds": [f.to_dict() for f in self.folds]}

    def __repr__(self) -> str:
        data = str(self.dataset.get("name", "data"))
        lines = [f"CrossValidationResult({data}, {self.k} folds, {self.method} training, "
                 f"{self.norm.value}; clean {100 * self.clean_mean:.1f}% "
                 f"sd {100 * self.clean_sd:.1f})",
                 "  worst case over " + ", ".join(self.attacks) + " (mean, sd across folds, "
                 "mean Wilson half-width):"]
        lines += [f"    ε {r['epsilon']:<8g} {100 * r['mean']:5.1f}% sd {100 * r['sd']:.1f}, "
                  f"Wilson ±{100 * r['halfwidth']:.1f}"
                  + ("  (spread > sampling)" if r["spread_exceeds_sampling"] else "")
                  for r in self.summary()]
        return "\n".join(lines)

    def _repr_html_(self) -> str | None:
        return render_html(self)


def summary_text(result: EvaluationResult) -> str:
    """A few lines: clean accuracy, worst-case accuracy per ε, the checks' verdict."""
    name = str(result.model.get("name", "model"))
    data = str(result.dataset.get("name", "data"))
    short = lambda text: text if len(text) <= 40 else text[:39] + "…"  # noqa: E731
    lines = [f"EvaluationResult({short(name)} on {short(data)}, {result.n_examples} examples, "
             f"{result.norm.value}; clean {100 * result.clean_accuracy:.1f}% "
             f"[{100 * result.clean_ci[0]:.1f}, {100 * result.clean_ci[1]:.1f}])",
             "  worst case over " + ", ".join(c.label for c in result.curves) + ":"]
    lines += [f"    ε {p.epsilon:<8g} {100 * p.accuracy:5.1f}% "
              f"[{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]"
              for p in result.worst_case.points]
    bad = [c.name for c in result.checks if c.status in (Status.FAIL, Status.WARN)]
    lines.append(f"  trust: {result.trust.value}" + (f" ({', '.join(bad)})" if bad else "")
                 + ("" if result.checks else " (no sanity checks ran)"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# membership inference (robustlab.membership)


@dataclass(frozen=True)
class OperatingPoint:
    """One low-FPR operating point of a membership attack: the threshold is set on the
    non-members' scores so that the empirical FPR (``fpr``) is at most ``target_fpr``;
    ``tpr`` is the fraction of members flagged, with its 95% Wilson interval over the
    members (the threshold taken as fixed), and ``fpr_interval`` the 95% Wilson interval of
    the FPR over the non-members (an empirical FPR of 0 on 200 non-members is consistent with
    a true FPR up to 1.9%). ``below_resolution``: ``target_fpr`` is below
    ``1 / n_nonmembers``, so the point was measured at FPR 0 (the smallest measurable)."""

    target_fpr: float
    fpr: float
    tpr: float
    tpr_interval: tuple[float, float]
    threshold: float
    below_resolution: bool
    fpr_interval: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class MembershipAttack:
    """How well one membership-inference attack tells members from non-members.

    ``auc`` with its 95% Hanley–McNeil interval; ``points`` the TPR at 1% and 0.1% FPR
    (:class:`OperatingPoint`); ``advantage`` = max(TPR − FPR) (Yeom et al. 2018);
    ``roc_fpr``/``roc_tpr`` the ROC curve downsampled to at most 200 points, dense at the
    low-FPR end (for a log-log plot); ``n_members``/``n_nonmembers`` the examples scored
    (for ART's attack, the held-out halves); ``notes`` what is special about the numbers."""

    name: str
    auc: float
    auc_interval: tuple[float, float]
    points: tuple[OperatingPoint, ...]
    advantage: float
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]
    n_members: int
    n_nonmembers: int
    notes: str = ""

    @property
    def fpr_resolution(self) -> float:
        """The smallest non-zero FPR measurable on these non-members: ``1 / n_nonmembers``."""
        return 1.0 / self.n_nonmembers

    def at(self, fpr: float) -> OperatingPoint:
        """The operating point measured at target FPR ``fpr`` (0.01 or 0.001)."""
        return _lookup(self.points, "target_fpr", fpr, name="fpr")

    @property
    def tpr_at_1pct(self) -> float:
        return self.at(0.01).tpr

    @property
    def tpr_at_01pct(self) -> float:
        return self.at(0.001).tpr

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(auc_interval=list(self.auc_interval), roc_fpr=list(self.roc_fpr),
                   roc_tpr=list(self.roc_tpr))
        out["fpr_resolution"] = self.fpr_resolution
        # -inf / +inf thresholds are not JSON: written as None
        for point in out["points"]:
            point["tpr_interval"] = list(point["tpr_interval"])
            point["fpr_interval"] = list(point["fpr_interval"])
            if not math.isfinite(point["threshold"]):
                point["threshold"] = None
        return out


def _dp_bound(epsilon: Any, delta: Any, fpr: Any) -> float:
    return dp_tpr_bound(check_float("epsilon", epsilon, low=0.0),
                        check_float("delta", delta, low=0.0, high=1.0),
                        check_float("fpr", fpr, low=0.0, high=1.0))


@dataclass(frozen=True, eq=False)
class MembershipAudit:
    """A membership-inference audit of one model (:func:`~robustlab.membership.
    membership_audit`): members are its training examples, non-members held-out ones.

    ``attacks`` holds one :class:`MembershipAttack` per attack (``loss``, ``lira``,
    ``art-blackbox``); ``shadows`` the number of LiRA shadow models, ``seed`` the seed;
    ``fpr_resolution`` = 1 / number of non-members (FPRs below it cannot be measured);
    ``model``/``dataset`` the names; ``seconds`` the wall time (shadow training included);
    ``notes`` audit-wide remarks (resolution limits, subsampling)."""

    attacks: tuple[MembershipAttack, ...]
    shadows: int
    seed: int
    fpr_resolution: float
    seconds: float
    model: str
    dataset: str
    n_members: int
    n_nonmembers: int
    notes: tuple[str, ...] = ()

    def attack(self, name: str) -> MembershipAttack:
        """The attack called ``name`` (``loss``, ``lira`` or ``art-blackbox``)."""
        for attack in self.attacks:
            if attack.name == name:
                return attack
        raise ValidationError(f"expected name to be one of "
                              f"{[a.name for a in self.attacks]}, got {name!r}")

    def dp_bound(self, epsilon: float, delta: float, fpr: float = 0.001) -> float:
        """The largest TPR any attack may reach at ``fpr`` against an (ε, δ)-DP training
        algorithm: ``min(e^ε·FPR + δ, 1 − e^{−ε}(1 − δ − FPR))`` clipped to [0, 1] (Kairouz
        et al. 2015, https://arxiv.org/abs/1311.0776; see
        :func:`robustlab.stats.dp_tpr_bound`).

        Example:
            >>> audit.dp_bound(1.0, 1e-5, fpr=0.01)  # e * 0.01 + 1e-5
            0.027192...
        """
        return _dp_bound(epsilon, delta, fpr)

    def consistent_with(self, epsilon: float, delta: float) -> bool:
        """True if no attack's measured TPR contradicts (ε, δ)-DP: at each operating point
        the lower end of the TPR's Wilson interval is at most the DP bound at the upper end
        of the FPR's Wilson interval (both ends 95%, so a False holds at about 90% per
        point, before correcting for the several points tested). Taking the FPR's upper end
        matters at low FPR: a threshold with no false positive on a few hundred non-members
        does not show a true FPR of 0, where the bound would be δ alone (Jagielski et al.
        2020, https://arxiv.org/abs/2006.07709, bound both rates the same way)."""
        return all(point.tpr_interval[0]
                   <= self.dp_bound(epsilon, delta, point.fpr_interval[1])
                   for attack in self.attacks for point in attack.points)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no arrays, no NaN or infinity)."""
        return {"model": self.model, "dataset": self.dataset, "shadows": self.shadows,
                "seed": self.seed, "fpr_resolution": self.fpr_resolution,
                "seconds": self.seconds, "n_members": self.n_members,
                "n_nonmembers": self.n_nonmembers, "notes": list(self.notes),
                "attacks": [a.to_dict() for a in self.attacks]}

    def __repr__(self) -> str:
        lines = [f"MembershipAudit({self.model} on {self.dataset}, {self.n_members} members, "
                 f"{self.n_nonmembers} non-members, {self.shadows} shadows)"]
        for a in self.attacks:
            lines.append(f"  {a.name:<13} AUC {a.auc:.3f} [{a.auc_interval[0]:.3f}, "
                         f"{a.auc_interval[1]:.3f}]  TPR@1% {100 * a.tpr_at_1pct:.1f}%  "
                         f"TPR@0.1% {100 * a.tpr_at_01pct:.1f}%  advantage {a.advantage:.3f}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class PrivacyResult:
    """What a model gives away about its training data: how it was trained (``training``:
    the DP-SGD record of :class:`~robustlab.training.TrainingResult` ``.privacy`` — ε, δ,
    σ, C, q, steps, accountant, sampling — or None for a model trained without DP) and what
    an audit measured (``audit``, a :class:`MembershipAudit`, or None). The report's
    "Privacy" section and the comparison's privacy columns are rendered from it."""

    training: dict[str, Any] | None = None
    audit: MembershipAudit | None = None

    def __post_init__(self) -> None:
        if self.training is not None and not isinstance(self.training, dict):
            raise ValidationError(f"expected training to be a TrainingResult.privacy dict or "
                                  f"None, got {type(self.training).__name__}")
        if self.audit is not None and not isinstance(self.audit, MembershipAudit):
            raise ValidationError(f"expected audit to be a MembershipAudit or None, got "
                                  f"{type(self.audit).__name__}")
        if self.training is None and self.audit is None:
            raise ValidationError("expected training, audit or both, got neither")

    @property
    def epsilon(self) -> float | None:
        """ε spent (at :attr:`delta`), None without DP training (no guarantee)."""
        value = (self.training or {}).get("epsilon")
        return None if value is None else float(value)

    @property
    def delta(self) -> float | None:
        value = (self.training or {}).get("delta")
        return None if value is None else float(value)

    def strongest(self) -> MembershipAttack | None:
        """The audit's attack with the highest TPR at 0.1% FPR (ties: the higher AUC)."""
        if self.audit is None or not self.audit.attacks:
            return None
        return max(self.audit.attacks, key=lambda a: (a.tpr_at_01pct, a.auc))

    def bound(self, fpr: float = 0.001) -> float | None:
        """The DP bound on any attack's TPR at ``fpr`` (None without DP training)."""
        if self.epsilon is None or self.delta is None:
            return None
        return _dp_bound(self.epsilon, self.delta, fpr)

    def consistent(self) -> bool | None:
        """Whether the audit's measurements are consistent with the training's (ε, δ)
        (:meth:`MembershipAudit.consistent_with`); None when either is missing."""
        if self.audit is None or self.epsilon is None or self.delta is None:
            return None
        return self.audit.consistent_with(self.epsilon, self.delta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"training": None if self.training is None else _plain(dict(self.training)),
                "audit": None if self.audit is None else self.audit.to_dict(),
                "epsilon": self.epsilon, "delta": self.delta, "bound_tpr_at_0.1pct_fpr":
                self.bound(), "consistent": self.consistent()}

    def __repr__(self) -> str:
        head = ("trained without DP" if self.epsilon is None else
                f"DP-SGD: ε = {self.epsilon:.3g} at δ = {self.delta:g}")
        return head + ("" if self.audit is None else "\n" + repr(self.audit))

    def _repr_html_(self) -> str | None:
        return render_html(self)


# ---------------------------------------------------------------------------------------------
# poisoning: inspections of a training set and the poison -> inspect -> sanitise loop


def _recall_at_precision(scores: np.ndarray, truth: np.ndarray, precision: float) -> float:
    """The largest recall a threshold on ``scores`` reaches at precision >= ``precision``
    (0 when none does). A threshold cannot split tied scores: only the ends of runs of
    equal scores are operating points."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    hits = np.cumsum(truth[order])
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))  # last of each tie
    ok = hits[ends] / (ends + 1) >= precision
    return float(hits[ends][ok].max() / truth.sum()) if ok.any() and truth.sum() else 0.0


@dataclass(frozen=True, eq=False)
class Inspection:
    """Poison scores of a training set from one detector
    (:func:`~robustlab.poisoning.inspect_training_set`).

    ``scores`` ``(N,)``: one per training example, higher = more suspicious within its
    class (for ours the robust z-score of the log detector score within the class, plus
    3 × the label disagreement for the more suspicious half of the class; 0/1 for a
    detector that only flags; so AUROCs of ours include the label check).
    ``labels`` ``(N,)``: the training labels inspected.
    ``class_p_values``: per class, the binomial tail of the most surprising head of the
    detector's ranking — how unlikely its count of label-inconsistent examples is at the
    rate of the class's less suspicious half (a scan statistic; NaN where the detector has
    no test). ``flagged_classes``: classes the detector calls poisoned.
    ``flagged`` (sorted indices): the examples it would remove. ``seconds``: its run time.
    ``class_evidence``: per class, the combined z-score of backdoor evidence the decision
    used (empty for ART's detectors)."""

    detector: str
    scores: np.ndarray
    labels: np.ndarray
    flagged: np.ndarray
    flagged_classes: tuple[int, ...]
    class_p_values: dict[int, float]
    expected_rate: float
    seconds: float = 0.0
    class_evidence: dict[int, float] = field(default_factory=dict)

    @property
    def n_flagged(self) -> int:
        return int(len(self.flagged))

    def suspicious(self, fraction: float | None = None) -> np.ndarray:
        """Indices to remove: :attr:`flagged` (``fraction`` None), or the top ``fraction``
        of every flagged class by score (``1.5 × expected_rate`` is Tran et al.'s rule)."""
        if fraction is None:
            return self.flagged
        share = check_float("fraction", fraction, low=0.0, low_open=True, high=1.0)
        out = []
        for c in self.flagged_classes:
            idx = np.flatnonzero(self.labels == c)
            k = max(1, int(round(share * len(idx))))
            out.append(idx[np.argsort(self.scores[idx], kind="stable")[::-1][:k]])
        return np.sort(np.concatenate(out)) if out else np.empty(0, np.int64)

    def metrics(self, poison: np.ndarray) -> dict[str, float]:
        """How this inspection did against the ground truth ``poison`` (indices): precision
        and recall of :attr:`flagged` (over the whole training set); AUROC of :attr:`scores`
        and the best recall any threshold on them reaches at precision >= 80%, both within
        the classes that hold poison (scores rank examples within a class)."""
        truth = np.zeros(len(self.scores), bool)
        truth[np.asarray(poison, np.int64)] = True
        hits = int(truth[self.flagged].sum())
        held = np.isin(self.labels, np.unique(self.labels[truth]))
        scores, inside = self.scores[held], truth[held]
        auroc = (roc_auc(scores[inside], scores[~inside])
                 if inside.any() and (~inside).any() else float("nan"))
        return {"precision": hits / self.n_flagged if self.n_flagged else float("nan"),
                "recall": hits / int(truth.sum()) if truth.any() else float("nan"),
                "auroc": float(auroc),
                "recall_at_80pct_precision": _recall_at_precision(scores, inside, 0.8),
                "n_flagged": self.n_flagged, "n_poison": int(truth.sum())}

    def to_dict(self, poison: np.ndarray | None = None) -> dict[str, Any]:
        """JSON-ready dict (without the per-example scores); with ``poison``, the metrics."""
        out: dict[str, Any] = {
            "detector": self.detector, "flagged_classes": list(self.flagged_classes),
            "n_flagged": self.n_flagged, "expected_rate": self.expected_rate,
            "class_p_values": {str(c): (None if math.isnan(p) else p)
                               for c, p in self.class_p_values.items()},
            "class_evidence": {str(c): v for c, v in self.class_evidence.items()},
            "seconds": self.seconds}
        if poison is not None:
            out["metrics"] = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in self.metrics(poison).items()}
        return out

    def __repr__(self) -> str:
        return (f"Inspection({self.detector}: flagged classes {list(self.flagged_classes)}, "
                f"{self.n_flagged} examples)")


@dataclass(frozen=True)
class ModelOutcome:
    """One model of the poisoning loop: its clean test accuracy and, for a backdoor, its
    attack success rate (triggered test inputs of other classes classified as the target),
    both with 95% Wilson intervals; ``n_train``: the training examples it was trained on."""

    name: str
    n_train: int
    clean_accuracy: float
    clean_interval: tuple[float, float]
    attack_success: float | None = None
    attack_interval: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class PoisoningResult:
    """The poisoning lab's record (:func:`~robustlab.workflow.poisoning_study`): the attack
    (``attack``: :meth:`~robustlab.poisoning.PoisonedDataset.to_dict`, None for a user's own
    data with no known poison) and its ground truth (``poison``, indices or None); every
    detector's :class:`Inspection` (the first one decided what was removed: ``removed``);
    the models trained (``models``: poisoned, sanitised and, when known, clean); and the
    most suspicious training inputs of the first detector (``suspects``: indices,
    ``suspect_inputs`` ``(k, *input_shape)``) for the report's grid."""

    dataset: str
    class_names: tuple[str, ...]
    attack: dict[str, Any] | None
    poison: np.ndarray | None
    inspections: tuple[Inspection, ...]
    removed: np.ndarray
    models: tuple[ModelOutcome, ...]
    suspects: np.ndarray
    suspect_inputs: np.ndarray
    n_train: int
    seed: int = 0
    feature_names: tuple[str, ...] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.inspections:
            raise ValidationError("expected at least one inspection, got none")

    @property
    def primary(self) -> Inspection:
        """The inspection that decided what was removed."""
        return self.inspections[0]

    def model(self, name: str) -> ModelOutcome | None:
        """The model outcome called ``name`` (``poisoned``, ``sanitised``, ``clean``)."""
        return next((m for m in self.models if m.name == name), None)

    def metrics(self) -> dict[str, dict[str, float]]:
        """Per detector, :meth:`Inspection.metrics` against the ground truth ({} without)."""
        if self.poison is None:
            return {}
        return {i.detector: i.metrics(self.poison) for i in self.inspections}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"dataset": self.dataset, "class_names": list(self.class_names),
                "attack": self.attack, "n_train": self.n_train, "seed": self.seed,
                "poison": None if self.poison is None else self.poison.tolist(),
                "inspections": [i.to_dict(self.poison) for i in self.inspections],
                "removed": self.removed.tolist(), "suspects": self.suspects.tolist(),
                "models": [_plain(m) for m in self.models],
                "parameters": _plain(dict(self.parameters))}

    def __repr__(self) -> str:
        lines = [f"poisoning lab on {self.dataset}: "
                 + ("no known attack" if self.attack is None else
                    f"{self.attack.get('attack')} ({self.attack.get('n_poison')} poisoned)")]
        lines += [f"  {i!r}" for i in self.inspections]
        for m in self.models:
            asr = ("" if m.attack_success is None else
                   f", attack success {100 * m.attack_success:.1f}%")
            lines.append(f"  {m.name}: clean {100 * m.clean_accuracy:.1f}%{asr}")
        return "\n".join(lines)

    def _repr_html_(self) -> str | None:
        return render_html(self)


# ---------------------------------------------------------------------------------------------
# monitoring: input detectors against attacks, shifts and an adaptive attacker


def _json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also inside dicts, lists and tuples, and
    NumPy scalars) as None: JSON has no NaN, and a detector with nothing to detect has an
    AUROC of NaN (in its intervals and its check's values too)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


@dataclass(frozen=True)
class Detection:
    """How well one detector tells one condition's inputs from clean ones
    (:func:`~robustlab.monitor.evaluate_monitor`).

    ``condition``: the attack (``fgsm``, ``pgd``, ``adaptive``) or shift (``noise``, ``blur``,
    ``rotation``, ``contrast``, or another dataset's name); ``kind``: ``attack``,
    ``adaptive`` or ``shift``; ``epsilon``: the attack budget (None for shifts).
    Positives are the attack's successful adversarial examples (the model is fooled) or all
    shifted inputs; negatives are the clean evaluation inputs. ``auroc`` (NaN without
    positives) with its Hanley-McNeil 95% interval; ``detected``: the fraction of positives
    flagged at the monitor's threshold (Wilson interval); ``tpr_at_5``: the TPR at 5% FPR
    on these negatives."""

    condition: str
    kind: str
    epsilon: float | None
    detector: str
    auroc: float
    auroc_interval: tuple[float, float]
    detected: float
    detected_interval: tuple[float, float]
    tpr_at_5: float
    positives: int
    negatives: int


@dataclass(frozen=True)
class DefendedAccuracy:
    """Robust accuracy at one budget, of the model alone and of the model + one detector,
    where the attacker wins an example only if the model misclassifies it *and* the
    detector does not flag it. ``attack``: ``pgd`` (the non-adaptive attack) or
    ``adaptive`` (per example the worse of non-adaptive PGD and the adaptive attack on the
    model + detector). ``surrogate``: the detector the adaptive attack differentiated (its
    own name, or ``knn`` for ``iforest``). Intervals: Wilson 95%, over ``n`` inputs."""

    detector: str
    attack: str
    epsilon: float
    model_accuracy: float
    model_interval: tuple[float, float]
    defended_accuracy: float
    defended_interval: tuple[float, float]
    n: int
    surrogate: str = ""


@dataclass(frozen=True)
class DriftRate:
    """How often the batch drift test fired on ``batches`` random batches of
    ``batch_size`` evaluation inputs under one condition (``clean``: the false-alarm rate),
    with a Wilson 95% interval and the median p-value. The batches are drawn from one
    evaluation set and overlap, so the interval (which treats them as independent) is
    narrower than the rate's real uncertainty."""

    condition: str
    batches: int
    fired: int
    rate: float
    interval: tuple[float, float]
    median_p: float
    batch_size: int


@dataclass(frozen=True, eq=False)
class MonitorEvaluation:
    """A monitor evaluated on held-out data (:func:`~robustlab.monitor.evaluate_monitor`):
    per detector its false-positive rate on the clean evaluation inputs (``clean_flagged``),
    its :class:`Detection` of each attack and shift, the :class:`DefendedAccuracy` of the
    model + detector under non-adaptive and adaptive attacks, the drift test's
    :class:`DriftRate` per condition, and the sanity checks (``checks``) that fail where a
    detector's claim collapses under the adaptive attack. ``samples``: per condition and
    detector, the scores behind the histograms (clean, and per attack at the largest
    budget)."""

    dataset: str
    detectors: tuple[str, ...]
    detector: str
    thresholds: dict[str, float]
    fpr: float
    n: int
    clean_accuracy: float
    clean_flagged: dict[str, float]
    detections: tuple[Detection, ...]
    defended: tuple[DefendedAccuracy, ...]
    drift: tuple[DriftRate, ...]
    checks: tuple[Check, ...]
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seed: int = 0
    seconds: float = 0.0
    parameters: dict[str, Any] = field(default_factory=dict)

    def detection(self, condition: str, detector: str, epsilon: float | None = None
                  ) -> Detection:
        """The :class:`Detection` of ``detector`` on ``condition`` (at ``epsilon``: the
        largest budget when None)."""
        rows = [d for d in self.detections if d.condition == condition
                and d.detector == detector]
        if not rows:
            raise ValidationError(f"expected condition and detector among the evaluation's, "
                                  f"got {condition!r}, {detector!r}")
        if epsilon is None:
            return max(rows, key=lambda d: -1.0 if d.epsilon is None else d.epsilon)
        return _lookup(rows, "epsilon", epsilon, name="epsilon")

    def collapsed(self) -> tuple[str, ...]:
        """Detectors whose claim failed the adaptive sanity check at some budget (each
        once, in the order of ``detectors``)."""
        failed = {c.values.get("detector") for c in self.checks if c.status is Status.FAIL}
        return tuple(d for d in self.detectors if d in failed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the per-input ``samples`` are left out; NaN as None)."""
        return _json_ready({
            "dataset": self.dataset, "detectors": list(self.detectors),
            "detector": self.detector, "thresholds": dict(self.thresholds),
            "fpr": self.fpr, "n": self.n, "clean_accuracy": self.clean_accuracy,
            "clean_flagged": dict(self.clean_flagged),
            "detections": [_plain(d) for d in self.detections],
            "defended": [_plain(d) for d in self.defended],
            "drift": [_plain(d) for d in self.drift],
            "checks": [c.to_dict() for c in self.checks],
            "seed": self.seed, "seconds": self.seconds,
            "parameters": _plain(dict(self.parameters))})

    def __repr__(self) -> str:
        lines = [f"monitor evaluation on {self.dataset} ({self.n} inputs, thresholds at "
                 f"{100 * self.fpr:g}% FPR)"]
        for d in self.detections:
            if d.kind != "shift":
                eps = "" if d.epsilon is None else f" ε={d.epsilon:g}"
                lines.append(f"  {d.detector:>11} vs {d.condition}{eps}: AUROC {d.auroc:.3f}, "
                             f"detects {100 * d.detected:.1f}%")
        lines += [f"  {c.status.value.upper()}: {c.evidence}" for c in self.checks]
        return "\n".join(lines)

    def _repr_html_(self) -> str | None:
        return render_html(self)
