"""Figures for reports, rendered with matplotlib's Agg backend to PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from robustlab.stats import wilson_interval


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=110)


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _invisible_escapes() -> dict[int, str]:
    """``str.translate`` table: code point -> ``\\uXXXX`` (backslash, ``u``, 4 lowercase hex
    digits) for the characters that are invisible or rearrange the text around them.

    Names come from users, models and datasets; a RIGHT-TO-LEFT OVERRIDE in a model name
    visibly reverses the text after it, a zero-width space or NUL hides that two names
    differ, and a lone surrogate cannot even be written as UTF-8. Escaped, they are visible
    and harmless. The set: C0 controls except tab and newline, DEL, C1 controls, the bidi
    controls (U+061C, U+200E/U+200F, U+202A-U+202E, U+2066-U+2069), the zero-width
    characters (U+200B-U+200D, U+2060, U+FEFF), the line and paragraph separators
    (U+2028/U+2029) and surrogates (U+D800-U+DFFF). A literal backslash is left alone, so
    ``\\u202e`` typed by a user reads the same as an escaped RLO; ``report.json`` keeps the
    original text.
    """
    codes = [*(c for c in range(0x20) if c not in (0x09, 0x0A)), *range(0x7F, 0xA0),
             0x061C, *range(0x200B, 0x2010), *range(0x2028, 0x202F), *range(0x2060, 0x2061),
             *range(0x2066, 0x206A), 0xFEFF, *range(0xD800, 0xE000)]
    return {c: f"\\u{c:04x}" for c in codes}


_ESCAPES = _invisible_escapes()
# Figure text is one line, and matplotlib reads $...$ as mathtext (a name such as "$\foo$"
# would even fail to draw): tab and newline are escaped too, and "$" becomes "\$".
_FIGURE_ESCAPES = {**_ESCAPES, 0x09: "\\u0009", 0x0A: "\\u000a", ord("$"): "\\$"}


def visible_text(text: str) -> str:
    """``text`` with its invisible and bidi control characters shown as ``\\uXXXX`` (see
    :func:`_invisible_escapes`); the report's Jinja2 ``finalize`` applies it to every
    string, before HTML escaping."""
    return text.translate(_ESCAPES)


def figure_text(text: object, limit: int | None = None) -> str:
    """``text`` made safe for a figure: escaped like :func:`visible_text` (plus tab, newline and
    ``$``) and, when longer than ``limit`` characters, cut to ``limit`` with a final "…".

    Matplotlib grows the PNG to fit every title and legend (``bbox_inches="tight"``), so a
    5,000-character model name made a 40,000-pixel-wide plot; the full name is in the HTML
    tables and ``report.json``. An escape sequence is never cut in half.
    """
    pieces = [_FIGURE_ESCAPES.get(ord(ch), ch) for ch in str(text)]
    if limit is None or sum(len(p) for p in pieces) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > limit - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + "…"


# Most characters of a name in a figure; _fit() also cuts by rendered width, so that wide
# glyphs (W, CJK, emoji) cannot widen a plot either.
_MAX_CHARS = 60
# Widths (inches) that figure text must fit so it stays inside its axes: a legend entry in
# the 6.4-inch accuracy plots (axes about 5 in, less the legend's line sample), an axes
# title there, a title line over one image of a grid (about 1.2 in wide in examples_png,
# 1.0 in in gained_png) and the rotated model name beside a row of gained_png (1.9 in tall).
_LEGEND_INCHES = 3.9
_TITLE_INCHES = 4.6
_EXAMPLE_INCHES = 1.2
_GAINED_INCHES = 1.0
_ROW_NAME_INCHES = 1.3


def _text_inches(text: str, fontsize: float) -> float:
    """Rendered width of one line of plain text in inches (matplotlib's default font)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    width, _, _ = text_to_path.get_text_width_height_descent(
        text, FontProperties(size=fontsize), ismath=False)
    return float(width) / 72.0


