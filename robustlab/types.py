"""The vocabulary every layer shares: the threat model and the enums options are parsed into.

Strings from notebooks and the CLI (``"linf"``, ``"8/255"``, ``"margin"``) become these
objects once, at the boundary (:meth:`ThreatModel.parse`, :func:`parse_norm`,
:func:`~robustlab._validate.parse_enum`); everything inside takes the objects.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np

from robustlab._validate import check_float, parse_enum
from robustlab.errors import InputTypeError, RobustlabWarning, ValidationError

__all__ = ["Norm", "Loss", "Backend", "Constraints", "ThreatModel", "parse_norm",
           "DEFAULT_REL_STEP", "is_image_shape", "feature_labels"]

# Madry et al.'s step size: 2.5 * epsilon / steps, so the walk can cross the whole ball.
DEFAULT_REL_STEP = 2.5


def is_image_shape(shape: tuple[int, ...], names: tuple[str, ...] = ()) -> bool:
    """True if examples of this shape are shown (and modelled) as images: ``(H, W)``
    grayscale or ``(H, W, C)`` with 1, 3 or 4 channels, without feature ``names``; anything
    else (feature vectors ``(F,)``, named features, other ranks) is shown feature by
    feature."""
    shape = tuple(shape)
    return not names and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4)))


def feature_labels(shape: tuple[int, ...], constraints: Constraints | None = None
                   ) -> tuple[str, ...]:
    """One display name per flat feature of examples of ``shape``: the constraints' names,
    else ``feature 0``, ``feature 1``, ..."""
    if constraints is not None and constraints.names:
        return constraints.names
    return tuple(f"feature {i}" for i in range(int(np.prod(shape)) if shape else 0))


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

    ``dlr-t`` is the targeted DLR loss of APGD-T, ``-(z_y - z_t) / (z1 - (z3 + z4) / 2)``:
    its labels are pairs ``(true class, target class)`` and it needs >= 4 classes.

    Margin and DLR do not saturate: logits scaled by 1000 leave their gradient direction
    unchanged, where cross-entropy's vanishes (a common source of gradient masking)."""

    CE = "ce"
    MARGIN = "margin"
    DLR = "dlr"
    KL = "kl"
    DLR_T = "dlr-t"


# ---------------------------------------------------------------------------------------------
# per-feature threat models (tables and any-shape inputs)

_Selector = Any  # a bool mask of one example's shape, a list of flat indices, or feature names


def _as_array(name: str, value: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``value`` broadcast to ``shape`` as ``dtype`` (a read-only copy); errors name ``name``."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValidationError(f"expected {name} to be numbers, got {value!r}") from None
    try:
        out = np.array(np.broadcast_to(arr, shape), dtype=dtype)
    except ValueError:
        raise ValidationError(f"expected {name} to broadcast to one example's shape {shape}, "
                              f"got shape {arr.shape}") from None
    out.setflags(write=False)
    return out


def _select(name: str, value: _Selector, shape: tuple[int, ...],
            names: tuple[str, ...]) -> np.ndarray:
    """A bool mask of ``shape`` from a mask, flat indices or feature names."""
    size = int(np.prod(shape))
    mask = np.zeros(size, bool)
    if value is None:
        return mask.reshape(shape)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    arr = np.asarray(value)
    if arr.dtype == bool:
        return _as_array(name, arr, shape, bool)
    for item in np.ravel(arr).tolist():
        mask[_feature_index(name, item, size, names)] = True
    return mask.reshape(shape)


def _feature_index(name: str, item: Any, size: int, names: tuple[str, ...]) -> int:
    if isinstance(item, str):
        if item in names:
            return names.index(item)
        known = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValidationError(f"expected {name} to name features ({known or 'no feature names'}"
                              f"), got unknown feature {item!r}")
    if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)) \
            or not 0 <= int(item) < size:
        raise ValidationError(f"expected {name} to hold feature indices in [0, {size}) or "
                              f"names, got {item!r}")
    return int(item)


