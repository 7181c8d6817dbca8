""":class:`AttackSpec`: an attack and its settings, independent of ε, as used by
:func:`robustlab.evaluate` (which sweeps ε) and by the notebooks and CLI (which give strings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robustlab._validate import check_float, check_int, parse_enum, split_list
from robustlab.attacks._core import Loss
from robustlab.attacks._runner import Backend
from robustlab.attacks.fgsm import fgsm
from robustlab.attacks.pgd import DEFAULT_REL_STEP, pgd
from robustlab.errors import InputTypeError, ValidationError

ATTACKS = {"fgsm": fgsm, "pgd": pgd}


@dataclass(frozen=True)
class AttackSpec:
    """An attack with its settings; ε and the norm are given when it runs.

    Attributes:
        name: ``"fgsm"`` or ``"pgd"``.
        steps: PGD steps per restart.
        rel_step_size: PGD step as a fraction of ε (None: Madry's ``2.5 / steps``).
        restarts: PGD restarts (the strongest per example is kept).
        random_start: PGD starts at a random point of the ball.
        loss: ``ce`` or ``margin``.
        backend: ``native``, ``cleverhans`` or ``art``.
    """

    name: str = "pgd"
    steps: int = 40
    rel_step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: Loss = Loss.CE
    backend: Backend = Backend.NATIVE

    def __post_init__(self) -> None:
        name = str(self.name).strip().lower()
        if name not in ATTACKS:
            raise ValidationError(f"expected attack to be one of {', '.join(ATTACKS)}, "
                                  f"got {self.name!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "steps", check_int("steps", self.steps, low=1))
        object.__setattr__(self, "restarts", check_int("restarts", self.restarts, low=1))
        if self.rel_step_size is not None:
            object.__setattr__(self, "rel_step_size", check_float(
                "rel_step_size", self.rel_step_size, low=0.0, low_open=True, high=1.0))
        object.__setattr__(self, "loss", parse_enum("loss", self.loss, Loss))
        object.__setattr__(self, "backend", parse_enum("backend", self.backend, Backend))
        if self.restarts > 1 and not self.random_start:
            raise ValidationError(f"expected random_start=True when restarts > 1, got "
                                  f"restarts={self.restarts}")

    @property
    def label(self) -> str:
        """Short human name, e.g. ``PGD-40×5 (margin)`` or ``FGSM [cleverhans]``."""
        text = "FGSM" if self.name == "fgsm" else f"PGD-{self.steps}"
        if self.name == "pgd" and self.restarts > 1:
            text += f"×{self.restarts}"
        if self.loss is not Loss.CE:
            text += f" ({self.loss.value})"
        if self.backend is not Backend.NATIVE:
            text += f" [{self.backend.value}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(loss=self.loss.value, backend=self.backend.value, label=self.label)
        if self.name == "fgsm":
            for key in ("steps", "rel_step_size", "restarts", "random_start"):
                out.pop(key)
        return out

    def run(self, model: Any, x: Any, y: Any, *, epsilon: float, norm: Any = "linf",
            bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
            batch_size: int | None = None, jit_compile: bool | None = None,
            ids: Any = None) -> np.ndarray:
        """Run the attack at one ε (untargeted, labels ``y``); returns adversarial images.
        ``ids`` number the examples for their random starts (see :func:`pgd`)."""
        common = dict(epsilon=epsilon, norm=norm, bounds=bounds, loss=self.loss,
                      backend=self.backend, batch_size=batch_size, jit_compile=jit_compile,
                      seed=seed, ids=ids)
        if self.name == "fgsm":
            return fgsm(model, x, y, **common)
        rel = DEFAULT_REL_STEP / self.steps if self.rel_step_size is None else self.rel_step_size
        return pgd(model, x, y, steps=self.steps, step_size=min(rel, 1.0) * epsilon or None,
                   random_start=self.random_start, restarts=self.restarts, **common)

    @classmethod
    def parse(cls, value: Any, **defaults: Any) -> AttackSpec:
        """An AttackSpec from a spec, a dict of fields, or a name (``"pgd"``), with
        ``defaults`` for fields the value does not set."""
        if isinstance(value, AttackSpec):
            return value
        if isinstance(value, dict):
            return cls(**{**defaults, **value})
        if isinstance(value, str):
            name = value.strip().lower()
            fields = {k: v for k, v in defaults.items() if not (name == "fgsm" and k in (
                "steps", "rel_step_size", "restarts", "random_start"))}
            return cls(name=name, **fields)
        raise InputTypeError(f"expected an attack name, dict or AttackSpec, got "
                             f"{type(value).__name__} {value!r}")


def parse_attacks(value: Any, **defaults: Any) -> tuple[AttackSpec, ...]:
    """``"fgsm, pgd"`` or a list of names / dicts / specs -> a tuple of AttackSpec.

    ``defaults`` (e.g. ``steps=40, restarts=2``) apply to every attack that uses them.
    """
    items = split_list(value) if isinstance(value, str) else (
        [value] if isinstance(value, (AttackSpec, dict)) else list(value))
    if not items:
        raise ValidationError(f"expected attacks to name at least one attack, got {value!r}")
    specs = tuple(AttackSpec.parse(item, **defaults) for item in items)
    if len(set(specs)) != len(specs):
        raise ValidationError(f"expected each attack once, got {[s.label for s in specs]}")
    return specs