def _fit(text: object, fontsize: float, inches: float, limit: int = _MAX_CHARS) -> str:
    """:func:`figure_text` of ``text``, cut (with "…") to at most ``limit`` characters and
    ``inches`` wide at ``fontsize`` points.

    A figure is saved with ``bbox_inches="tight"``, so any text wider than its axes widens
    the PNG; cutting by rendered width keeps plots of long or wide names the size of plots
    of short ones."""
    fitted = figure_text(text, limit)
    if _text_inches(fitted, fontsize) <= inches:
        return fitted
    best, low, high = "…", 2, len(fitted) - 1
    while low <= high:  # the longest cut that fits: width grows with the cut's length
        mid = (low + high) // 2
        candidate = figure_text(text, mid)
        if _text_inches(candidate, fontsize) <= inches:
            best, low = candidate, mid + 1
        else:
            high = mid - 1
    return best


def _accuracy_plot(curves: list[tuple[str, Any, dict[str, Any]]], norm: str, ylabel: str,
                   title: str, mark: float | None = None, units: str = "pixel units") -> bytes:
    """Accuracy (%) vs ε, one line with its 95% CI band per ``(label, points, style)``."""
    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    for label, points, style in curves:
        eps = [p.epsilon for p in points]
        line, = ax.plot(eps, [100 * p.accuracy for p in points], marker="o",
                        label=_fit(label, 8, _LEGEND_INCHES), **style)
        ax.fill_between(eps, [100 * p.ci_low for p in points],
                        [100 * p.ci_high for p in points], alpha=0.15, color=line.get_color())
    if mark is not None:
        ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"ε ({_fit(norm, 10, _LEGEND_INCHES)}, {units})")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(_fit(title, 12, _TITLE_INCHES, limit=2 * _MAX_CHARS))
    return png_bytes(fig)


def epsilon_units(result: Any) -> str:
    """The unit ε is measured in, as the report words it: ``pixel units`` for images,
    ``feature-scale units`` when the constraints give features their own scale (ε = 0.1 is a
    tenth of each feature's scale), else ``input units``."""
    constraints = getattr(result, "constraints", None)
    if constraints is not None and not np.all(constraints.scale == 1):
        return "feature-scale units"
    return "pixel units" if result.is_image else "input units"


def ranked_shifts(result: Any, limit: int | None = None) -> list[Any]:
    """The result's :class:`~robustlab.results.FeatureShift` records, most often moved first
    (ties: the larger mean change in scale units first, then feature order), at most
    ``limit``."""
    ranked = sorted(result.feature_shifts, key=lambda s: (-s.moved, -s.mean_scaled, s.index))
    return ranked if limit is None else ranked[:limit]


def broken_count(result: Any) -> int:
    """How many examples the last attack broke at ``shift_epsilon`` (the examples the
    feature shifts are taken over): correct when clean, wrong under that attack."""
    if result.shift_epsilon is None or not result.curves:
        return 0
    n_clean = round(result.clean_accuracy * result.n_examples)
    point = next((p for p in result.curves[-1].points
                  if np.isclose(p.epsilon, result.shift_epsilon)), None)
    return 0 if point is None else max(n_clean - point.n_correct, 0)


# Rendered width (inches) of a feature name beside its bar in feature_shifts_png.
_FEATURE_INCHES = 2.2


