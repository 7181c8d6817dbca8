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
from robustlab.attacks._runner import BatchAttack, attack_arrays, check_loss_for
from robustlab.attacks.apgd import check_targets, native_apgd
from robustlab.attacks.fgsm import FGSM_BACKENDS
from robustlab.attacks.pgd import PGD_BACKENDS
from robustlab.attacks.square import SQUARE_BACKENDS
from robustlab.errors import InputTypeError, ValidationError
from robustlab.types import Backend, Loss, ThreatModel


@dataclass(frozen=True)
class Plan:
    """How one attack runs in the engine: the batch implementation, its own parameters,
    and the engine options it fixes (random start, loss, whether XLA may be used)."""

    impl: BatchAttack
    params: dict[str, Any]
    random_start: bool
    loss: Loss = Loss.CE
    jit_ok: bool = True


@dataclass(frozen=True)
class AttackKind:
    """One entry of the attack registry: how to plan a run and the facts callers need.

    ``plan(spec, threat, image_shape) -> Plan``; ``fields`` are the spec fields that mean
    something for it; ``shared`` those that take defaults meant for every attack (e.g. the
    notebook's ``pgd_steps``); ``steps`` its default number of iterations (None: no steps).
    ``gradient_based`` is False for black-box attacks (they only query outputs);
    ``iterative`` False for single-step ones (FGSM); ``label_steps`` puts the steps in the
    label (``PGD-40``), ``loss_in_title`` the loss in its title (``APGD-DLR``); ``ascent``
    marks attacks that climb a loss with gradient steps inside the ε-ball (FGSM, PGD, APGD),
    so that one can be compared with another step for step. ``min_classes`` is the fewest
    classes the attack runs on (ART's AutoAttack includes APGD-DLR, which needs 3);
    ``peer_losses`` the losses its non-native backends have.
    """

    title: str
    plan: Callable[[AttackSpec, ThreatModel, tuple[int, ...]], Plan]
    fields: frozenset[str]
    shared: frozenset[str] = frozenset()
    steps: int | None = None
    losses: tuple[Loss, ...] = (Loss.CE,)
    backends: tuple[Backend, ...] = (Backend.ART,)
    gradient_based: bool = True
    iterative: bool = True
    label_steps: bool = False
    loss_in_title: bool = False
    ascent: bool = False
    min_classes: int = 2
    peer_losses: tuple[Loss, ...] = (Loss.CE,)


def _plan_fgsm(spec: AttackSpec, threat: ThreatModel, shape: tuple[int, ...]) -> Plan:
    return Plan(FGSM_BACKENDS[spec.backend], {}, random_start=False, loss=spec.loss)


def _plan_pgd(spec: AttackSpec, threat: ThreatModel, shape: tuple[int, ...]) -> Plan:
    steps = int(spec.steps or 1)
    alpha = threat.step_length(steps, relative=spec.rel_step_size, image_shape=shape)
    return Plan(PGD_BACKENDS[spec.backend], {"step_size": alpha, "steps": steps,
                                             "keep_best": True, "early_stop": True},
                random_start=spec.random_start, loss=spec.loss)


def _plan_apgd(spec: AttackSpec, threat: ThreatModel, shape: tuple[int, ...]) -> Plan:
    if spec.backend is Backend.ART:
        return Plan(catalogue.apgd_batch(int(spec.steps or 1), spec.loss.value), {},
                    random_start=True, jit_ok=False)
    return Plan(native_apgd, {"steps": int(spec.steps or 1), "targets": spec.targets or 0},
                random_start=True, loss=spec.loss)


def _plan_square(spec: AttackSpec, threat: ThreatModel, shape: tuple[int, ...]) -> Plan:
    native = spec.backend is Backend.NATIVE
    return Plan(SQUARE_BACKENDS[spec.backend], {"steps": int(spec.steps or 1)},
                random_start=True, loss=Loss.MARGIN, jit_ok=native)


def _plan_art(batch: Callable[[AttackSpec], BatchAttack]
              ) -> Callable[[AttackSpec, ThreatModel, tuple[int, ...]], Plan]:
    def plan(spec: AttackSpec, threat: ThreatModel, shape: tuple[int, ...]) -> Plan:
        return Plan(batch(spec), {}, random_start=True, jit_ok=False)
    return plan


