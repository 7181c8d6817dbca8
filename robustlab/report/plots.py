"""Figures for reports, rendered with matplotlib's Agg backend to PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=110)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _accuracy_plot(curves: list[tuple[str, Any, dict[str, Any]]], norm: str, ylabel: str,
                   title: str, mark: float | None = None) -> bytes:
    """Accuracy (%) vs ε, one line with its 95% CI band per ``(label, points, style)``."""
    fig = _figure(6.4, 4.0)
    ax = fig.subplots()
    for label, points, style in curves:
        eps = [p.epsilon for p in points]
        line, = ax.plot(eps, [100 * p.accuracy for p in points], marker="o", label=label,
                        **style)
        ax.fill_between(eps, [100 * p.ci_low for p in points],
                        [100 * p.ci_high for p in points], alpha=0.15, color=line.get_color())
    if mark is not None:
        ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"ε ({norm}, pixel units)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    return _png(fig)


def _show(ax: Any, img: np.ndarray) -> None:
    """Draw one image (H, W, 1 greyscale or H, W, 3 colour) in [0, 1], without axes."""
    img = np.clip(img, 0.0, 1.0)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(img)
    ax.axis("off")


def curves_png(result: Any) -> bytes:
    """Robust accuracy (%) vs ε for each attack and the worst case, with 95% CI bands."""
    curves = [(c.label, c.points, {}) for c in result.curves]
    curves.append((result.worst_case.label, result.worst_case.points,
                   dict(color="black", linestyle="--")))
    return _accuracy_plot(curves, result.norm, "accuracy (%)",
                          f"Robust accuracy on {result.n_examples} examples")


def examples_png(result: Any, class_names: list[str] | None = None) -> bytes | None:
    """Grid: clean image, adversarial image, perturbation amplified to the full range."""
    images = result.example_images
    if not result.examples or "clean" not in images:
        return None
    names = class_names or [str(i) for i in range(result.model["num_classes"])]
    clean, adv = images["clean"], images["adversarial"]
    n = len(result.examples)
    fig = _figure(1.9 * n, 6.2)
    axes = np.atleast_2d(fig.subplots(3, n, squeeze=False))
    for j, ex in enumerate(result.examples):
        delta = adv[j] - clean[j]
        scale = float(np.abs(delta).max()) or 1.0
        panels = ((clean[j], f"label {names[ex.label]}\npred {names[ex.clean_pred]} "
                   f"({100 * ex.clean_confidence:.0f}%)"),
                  (adv[j], f"adv pred {names[ex.adv_pred]}\n({100 * ex.adv_confidence:.0f}%)"),
                  (0.5 + 0.5 * delta / scale, f"perturbation\n×{0.5 / scale:.1f}"))
        for row, (img, title) in enumerate(panels):
            ax = axes[row, j]
            _show(ax, img)
            ax.set_title(title, fontsize=7,
                         color="crimson" if row == 1 and ex.adv_pred != ex.label else "black")
    return _png(fig)


def comparison_png(comparison: Any) -> bytes:
    """Worst-case robust accuracy (%) vs ε of every compared model, with 95% CI bands; a
    dotted line marks the ε of the example grid."""
    first = comparison.results[0]
    curves = [(name, result.worst_case.points, {})
              for name, result in zip(comparison.names, comparison.results, strict=True)]
    return _accuracy_plot(curves, first.norm, "worst-case accuracy (%)",
                          f"Worst case over {', '.join(c.label for c in first.curves)}",
                          mark=comparison.focus_epsilon)


def gained_png(comparison: Any, x: np.ndarray, y: np.ndarray,
               class_names: list[str] | None = None) -> bytes | None:
    """Rows of clean images (one row per model) that the baseline gets wrong under attack
    at the focus ε and that model gets right; None when there are none."""
    rows = [(name, idx) for name, idx in comparison.gained.items() if idx]
    if not rows:
        return None
    cols = max(len(idx) for _, idx in rows)
    names = class_names or [str(i) for i in range(int(y.max()) + 1)]
    fig = _figure(1.6 * cols, 1.9 * len(rows))
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, (name, idx) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            _show(ax, x[idx[c]])
            ax.set_title(f"#{idx[c]} label {names[int(y[idx[c]])]}", fontsize=7)
        axes[r, 0].text(-0.15, 0.5, name, transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    return _png(fig)


def convergence_png(result: Any) -> bytes | None:
    """Robust accuracy (%) vs number of attack steps at the checks' ε, with 95% Wilson
    bands, and the accuracy with twice the restarts; None without convergence data."""
    from robustlab.evaluate import wilson_interval

    conv = result.convergence
    if conv is None:
        return None
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    acc = np.asarray(conv.accuracy) * 100
    band = np.asarray([wilson_interval(round(a * conv.n), conv.n) for a in conv.accuracy]) * 100
    ax.plot(conv.steps, acc, marker="o", label=f"{conv.attack.split('-')[0]}, "
            f"{conv.restarts} restart(s)")
    ax.fill_between(conv.steps, band[:, 0], band[:, 1], alpha=0.15)
    ax.scatter([max(conv.steps) // 2], [100 * conv.accuracy_double_restarts], marker="s",
               color="black", zorder=3, label=f"{2 * conv.restarts} restarts")
    ax.set_xscale("log", base=2)
    ax.set_xticks(conv.steps, [str(s) for s in conv.steps])
    ax.set_xlabel("attack steps")
    ax.set_ylabel("robust accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Convergence at ε = {conv.epsilon:.4g} on {conv.n} examples")
    return _png(fig)