def feature_shifts_png(result: Any, top: int = 20) -> bytes | None:
    """Horizontal bars: the percentage of broken examples in which the attack moved each
    feature, the ``top`` most often moved features (see :func:`ranked_shifts`); None when
    the result has no feature shifts (images, or nothing broken)."""
    shifts = ranked_shifts(result, top)
    if not shifts:
        return None
    fig = new_figure(6.4, 0.8 + 0.24 * len(shifts))
    ax = fig.subplots()
    ypos = np.arange(len(shifts))
    ax.barh(ypos, [100 * s.moved for s in shifts], color="#4c72b0")
    ax.set_yticks(ypos, [_fit(s.name, 8, _FEATURE_INCHES) for s in shifts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("broken examples in which the feature changed (%)")
    ax.grid(axis="x", alpha=0.3)
    attack = result.curves[-1].label if result.curves else ""
    eps = result.shift_epsilon if result.shift_epsilon is not None else 0.0
    ax.set_title(_fit(f"Features moved by {attack} at ε = {eps:.4g} "
                      f"({broken_count(result)} broken examples)", 10, _TITLE_INCHES,
                      limit=2 * _MAX_CHARS), fontsize=10)
    return png_bytes(fig)


def crossval_png(cv: Any) -> bytes:
    """Per fold (thin lines) and their mean (thick black line): clean accuracy (at the left,
    "clean") and worst-case robust accuracy at each ε of the cross-validation, the ε evenly
    spaced. When the first ε is 0 its point is the clean accuracy and stands for it."""
    eps = list(cv.epsilons)
    with_clean = not eps or eps[0] != 0
    ticks = (["clean"] if with_clean else []) + [
        f"{e:.4g}" + ("" if e != 0 else " (clean)") for e in eps]
    xs = np.arange(len(ticks))

    def line(clean: float, robust: list[float]) -> list[float]:
        return [100 * a for a in ([clean] if with_clean else []) + robust]

    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    for fold in cv.folds:
        ax.plot(xs, line(fold.clean_accuracy, [p.accuracy for p in fold.worst_case]),
                marker="o", linewidth=1, alpha=0.7, label=f"fold {fold.fold}")
    ax.plot(xs, line(cv.clean_mean, [cv.robust_mean(e) for e in eps]), color="black",
            linewidth=2.5, marker="s", label="mean")
    ax.set_xticks(xs, ticks)
    ax.set_xlabel(f"ε ({_fit(cv.norm.value, 10, _LEGEND_INCHES)})")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    attacks = ", ".join(str(a) for a in cv.attacks)
    ax.set_title(_fit(f"{cv.k}-fold cross-validation: worst case over {attacks}", 12,
                      _TITLE_INCHES, limit=2 * _MAX_CHARS))
    return png_bytes(fig)


def show_image(ax: Any, img: np.ndarray) -> None:
    """Draw one image (H, W, 1 greyscale or H, W, 3 colour) in [0, 1], without axes."""
    img = np.clip(img, 0.0, 1.0)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(img)
    ax.axis("off")


def curves_png(result: Any) -> bytes:
    """Robust accuracy (%) vs ε for each attack and the worst case, with 95% CI bands."""
    curves: list[tuple[str, Any, dict[str, Any]]] = [
        (c.label, c.points, {}) for c in result.curves]
    curves.append((result.worst_case.label, result.worst_case.points,
                   dict(color="black", linestyle="--")))
    return _accuracy_plot(curves, result.norm.value, "accuracy (%)",
                          f"Robust accuracy on {result.n_examples} examples",
                          units=epsilon_units(result))


def examples_png(result: Any, class_names: list[str] | None = None) -> bytes | None:
    """Grid: clean image, adversarial image, perturbation amplified to the full range."""
    images = result.example_images
    if not result.examples or "clean" not in images:
        return None
    room = _EXAMPLE_INCHES - _text_inches("pred  (100%)", 7)  # the longest title line
    names = [_fit(name, 7, room) for name in
             class_names or [str(i) for i in range(result.model["num_classes"])]]
    clean, adv = images["clean"], images["adversarial"]
    n = len(result.examples)
    fig = new_figure(1.9 * n, 6.2)
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
            show_image(ax, img)
            ax.set_title(title, fontsize=7,
                         color="crimson" if row == 1 and ex.adv_pred != ex.label else "black")
    return png_bytes(fig)


def comparison_png(comparison: Any) -> bytes:
    """Worst-case robust accuracy (%) vs ε of every compared model, with 95% CI bands; a
    dotted line marks the ε of the example grid."""
    first = comparison.results[0]
    curves: list[tuple[str, Any, dict[str, Any]]] = [
        (name, result.worst_case.points, {})
        for name, result in zip(comparison.names, comparison.results, strict=True)]
    return _accuracy_plot(curves, first.norm.value, "worst-case accuracy (%)",
                          f"Worst case over {', '.join(c.label for c in first.curves)}",
                          mark=comparison.focus_epsilon, units=epsilon_units(first))


def gained_png(comparison: Any, x: np.ndarray, y: np.ndarray,
               class_names: list[str] | None = None) -> bytes | None:
    """Rows of clean images (one row per model) that the baseline gets wrong under attack
    at the focus ε and that model gets right; None when there are none."""
    rows = [(name, idx) for name, idx in comparison.gained.items() if idx]
    if not rows:
        return None
    cols = max(len(idx) for _, idx in rows)
    room = _GAINED_INCHES - _text_inches(f"#{len(y)} label ", 7)
    names = [_fit(name, 7, room) for name in
             class_names or [str(i) for i in range(int(y.max()) + 1)]]
    fig = new_figure(1.6 * cols, 1.9 * len(rows))
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, (name, idx) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            show_image(ax, x[idx[c]])
            ax.set_title(f"#{idx[c]} label {names[int(y[idx[c]])]}", fontsize=7)
        axes[r, 0].text(-0.15, 0.5, _fit(name, 8, _ROW_NAME_INCHES),
                        transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    return png_bytes(fig)


def convergence_png(result: Any) -> bytes | None:
    """Robust accuracy (%) vs number of attack steps at the checks' ε, with 95% Wilson
    bands, and the accuracy with twice the restarts; None without convergence data."""
    conv = result.convergence
    if conv is None:
        return None
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    acc = np.asarray(conv.accuracy) * 100
    band = np.asarray([wilson_interval(round(a * conv.n), conv.n) for a in conv.accuracy]) * 100
    attack = _fit(conv.attack.split("-")[0], 8,
                  _LEGEND_INCHES - _text_inches(", 99 restart(s)", 8))
    ax.plot(conv.steps, acc, marker="o", label=f"{attack}, {conv.restarts} restart(s)")
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
    return png_bytes(fig)


def roc_png(audit: Any, *, epsilon: float | None = None, delta: float | None = None) -> bytes:
    """The membership audit's ROC curves on log-log axes (as in Carlini et al. 2022,
    https://arxiv.org/abs/2112.03570: what matters is the true-positive rate at low
    false-positive rates), with the chance diagonal and, given (ε, δ), the DP bound on any
    attack's TPR (dashed). FPRs below the audit's resolution (1 / non-members) are cut."""
    from robustlab.stats import dp_tpr_bound

    floor = max(min(audit.fpr_resolution, 1e-3), 1e-5)
    fig = new_figure(5.2, 4.2)
    ax = fig.subplots()
    grid = np.logspace(np.log10(floor), 0, 200)
    ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
    if epsilon is not None and delta is not None:
        bound = [dp_tpr_bound(epsilon, delta, f) for f in grid]
        ax.plot(grid, bound, color="black", linestyle="--", linewidth=1.2,
                label=_fit(f"DP bound (ε = {epsilon:.3g})", 8, _LEGEND_INCHES))
    for attack in audit.attacks:
        fpr, tpr = np.asarray(attack.roc_fpr), np.asarray(attack.roc_tpr)
        keep = fpr >= floor
        ax.plot(np.maximum(fpr[keep], floor), np.maximum(tpr[keep], floor), linewidth=1.6,
                label=_fit(f"{attack.name} (AUC {attack.auc:.3f})", 8, _LEGEND_INCHES))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false-positive rate (non-members flagged)")
    ax.set_ylabel("true-positive rate (members found)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(_fit(f"Membership inference on {audit.model}", 12, _TITLE_INCHES))
    return png_bytes(fig)


# ------------------------------------------------------------------ poisoning

# Most class panels in poison_score_histograms_png (flagged and most suspicious classes
# first when a dataset has more), panels per row, images per row of suspects_png, and the
# rendered widths (inches) of a panel's title and of a suspect's label.
_MAX_PANELS = 20
_PANEL_COLUMNS = 5
_SUSPECT_COLUMNS = 8
_PANEL_INCHES = 1.5
_SUSPECT_INCHES = 1.0


def _panel_classes(inspection: Any, classes: list[int]) -> list[int]:
    """At most ``_MAX_PANELS`` of ``classes``: the flagged ones, then those with the highest
    score, shown in class order."""
    if len(classes) <= _MAX_PANELS:
        return classes
    scores = np.asarray(inspection.scores, np.float64)
    labels = np.asarray(inspection.labels)
    flagged = set(inspection.flagged_classes)

    def top(c: int) -> float:
        values = scores[(labels == c) & np.isfinite(scores)]
        return float(values.max()) if len(values) else -np.inf

    ranked = sorted(classes, key=lambda c: (c not in flagged, -top(c), c))
    return sorted(ranked[:_MAX_PANELS])


def poison_score_histograms_png(inspection: Any, class_names: list[str] | tuple[str, ...],
                                poison: np.ndarray | None = None) -> bytes | None:
    """One small histogram per class of one detector's poison scores
    (:class:`~robustlab.results.Inspection` ``.scores``, comparable across classes: the same
    bins in every panel, counts on a log scale so a few poisons show beside thousands of
    clean examples). Flagged classes have a red title and frame; with ``poison`` (indices of
    the known poison), the poison is stacked in red on the other examples (blue). At most
    20 panels (flagged and most suspicious classes first). None when there is no finite
    score."""
    scores = np.asarray(inspection.scores, np.float64)
    labels = np.asarray(inspection.labels).astype(np.int64)
    finite = np.isfinite(scores)
    if not finite.any():
        return None
    truth = np.zeros(len(scores), bool)
    if poison is not None:
        truth[np.asarray(poison, np.int64)] = True
    edges = np.histogram_bin_edges(scores[finite], bins=30)
    if edges[0] == edges[-1]:  # one value everywhere
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    classes = _panel_classes(inspection, sorted({int(c) for c in labels[finite]}))
    flagged = set(inspection.flagged_classes)
    cols = min(_PANEL_COLUMNS, len(classes))
    rows = -(-len(classes) // cols)
    fig = new_figure(1.9 * cols, 1.5 * rows + 0.5)
    fig.set_layout_engine("constrained")  # room for the suptitle above the panel titles
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, sharex=True))
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    for ax, c in zip(axes.ravel(), classes, strict=False):
        keep = (labels == c) & finite
        data = [scores[keep & ~truth], scores[keep & truth]]
        ax.hist(data, bins=edges, stacked=True, log=True, color=["#4c72b0", "crimson"],
                label=["other", "poison"])
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        is_flagged = c in flagged
        suffix = " (flagged)" if is_flagged else ""
        room = _PANEL_INCHES - (_text_inches(suffix, 7) if suffix else 0.0)
        ax.set_title(_fit(name, 7, room) + suffix, fontsize=7,
                     color="crimson" if is_flagged else "black")
        if is_flagged:
            for spine in ax.spines.values():
                spine.set_edgecolor("crimson")
                spine.set_linewidth(1.5)
        ax.set_ylim(0.7, None)  # a bar of one example stays visible on the log scale
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("poison score", fontsize=7)
    if poison is not None:
        axes[0, 0].legend(fontsize=6, loc="upper right")
    shown = "" if len(classes) == len(set(labels[finite].tolist())) else (
        f", {len(classes)} classes shown")
    fig.suptitle(_fit(f"{inspection.detector}: poison scores per class (log counts{shown})",
                      9, _PANEL_INCHES * cols + 0.4 * cols, limit=2 * _MAX_CHARS), fontsize=9)
    return png_bytes(fig)


def _as_image(img: np.ndarray) -> np.ndarray:
    """One input ``(H, W)`` or ``(H, W, C)`` as something :func:`show_image` draws: a
    channel axis, 1 or 3 channels (others averaged), values in [0, 1] (rescaled when the
    data's bounds are wider)."""
    img = np.asarray(img, np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] not in (1, 3):
        img = img.mean(axis=-1, keepdims=True)
    low, high = float(np.nanmin(img)), float(np.nanmax(img))
    if low < 0.0 or high > 1.0:
        img = (img - low) / (high - low) if high > low else np.zeros_like(img)
    return img


def suspects_png(inputs: np.ndarray, labels: np.ndarray,
                 class_names: list[str] | tuple[str, ...], indices: np.ndarray, *,
                 poison: np.ndarray | None = None) -> bytes | None:
    """A grid of the most suspicious training images (``inputs`` ``(k, H, W, C)`` or
    ``(k, H, W)``), each titled with its index and training label (``labels`` ``(k,)``,
    ``indices`` ``(k,)``); with ``poison`` (indices of the known poison) the poisoned ones
    are titled "poison" in red. None for feature rows (``(k, F)``: the report shows a
    table) or no input."""
    inputs = np.asarray(inputs)
    if inputs.ndim not in (3, 4) or len(inputs) == 0:
        return None
    truth = set() if poison is None else {int(i) for i in np.asarray(poison).ravel()}
    k = len(inputs)
    cols = min(_SUSPECT_COLUMNS, k)
    rows = -(-k // cols)
    room = _SUSPECT_INCHES - _text_inches("label ", 7)
    names = [_fit(n, 7, room) for n in class_names]
    fig = new_figure(1.3 * cols, 1.5 * rows)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for j, ax in enumerate(axes.ravel()[:k]):
        show_image(ax, _as_image(inputs[j]))
        label, index = int(labels[j]), int(indices[j])
        name = names[label] if 0 <= label < len(names) else str(label)
        bad = index in truth
        ax.set_title(f"#{index}{' poison' if bad else ''}\nlabel {name}", fontsize=7,
                     color="crimson" if bad else "black")
    return png_bytes(fig)


# ------------------------------------------------------------------ monitoring

# Most detector rows in monitor_score_histograms_png, the width of one panel (inches), and
# the colours of its conditions: clean first, then the others in turn.
_MAX_DETECTOR_ROWS = 10
_MONITOR_PANEL_INCHES = 3.2
_CLEAN_COLOUR = "#4c72b0"
_CONDITION_COLOURS = ("crimson", "darkorange", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                      "#7f7f7f", "#bcbd22", "#17becf")


def _finite_scores(values: Any) -> np.ndarray:
    arr = np.asarray(values, np.float64).ravel()
    return arr[np.isfinite(arr)]


def monitor_score_histograms_png(samples: dict[str, dict[str, Any]],
                                 thresholds: dict[str, float], detectors: Any,
                                 groups: list[tuple[str, list[str]]]) -> bytes | None:
    """Per detector (one row each, named on its left; at most 10), one panel per group of conditions
    (``groups``: ``(title, [condition, ...])``, e.g. the attacks and the shifts), each the
    detector's score histograms (``samples[condition][detector]``, densities, the same bins
    across a row) of the clean inputs and of each condition of the group, with the
    detector's threshold (``thresholds``) as a dashed line: what lies right of it is flagged.
    Bins span the 0.5-99.5% quantiles of a row's scores (and its threshold); scores outside
    are counted in the outer bins. None when there is nothing to draw."""
    clean = samples.get("clean", {})
    panels = [(title, [c for c in conditions if c != "clean" and c in samples])
              for title, conditions in groups]
    panels = [(title, conditions) for title, conditions in panels if conditions]
    rows = [d for d in detectors
            if any(len(_finite_scores(samples[c].get(d, ()))) for _, cs in panels for c in cs)]
    rows = rows[:_MAX_DETECTOR_ROWS]
    if not panels or not rows:
        return None
    colours: dict[str, str] = {}
    for _, conditions in panels:
        for c in conditions:
            colours.setdefault(c, _CONDITION_COLOURS[len(colours) % len(_CONDITION_COLOURS)])
    fig = new_figure(_MONITOR_PANEL_INCHES * len(panels) + 0.6, 2.1 * len(rows) + 0.4)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(len(rows), len(panels), squeeze=False)
    for r, detector in enumerate(rows):
        threshold = float(thresholds.get(detector, np.nan))
        pooled = [_finite_scores(clean.get(detector, ()))]
        pooled += [_finite_scores(samples[c].get(detector, ())) for _, cs in panels for c in cs]
        values = np.concatenate(pooled)
        low, high = (np.quantile(values, [0.005, 0.995]) if len(values)
                     else (threshold, threshold))
        if np.isfinite(threshold):
            low, high = min(low, threshold), max(high, threshold)
        if not high > low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, 41)
        for col, (title, conditions) in enumerate(panels):
            ax = axes[r, col]
            for name in ["clean", *conditions]:
                data = _finite_scores((clean if name == "clean" else samples[name])
                                      .get(detector, ()))
                if not len(data):
                    continue
                colour = _CLEAN_COLOUR if name == "clean" else colours[name]
                ax.hist(np.clip(data, low, high), bins=edges, density=True, histtype="step",
                        linewidth=1.4, color=colour,
                        label=_fit(f"{name} ({len(data)})", 6, _MONITOR_PANEL_INCHES / 2))
            if np.isfinite(threshold):
                ax.axvline(threshold, color="black", linestyle="--", linewidth=1,
                           label="threshold")
            if r == 0:
                ax.set_title(_fit(title, 9, _MONITOR_PANEL_INCHES), fontsize=9)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            ax.legend(fontsize=6, loc="upper right")
        axes[r, 0].set_ylabel(_fit(detector, 8, 1.8) + "\n(density)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("score (higher = more suspicious)", fontsize=7)
    return png_bytes(fig)
