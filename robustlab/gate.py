"""The CI gate: bless a ``report.json`` against a policy, or refuse it with reasons.

A policy is a small YAML file::

    min_clean_accuracy: 0.95        # fraction, not percent
    min_robust_accuracy:            # worst case over attacks, per ε (pixel units)
      0.1: 0.50
      "8/255": 0.30
    use_lower_bound: true           # compare the 95% interval's lower end (stricter)
    max_drop: 0.02                  # largest allowed fall vs the baseline report, any ε
    baseline: baseline/report.json  # relative to the policy file; --baseline overrides
    allow_failed_checks: false      # a failed sanity check refuses the report
    allow_warnings: true

``robustlab gate report.json --policy policy.yaml`` writes ``blessing.json`` next to the
report (blessed or not, with every reason) and exits 0 when blessed, 1 when not, 2 when the
report or policy cannot be read.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustlab._io import sha256_file, write_json
from robustlab._validate import check_float, parse_float
from robustlab.errors import InputTypeError, ValidationError

__all__ = ["Policy", "Blessing", "gate", "load_report"]


def _read(path: Path, what: str, kind: str, parse: Callable[[str], Any],
          error: type[Exception]) -> Any:
    """``parse`` the text of ``path``; an unreadable or malformed file is a ValidationError
    naming the file."""
    try:
        return parse(path.read_text("utf-8"))
    except OSError as exc:
        raise ValidationError(f"expected a readable {what} file, got {str(path)!r}: "
                              f"{exc.strerror}") from None
    except error as exc:
        raise ValidationError(f"expected {what} {str(path)!r} to be {kind}: {exc}") from None


@dataclass(frozen=True)
class Policy:
    """Thresholds a report must meet (accuracies as fractions in [0, 1])."""

    min_clean_accuracy: float | None = None
    min_robust_accuracy: dict[float, float] = field(default_factory=dict)
    use_lower_bound: bool = False
    max_drop: float | None = None
    baseline: str | None = None
    allow_failed_checks: bool = False
    allow_warnings: bool = True

    def __post_init__(self) -> None:
        if self.min_clean_accuracy is not None:
            object.__setattr__(self, "min_clean_accuracy", check_float(
                "min_clean_accuracy", self.min_clean_accuracy, low=0.0, high=1.0))
        if self.max_drop is not None:
            object.__setattr__(self, "max_drop", check_float("max_drop", self.max_drop,
                                                             low=0.0, high=1.0))
        if not isinstance(self.min_robust_accuracy, dict):
            raise InputTypeError(f"expected min_robust_accuracy to map epsilon to accuracy, "
                                 f"got {self.min_robust_accuracy!r}")
        table = {}
        for eps, acc in self.min_robust_accuracy.items():
            e = parse_float("min_robust_accuracy epsilon", eps)
            if not (math.isfinite(e) and e >= 0):
                raise ValidationError(f"expected min_robust_accuracy epsilons >= 0, got {eps!r}")
            table[e] = check_float(f"min_robust_accuracy[{eps}]", acc, low=0.0, high=1.0)
        object.__setattr__(self, "min_robust_accuracy", table)
        for name in ("use_lower_bound", "allow_failed_checks", "allow_warnings"):
            if not isinstance(getattr(self, name), bool):
                raise InputTypeError(f"expected {name} to be true or false, got "
                                     f"{getattr(self, name)!r}")

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a YAML policy; unknown keys are refused (a typo must not loosen the gate).
        A relative ``baseline`` is resolved against the policy file's folder."""
        import yaml

        path = Path(path)
        data = _read(path, "policy", "YAML", yaml.safe_load, yaml.YAMLError)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValidationError(f"expected policy {str(path)!r} to be a mapping of settings, "
                                  f"got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ValidationError(f"expected policy settings among {sorted(known)}, got "
                                  f"unknown {unknown} in {str(path)!r}")
        if data.get("baseline"):
            data["baseline"] = str((path.parent / str(data["baseline"])).resolve())
        return cls(**data)


@dataclass(frozen=True)
class Blessing:
    """The gate's verdict. ``reasons`` say why it was refused (empty when blessed);
    ``passed`` what was verified."""

    blessed: bool
    reasons: tuple[str, ...]
    passed: tuple[str, ...]
    report: str
    report_sha256: str
    baseline: str | None
    policy: dict[str, Any]
    time: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["policy"] = {**self.policy, "min_robust_accuracy": {
            str(k): v for k, v in self.policy["min_robust_accuracy"].items()}}
        return out


