""":class:`AttackSpec`: an attack and its settings, independent of ε, as used by
:func:`robustlab.evaluate` (which sweeps ε) and by the notebooks and CLI (which give strings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robustlab._validate import check_float, check_int, parse_enum, split_list
from robustlab.attacks import catalogue
from robustlab.attacks._core import Loss
from robustlab.attacks._runner import Backend
from robustlab.attacks.fgsm import fgsm
from robustlab.attacks.pgd import DEFAULT_REL_STEP, pgd
from robustlab.errors import InputTypeError, ValidationError


@dataclass(frozen=True)
class AttackKind:
    """One entry of the attack registry: how to run it and which AttackSpec fields it uses.

    ``run(spec, model, x, y, **common) -> x_adv``; ``fields`` are the spec fields that mean
    something for it; ``shared`` those that take defaults meant for every attack (e.g. the
    notebook's ``pgd_steps``); ``steps`` its default number of iterations (None: no steps).
    """

    title: str
    run: Callable[..., np.ndarray]
    fields: frozenset[str]
    shared: frozenset[str] = frozenset()
    steps: int | None = None
    losses: tuple[Loss, ...] = (Loss.CE,)
    backends: tuple[Backend, ...] = (Backend.ART,)


def _run_fgsm(spec: AttackSpec, model: Any, x: Any, y: Any, **common: Any) -> np.ndarray:
    return fgsm(model, x, y, loss=spec.loss, backend=spec.backend, **common)


def _run_pgd(spec: AttackSpec, model: Any, x: Any, y: Any, **common: Any) -> np.ndarray:
    rel = DEFAULT_REL_STEP / spec.steps if spec.rel_step_size is None else spec.rel_step_size
    return pgd(model, x, y, steps=spec.steps, step_size=min(rel, 1.0) * common["epsilon"]
               or None, random_start=spec.random_start, restarts=spec.restarts,
               loss=spec.loss, backend=spec.backend, **common)


def _run_art(function: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(spec: AttackSpec, model: Any, x: Any, y: Any, **common: Any) -> np.ndarray:
        common.pop("jit_compile", None)
        return function(model, x, y, steps=spec.steps, restarts=spec.restarts,
                        loss=spec.loss.value, **common)
    return run


_GRADIENT = frozenset({"steps", "restarts"})
ATTACKS: dict[str, AttackKind] = {
    "fgsm": AttackKind("FGSM", _run_fgsm, frozenset({"loss", "backend"}),
                       shared=frozenset({"backend"}), losses=(Loss.CE, Loss.MARGIN, Loss.DLR),
                       backends=tuple(Backend)),
    "pgd": AttackKind("PGD", _run_pgd, frozenset({"steps", "rel_step_size", "restarts",
                                                  "random_start", "loss", "backend"}),
                      shared=frozenset({"steps", "restarts", "backend"}), steps=40,
                      losses=(Loss.CE, Loss.MARGIN, Loss.DLR), backends=tuple(Backend)),
    "apgd": AttackKind("APGD", _run_art(catalogue.apgd), _GRADIENT | {"loss"},
                       shared=_GRADIENT, steps=100, losses=(Loss.CE, Loss.DLR)),
    "square": AttackKind("Square", _run_art(catalogue.square), _GRADIENT, steps=1000),
    "cw": AttackKind("CW-L2", _run_art(catalogue.carlini_wagner_l2), frozenset({"steps"}),
                     steps=10),
    "deepfool": AttackKind("DeepFool", _run_art(catalogue.deepfool), frozenset({"steps"}),
                           steps=100),
    "autoattack": AttackKind("AutoAttack", _run_art(catalogue.auto_attack), frozenset()),
}
# names that fix a field as well: "pgd-margin" is PGD on the margin loss
ALIASES: dict[str, dict[str, Any]] = {
    "pgd-ce": {"name": "pgd", "loss": Loss.CE},
    "pgd-margin": {"name": "pgd", "loss": Loss.MARGIN},
    "pgd-dlr": {"name": "pgd", "loss": Loss.DLR},
    "apgd-ce": {"name": "apgd", "loss": Loss.CE},
    "apgd-dlr": {"name": "apgd", "loss": Loss.DLR},
    "cw-l2": {"name": "cw"},
}
_FIELD_DEFAULTS = {"rel_step_size": None, "restarts": 1, "random_start": True}


def kind_of(name: Any) -> AttackKind | None:
    """The registry entry for an attack name or alias (``"pgd-margin"`` -> PGD); None if
    unknown."""
    key = str(name).strip().lower()
    return ATTACKS.get(ALIASES.get(key, {}).get("name", key))


@dataclass(frozen=True)
class AttackSpec:
    """An attack with its settings; ε and the norm are given when it runs.

    Attributes:
        name: a key of :data:`ATTACKS` (``fgsm``, ``pgd``, ``apgd``, ``square``, ``cw``,
            ``deepfool``, ``autoattack``) or an alias that also sets the loss
            (``pgd-margin``, ``pgd-dlr``, ``apgd-ce``, ``apgd-dlr``).
        steps: iterations per restart (PGD/APGD steps, Square queries, CW optimiser steps,
            DeepFool iterations); None: the attack's default.
        rel_step_size: PGD step as a fraction of ε (None: Madry's ``2.5 / steps``).
        restarts: random restarts (the strongest per example is kept).
        random_start: PGD starts at a random point of the ball.
        loss: ``ce``, ``margin`` or ``dlr`` (which ones an attack takes: ``ATTACKS``).
        backend: ``native``, ``cleverhans`` or ``art`` (the catalogue attacks are ART's).
    """

    name: str = "pgd"
    steps: int | None = None
    rel_step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: Loss = Loss.CE
    backend: Backend = Backend.NATIVE

    def __post_init__(self) -> None:
        given = str(self.name).strip().lower()
        alias = ALIASES.get(given, {})
        name = alias.get("name", given)
        if name not in ATTACKS:
            raise ValidationError(f"expected attack to be one of "
                                  f"{', '.join([*ATTACKS, *ALIASES])}, got {self.name!r}")
        kind = ATTACKS[name]
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731
        set_("name", name)
        loss = parse_enum("loss", self.loss, Loss)
        if "loss" in alias:
            if loss not in (Loss.CE, alias["loss"]):
                raise ValidationError(f"expected loss {alias['loss'].value!r} for attack "
                                      f"{given!r}, got {loss.value!r}")
            loss = alias["loss"]
        set_("loss", loss)
        set_("backend", parse_enum("backend", self.backend, Backend))
        if kind.backends == (Backend.ART,) and self.backend is Backend.NATIVE:
            set_("backend", Backend.ART)
        if self.steps is None:
            set_("steps", kind.steps)
        elif kind.steps is not None:
            set_("steps", check_int("steps", self.steps, low=1))
        set_("restarts", check_int("restarts", self.restarts, low=1))
        if self.rel_step_size is not None:
            set_("rel_step_size", check_float("rel_step_size", self.rel_step_size, low=0.0,
                                              low_open=True, high=1.0))
        for key, default in _FIELD_DEFAULTS.items():  # loss, backend: checked below
            value = getattr(self, key)
            if key not in kind.fields and value != default:
                raise ValidationError(f"expected no {key} for attack {name!r} (it takes "
                                      f"{sorted(kind.fields) or 'no settings'}), got {value!r}")
        if kind.steps is None and self.steps is not None:
            raise ValidationError(f"expected no steps for attack {name!r}, got {self.steps!r}")
        if self.loss not in kind.losses:
            raise ValidationError(f"expected loss to be one of "
                                  f"{[v.value for v in kind.losses]} for attack {name!r}, "
                                  f"got {self.loss.value!r}")
        if self.backend not in kind.backends:
            raise ValidationError(f"expected backend to be one of "
                                  f"{[b.value for b in kind.backends]} for attack {name!r}, "
                                  f"got {self.backend.value!r}")
        if self.loss is not Loss.CE and self.backend is not Backend.NATIVE \
                and name in ("fgsm", "pgd"):
            raise ValidationError(f"expected loss='ce' with backend={self.backend.value!r} "
                                  f"(only the native backend has loss={self.loss.value!r})")
        if self.restarts > 1 and not self.random_start:
            raise ValidationError(f"expected random_start=True when restarts > 1, got "
                                  f"restarts={self.restarts}")

    @property
    def kind(self) -> AttackKind:
        return ATTACKS[self.name]

    @property
    def label(self) -> str:
        """Short human name, e.g. ``PGD-40×5 (margin)``, ``APGD-DLR-100`` or ``FGSM [art]``."""
        text = self.kind.title
        if self.name == "apgd":
            text += f"-{self.loss.value.upper()}"
        if self.name in ("pgd", "apgd", "square"):
            text += f"-{self.steps}"
        if self.restarts > 1:
            text += f"×{self.restarts}"
        if self.loss is not Loss.CE and self.name != "apgd":
            text += f" ({self.loss.value})"
        if self.backend is not Backend.NATIVE and self.name in ("fgsm", "pgd"):
            text += f" [{self.backend.value}]"
        return text

    @property
    def gradient_based(self) -> bool:
        """False for black-box attacks (Square), which only query the model's outputs."""
        return self.name != "square"

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, **{k: v for k, v in asdict(self).items()
                                     if k in self.kind.fields}}
        out.update(label=self.label, backend=self.backend.value)
        if "loss" in out:
            out["loss"] = self.loss.value
        return out

    def run(self, model: Any, x: Any, y: Any, *, epsilon: float, norm: Any = "linf",
            bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
            batch_size: int | None = None, jit_compile: bool | None = None,
            ids: Any = None) -> np.ndarray:
        """Run the attack at one ε (untargeted, labels ``y``); returns adversarial images.
        ``ids`` number the examples for their random starts (see :func:`pgd`)."""
        return self.kind.run(self, model, x, y, epsilon=epsilon, norm=norm, bounds=bounds,
                             batch_size=batch_size, jit_compile=jit_compile, seed=seed,
                             ids=ids)

    @classmethod
    def parse(cls, value: Any, **defaults: Any) -> AttackSpec:
        """An AttackSpec from a spec, a dict of fields, or a name (``"pgd"``), with
        ``defaults`` for the fields the value does not set and the attack shares
        (:attr:`AttackKind.shared`: PGD's steps and restarts also set APGD's)."""
        if isinstance(value, AttackSpec):
            return value
        if isinstance(value, dict):
            name = value.get("name", "pgd")
        elif isinstance(value, str):
            name, value = value, {"name": value}
        else:
            raise InputTypeError(f"expected an attack name, dict or AttackSpec, got "
                                 f"{type(value).__name__} {value!r}")
        kind = kind_of(name)
        shared = kind.shared if kind is not None else frozenset()
        return cls(**{**{k: v for k, v in defaults.items() if k in shared}, **value})


def parse_attacks(value: Any, **defaults: Any) -> tuple[AttackSpec, ...]:
    """``"fgsm, pgd, pgd-margin, square"`` or a list of names / dicts / specs -> a tuple of
    AttackSpec.

    ``defaults`` (e.g. ``steps=40, restarts=2, backend="native"``) apply to every attack
    that shares them (PGD's steps and restarts also set APGD's; Square, CW and DeepFool keep
    their own).
    """
    items = split_list(value) if isinstance(value, str) else (
        [value] if isinstance(value, (AttackSpec, dict)) else list(value))
    if not items:
        raise ValidationError(f"expected attacks to name at least one attack, got {value!r}")
    specs = tuple(AttackSpec.parse(item, **defaults) for item in items)
    if len(set(specs)) != len(specs):
        raise ValidationError(f"expected each attack once, got {[s.label for s in specs]}")
    return specs