_GRADIENT = frozenset({"steps", "restarts"})
_ALL_LOSSES = (Loss.CE, Loss.MARGIN, Loss.DLR)
ATTACKS: dict[str, AttackKind] = {
    "fgsm": AttackKind("FGSM", _plan_fgsm, frozenset({"loss", "backend"}),
                       shared=frozenset({"backend"}), losses=_ALL_LOSSES,
                       backends=tuple(Backend), iterative=False, ascent=True),
    "pgd": AttackKind("PGD", _plan_pgd, frozenset({"steps", "rel_step_size", "restarts",
                                                   "random_start", "loss", "backend"}),
                      shared=frozenset({"steps", "restarts", "backend"}), steps=40,
                      losses=_ALL_LOSSES, backends=tuple(Backend), label_steps=True,
                      ascent=True),
    "apgd": AttackKind("APGD", _plan_apgd, _GRADIENT | {"loss", "backend", "targets"},
                       shared=_GRADIENT | {"backend"}, steps=100, losses=(Loss.CE, Loss.DLR),
                       backends=(Backend.NATIVE, Backend.ART), label_steps=True,
                       loss_in_title=True, ascent=True, peer_losses=(Loss.CE, Loss.DLR)),
    "square": AttackKind("Square", _plan_square, _GRADIENT | {"backend"}, steps=1000,
                         backends=(Backend.NATIVE, Backend.ART), gradient_based=False,
                         label_steps=True),
    "cw": AttackKind("CW-L2", _plan_art(lambda s: catalogue.cw_batch(int(s.steps or 1))),
                     frozenset({"steps"}), steps=10),
    "deepfool": AttackKind("DeepFool", _plan_art(
        lambda s: catalogue.deepfool_batch(int(s.steps or 1))), frozenset({"steps"}),
        steps=100),
    "autoattack": AttackKind("AutoAttack", _plan_art(lambda s: catalogue.auto_attack_batch()),
                             frozenset(), min_classes=3),
}
# names that fix a field as well: "pgd-margin" is PGD on the margin loss
ALIASES: dict[str, dict[str, Any]] = {
    "pgd-ce": {"name": "pgd", "loss": Loss.CE},
    "pgd-margin": {"name": "pgd", "loss": Loss.MARGIN},
    "pgd-dlr": {"name": "pgd", "loss": Loss.DLR},
    "apgd-ce": {"name": "apgd", "loss": Loss.CE},
    "apgd-dlr": {"name": "apgd", "loss": Loss.DLR},
    "apgd-t": {"name": "apgd", "loss": Loss.DLR, "targets": 9},
    "cw-l2": {"name": "cw"},
}
_FIELD_DEFAULTS = {"rel_step_size": None, "restarts": 1, "random_start": True, "targets": None}

# AutoAttack (Croce & Hein 2020, https://arxiv.org/abs/2003.01690) as a suite of native
# attacks run as a cascade, each on the examples the earlier ones left, with the reference
# settings ("standard": APGD-CE 100 iterations, APGD-T 9 targets x 100, Square 5,000
# queries). FAB-T is left out: it is a minimum-norm attack, and in the reference evaluations
# it breaks almost nothing that APGD-T leaves standing, at a cost comparable to APGD-T's.
SUITES: dict[str, tuple[dict[str, Any], ...]] = {
    "autoattack": ({"name": "apgd-ce", "steps": 100}, {"name": "apgd-t", "steps": 100},
                   {"name": "square", "steps": 5000}),
    "autoattack-fast": ({"name": "apgd-ce", "steps": 100},
                        {"name": "apgd-t", "steps": 100, "targets": 3}),
}


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
    targets: int | None = None
    suite: str = ""

    def __post_init__(self) -> None:
        given = str(self.name).strip().lower()
        alias = ALIASES.get(given, {})
        name = alias.get("name", given)
        if self.targets is None and "targets" in alias:
            object.__setattr__(self, "targets", alias["targets"])
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
        if self.loss not in kind.peer_losses and self.backend is not Backend.NATIVE \
                and Backend.NATIVE in kind.backends:
            raise ValidationError(f"expected loss='ce' with backend={self.backend.value!r} "
                                  f"(only the native backend has loss={self.loss.value!r})")
        if self.targets is not None:
            set_("targets", check_int("targets", self.targets, low=1))
            if self.loss is not Loss.DLR or self.backend is not Backend.NATIVE:
                raise ValidationError(f"expected loss='dlr' and backend='native' for APGD-T "
                                      f"(targets={self.targets}), got loss="
                                      f"{self.loss.value!r}, backend={self.backend.value!r}")
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
        kind = self.kind
        if self.targets:  # APGD-T: the targeted DLR loss
            text += "-T"
        elif kind.loss_in_title:  # APGD-CE, APGD-DLR
            text += f"-{self.loss.value.upper()}"
        if kind.label_steps:
            text += f"-{self.steps}"
        if self.restarts > 1:
            text += f"×{self.restarts}"
        if self.targets and self.targets != 9:  # the reference's 9 goes without saying
            text += f" ({self.targets} targets)"
        if self.loss is not Loss.CE and not kind.loss_in_title:
            text += f" ({self.loss.value})"
        if self.backend is not Backend.NATIVE and Backend.NATIVE in kind.backends:
            text += f" [{self.backend.value}]"
        return text

    @property
    def gradient_based(self) -> bool:
        """False for black-box attacks (Square), which only query the model's outputs."""
        return self.kind.gradient_based

    @property
    def iterative(self) -> bool:
        """False for single-step attacks (FGSM)."""
        return self.kind.iterative

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, **{k: v for k, v in asdict(self).items()
                                     if k in self.kind.fields and
                                     (k != "targets" or v is not None)}}
        out.update(label=self.label, backend=self.backend.value)
        if self.suite:
            out["suite"] = self.suite
        if "loss" in out:
            out["loss"] = self.loss.value
        return out

    def check_model(self, num_classes: int) -> None:
        """Refuse a model this attack cannot run on (e.g. a DLR loss needs >= 3 classes),
        before any attack starts; the engine's inner path does not check again."""
        check_loss_for(self.loss, num_classes)
        if self.targets:
            check_targets(self.targets, num_classes)
        if num_classes < self.kind.min_classes:
            raise ValidationError(f"expected a model with at least {self.kind.min_classes} "
                                  f"classes for attack {self.name!r}, got {num_classes}")

    def run(self, model: Any, x: np.ndarray, y: np.ndarray, *, threat: ThreatModel,
            seed: int, batch_size: int, jit: bool, ids: np.ndarray) -> np.ndarray:
        """Run the attack (untargeted, labels ``y``) on already validated arrays: ``x``
        ``(N, ...)`` float32 inside ``threat.bounds``, ``y`` ``(N,)`` int64, ``ids``
        ``(N,)`` int64 numbering the examples for their random starts (see
        :func:`~robustlab.attacks.pgd`). The public attack functions are the checked
        entry points; :func:`robustlab.evaluate` checks once and calls this per ε."""
        plan = self.kind.plan(self, threat, tuple(x.shape[1:]))
        return attack_arrays(plan.impl, model, x, y, threat=threat, targeted=False,
                             loss=plan.loss, restarts=self.restarts,
                             random_start=plan.random_start, seed=seed, batch_size=batch_size,
                             jit=jit and plan.jit_ok, ids=ids, **plan.params)

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


