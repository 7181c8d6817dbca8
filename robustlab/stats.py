"""Statistics of robustness numbers: confidence intervals and perturbation sizes."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["wilson_interval", "perturbation_norms"]


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
    # clamp: at 0% and 100% rounding can put the end a hair inside the estimate
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def perturbation_norms(x_adv: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example ``(L∞, L2)`` norms of ``x_adv - x``, each of shape ``(N,)``."""
    flat = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    return np.abs(flat).max(axis=1), np.sqrt((flat**2).sum(axis=1))
