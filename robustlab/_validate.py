"""Validation and parsing at the boundary: every message names the parameter, the
expectation and the value (``expected epsilon >= 0, got -0.1``)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from robustlab.errors import InputTypeError, ValidationError

E = TypeVar("E", bound=Enum)

_BINOPS = {ast.Div: operator.truediv, ast.Mult: operator.mul,
           ast.Add: operator.add, ast.Sub: operator.sub}


def _eval_number(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_number(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_number(node.left), _eval_number(node.right))
    raise ValueError("not a number")


def parse_float(name: str, value: Any) -> float:
    """Return ``value`` as a float; strings such as ``"8/255"`` or ``"0.3"`` are accepted
    (papermill and the CLI pass numbers as strings). No code is evaluated: only numeric
    literals and + - * / are understood."""
    if isinstance(value, bool):
        raise InputTypeError(f"expected {name} to be a number, got bool {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            return _eval_number(ast.parse(value.strip(), mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError):
            raise ValidationError(
                f"expected {name} to be a number such as 0.3 or 8/255, got {value!r}") from None
    raise InputTypeError(f"expected {name} to be a number, got {type(value).__name__} {value!r}")


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """Parse ``value`` and check ``low <= value <= high`` (``low < value`` if ``low_open``)."""
    number = parse_float(name, value)
    if not math.isfinite(number):
        raise ValidationError(f"expected {name} to be a finite number, got {number!r}")
    if low is not None and (number <= low if low_open else number < low):
        op = ">" if low_open else ">="
        raise ValidationError(f"expected {name} {op} {low:g}, got {number:g}")
    if high is not None and number > high:
        raise ValidationError(f"expected {name} <= {high:g}, got {number:g}")
    return number


def check_int(name: str, value: Any, *, low: int | None = None,
              high: int | None = None) -> int:
    """Check that ``value`` is an integer (a numeric string is accepted) within bounds."""
    if isinstance(value, bool):
        raise InputTypeError(f"expected {name} to be an integer, got bool {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValidationError(f"expected {name} to be an integer, got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)):
        raise InputTypeError(
            f"expected {name} to be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValidationError(f"expected {name} >= {low}, got {value}")
    if high is not None and value > high:
        raise ValidationError(f"expected {name} <= {high}, got {value}")
    return value


def check_optional_int(name: str, value: Any, *, low: int | None = None) -> int | None:
    """Like :func:`check_int`, but ``None`` (or an empty string / "none") passes as None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return check_int(name, value, low=low)


def check_sha256(name: str, value: Any) -> str:
    """A SHA-256 hex digest (64 hex digits, any case; surrounding spaces ignored), lower-cased;
    anything else is a ValidationError naming ``name``."""
    text = str(value).strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValidationError(f"expected {name} to be 64 hex digits, got {value!r}")
    return text


def check_seed(value: Any) -> int:
    """A seed is a non-negative integer below 2**32."""
    return check_int("seed", value, low=0, high=2**32 - 1)


def parse_enum(name: str, value: Any, enum: type[E]) -> E:
    """Convert a string (case-insensitive) to a member of ``enum`` or fail naming the choices."""
    if isinstance(value, enum):
        return value
    key = str(value.value if isinstance(value, Enum) else value).strip().lower()
    for member in enum:
        if key == str(member.value).lower():
            return member
    choices = ", ".join(repr(m.value) for m in enum)
    raise ValidationError(f"expected {name} to be one of {choices}, got {value!r}")


def split_list(value: str | Iterable[Any]) -> list[Any]:
    """``"a, b"`` -> ``["a", "b"]``; ``"[0, 0.1]"`` -> ``["0", "0.1"]``; lists pass through."""
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        return [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
    return list(value)


def parse_epsilons(value: str | float | Sequence[Any], *, name: str = "epsilons"
                   ) -> tuple[float, ...]:
    """Parse a list of perturbation budgets: ``"0, 8/255, 0.1"`` or ``[0, 0.1]``.

    Returns a sorted tuple of unique non-negative floats. Raises :class:`ValidationError`
    for an empty list, a negative, NaN or infinite value.
    """
    if isinstance(value, bool):
        raise InputTypeError(f"expected {name} to be numbers, got bool {value!r}")
    items = [value] if isinstance(value, (int, float)) else split_list(value)
    if not items:
        raise ValidationError(f"expected {name} to hold at least one value, got {value!r}")
    eps = [check_float(f"{name}[{i}]", item, low=0.0) for i, item in enumerate(items)]
    return tuple(sorted(set(eps)))


def validate_arrays(x: Any, y: Any, *, num_classes: int | None = None,
                    bounds: tuple[float, float] = (0.0, 1.0), name: str = "x",
                    label_name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Check a batch of inputs and labels and return them as float32 / int64.

    Args:
        x: inputs of any rank >= 2, shape ``(N, ...)`` (images ``(N, H, W, C)``, tables
            ``(N, F)``), finite, inside ``bounds`` (per-feature bounds and feature types are
            checked by :meth:`robustlab.types.Constraints.check_inputs`).
        y: integer labels, shape ``(N,)``, in ``[0, num_classes)``.
        num_classes: number of classes, if known.
        bounds: ``(low, high)`` of valid pixel values.
        name, label_name: parameter names used in error messages.

    Raises:
        ValidationError: wrong rank, mismatched lengths, empty batch, NaN/inf, values outside
            the bounds, labels that are not integers or out of range.
    """
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise InputTypeError(f"expected {name} to be a numeric array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValidationError(f"expected {name} to have shape (N, ...) with one row per example "
                              f"(images (N, H, W, C), tables (N, features)), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValidationError(f"expected {name} to hold at least one example, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValidationError(f"expected {name} to be finite, got {bad} NaN or infinite values")
    low, high = bounds
    if x.min() < low or x.max() > high:
        raise ValidationError(f"expected {name} values within bounds [{low:g}, {high:g}], got "
                              f"values in [{float(x.min()):g}, {float(x.max()):g}]")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValidationError(f"expected {label_name} to have shape (N,), got shape {y.shape}")
    if len(y) != len(x):
        raise ValidationError(f"expected {label_name} to have one label per example in {name} "
                              f"({len(x)}), got {len(y)}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) \
                and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValidationError(f"expected {label_name} to hold integer labels, "
                                  f"got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        expected = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValidationError(f"expected {label_name} {expected}, got labels in "
                              f"[{int(y.min())}, {int(y.max())}]")
    return x, y