def _expand(item: Any, defaults: dict[str, Any]) -> tuple[AttackSpec, ...]:
    """One item of an attack list as specs: a suite's members, or the one attack."""
    fields = {"name": item} if isinstance(item, str) else item
    if isinstance(fields, dict):
        name = str(fields.get("name", "")).strip().lower()
        backend = str(getattr(fields.get("backend", defaults.get("backend", "native")),
                              "value", fields.get("backend", defaults.get("backend",
                                                                          "native"))))
        if name in SUITES and backend.strip().lower() != Backend.ART.value:
            extra = set(fields) - {"name", "backend"}
            if extra:
                raise ValidationError(f"expected no settings for attack {name!r} (the "
                                      f"reference settings), got {sorted(extra)}")
            return tuple(AttackSpec(**member, suite=name) for member in SUITES[name])
    return (AttackSpec.parse(item, **defaults),)


def fitting(specs: tuple[AttackSpec, ...], num_classes: int
            ) -> tuple[tuple[AttackSpec, ...], tuple[str, ...]]:
    """``specs`` without the suite members a model with ``num_classes`` outputs cannot take
    (APGD-T needs >= 4 classes: AutoAttack on a binary model runs APGD-CE and Square), and
    the labels of those left out; attacks named on their own are kept (and refused by
    :meth:`AttackSpec.check_model`)."""
    kept, dropped = [], []
    for spec in specs:
        try:
            spec.check_model(num_classes)
        except ValidationError:
            if not spec.suite:
                raise
            dropped.append(spec.label)
            continue
        kept.append(spec)
    return tuple(kept), tuple(dropped)


def parse_attacks(value: Any, **defaults: Any) -> tuple[AttackSpec, ...]:
    """``"fgsm, pgd, pgd-margin, square"`` or a list of names / dicts / specs -> a tuple of
    AttackSpec.

    ``defaults`` (e.g. ``steps=40, restarts=2, backend="native"``) apply to every attack
    that shares them (PGD's steps and restarts also set APGD's; Square, CW and DeepFool keep
    their own).

    ``"autoattack"`` (``"autoattack-fast"``) becomes the native suite :data:`SUITES` with
    the reference settings, whatever the defaults (APGD-CE-100, APGD-T-100 with 9 targets,
    Square-5000; the fast one APGD-CE-100 and APGD-T-100 with 3 targets), each spec marked
    with its ``suite``; with ``backend="art"`` (as a default or in a dict) ``"autoattack"``
    is ART's own AutoAttack.
    """
    items = split_list(value) if isinstance(value, str) else (
        [value] if isinstance(value, (AttackSpec, dict)) else list(value))
    if not items:
        raise ValidationError(f"expected attacks to name at least one attack, got {value!r}")
    specs = tuple(spec for item in items for spec in _expand(item, defaults))
    if len(set(specs)) != len(specs):
        raise ValidationError(f"expected each attack once, got {[s.label for s in specs]}")
    return specs
