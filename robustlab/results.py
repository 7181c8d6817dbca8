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
from robustlab.attacks import AttackSpec
from robustlab.errors import ValidationError
from robustlab.types import Norm, ThreatModel

__all__ = ["Status", "Check", "Convergence", "CurvePoint", "AttackCurve", "Example",
           "ClassAccuracy", "EvaluationResult", "Comparison", "summary_text"]


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


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Everything a robustness report shows. ``example_images`` (clean and adversarial
    arrays of the shown examples), ``robust_mask`` (``(n_examples, len(epsilons))`` bool:
    example ``i`` survived every attack at ``epsilons[j]``) and ``attack_masks`` (the same
    per attack label) stay out of ``to_dict()``.

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

    @property
    def specs(self) -> tuple[AttackSpec, ...]:
        """The attacks the evaluation ran, in order."""
        return tuple(c.spec for c in self.curves if c.spec is not None)

    def threat(self, epsilon: float) -> ThreatModel:
        """The threat model the evaluation used at ``epsilon`` (its norm and bounds)."""
        return ThreatModel(float(epsilon), self.norm, self.bounds)

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
                "worst_case", "checks", "convergence", "norm"}
        out = {f.name: _plain(getattr(self, f.name))
               for f in dataclasses.fields(self) if f.name not in skip}
        out.update(norm=self.norm.value, clean_ci=list(self.clean_ci),
                   curves=[c.to_dict() for c in self.curves],
                   worst_case=self.worst_case.to_dict(),
                   checks=[c.to_dict() for c in self.checks],
                   convergence=None if self.convergence is None else self.convergence.to_dict(),
                   trust=self.trust.value)
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
    """

    names: tuple[str, ...]
    results: tuple[EvaluationResult, ...]
    training_seconds: tuple[float | None, ...]
    focus_epsilon: float
    gained: dict[str, tuple[int, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "focus_epsilon": self.focus_epsilon,
                "training_seconds": list(self.training_seconds),
                "gained": {k: list(v) for k, v in self.gained.items()},
                "results": {n: r.to_dict() for n, r in zip(self.names, self.results,
                                                           strict=True)}}

    def __repr__(self) -> str:
        return "\n".join(f"{name}: {summary_text(r).splitlines()[0]}"
                         for name, r in zip(self.names, self.results, strict=True))

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
