"""Statistics of robustness and privacy numbers: confidence intervals, perturbation sizes,
and the ROC of a membership-inference attack (pure NumPy)."""

from __future__ import annotations

import math

import numpy as np

from robustlab.errors import ValidationError

__all__ = ["wilson_interval", "perturbation_norms", "roc_curve", "roc_auc",
           "hanley_mcneil_interval", "tpr_at_fpr", "membership_advantage", "downsample_roc",
           "dp_tpr_bound"]


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


# ---------------------------------------------------------------------------------------------
# ROC of a score that separates positives (members) from negatives (non-members)


def _scores(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, np.float64).reshape(-1)
    if arr.size == 0:
        raise ValidationError(f"expected {name} to hold at least one score, got none")
    if not np.all(np.isfinite(arr)):
        raise ValidationError(f"expected {name} to be finite, got "
                              f"{int(arr.size - np.isfinite(arr).sum())} NaN or infinite values")
    return arr


def roc_curve(positives: np.ndarray, negatives: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of the rule "positive if score >= t", over every distinct threshold.

    Args:
        positives: scores of the positive examples (members), shape ``(P,)``; higher means
            more likely positive.
        negatives: scores of the negative examples (non-members), shape ``(N,)``.

    Returns:
        ``(fpr, tpr, thresholds)``, float64 arrays of equal length: the first point is
        ``(0, 0)`` at threshold ``+inf``, then one point per distinct score in decreasing
        order, ending at ``(1, 1)``. The same points as ``sklearn.metrics.roc_curve(...,
        drop_intermediate=False)``.
    """
    pos, neg = _scores("positives", positives), _scores("negatives", negatives)
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last index of each tie
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    fpr = np.r_[0.0, fp / len(neg)]
    tpr = np.r_[0.0, tp / len(pos)]
    return fpr, tpr, np.r_[np.inf, scores[last]]


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve: ``P(s+ > s-) + P(s+ = s-) / 2`` over all positive-negative
    pairs (the Mann-Whitney statistic; 0.5 is chance, 1 perfect separation)."""
    fpr, tpr, _ = roc_curve(positives, negatives)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def hanley_mcneil_interval(auc: float, n_positives: int, n_negatives: int,
                           z: float = 1.959964) -> tuple[float, float]:
    """95% interval ``auc ± z·SE`` of an AUC, clipped to [0, 1], with the standard error of
    Hanley & McNeil 1982 (https://doi.org/10.1148/radiology.143.1.7063747, eq. 2):
    ``SE² = (A(1-A) + (P-1)(Q1-A²) + (N-1)(Q2-A²)) / (P·N)``, ``Q1 = A/(2-A)``,
    ``Q2 = 2A²/(1+A)``. It treats the scores as independent, which holds for the loss attack
    and, approximately, for LiRA."""
    a = float(auc)
    if n_positives <= 0 or n_negatives <= 0:
        return (0.0, 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_positives - 1) * (q1 - a * a) + (n_negatives - 1) * (q2 - a * a)) \
        / (n_positives * n_negatives)
    half = z * math.sqrt(max(var, 0.0))
    return (max(0.0, a - half), min(1.0, a + half))


def tpr_at_fpr(positives: np.ndarray, negatives: np.ndarray, fpr: float
               ) -> tuple[float, float, float, int]:
    """The true-positive rate of "positive if score > t" with ``t`` set on the negatives so
    that the empirical false-positive rate is at most ``fpr``.

    ``t`` is the ``k``-th largest negative score (``k = floor(fpr·N)``, 0-based), so at most
    ``k`` negatives lie strictly above it; with ``fpr·N < 1`` that is the largest negative
    score (empirical FPR 0), since an FPR below ``1/N`` cannot be measured on ``N``
    negatives.

    Returns:
        ``(tpr, achieved_fpr, threshold, true_positives)``; ``achieved_fpr <= fpr`` always.
    """
    pos, neg = _scores("positives", positives), _scores("negatives", negatives)
    if not 0.0 <= fpr <= 1.0:
        raise ValidationError(f"expected fpr in [0, 1], got {fpr}")
    k = int(math.floor(fpr * len(neg) + 1e-9))
    threshold = -np.inf if k >= len(neg) else float(np.sort(neg)[::-1][k])
    hits = int(np.count_nonzero(pos > threshold))
    return (hits / len(pos), float(np.count_nonzero(neg > threshold)) / len(neg),
            threshold, hits)


def membership_advantage(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """``max(TPR - FPR)`` over the ROC points (Yeom et al. 2018,
    https://arxiv.org/abs/1709.01604, Definition 4): 0 for a useless attack, 1 for a
    perfect one."""
    return float(np.max(np.asarray(tpr, np.float64) - np.asarray(fpr, np.float64)))


def downsample_roc(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 200
                   ) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of an ROC curve for a log-log plot: the points whose
    FPR is nearest below log-spaced targets between the smallest non-zero FPR and 1 (dense
    at the low-FPR end, where membership attacks are judged), plus both ends. ``fpr`` must
    be non-decreasing (as :func:`roc_curve` returns it)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if len(fpr) <= max_points:
        return fpr, tpr
    positive = fpr[fpr > 0]
    low = float(positive.min()) if positive.size else 1.0
    targets = np.geomspace(low, 1.0, max(1, max_points - 2))
    idx = np.searchsorted(fpr, targets, side="right") - 1  # best TPR at FPR <= target
    keep = np.unique(np.r_[0, np.clip(idx, 0, len(fpr) - 1), len(fpr) - 1])[:max_points]
    return fpr[keep], tpr[keep]


def dp_tpr_bound(epsilon: float, delta: float, fpr: float) -> float:
    """The largest TPR any membership test can reach at false-positive rate ``fpr`` against
    an (ε, δ)-differentially private training algorithm.

    The hypothesis-testing view of DP (Kairouz, Oh & Viswanath 2015,
    https://arxiv.org/abs/1311.0776, Theorem 2.1): every test satisfies
    ``FPR + e^ε·FNR >= 1 - δ`` and ``FNR + e^ε·FPR >= 1 - δ``, i.e.
    ``TPR <= e^ε·FPR + δ`` and ``TPR <= 1 - e^{-ε}(1 - δ - FPR)``; the bound is the smaller
    of the two, clipped to [0, 1].
    """
    first = math.exp(epsilon) * fpr + delta
    second = 1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)
    return float(min(1.0, max(0.0, min(first, second))))