@dataclass(frozen=True, eq=False)
class Constraints:
    """What an attacker may do to each feature of one example (shape ``shape``, any rank).

    Built with :meth:`build`; arrays are read-only, full shape:

    * ``low``, ``high``: per-feature bounds (float32);
    * ``scale``: per-feature unit of ε (> 0): a perturbation ``δ`` is measured as ``δ / scale``,
      so with the standard deviations of the training split ``ε = 0.1`` means a tenth of a
      standard deviation for income and for age alike;
    * ``mutable``: False where the attacker cannot touch the feature (it comes back
      bit-identical);
    * ``integer``: True where the feature must end on a whole number (counts);
    * ``onehot``: groups of flat feature indices (categorical columns) that must end as a valid
      one-hot vector; a category switch moves two columns by 1 (so it needs ``ε ≥ 1 / scale``
      in L∞);
    * ``names``: one name per flat feature (optional), used in errors and reports.

    Attacks optimise over the continuous relaxation, then map to the feasible set (integers
    rounded inside the ball, each one-hot group set to its largest entry or, if that leaves the
    budget, back to the clean category), and the evaluation re-checks the result with
    :meth:`violation`. Unconstrained images need none of this (``ThreatModel.constraints`` is
    None); see Sheatsley et al. 2022, "Adversarial Examples for Network Intrusion Detection
    Systems" (https://arxiv.org/abs/2103.14917) and Simonetto et al. 2022, "A Unified Framework
    for Adversarial Attack and Defense in Constrained Feature Space"
    (https://arxiv.org/abs/2112.01156) for the feasible-set view of tabular attacks.
    """

    low: np.ndarray
    high: np.ndarray
    scale: np.ndarray
    mutable: np.ndarray
    integer: np.ndarray
    onehot: tuple[tuple[int, ...], ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def build(cls, shape: Any, *, bounds: Any = (0.0, 1.0), scale: Any = 1.0,
              immutable: _Selector = None, integer: _Selector = None,
              categorical: Any = None, names: Any = None) -> Constraints:
        """Constraints for examples of ``shape`` (one example's, e.g. ``(30,)``).

        Args:
            shape: one example's shape.
            bounds: ``(low, high)``, each a number or an array broadcastable to ``shape``.
            scale: the unit of ε per feature (number or array, > 0), e.g. the training
                split's standard deviations.
            immutable, integer: features the attacker cannot change / that are whole
                numbers: a bool mask of ``shape``, flat indices, or names (with ``names``).
            categorical: one-hot groups: a list of groups, each a list of flat indices or
                names (at least 2 columns each, disjoint).
            names: one name per flat feature.

        Raises:
            ValidationError: naming the argument (shapes, unknown names, low >= high,
                scale <= 0, overlapping groups, a group that is half immutable, integer
                bounds with no whole number between them, one-hot columns whose bounds
                exclude 0 or 1).
        """
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ValidationError(f"expected shape to be a tuple of ints, got {shape!r}") from None
        if not shape or min(shape) < 1:
            raise ValidationError(f"expected shape to have positive dimensions, got {shape!r}")
        size = int(np.prod(shape))
        names_t = tuple(str(n) for n in names) if names is not None else ()
        if names_t and len(names_t) != size:
            raise ValidationError(f"expected names to hold one name per feature ({size}), "
                                  f"got {len(names_t)}")
        if names_t and len(set(names_t)) != len(names_t):
            raise ValidationError("expected names to be unique")
        try:
            low_v, high_v = bounds
        except (TypeError, ValueError):
            raise ValidationError(f"expected bounds to be (low, high), got {bounds!r}") from None
        low = _as_array("bounds low", low_v, shape, np.float32)
        high = _as_array("bounds high", high_v, shape, np.float32)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValidationError("expected finite bounds")
        bad = np.flatnonzero(~(low < high).ravel())
        if len(bad):
            raise ValidationError(f"expected bounds low < high for every feature, got "
                                  f"{_label(int(bad[0]), names_t)} with low "
                                  f"{low.ravel()[bad[0]]:g} and high {high.ravel()[bad[0]]:g}")
        scale_a = _as_array("scale", scale, shape, np.float32)
        if not (np.isfinite(scale_a).all() and (scale_a > 0).all()):
            raise ValidationError(f"expected scale > 0 and finite for every feature, got "
                                  f"values in [{float(scale_a.min()):g}, "
                                  f"{float(scale_a.max()):g}]")
        mutable = ~_select("immutable", immutable, shape, names_t)
        integer_m = _select("integer", integer, shape, names_t)
        groups: list[tuple[int, ...]] = []
        seen: set[int] = set()
        for g, group in enumerate([] if categorical is None else list(categorical)):
            items = [group] if isinstance(group, str) else list(np.ravel(np.asarray(group)))
            idx = tuple(_feature_index(f"categorical[{g}]", i, size, names_t)
                        for i in (x.item() if hasattr(x, "item") else x for x in items))
            if len(idx) < 2 or len(set(idx)) != len(idx):
                raise ValidationError(f"expected categorical[{g}] to list at least 2 distinct "
                                      f"columns, got {group!r}")
            if seen & set(idx):
                raise ValidationError(f"expected categorical groups to be disjoint, got a "
                                      f"column in categorical[{g}] that an earlier one has")
            seen |= set(idx)
            cols = list(idx)
            if len(set(mutable.ravel()[cols].tolist())) > 1:
                raise ValidationError(f"expected categorical[{g}] to be wholly mutable or "
                                      f"wholly immutable, got a mix")
            if (low.ravel()[cols] > 0).any() or (high.ravel()[cols] < 1).any():
                raise ValidationError(f"expected the bounds of categorical[{g}] to include 0 "
                                      f"and 1 (one-hot columns)")
            if integer_m.ravel()[cols].any():
                raise ValidationError(f"expected categorical[{g}] not to be marked integer too")
            groups.append(idx)
        ints = integer_m.ravel()
        empty = ints & (np.ceil(low.ravel()) > np.floor(high.ravel()))
        if empty.any():
            raise ValidationError(f"expected a whole number within the bounds of integer "
                                  f"feature {_label(int(np.flatnonzero(empty)[0]), names_t)}")
        for arr in (mutable, integer_m):
            arr.setflags(write=False)
        return cls(low, high, scale_a, mutable, integer_m, tuple(groups), names_t)

    # -- derived facts -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.low.shape)

    @property
    def size(self) -> int:
        return int(self.low.size)

    @property
    def weight(self) -> np.ndarray:
        """``scale`` where mutable, 0 where not (float32, full shape): the per-feature factor
        the attack math multiplies its step and its ball by."""
        return np.where(self.mutable, self.scale, np.float32(0.0)).astype(np.float32)

    @property
    def discrete(self) -> bool:
        """True if some feature is integer or one-hot (the attack output is then mapped)."""
        return bool(self.integer.any()) or bool(self.onehot)

    @property
    def bounds(self) -> tuple[float, float]:
        """The envelope ``(min low, max high)`` over all features."""
        return float(self.low.min()), float(self.high.max())

    def name(self, index: int) -> str:
        """The display name of flat feature ``index``."""
        return _label(index, self.names)

    def fingerprint(self) -> str:
        """SHA-256 over every array and group: equal constraints, equal fingerprints."""
        digest = hashlib.sha256()
        for arr in (self.low, self.high, self.scale, self.mutable, self.integer):
            digest.update(str(arr.shape).encode() + np.ascontiguousarray(arr).tobytes())
        digest.update(repr((self.onehot, self.names)).encode())
        return digest.hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constraints) and self.fingerprint() == other.fingerprint()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return (f"Constraints(shape={self.shape}, immutable={int((~self.mutable).sum())}, "
                f"integer={int(self.integer.sum())}, categorical={len(self.onehot)})")

    def replace(self, **changes: Any) -> Constraints:
        """New constraints with some of :meth:`build`'s arguments changed (``immutable``,
        ``integer``, ``categorical``, ``scale``, ``bounds``, ``names``); the rest kept."""
        current = {"bounds": (self.low, self.high), "scale": self.scale,
                   "immutable": ~self.mutable, "integer": self.integer,
                   "categorical": [list(g) for g in self.onehot],
                   "names": self.names or None}
        unknown = set(changes) - set(current)
        if unknown:
            raise ValidationError(f"expected changes among {sorted(current)}, got "
                                  f"{sorted(unknown)}")
        return Constraints.build(self.shape, **{**current, **changes})

    def fit(self, shape: tuple[int, ...], name: str = "constraints") -> Constraints:
        """These constraints for examples of ``shape``: the same if built for it; broadcast
        to it if built for a broadcastable shape (e.g. per-channel bounds ``(C,)``) without
        one-hot groups or names; else a ValidationError naming ``name``."""
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        try:
            fits = np.broadcast_shapes(self.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits or self.onehot or self.names:
            raise ValidationError(f"expected {name} built for one example's shape {shape}, "
                                  f"got {self.shape}")
        return Constraints.build(shape, bounds=(self.low, self.high), scale=self.scale,
                                 immutable=np.broadcast_to(~self.mutable, shape),
                                 integer=np.broadcast_to(self.integer, shape))

    # -- checks --------------------------------------------------------------------------------

    def check_inputs(self, x: np.ndarray, name: str = "x") -> None:
        """Refuse clean inputs ``x`` ``(N, *shape)`` that break a feature's type: outside
        the per-feature bounds, a fractional integer feature or an invalid one-hot group."""
        flat = np.asarray(x, np.float32).reshape(len(x), -1)
        message = self._type_violation(flat) or self._bounds_violation(flat)
        if message:
            raise ValidationError(f"expected {name} to satisfy the feature constraints, got "
                                  f"{message}")

    def _bounds_violation(self, flat: np.ndarray) -> str | None:
        low, high = self.low.ravel(), self.high.ravel()
        bad = (flat < low) | (flat > high)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            return (f"example {row}: {self.name(col)} = {flat[row, col]:g} outside "
                    f"[{low[col]:g}, {high[col]:g}]")
        return None

    def _type_violation(self, flat: np.ndarray) -> str | None:
        ints = self.integer.ravel()
        if ints.any():
            vals = flat[:, ints]
            frac = vals != np.round(vals)
            if frac.any():
                row, k = (int(v) for v in np.argwhere(frac)[0])
                col = int(np.flatnonzero(ints)[k])
                return f"example {row}: integer feature {self.name(col)} = {flat[row, col]:g}"
        for group in self.onehot:
            vals = flat[:, list(group)]
            ok = np.isin(vals, (0.0, 1.0)).all(axis=1) & (vals.sum(axis=1) == 1)
            if not ok.all():
                row = int(np.flatnonzero(~ok)[0])
                cols = ", ".join(self.name(c) for c in group)
                return f"example {row}: categorical group ({cols}) is not one-hot"
        return None

    def distance(self, x_adv: np.ndarray, x: np.ndarray, norm: Norm) -> np.ndarray:
        """Per-example size of ``x_adv - x`` in units of ``scale`` over the mutable features
        (``(N,)`` float64); a changed immutable feature makes it infinite."""
        n = len(x)
        delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(n, -1)
        units = delta / self.scale.ravel().astype(np.float64)
        moved_fixed = (delta[:, ~self.mutable.ravel()] != 0).any(axis=1)
        size = np.abs(units).max(axis=1) if norm is Norm.LINF else \
            np.sqrt((units ** 2).sum(axis=1))
        return np.where(moved_fixed, np.inf, size)

    def violation(self, x_adv: np.ndarray, x: np.ndarray, epsilon: float, norm: Norm, *,
                  tol: float = 1e-5) -> str | None:
        """What is wrong with ``x_adv`` as an attack on ``x`` under these constraints and
        budget ``epsilon`` (None if nothing): an immutable feature changed, the scaled norm
        over ``epsilon``, a feature outside its bounds, a fractional integer feature, a
        broken one-hot group."""
        n = len(x)
        flat_adv = np.asarray(x_adv, np.float32).reshape(n, -1)
        flat_x = np.asarray(x, np.float32).reshape(n, -1)
        fixed = ~self.mutable.ravel()
        changed = flat_adv[:, fixed] != flat_x[:, fixed]
        if changed.any():
            row, k = (int(v) for v in np.argwhere(changed)[0])
            return (f"example {row}: immutable feature "
                    f"{self.name(int(np.flatnonzero(fixed)[k]))} changed")
        size = self.distance(flat_adv, flat_x, norm)
        if size.max() > epsilon * (1 + tol) + tol:
            row = int(np.argmax(size))
            return (f"example {row}: {norm.value} distance {size[row]:.6g} (in feature "
                    f"scale units) > epsilon {epsilon:g}")
        return self._bounds_violation(flat_adv) or self._type_violation(flat_adv)

    # -- words and records ---------------------------------------------------------------------

    def _listed(self, mask: np.ndarray) -> list[Any]:
        idx = np.flatnonzero(mask.ravel()).tolist()
        return [self.names[i] for i in idx] if self.names else idx

    def to_dict(self) -> dict[str, Any]:
        """A JSON record (feature lists by name when names are known; full per-feature
        arrays when there are at most 256 features, else their ranges)."""
        out: dict[str, Any] = {
            "features": self.size, "shape": list(self.shape),
            "immutable": self._listed(~self.mutable), "integer": self._listed(self.integer),
            "categorical": [[self.names[i] if self.names else i for i in g]
                            for g in self.onehot],
            "fingerprint": self.fingerprint()}
        if self.size <= 256:
            out.update(names=list(self.names), low=self.low.ravel().tolist(),
                       high=self.high.ravel().tolist(), scale=self.scale.ravel().tolist())
        else:
            out.update(low=[float(self.low.min()), float(self.low.max())],
                       high=[float(self.high.min()), float(self.high.max())],
                       scale=[float(self.scale.min()), float(self.scale.max())])
        return out

    def describe(self, norm: Norm = Norm.LINF) -> list[str]:
        """Sentences a reader understands: how ε is measured and what cannot change."""
        def some(items: list[Any], limit: int = 8) -> str:
            text = ", ".join(str(i) for i in items[:limit])
            return text + (f" and {len(items) - limit} more" if len(items) > limit else "")

        unit = "per feature, in units of that feature's scale" if not np.all(self.scale == 1) \
            else "in the features' own units"
        how = ("each feature may move at most ε" if norm is Norm.LINF
               else "the Euclidean length of the change may be at most ε")
        lines = [f"{how.capitalize()}, {unit}; every feature stays within its own bounds."]
        fixed = self._listed(~self.mutable)
        if fixed:
            lines.append(f"{len(fixed)} feature{'s' if len(fixed) != 1 else ''} cannot be "
                         f"changed by the attacker: {some(fixed)}.")
        ints = self._listed(self.integer)
        if ints:
            lines.append(f"{len(ints)} integer feature{'s end' if len(ints) != 1 else ' ends'} "
                         f"on whole numbers: {some(ints)}.")
        if self.onehot:
            verb = ("s stay valid one-hot groups" if len(self.onehot) != 1
                    else " stays a valid one-hot group")
            lines.append(f"{len(self.onehot)} categorical feature{verb} (a category switch "
                         f"moves two columns by 1 each).")
        return lines


def _label(index: int, names: tuple[str, ...]) -> str:
    return repr(names[index]) if names else f"feature {index}"


@dataclass(frozen=True)
class ThreatModel:
    """What an adversary may do: move each input at most ``epsilon`` in ``norm``, staying
    inside ``bounds`` (input units, e.g. ``(0.0, 1.0)`` for images), and, with
    ``constraints``, only as each feature allows (per-feature bounds and scale, immutable,
    integer and one-hot features; ``bounds`` is then their envelope)."""

    epsilon: float
    norm: Norm = Norm.LINF
    bounds: tuple[float, float] = (0.0, 1.0)
    constraints: Constraints | None = None

    @classmethod
    def parse(cls, epsilon: Any, norm: Any = "linf", bounds: Any = (0.0, 1.0),
              constraints: Constraints | None = None) -> ThreatModel:
        """Parse strings and check values. ``bounds`` is ``(low, high)`` of numbers, or of
        arrays broadcastable to one example's shape (per-feature bounds, which become
        ``constraints``); None means the constraints' own bounds, else ``(0, 1)``. Bounds
        given with ``constraints`` (numbers or arrays) narrow the constraints' bounds to
        them, never widen them."""
        eps = check_float("epsilon", epsilon, low=0.0)
        if constraints is not None and not isinstance(constraints, Constraints):
            raise InputTypeError(f"expected constraints to be a robustlab Constraints, got "
                                 f"{type(constraints).__name__}")
        if bounds is None:
            bounds = constraints.bounds if constraints is not None else (0.0, 1.0)
        try:
            low_v, high_v = bounds
            arrays = np.ndim(low_v) > 0 or np.ndim(high_v) > 0
        except (TypeError, ValueError):
            raise ValidationError(f"expected bounds to be (low, high), got {bounds!r}") from None
        if arrays:  # per-feature bounds; with constraints, narrowed to the intersection
            if constraints is None:
                shape = np.broadcast_shapes(np.shape(low_v), np.shape(high_v)) or (1,)
                constraints = Constraints.build(shape, bounds=(low_v, high_v))
            else:
                constraints = constraints.replace(bounds=(
                    np.maximum(constraints.low, np.asarray(low_v, np.float32)),
                    np.minimum(constraints.high, np.asarray(high_v, np.float32))))
            return cls(eps, parse_norm(norm), constraints.bounds, constraints)
        try:
            low, high = float(low_v), float(high_v)
        except (TypeError, ValueError):
            raise ValidationError(f"expected bounds to be (low, high), got {bounds!r}") from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValidationError(f"expected bounds low < high (finite), got {bounds!r}")
        if constraints is not None:
            if (low, high) != constraints.bounds:
                constraints = constraints.replace(bounds=(np.maximum(constraints.low, low),
                                                          np.minimum(constraints.high, high)))
            return cls(eps, parse_norm(norm), constraints.bounds, constraints)
        return cls(eps, parse_norm(norm), (low, high))

    def fit(self, shape: tuple[int, ...]) -> ThreatModel:
        """This threat model for examples of ``shape``: per-feature arrays built for a
        broadcastable shape (e.g. per-channel bounds ``(C,)``) are broadcast to it."""
        if self.constraints is None or self.constraints.shape == tuple(shape):
            return self
        return replace(self, constraints=self.constraints.fit(tuple(shape)))

    @property
    def limits(self) -> tuple[Any, Any]:
        """``(low, high)``: float32 arrays of one example's shape with constraints, else two
        float32 scalars."""
        if self.constraints is not None:
            return self.constraints.low, self.constraints.high
        return np.float32(self.bounds[0]), np.float32(self.bounds[1])

    @property
    def weight(self) -> np.ndarray | None:
        """Per-feature factor of steps and ball (``scale``, 0 where immutable), or None for
        a plain threat model (every feature alike, unit scale)."""
        return None if self.constraints is None else self.constraints.weight

    def box_size(self, image_shape: tuple[int, ...]) -> float:
        """The largest ε that still constrains the adversary inside the bounds: ``high - low``
        in L∞, the box's diagonal in L2 (``image_shape`` is one input's shape, e.g.
        ``(H, W, C)``); with constraints, measured in scale units over the mutable
        features (0 if none is mutable)."""
        if self.constraints is not None:
            c = self.constraints
            width = ((c.high.astype(np.float64) - c.low) / c.scale)[c.mutable]
            if not width.size:
                return 0.0
            return float(width.max() if self.norm is Norm.LINF else np.sqrt(np.sum(width ** 2)))
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
        return replace(self, epsilon=top)

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
        """The same norm, bounds and constraints with another budget (checked, ``>= 0``)."""
        return replace(self, epsilon=check_float("epsilon", epsilon, low=0.0))


    def violation(self, x_adv: np.ndarray, x: np.ndarray, *, tol: float = 1e-5) -> str | None:
        """What is wrong with ``x_adv`` as an attack on ``x`` (``(N, ...)``) under this
        threat model (None if nothing): the re-check the evaluation runs on every attack's
        output, with relative and absolute tolerance ``tol`` on the norm."""
        if self.constraints is not None:
            return self.constraints.violation(x_adv, x, self.epsilon, self.norm, tol=tol)
        n = len(x)
        delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(n, -1)
        size = np.abs(delta).max(axis=1) if self.norm is Norm.LINF else \
            np.sqrt((delta ** 2).sum(axis=1))
        if size.max() > self.epsilon * (1 + tol) + tol:
            return (f"max {self.norm.value} norm {size.max():.6g} > epsilon "
                    f"{self.epsilon:g}")
        low, high = self.bounds
        if np.min(x_adv) < low or np.max(x_adv) > high:
            return f"values in [{np.min(x_adv):g}, {np.max(x_adv):g}] outside bounds {self.bounds}"
        return None


class Backend(str, Enum):
    """Which implementation runs the attack: robustlab's own, CleverHans 4 or ART."""

    NATIVE = "native"
    CLEVERHANS = "cleverhans"
    ART = "art"