def load_report(path: str | Path) -> dict[str, Any]:
    """A ``report.json`` written by :func:`robustlab.write_report`, checked for the fields the
    gate reads."""
    path = Path(path)
    data = _read(path, "report", "JSON", json.loads, json.JSONDecodeError)
    missing = [k for k in ("clean_accuracy", "clean_ci", "worst_case", "epsilons")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValidationError(f"expected a robustlab report.json, but {str(path)!r} has no "
                              f"{missing}")
    return data


def _point(report: dict[str, Any], eps: float) -> dict[str, Any] | None:
    for p in report["worst_case"]["points"]:
        if math.isclose(p["epsilon"], eps, rel_tol=1e-6, abs_tol=1e-9):
            return p
    return None


def gate(report: str | Path, policy: Policy | str | Path,
         baseline: str | Path | None = None) -> Blessing:
    """Judge ``report`` (a ``report.json`` path) against ``policy`` (a :class:`Policy` or a
    YAML path); ``baseline`` (a report path) overrides the policy's."""
    policy = policy if isinstance(policy, Policy) else Policy.load(policy)
    data = load_report(report)
    reasons: list[str] = []
    passed: list[str] = []

    def judge(ok: bool, text: str) -> None:
        (passed if ok else reasons).append(text)

    lower = policy.use_lower_bound
    what = "95% lower bound of " if lower else ""
    if policy.min_clean_accuracy is not None:
        value = data["clean_ci"][0] if lower else data["clean_accuracy"]
        judge(value >= policy.min_clean_accuracy,
              f"{what}clean accuracy {100 * value:.2f}% vs minimum "
              f"{100 * policy.min_clean_accuracy:.2f}%")
    for eps, minimum in sorted(policy.min_robust_accuracy.items()):
        point = _point(data, eps)
        if point is None:
            reasons.append(f"report has no ε {eps:g} (it has {data['epsilons']})")
            continue
        value = point["ci_low"] if lower else point["accuracy"]
        judge(value >= minimum, f"{what}worst-case robust accuracy at ε {eps:g} "
              f"{100 * value:.2f}% vs minimum {100 * minimum:.2f}%")
    checks = data.get("checks", [])
    if not checks and not policy.allow_failed_checks:
        reasons.append("report has no sanity checks (evaluate with checks=True)")
    for check in checks:
        status = check.get("status")
        if status == "fail" and not policy.allow_failed_checks:
            reasons.append(f"check {check.get('name')} failed: {check.get('evidence')}")
        elif status == "warn" and not policy.allow_warnings:
            reasons.append(f"check {check.get('name')} warned: {check.get('evidence')}")
    if checks and not any(r.startswith("check ") for r in reasons):
        passed.append(f"{len(checks)} sanity checks: " + ", ".join(
            f"{c.get('name')} {c.get('status')}" for c in checks))
    base_path = baseline if baseline is not None else policy.baseline
    if policy.max_drop is not None:
        if base_path is None:
            raise ValidationError("expected a baseline report (policy 'baseline' or "
                                  "--baseline) because the policy sets max_drop")
        base = load_report(base_path)
        pairs = [("clean accuracy", base["clean_accuracy"], data["clean_accuracy"])]
        for bp in base["worst_case"]["points"]:
            if bp["epsilon"] == 0:
                continue
            point = _point(data, bp["epsilon"])
            if point is None:
                reasons.append(f"report has no ε {bp['epsilon']:g} to compare with the "
                               f"baseline")
                continue
            pairs.append((f"worst-case accuracy at ε {bp['epsilon']:g}", bp["accuracy"],
                          point["accuracy"]))
        for name, before, now in pairs:
            drop = before - now
            judge(drop <= policy.max_drop + 1e-12,
                  f"{name} {100 * now:.2f}% vs baseline {100 * before:.2f}% (drop "
                  f"{100 * drop:.2f} pt, maximum {100 * policy.max_drop:.2f} pt)")
    digest = sha256_file(report)
    return Blessing(
        blessed=not reasons, reasons=tuple(reasons), passed=tuple(passed),
        report=str(report), report_sha256=digest,
        baseline=None if base_path is None else str(base_path), policy=asdict(policy),
        time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def write_blessing(blessing: Blessing, path: str | Path) -> Path:
    """Write the verdict as JSON (atomically)."""
    return write_json(path, blessing.to_dict())
