"""The vocabulary every layer shares: the threat model and the enums options are parsed into.

Strings from notebooks and the CLI (``"linf"``, ``"8/255"``, ``"margin"``) become these
objects once, at the boundary (:meth:`ThreatModel.parse`, :func:`parse_norm`,
:func:`~robustlab._validate.parse_enum`); everything inside takes the objects.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from robustlab._validate import check_float, parse_enum
from robustlab.errors import RobustlabWarning, ValidationError

__all__ = ["Norm", "Loss", "Backend", "ThreatModel", "parse_norm", "DEFAULT_REL_STEP"]

# Madry et al.'s step size: 2.5 * epsilon / steps, so the walk can cross the whole ball.
DEFAULT_REL_STEP = 2.5


class Norm(str, Enum):
    """The norm that measures a perturbation: ``linf`` (max abs pixel change) or ``l2``."""

    LINF = "linf"
    L2 = "l2"


_NORM_ALIASES = {"inf": "linf", "l_inf": "linf", "l-inf": "linf", "np.inf": "linf",
                 "l∞": "linf", "2": "l2", "l_2": "l2", "l-2": "l2"}


def parse_norm(value: Any, name: str = "norm") -> Norm:
    """``"linf"``, ``"inf"``, ``np.inf`` -> ``Norm.LINF``; ``"l2"``, ``2`` -> ``Norm.L2``."""
    if isinstance(value, Norm):
        return value
    if isinstance(value, float) and np.isinf(value):
        return Norm.LINF
    key = str(value).strip().lower()
    return parse_enum(name, _NORM_ALIASES.get(key, key), Norm)


class Loss(str, Enum):
    """Loss the attack ascends: cross-entropy on logits, the scale-invariant margin
    ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017, https://arxiv.org/abs/1608.04644), the
    margin divided by the spread of the top logits ``dlr`` (difference of logits ratio,
    shift- and scale-invariant, needs >= 3 classes; Croce & Hein 2020,
    https://arxiv.org/abs/2003.01690), or ``kl``: KL(softmax(reference) ‖ softmax(z)) against
    reference logits instead of labels (TRADES' inner maximisation, Zhang et al. 2019,
    https://arxiv.org/abs/1901.08573).

    Margin and DLR do not saturate: logits scaled by 1000 leave their gradient direction
    unchanged, where cross-entropy's vanishes (a common source of gradient masking)."""

    CE = "ce"
    MARGIN = "margin"
    DLR = "dlr"
    KL = "kl"


@dataclass(frozen=True)
class ThreatModel:
    """What an adversary may do: move each image at most ``epsilon`` in ``norm``, staying
    inside ``bounds`` (pixel units, e.g. ``(0.0, 1.0)``)."""

    epsilon: float
    norm: Norm = Norm.LINF
    bounds: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def parse(cls, epsilon: Any, norm: Any = "linf",
              bounds: tuple[float, float] = (0.0, 1.0)) -> ThreatModel:
        eps = check_float("epsilon", epsilon, low=0.0)
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValidationError(f"expected bounds to be (low, high), got {bounds!r}") from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValidationError(f"expected bounds low < high (finite), got {bounds!r}")
        return cls(eps, parse_norm(norm), (low, high))

    def box_size(self, image_shape: tuple[int, ...]) -> float:
        """The largest ε that still constrains the adversary inside the bounds: ``high - low``
        in L∞, the box's diagonal in L2 (``image_shape`` is one input's shape, e.g.
        ``(H, W, C)``)."""
        width = self.bounds[1] - self.bounds[0]
        return width if self.norm is Norm.LINF else \
            width * float(np.sqrt(np.prod(image_shape)))

    def capped(self, image_shape: tuple[int, ...], *, warn: bool = False) -> ThreatModel:
        """The same threat model with ε no larger than :meth:`box_size`: beyond that the box,
        not the ball, limits the adversary, so the result is identical, and arithmetic with
        an ε near the float32 maximum (which would overflow to inf and NaN) is avoided.
        With ``warn`` a :class:`~robustlab.errors.RobustlabWarning` says what was capped."""
        top = self.box_size(image_shape)
        if self.epsilon <= top:
            return self
        if warn:
            warnings.warn(f"epsilon {self.epsilon:g} ({self.norm.value}) exceeds the input box "
                          f"{self.bounds} itself; the attack uses epsilon {top:g}, which "
                          f"already allows every input in the box", RobustlabWarning,
                          stacklevel=3)
        return ThreatModel(top, self.norm, self.bounds)

    def step_length(self, steps: int, *, absolute: Any = None, relative: float | None = None,
                    image_shape: tuple[int, ...] | None = None) -> float:
        """The one place a step size is decided, in pixel units.

        ``absolute`` (checked: ``0 < step <= epsilon``) if given, else ``relative`` × ε
        (default Madry et al.'s ``2.5 / steps``), at most ε; with ``image_shape`` also at most
        the capped ε (:meth:`capped`), so a step never leaves the box's own size.
        """
        if absolute is not None:
            value = check_float("step_size", absolute, low=0.0, low_open=True)
            if self.epsilon > 0 and value > self.epsilon:
                raise ValidationError(f"expected step_size <= epsilon ({self.epsilon:g}), "
                                      f"got {value:g}")
        else:
            rel = DEFAULT_REL_STEP / steps if relative is None else relative
            value = min(rel, 1.0) * self.epsilon
        if image_shape is not None:
            value = min(value, self.capped(image_shape).epsilon)
        return value

    def with_epsilon(self, epsilon: Any) -> ThreatModel:
        """The same norm and bounds with another budget (checked, ``>= 0``)."""
        return ThreatModel(check_float("epsilon", epsilon, low=0.0), self.norm, self.bounds)


class Backend(str, Enum):
    """Which implementation runs the attack: robustlab's own, CleverHans 4 or ART."""

    NATIVE = "native"
    CLEVERHANS = "cleverhans"
    ART = "art"
