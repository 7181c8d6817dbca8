"""The interactive attack explorer (ipywidgets 8).

``Explorer(model, data)`` shows one image at a time: pick it by index (or jump to the next
one the attack fools), choose the attack, norm, ε and steps, and see the clean image, the
adversarial image and the amplified perturbation side by side, the top-k class
probabilities before and after, the predictions and the perturbation's norms. A second tab
computes the robustness curve of the chosen attack on N examples (with a progress bar) and
shows the images that break first. Every result is cached, so returning to a setting is
instant; errors are shown in the widget instead of killing the cell.

Data that is not images (feature tables ``(N, F)``, other ranks; see
:func:`~robustlab.types.is_image_shape`) is shown as an HTML table of the features the
attack changed (name, clean, adversarial, change) with the prediction before and after
(:func:`features_html`); attacks then respect the dataset's per-feature constraints
(immutable features stay put, per-feature bounds and ε scale).

Three parts, so that tests and papermill runs need neither a browser nor ipywidgets:

* :class:`ExplorerSession` holds the model, the validated data and the caches, and computes
  what is shown (:meth:`ExplorerSession.attack`, :meth:`ExplorerSession.curve`);
  :class:`ExplorerSettings` are the initial choices, validated once.
* :func:`view_png` and :func:`summary_png` draw it with matplotlib (PNG bytes); the summary
  survives an HTML export without a kernel (:meth:`Explorer.static_summary`).
* :class:`Explorer` is the ipywidgets view: it builds the tabs and wires the controls to
  the session, and shows errors in the widget.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._env import default_jit_compile
from robustlab._validate import (
    check_float,
    check_int,
    check_optional_int,
    check_seed,
    validate_arrays,
)
from robustlab.attacks import AttackSpec, kind_of
from robustlab.data import Dataset
from robustlab.errors import InputTypeError, ValidationError
from robustlab.evaluate import evaluate
from robustlab.inference import batched_logits, check_input_shape, num_outputs, softmax
from robustlab.report.plots import (
    curves_png,
    examples_png,
    figure_text,
    new_figure,
    png_bytes,
    ranked_shifts,
    show_image,
)
from robustlab.results import EvaluationResult
from robustlab.stats import perturbation_norms
from robustlab.types import (
    Constraints,
    Norm,
    ThreatModel,
    feature_labels,
    is_image_shape,
    parse_norm,
)

__all__ = ["Explorer", "ExplorerSession", "ExplorerSettings", "AttackView", "view_png",
           "summary_png", "features_html", "shifts_html", "EXPLORER_ATTACKS"]

log = logging.getLogger(__name__)

# Attacks offered in the picker: fast ones first; AutoAttack is left out (minutes per image).
EXPLORER_ATTACKS = ("fgsm", "pgd", "pgd-margin", "pgd-dlr", "apgd-ce", "apgd-dlr", "square",
                    "deepfool", "cw")

# Longest class name in figure titles (characters): a model's or dataset's names can be
# arbitrarily long, and matplotlib grows the PNG to fit every title.
_NAME_CHARS = 16

# Cache keys, every part parsed, so "FGSM" / "fgsm" and "inf" / "linf" hit the same entry.
_AttackKey = tuple[int, AttackSpec, Norm, float]
_CurveKey = tuple[int, AttackSpec, Norm, tuple[float, ...]]


@dataclass(frozen=True)
class AttackView:
    """What the explorer shows for one image and one attack setting."""

    index: int
    label: int
    attack: str
    norm: str
    epsilon: float
    x: np.ndarray  # (H, W, C) clean image, or one example of any shape, e.g. (F,)
    x_adv: np.ndarray  # the adversarial example, same shape
    clean_probs: np.ndarray  # (K,) softmax
    adv_probs: np.ndarray  # (K,)
    linf: float
    l2: float
    seconds: float

    @property
    def clean_pred(self) -> int:
        return int(self.clean_probs.argmax())

    @property
    def adv_pred(self) -> int:
        return int(self.adv_probs.argmax())

    @property
    def fooled(self) -> bool:
        return self.adv_pred != self.label


@dataclass(frozen=True)
class ExplorerSettings:
    """The explorer's initial choices (the controls' first values and the defaults of
    :meth:`Explorer.static_summary`), checked once here so that a bad notebook parameter
    fails when the explorer is made, naming the parameter, not later inside a callback.

    Values are normalised: ``attack`` to lower case, ``norm`` to ``"linf"`` / ``"l2"``
    (``"inf"`` is accepted), numbers given as strings (papermill) to numbers.
    """

    attack: str = "pgd"
    epsilon: float = 0.1
    norm: str = "linf"
    steps: int = 20
    curve_examples: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.attack, str):
            raise InputTypeError(f"expected attack to be an attack name such as 'pgd', got "
                                 f"{type(self.attack).__name__} {self.attack!r}")
        attack = self.attack.strip().lower()
        AttackSpec.parse(attack)  # an unknown name fails here, listing the known ones
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731
        set_("attack", attack)
        set_("epsilon", check_float("epsilon", self.epsilon, low=0.0))
        set_("norm", parse_norm(self.norm).value)
        set_("steps", check_int("steps", self.steps, low=1))
        set_("curve_examples", check_int("curve_examples", self.curve_examples, low=1))

    def replace(self, **changes: Any) -> ExplorerSettings:
        """These settings with ``changes`` (None leaves a field as it is), checked again."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class ExplorerSession:
    """The explorer without its widgets: one model, the test split of one dataset, and the
    caches of everything computed on them.

    Args:
        model: Keras model returning logits, ``(N, H, W, C) -> (N, K)`` (or ``(N, F)``...).
        data: a :class:`~robustlab.data.Dataset` (its test split; its ``constraints``, if
            any, bound every attack) or ``(x, y)`` in ``[0, 1]``.
        settings: the initial choices (default :class:`ExplorerSettings`).
        seed: seeds the attacks' random starts (same setting, same result).
        constraints: per-feature threat model for ``(x, y)`` data (a Dataset brings its
            own); None: every input value alike, inside ``[0, 1]``.

    Example:
        >>> session = ExplorerSession(model, load("digits"))
        >>> session.attack(3, epsilon=0.2) is session.attack(3, epsilon=0.2)
        True
    """

    def __init__(self, model: Any, data: Dataset | tuple[Any, Any], *,
                 settings: ExplorerSettings | None = None, seed: int = 0,
                 constraints: Constraints | None = None) -> None:
        if constraints is not None and not isinstance(constraints, Constraints):
            raise InputTypeError(f"expected constraints to be a robustlab Constraints or None, "
                                 f"got {type(constraints).__name__}")
        if isinstance(data, Dataset):
            x, y = data.x_test, data.y_test
            if constraints is None:
                constraints = getattr(data, "constraints", None)
            low, high = data.bounds if constraints is None else constraints.bounds
            self.bounds: tuple[float, float] = (float(low), float(high))
            self.class_names = [str(c) for c in data.class_names]
        else:
            try:
                x, y = data
            except (TypeError, ValueError):
                raise ValidationError(f"expected data to be a Dataset or an (x, y) pair, got "
                                      f"{type(data).__name__}") from None
            self.bounds = (0.0, 1.0) if constraints is None else constraints.bounds
            self.class_names = [str(k) for k in range(num_outputs(model))]
        self.settings = ExplorerSettings() if settings is None else settings
        self.seed = check_seed(seed)
        self.model = model
        self.x, self.y = validate_arrays(x, y, num_classes=num_outputs(model),
                                         bounds=self.bounds, name="x", label_name="y")
        check_input_shape(model, self.x)
        # the per-feature threat model every attack and curve of this session uses (None:
        # plain bounds); fitted to one example's shape and checked against the data once
        self.constraints = None if constraints is None else \
            ThreatModel.parse(0.0, "linf", self.bounds, constraints).fit(
                self.x.shape[1:]).constraints
        if self.constraints is not None:
            self.constraints.check_inputs(self.x)
        self._cache: dict[_AttackKey, AttackView] = {}
        self._curve_cache: dict[_CurveKey, EvaluationResult] = {}
        self._clean_logits: np.ndarray = batched_logits(model, self.x, 256)

    @property
    def is_image(self) -> bool:
        """True if examples are shown as images, False for feature tables (as in reports:
        an image shape without feature names, see :func:`~robustlab.types.is_image_shape`)."""
        return is_image_shape(self.x.shape[1:], () if self.constraints is None
                              else self.constraints.names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per flat feature: the constraints' names, else ``feature 0``, ..."""
        return feature_labels(self.x.shape[1:], self.constraints)

    def spec(self, attack: str, steps: int | None) -> AttackSpec:
        """The attack with ``steps`` where it takes steps (FGSM's are ignored, so the steps
        slider never makes FGSM fail)."""
        kind = kind_of(attack)
        fields: dict[str, Any] = {"name": attack}
        if kind is not None and kind.steps is not None and steps is not None:
            fields["steps"] = check_int("steps", steps, low=1)
        spec = AttackSpec.parse(fields)
        spec.check_model(num_outputs(self.model))
        return spec

    def _parse(self, index: int, attack: str, epsilon: float, norm: str, steps: int | None
               ) -> tuple[int, AttackSpec, ThreatModel]:
        index = check_int("index", index, low=0, high=len(self.x) - 1)
        return index, self.spec(attack, steps), ThreatModel.parse(epsilon, norm, self.bounds,
                                                                  self.constraints)

    def is_cached(self, index: int, *, attack: str = "pgd", epsilon: float = 0.1,
                  norm: str = "linf", steps: int | None = 20) -> bool:
        """Whether :meth:`attack` with these arguments returns at once from the cache."""
        index, spec, threat = self._parse(index, attack, epsilon, norm, steps)
        return (index, spec, threat.norm, threat.epsilon) in self._cache

    def max_epsilon(self, norm: str | Norm) -> float:
        """The ε slider's upper end: half the pixel range (L∞) or a quarter of the image's
        diagonal (L2); beyond that most images are no longer recognisable. With constraints
        ε is in units of each feature's scale: half the median width of a mutable feature's
        range (L∞) or a quarter of the mutable features' diagonal (L2)."""
        c = self.constraints
        if c is not None:
            widths = ((c.high.astype(np.float64) - c.low) / c.scale)[c.mutable]
            if not widths.size:
                return 1.0  # nothing can move; any ε leaves the example as it is
            if parse_norm(norm) is Norm.LINF:
                return float(f"{0.5 * float(np.median(widths)):.3g}")
            return float(f"{0.25 * float(np.sqrt(np.sum(widths ** 2))):.3g}")
        width = self.bounds[1] - self.bounds[0]
        if parse_norm(norm) is Norm.LINF:
            return 0.5 * width
        return round(0.25 * width * float(np.sqrt(np.prod(self.x.shape[1:]))), 2)

    def attack(self, index: int = 0, *, attack: str = "pgd", epsilon: float = 0.1,
               norm: str = "linf", steps: int | None = 20) -> AttackView:
        """Attack example ``index`` and return what the widget shows. Cached per setting:
        the same setting returns the same :class:`AttackView` object."""
        index, spec, threat = self._parse(index, attack, epsilon, norm, steps)
        key = (index, spec, threat.norm, threat.epsilon)
        if key in self._cache:
            return self._cache[key]
        t0 = time.perf_counter()
        x = self.x[index:index + 1]
        x_adv = spec.run(self.model, x, self.y[index:index + 1], threat=threat, seed=self.seed,
                         batch_size=1, jit=default_jit_compile(), ids=np.array([index]))
        adv_logits = batched_logits(self.model, np.asarray(x_adv, np.float32), 1)
        seconds = time.perf_counter() - t0
        if self.constraints is None:
            linf, l2 = perturbation_norms(x_adv, x)
        else:  # in units of each feature's scale, as ε is
            linf = self.constraints.distance(np.asarray(x_adv), x, Norm.LINF)
            l2 = self.constraints.distance(np.asarray(x_adv), x, Norm.L2)
        view = AttackView(index=index, label=int(self.y[index]), attack=spec.label,
                          norm=threat.norm.value, epsilon=threat.epsilon, x=x[0],
                          x_adv=np.asarray(x_adv[0]),
                          clean_probs=softmax(self._clean_logits[index]),
                          adv_probs=softmax(adv_logits[0]), linf=float(linf[0]),
                          l2=float(l2[0]), seconds=seconds)
        self._cache[key] = view
        log.info("%s on example %d at eps %g: %.0f ms", spec.label, index, threat.epsilon,
                 1000 * seconds)
        return view

    def next_fooled(self, start: int, *, attack: str = "pgd", epsilon: float = 0.1,
                    norm: str = "linf", steps: int | None = 20) -> int | None:
        """The next index after ``start`` (wrapping around) that is misclassified, clean or
        under the attack setting; None if none. Examples are attacked one by one and the
        search stops at the first, so a jump costs only the attacks up to it."""
        n = len(self.x)
        clean_wrong = self._clean_logits.argmax(1) != self.y
        for step in range(1, n + 1):
            i = (start + step) % n
            if clean_wrong[i] or self.attack(i, attack=attack, epsilon=epsilon, norm=norm,
                                             steps=steps).fooled:
                return i
        return None

    def curve(self, n: int | None, *, attack: str = "pgd", norm: str = "linf",
              steps: int | None = 20, points: int = 8,
              callback: Callable[[int, int], None] | None = None) -> EvaluationResult:
        """Robustness curve of the attack on the first ``n`` examples (None: all) at
        ``points`` ε from 0 to the slider's end (L∞: 60% of it, 0.3 on ``[0, 1]`` images,
        since the slider's 0.5 makes every image grey). Cached per setting; ``callback(done,
        total)`` reports progress when it is computed."""
        count = min(check_optional_int("n", n, low=1) or len(self.x), len(self.x))
        spec = self.spec(attack, steps)
        parsed = parse_norm(norm)
        top = self.max_epsilon(parsed) * (0.6 if parsed is Norm.LINF else 1.0)
        eps = tuple(round(float(e), 4) for e in
                    np.linspace(0.0, top, check_int("points", points, low=2)))
        key = (count, spec, parsed, eps)
        if key not in self._curve_cache:
            self._curve_cache[key] = evaluate(
                self.model, (self.x[:count], self.y[:count]), [spec], list(eps),
                norm=parsed.value, bounds=self.bounds, seed=self.seed, checks=False,
                progress=False, callback=callback, constraints=self.constraints)
        return self._curve_cache[key]


# ---------------------------------------------------------------------- rendering

def _unit(img: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """``img`` rescaled from ``bounds`` to ``[0, 1]`` for display."""
    return (img - bounds[0]) / (bounds[1] - bounds[0])


def view_png(view: AttackView, class_names: Sequence[str], bounds: tuple[float, float], *,
             top_k: int = 3) -> bytes:
    """One row: clean image, adversarial image, perturbation amplified to the full range,
    and the ``top_k`` classes' probabilities before and after the attack."""
    names = [figure_text(name, _NAME_CHARS) for name in class_names]
    fig = new_figure(8.4, 2.3)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    delta = view.x_adv - view.x
    scale = float(np.abs(delta).max()) or 1.0
    panels = ((_unit(view.x, bounds), f"clean: {names[view.clean_pred]}", False),
              (_unit(view.x_adv, bounds), f"adversarial: {names[view.adv_pred]}", view.fooled),
              (0.5 + 0.5 * delta / scale, f"perturbation ×{0.5 / scale:.1f}", False))
    for ax, (img, title, red) in zip(axes[:3], panels, strict=True):
        show_image(ax, img)  # the perturbation is already centred in [0, 1]
        ax.set_title(title, fontsize=8, color="crimson" if red else "black")
    top = np.argsort(-(view.clean_probs + view.adv_probs))[:top_k]
    ypos = np.arange(len(top))
    ax = axes[3]
    ax.barh(ypos + 0.2, view.clean_probs[top], height=0.4, label="clean")
    ax.barh(ypos - 0.2, view.adv_probs[top], height=0.4, label="adversarial",
            color="crimson")
    ax.set_yticks(ypos, [names[k] for k in top], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


# Most changed features listed per example in features_html, most features in shifts_html.
_FEATURE_ROWS = 30
_SHIFT_ROWS = 20


def _cell(value: float, sign: bool = False) -> str:
    return f"{float(value):+.4g}" if sign else f"{float(value):.4g}"


def features_html(view: AttackView, feature_names: Sequence[str], class_names: Sequence[str],
                  *, scale: np.ndarray | None = None, limit: int = _FEATURE_ROWS) -> str:
    """An HTML fragment for one attacked example that is not an image: the prediction
    before and after the attack, and a table of the features the attack changed (name,
    clean value, adversarial value, change), the largest change first (relative to the
    feature's ``scale`` when given), at most ``limit`` rows. Every name is escaped."""
    clean = np.asarray(view.x, np.float64).ravel()
    adv = np.asarray(view.x_adv, np.float64).ravel()
    delta = adv - clean
    unit = np.ones_like(delta) if scale is None else np.asarray(scale, np.float64).ravel()
    changed = np.flatnonzero(delta != 0)
    order = changed[np.argsort(-np.abs(delta[changed]) / unit[changed], kind="stable")]
    esc = html.escape
    verdict = (' <b style="color:#b00020">fooled</b>' if view.fooled else "")
    head = (f"<p>label <b>{esc(class_names[view.label])}</b>; clean prediction "
            f"<b>{esc(class_names[view.clean_pred])}</b> "
            f"({100 * view.clean_probs.max():.1f}%) → adversarial prediction "
            f"<b>{esc(class_names[view.adv_pred])}</b> ({100 * view.adv_probs.max():.1f}%)"
            f"{verdict}; {esc(view.attack)} at ε {view.epsilon:g} changed {len(changed)} "
            f"of {len(delta)} features.</p>")
    if not len(changed):
        return head
    rows = "".join(
        f"<tr><td style=\"text-align:left\">"
        f"{esc(feature_names[i] if i < len(feature_names) else f'feature {i}')}</td>"
        f"<td>{_cell(clean[i])}</td><td>{_cell(adv[i])}</td>"
        f"<td>{_cell(delta[i], sign=True)}</td></tr>"
        for i in order[:limit].tolist())
    more = (f"<p>and {len(changed) - limit} more changed features.</p>"
            if len(changed) > limit else "")
    return (f"{head}<table class=\"robustlab-features\"><thead><tr>"
            f"<th style=\"text-align:left\">feature</th><th>clean</th><th>adversarial</th>"
            f"<th>change</th></tr></thead><tbody>{rows}</tbody></table>{more}")


def shifts_html(result: EvaluationResult, *, limit: int = _SHIFT_ROWS) -> str:
    """An HTML table of how often the attack moved each feature over the examples it broke
    (``result.feature_shifts``, most often moved first, at most ``limit`` rows); escaped."""
    shifts = ranked_shifts(result, limit)
    if not shifts:
        return "<p>no example was broken, so no feature was moved</p>"
    esc = html.escape
    rows = "".join(f"<tr><td style=\"text-align:left\">{esc(f.name)}</td>"
                   f"<td>{100 * f.moved:.1f}%</td><td>{_cell(f.mean_change)}</td>"
                   f"<td>{_cell(f.max_change)}</td></tr>" for f in shifts)
    eps = 0.0 if result.shift_epsilon is None else result.shift_epsilon
    return (f"<p>{esc(result.curves[-1].label)} at ε {eps:g}: how often each feature was "
            f"changed in the examples it broke, and by how much (input units)</p>"
            f"<table class=\"robustlab-shifts\"><thead><tr>"
            f"<th style=\"text-align:left\">feature</th><th>moved</th><th>mean change</th>"
            f"<th>max change</th></tr></thead><tbody>{rows}</tbody></table>")


def summary_png(views: Sequence[AttackView], result: EvaluationResult,
                class_names: Sequence[str], bounds: tuple[float, float], *, epsilon: float,
                norm: str) -> bytes:
    """The static summary: each view's clean (top) and adversarial (bottom) image with its
    prediction, next to the robustness curve with ε marked."""
    if not views:
        raise ValidationError("expected at least one attacked example in the summary, got 0")
    names = [figure_text(name, _NAME_CHARS) for name in class_names]
    fig = new_figure(1.5 * len(views) + 4.5, 3.2)
    grid = fig.add_gridspec(2, len(views) + 3)
    for j, v in enumerate(views):
        for row, (img, pred) in enumerate(((v.x, v.clean_pred), (v.x_adv, v.adv_pred))):
            ax = fig.add_subplot(grid[row, j])
            show_image(ax, _unit(img, bounds))
            ax.set_title(f"#{v.index} → {names[pred]}", fontsize=7,
                         color="crimson" if pred != v.label else "black")
    ax = fig.add_subplot(grid[:, len(views):])
    curve = result.curves[0]
    eps = [p.epsilon for p in curve.points]
    ax.plot(eps, [100 * p.accuracy for p in curve.points], marker="o")
    ax.fill_between(eps, [100 * p.ci_low for p in curve.points],
                    [100 * p.ci_high for p in curve.points], alpha=0.2)
    ax.axvline(epsilon, color="grey", linestyle=":")
    ax.set_xlabel(f"ε ({norm})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{figure_text(curve.label)} on {result.n_examples} examples", fontsize=9)
    fig.suptitle(f"{figure_text(views[0].attack)} at ε = {epsilon:g}: top clean, bottom "
                 f"adversarial", fontsize=9)
    return png_bytes(fig)


# ---------------------------------------------------------------------- widgets

class Explorer:
    """Interactive explorer of attacks on one model and the test split of one dataset: an
    :class:`ExplorerSession` shown with ipywidgets.

    Args:
        model: Keras model returning logits, ``(N, H, W, C) -> (N, K)``.
        data: a :class:`~robustlab.data.Dataset` (its test split) or ``(x, y)``.
        attack: initial attack name (see ``EXPLORER_ATTACKS``).
        epsilon: initial ε in pixel units.
        norm: ``"linf"`` or ``"l2"``.
        steps: initial steps for attacks that take them.
        top_k: classes shown in the probability bars.
        curve_examples: default N of the robustness-curve tab.
        seed: seeds the attacks' random starts (same setting, same result).
        constraints: per-feature threat model for ``(x, y)`` data (a Dataset brings its
            own in ``data.constraints``).

    Data that is not images is shown as a table of the features the attack changed
    (:func:`features_html`) instead of the image row.

    Example:
        >>> explorer = Explorer(model, load("digits"))
        >>> explorer  # in Jupyter: the widget
        >>> explorer.attack(index=3, epsilon=0.2).adv_pred
    """

    def __init__(self, model: Any, data: Dataset | tuple[Any, Any], *, attack: str = "pgd",
                 epsilon: float = 0.1, norm: str = "linf", steps: int = 20, top_k: int = 3,
                 curve_examples: int = 100, seed: int = 0,
                 constraints: Constraints | None = None) -> None:
        settings = ExplorerSettings(attack=attack, epsilon=epsilon, norm=norm, steps=steps,
                                    curve_examples=curve_examples)
        self.top_k = check_int("top_k", top_k, low=1)
        self.session = ExplorerSession(model, data, settings=settings, seed=seed,
                                       constraints=constraints)
        self._widget: Any = None
        self._updating = False

    # ------------------------------------------------------------------ the session's

    @property
    def settings(self) -> ExplorerSettings:
        return self.session.settings

    @property
    def model(self) -> Any:
        return self.session.model

    @property
    def x(self) -> np.ndarray:
        return self.session.x

    @property
    def y(self) -> np.ndarray:
        return self.session.y

    @property
    def bounds(self) -> tuple[float, float]:
        return self.session.bounds

    @property
    def class_names(self) -> list[str]:
        return self.session.class_names

    @property
    def seed(self) -> int:
        return self.session.seed

    @property
    def is_image(self) -> bool:
        return self.session.is_image

    @property
    def constraints(self) -> Constraints | None:
        return self.session.constraints

    def _features_html(self, view: AttackView) -> str:
        scale = None if self.constraints is None else self.constraints.scale
        return features_html(view, self.session.feature_names, self.class_names, scale=scale)

    def attack(self, index: int = 0, *, attack: str = "pgd", epsilon: float = 0.1,
               norm: str = "linf", steps: int | None = 20) -> AttackView:
        """See :meth:`ExplorerSession.attack`."""
        return self.session.attack(index, attack=attack, epsilon=epsilon, norm=norm,
                                   steps=steps)

    def is_cached(self, index: int, *, attack: str = "pgd", epsilon: float = 0.1,
                  norm: str = "linf", steps: int | None = 20) -> bool:
        """See :meth:`ExplorerSession.is_cached`."""
        return self.session.is_cached(index, attack=attack, epsilon=epsilon, norm=norm,
                                      steps=steps)

    def next_fooled(self, start: int, *, attack: str = "pgd", epsilon: float = 0.1,
                    norm: str = "linf", steps: int | None = 20) -> int | None:
        """See :meth:`ExplorerSession.next_fooled`."""
        return self.session.next_fooled(start, attack=attack, epsilon=epsilon, norm=norm,
                                        steps=steps)

    def curve(self, n: int | None, *, attack: str = "pgd", norm: str = "linf",
              steps: int | None = 20, points: int = 8,
              callback: Callable[[int, int], None] | None = None) -> EvaluationResult:
        """See :meth:`ExplorerSession.curve`."""
        return self.session.curve(n, attack=attack, norm=norm, steps=steps, points=points,
                                  callback=callback)

    def max_epsilon(self, norm: str | Norm) -> float:
        """See :meth:`ExplorerSession.max_epsilon`."""
        return self.session.max_epsilon(norm)

    def static_summary(self, indices: Iterable[int] | None = None, *,
                       attack: str | None = None, epsilon: float | None = None,
                       norm: str | None = None, steps: int | None = None,
                       n_curve: int | None = None) -> Any:
        """A matplotlib summary for papermill / HTML exports (no live kernel needed): each
        chosen example (default: the first six) attacked at ε, and the robustness curve on
        ``n_curve`` examples; unset arguments come from :attr:`settings`. Returns an
        ``IPython.display.Image``; for data that is not images an ``IPython.display.HTML``
        with each example's table of changed features and the curve."""
        from IPython.display import HTML, Image

        s = self.settings.replace(attack=attack, epsilon=epsilon, norm=norm, steps=steps)
        chosen = list(range(min(6, len(self.x)))) if indices is None else list(indices)
        views = [self.attack(i, attack=s.attack, epsilon=s.epsilon, norm=s.norm,
                             steps=s.steps) for i in chosen]
        result = self.curve(s.curve_examples if n_curve is None else n_curve,
                            attack=s.attack, norm=s.norm, steps=s.steps)
        if not self.is_image:
            uri = "data:image/png;base64," + base64.b64encode(curves_png(result)).decode()
            parts = [f"<h4>example #{v.index}</h4>{self._features_html(v)}" for v in views]
            return HTML("".join(parts) + f'<img alt="robustness curve" src="{uri}">')
        png = summary_png(views, result, self.class_names, self.bounds, epsilon=s.epsilon,
                          norm=s.norm)
        return Image(data=png, format="png")

    # ------------------------------------------------------------------ widgets

    @property
    def widget(self) -> Any:
        """The ipywidgets ``Tab`` (built on first use)."""
        if self._widget is None:
            self._build()
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _build(self) -> None:
        import ipywidgets as w

        s = self.settings
        n = len(self.x)
        self.w_index = w.BoundedIntText(value=0, min=0, max=n - 1, description="image",
                                        layout=w.Layout(width="12rem"))
        self.w_next = w.Button(description="next fooled", tooltip="next image the attack "
                               "fools (or misclassified clean)")
        # an initial attack outside the picker's list (e.g. "apgd") is offered too
        options = [*EXPLORER_ATTACKS, *([] if s.attack in EXPLORER_ATTACKS else [s.attack])]
        self.w_attack = w.Dropdown(options=options, value=s.attack, description="attack")
        self.w_norm = w.ToggleButtons(options=["linf", "l2"], value=s.norm,
                                      description="norm")
        top = self.max_epsilon(s.norm)
        self.w_eps = w.FloatSlider(value=min(s.epsilon, top), min=0.0, max=top,
                                   step=top / 100, description="ε", readout_format=".3f",
                                   continuous_update=False)
        self.w_steps = w.IntSlider(value=s.steps, min=1, max=200, description="steps",
                                   continuous_update=False)
        self.w_run = w.Button(description="run", button_style="primary")
        self.w_image = w.Image(format="png")
        self.w_clean = w.Label()
        self.w_adv = w.Label()
        self.w_norms = w.Label()
        self.w_status = w.HTML()
        self.w_features = w.HTML()  # data that is not images: the changed features
        controls = w.VBox([w.HBox([self.w_index, self.w_next]), self.w_attack, self.w_norm,
                           self.w_eps, self.w_steps, self.w_run])
        readouts = w.VBox([self.w_clean, self.w_adv, self.w_norms, self.w_status])
        explore = w.VBox([w.HBox([controls, readouts]),
                          self.w_image if self.is_image else self.w_features])

        self.w_n = w.BoundedIntText(value=min(s.curve_examples, n), min=1, max=n,
                                    description="examples")
        self.w_curve_run = w.Button(description="compute curve", button_style="primary")
        self.w_progress = w.IntProgress(value=0, min=0, max=1, description="progress")
        self.w_curve_status = w.HTML()
        self.w_curve = w.Image(format="png")
        self.w_first = w.Image(format="png")
        self.w_shifts = w.HTML()  # data that is not images: how often each feature moved
        first = ([w.HTML("<b>Images that break first</b>"), self.w_first] if self.is_image
                 else [w.HTML("<b>Features the attack moved</b>"), self.w_shifts])
        curve = w.VBox([w.HBox([self.w_n, self.w_curve_run, self.w_progress]),
                        self.w_curve_status, self.w_curve, *first])

        tab = w.Tab(children=[explore, curve])
        tab.set_title(0, "explore")
        tab.set_title(1, "robustness curve")
        self._widget = tab
        for control in (self.w_index, self.w_attack, self.w_eps, self.w_steps):
            control.observe(lambda _change: self._update(), names="value")
        self.w_norm.observe(self._on_norm, names="value")
        self.w_run.on_click(lambda _b: self._update())
        self.w_next.on_click(lambda _b: self._on_next())
        self.w_curve_run.on_click(lambda _b: self._on_curve())
        self._update()

    def _setting(self) -> dict[str, Any]:
        """The controls' attack setting, as keyword arguments of :meth:`attack`."""
        return dict(attack=self.w_attack.value, epsilon=float(self.w_eps.value),
                    norm=self.w_norm.value, steps=int(self.w_steps.value))

    def _error(self, target: Any, exc: Exception) -> None:
        log.warning("explorer: %s", exc)
        target.value = (f'<span style="color:#b00020">error: {type(exc).__name__}: '
                        f"{html.escape(str(exc))}</span>")

    def _update(self) -> None:
        if self._updating:
            return
        try:
            index = int(self.w_index.value)
            cached = self.is_cached(index, **self._setting())
            view = self.attack(index, **self._setting())
            names = self.class_names
            self.w_clean.value = (f"clean: {names[view.clean_pred]} "
                                  f"({100 * view.clean_probs.max():.1f}%), label "
                                  f"{names[view.label]}")
            self.w_adv.value = (f"adversarial: {names[view.adv_pred]} "
                                f"({100 * view.adv_probs.max():.1f}%)"
                                + (" — fooled" if view.fooled else ""))
            self.w_norms.value = f"L∞ {view.linf:.4f}, L2 {view.l2:.4f}"
            if self.is_image:
                self.w_image.value = view_png(view, names, self.bounds, top_k=self.top_k)
            else:
                self.w_features.value = self._features_html(view)
            how = (f"from cache (took {1000 * view.seconds:.0f} ms)" if cached
                   else f"in {1000 * view.seconds:.0f} ms")
            self.w_status.value = html.escape(f"{view.attack}, ε {view.epsilon:g}: {how}")
        except Exception as exc:  # noqa: BLE001 - shown in the widget, the cell stays alive
            self._error(self.w_status, exc)

    def _on_norm(self, change: dict[str, Any]) -> None:
        """Rescale ε with the slider (same fraction of its range), then update once."""
        top = self.max_epsilon(change["new"])
        self._updating = True
        try:
            ratio = self.w_eps.value / max(self.w_eps.max, 1e-12)
            self.w_eps.max = top
            self.w_eps.step = top / 100
            self.w_eps.value = round(ratio * top, 4)
        finally:
            self._updating = False
        self._update()

    def _on_next(self) -> None:
        try:
            found = self.next_fooled(int(self.w_index.value), **self._setting())
            if found is None:
                self.w_status.value = "no example is fooled at this setting"
            else:
                self.w_index.value = found
        except Exception as exc:  # noqa: BLE001 - shown in the widget, the cell stays alive
            self._error(self.w_status, exc)

    def _on_curve(self) -> None:
        s = self._setting()
        self.w_progress.value = 0

        def callback(done: int, total: int) -> None:
            self.w_progress.max = total
            self.w_progress.value = done

        try:
            t0 = time.perf_counter()
            result = self.curve(int(self.w_n.value), attack=s["attack"], norm=s["norm"],
                                steps=s["steps"], callback=callback)
            self.w_progress.value = self.w_progress.max
            self.w_curve.value = curves_png(result)
            if self.is_image:
                self.w_first.value = examples_png(result, self.class_names) or b""
            else:
                self.w_shifts.value = shifts_html(result)
            self.w_curve_status.value = html.escape(
                f"{result.curves[0].label} on {result.n_examples} examples in "
                f"{time.perf_counter() - t0:.1f} s; clean {100 * result.clean_accuracy:.1f}%")
        except Exception as exc:  # noqa: BLE001 - shown in the widget, the cell stays alive
            self._error(self.w_curve_status, exc)
