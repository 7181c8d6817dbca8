"""The interactive attack explorer (ipywidgets 8).

``Explorer(model, data)`` shows one image at a time: pick it by index (or jump to the next
one the attack fools), choose the attack, norm, ε and steps, and see the clean image, the
adversarial image and the amplified perturbation side by side, the top-k class
probabilities before and after, the predictions and the perturbation's norms. A second tab
computes the robustness curve of the chosen attack on N examples (with a progress bar) and
shows the images that break first. Every result is cached, so returning to a setting is
instant; errors are shown in the widget instead of killing the cell.

Everything the widgets show comes from plain methods (:meth:`Explorer.attack`,
:meth:`Explorer.curve`), so tests and papermill runs can drive it without a browser, and
:meth:`Explorer.static_summary` renders a matplotlib summary that survives an HTML export.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._env import default_jit_compile
from robustlab._validate import check_int, check_optional_int, validate_arrays
from robustlab.attacks import AttackSpec, kind_of
from robustlab.data import Dataset
from robustlab.errors import ValidationError
from robustlab.evaluate import evaluate
from robustlab.inference import batched_logits, check_input_shape, num_outputs, softmax
from robustlab.report.plots import _figure, _png, _show, curves_png, examples_png
from robustlab.results import EvaluationResult
from robustlab.stats import perturbation_norms
from robustlab.types import Norm, ThreatModel

__all__ = ["Explorer", "AttackView"]

log = logging.getLogger(__name__)

# Attacks offered in the picker: fast ones first; AutoAttack is left out (minutes per image).
EXPLORER_ATTACKS = ("fgsm", "pgd", "pgd-margin", "pgd-dlr", "apgd-ce", "apgd-dlr", "square",
                    "deepfool", "cw")


@dataclass(frozen=True)
class AttackView:
    """What the explorer shows for one image and one attack setting."""

    index: int
    label: int
    attack: str
    norm: str
    epsilon: float
    x: np.ndarray  # (H, W, C) clean image
    x_adv: np.ndarray  # (H, W, C) adversarial image
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


class Explorer:
    """Interactive explorer of attacks on one model and the test split of one dataset.

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

    Example:
        >>> explorer = Explorer(model, load("digits"))
        >>> explorer  # in Jupyter: the widget
        >>> explorer.attack(index=3, epsilon=0.2).adv_pred
    """

    def __init__(self, model: Any, data: Dataset | tuple[Any, Any], *, attack: str = "pgd",
                 epsilon: float = 0.1, norm: str = "linf", steps: int = 20, top_k: int = 3,
                 curve_examples: int = 100, seed: int = 0) -> None:
        if isinstance(data, Dataset):
            x, y, self.bounds = data.x_test, data.y_test, tuple(data.bounds)
            self.class_names = [str(c) for c in data.class_names]
        else:
            try:
                x, y = data
            except (TypeError, ValueError):
                raise ValidationError("expected data to be a Dataset or an (x, y) pair") \
                    from None
            self.bounds = (0.0, 1.0)
            self.class_names = [str(k) for k in range(num_outputs(model))]
        self.model = model
        self.x, self.y = validate_arrays(x, y, num_classes=num_outputs(model),
                                         bounds=self.bounds, name="x", label_name="y")
        check_input_shape(model, self.x)
        self.top_k = check_int("top_k", top_k, low=1)
        self.seed = int(seed)
        self._cache: dict[tuple[Any, ...], AttackView] = {}
        self._curve_cache: dict[tuple[Any, ...], Any] = {}
        self._clean_logits = batched_logits(model, self.x, 256)
        self._widget: Any = None
        self._updating = False
        self._initial = dict(attack=attack, epsilon=float(epsilon), norm=norm,
                             steps=int(steps), curve_examples=int(curve_examples))
        self._spec(attack, steps)  # fail now on a bad initial attack

    # ------------------------------------------------------------------ plain methods

    def _spec(self, attack: str, steps: int | None) -> AttackSpec:
        kind = kind_of(attack)
        fields: dict[str, Any] = {"name": attack}
        if kind is not None and kind.steps is not None and steps is not None:
            fields["steps"] = check_int("steps", steps, low=1)
        return AttackSpec.parse(fields)

    def _key(self, index: int, attack: str, epsilon: float, norm: str, steps: int | None
             ) -> tuple[Any, ...]:
        """The cache key of a setting, every part checked."""
        index = check_int("index", index, low=0, high=len(self.x) - 1)
        threat = ThreatModel.parse(epsilon, norm, self.bounds)
        return (index, self._spec(attack, steps), threat.norm, threat.epsilon)

    def is_cached(self, index: int, *, attack: str = "pgd", epsilon: float = 0.1,
                  norm: str = "linf", steps: int | None = 20) -> bool:
        """Whether :meth:`attack` with these arguments returns at once from the cache."""
        return self._key(index, attack, epsilon, norm, steps) in self._cache

    def max_epsilon(self, norm: str) -> float:
        """The slider's upper end: half the pixel range (L∞) or a quarter of the image's
        diagonal (L2)."""
        width = self.bounds[1] - self.bounds[0]
        if ThreatModel.parse(0.0, norm).norm is Norm.LINF:
            return 0.5 * width
        return round(0.25 * width * float(np.sqrt(np.prod(self.x.shape[1:]))), 2)

    def attack(self, index: int = 0, *, attack: str = "pgd", epsilon: float = 0.1,
               norm: str = "linf", steps: int | None = 20) -> AttackView:
        """Attack example ``index`` (cached per setting) and return what the widget shows."""
        key = self._key(index, attack, epsilon, norm, steps)
        if key in self._cache:
            return self._cache[key]
        index, spec, threat = key[0], key[1], ThreatModel.parse(key[3], key[2], self.bounds)
        t0 = time.perf_counter()
        x = self.x[index:index + 1]
        x_adv = spec.run(self.model, x, self.y[index:index + 1], threat=threat, seed=self.seed,
                         batch_size=1, jit=default_jit_compile(), ids=np.array([index]))
        adv_logits = batched_logits(self.model, np.asarray(x_adv, np.float32), 1)
        seconds = time.perf_counter() - t0
        linf, l2 = perturbation_norms(x_adv, x)
        view = AttackView(index=index, label=int(self.y[index]), attack=spec.label,
                          norm=threat.norm.value, epsilon=threat.epsilon, x=x[0],
                          x_adv=np.asarray(x_adv[0]), clean_probs=softmax(
                              self._clean_logits[index]), adv_probs=softmax(adv_logits[0]),
                          linf=float(linf[0]), l2=float(l2[0]), seconds=seconds)
        self._cache[key] = view
        log.info("%s on example %d at eps %g: %.0f ms", spec.label, index, threat.epsilon,
                 1000 * seconds)
        return view

    def next_fooled(self, start: int, **setting: Any) -> int | None:
        """The next index after ``start`` (wrapping around) that is misclassified, clean or
        under the attack ``setting`` (checked one by one, stops at the first); None if none."""
        n = len(self.x)
        clean_wrong = self._clean_logits.argmax(1) != self.y
        for step in range(1, n + 1):
            i = (start + step) % n
            if clean_wrong[i] or self.attack(i, **setting).fooled:
                return i
        return None

    def curve(self, n: int, *, attack: str = "pgd", norm: str = "linf",
              steps: int | None = 20, points: int = 8, callback: Any = None
              ) -> EvaluationResult:
        """Robustness curve of the attack on the first ``n`` examples at ``points`` ε from 0
        to the slider's end: an :class:`~robustlab.evaluate.EvaluationResult` (cached)."""
        n = check_optional_int("n", n, low=1) or len(self.x)
        spec = self._spec(attack, steps)
        top = self.max_epsilon(norm) * (0.6 if norm == "linf" else 1.0)
        eps = [round(float(e), 4) for e in np.linspace(0.0, top, check_int("points", points,
                                                                          low=2))]
        key = (min(n, len(self.x)), spec, norm, tuple(eps))
        if key not in self._curve_cache:
            self._curve_cache[key] = evaluate(
                self.model, (self.x[:n], self.y[:n]), [spec], eps, norm=norm,
                bounds=self.bounds, seed=self.seed, checks=False, progress=False,
                callback=callback)
        return self._curve_cache[key]

    # ------------------------------------------------------------------ rendering

    def _view_png(self, view: AttackView) -> bytes:
        fig = _figure(8.4, 2.3)
        axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
        delta = view.x_adv - view.x
        scale = float(np.abs(delta).max()) or 1.0
        names = self.class_names
        for ax, img, title in (
                (axes[0], view.x, f"clean: {names[view.clean_pred]}"),
                (axes[1], view.x_adv, f"adversarial: {names[view.adv_pred]}"),
                (axes[2], 0.5 + 0.5 * delta / scale, f"perturbation ×{0.5 / scale:.1f}")):
            _show(ax, (img - self.bounds[0]) / (self.bounds[1] - self.bounds[0]))
            ax.set_title(title, fontsize=8, color="crimson" if img is view.x_adv and
                         view.fooled else "black")
        top = np.argsort(-(view.clean_probs + view.adv_probs))[:self.top_k]
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
        return _png(fig)

    def static_summary(self, indices: Any = None, *, attack: str | None = None,
                       epsilon: float | None = None, norm: str | None = None,
                       steps: int | None = None, n_curve: int | None = None) -> Any:
        """A matplotlib summary for papermill / HTML exports (no live kernel needed): each
        chosen example attacked at ε, and the robustness curve on ``n_curve`` examples.
        Returns an ``IPython.display.Image``."""
        from IPython.display import Image

        s = {**self._initial, **{k: v for k, v in dict(
            attack=attack, epsilon=epsilon, norm=norm, steps=steps).items() if v is not None}}
        indices = list(range(min(6, len(self.x)))) if indices is None else list(indices)
        views = [self.attack(i, attack=s["attack"], epsilon=s["epsilon"], norm=s["norm"],
                             steps=s["steps"]) for i in indices]
        result = self.curve(n_curve or s["curve_examples"], attack=s["attack"],
                            norm=s["norm"], steps=s["steps"])
        fig = _figure(1.5 * len(views) + 4.5, 3.2)
        grid = fig.add_gridspec(2, len(views) + 3)
        for j, v in enumerate(views):
            for row, img in enumerate((v.x, v.x_adv)):
                ax = fig.add_subplot(grid[row, j])
                _show(ax, (img - self.bounds[0]) / (self.bounds[1] - self.bounds[0]))
                pred = v.clean_pred if row == 0 else v.adv_pred
                ax.set_title(f"#{v.index} → {self.class_names[pred]}", fontsize=7,
                             color="crimson" if pred != v.label else "black")
        ax = fig.add_subplot(grid[:, len(views):])
        curve = result.curves[0]
        ax.plot([p.epsilon for p in curve.points], [100 * p.accuracy for p in curve.points],
                marker="o")
        ax.fill_between([p.epsilon for p in curve.points],
                        [100 * p.ci_low for p in curve.points],
                        [100 * p.ci_high for p in curve.points], alpha=0.2)
        ax.axvline(s["epsilon"], color="grey", linestyle=":")
        ax.set_xlabel(f"ε ({s['norm']})")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{curve.label} on {result.n_examples} examples", fontsize=9)
        fig.suptitle(f"{views[0].attack} at ε = {s['epsilon']:g}: top clean, bottom "
                     f"adversarial", fontsize=9)
        return Image(data=_png(fig), format="png")

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

        s = self._initial
        n = len(self.x)
        self.w_index = w.BoundedIntText(value=0, min=0, max=n - 1, description="image",
                                        layout=w.Layout(width="12rem"))
        self.w_next = w.Button(description="next fooled", tooltip="next image the attack "
                               "fools (or misclassified clean)")
        self.w_attack = w.Dropdown(options=list(EXPLORER_ATTACKS), value=s["attack"],
                                   description="attack")
        self.w_norm = w.ToggleButtons(options=["linf", "l2"], value=s["norm"],
                                      description="norm")
        top = self.max_epsilon(s["norm"])
        self.w_eps = w.FloatSlider(value=min(s["epsilon"], top), min=0.0, max=top,
                                   step=top / 100, description="ε", readout_format=".3f",
                                   continuous_update=False)
        self.w_steps = w.IntSlider(value=s["steps"], min=1, max=200, description="steps",
                                   continuous_update=False)
        self.w_run = w.Button(description="run", button_style="primary")
        self.w_image = w.Image(format="png")
        self.w_clean = w.Label()
        self.w_adv = w.Label()
        self.w_norms = w.Label()
        self.w_status = w.HTML()
        controls = w.VBox([w.HBox([self.w_index, self.w_next]), self.w_attack, self.w_norm,
                           self.w_eps, self.w_steps, self.w_run])
        readouts = w.VBox([self.w_clean, self.w_adv, self.w_norms, self.w_status])
        explore = w.VBox([w.HBox([controls, readouts]), self.w_image])

        self.w_n = w.BoundedIntText(value=min(s["curve_examples"], n), min=1, max=n,
                                    description="examples")
        self.w_curve_run = w.Button(description="compute curve", button_style="primary")
        self.w_progress = w.IntProgress(value=0, min=0, max=1, description="progress")
        self.w_curve_status = w.HTML()
        self.w_curve = w.Image(format="png")
        self.w_first = w.Image(format="png")
        curve = w.VBox([w.HBox([self.w_n, self.w_curve_run, self.w_progress]),
                        self.w_curve_status, self.w_curve,
                        w.HTML("<b>Images that break first</b>"), self.w_first])

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
            cached = self.is_cached(int(self.w_index.value), **self._setting())
            view = self.attack(int(self.w_index.value), **self._setting())
            names = self.class_names
            self.w_clean.value = (f"clean: {names[view.clean_pred]} "
                                  f"({100 * view.clean_probs.max():.1f}%), label "
                                  f"{names[view.label]}")
            self.w_adv.value = (f"adversarial: {names[view.adv_pred]} "
                                f"({100 * view.adv_probs.max():.1f}%)"
                                + (" — fooled" if view.fooled else ""))
            self.w_norms.value = f"L∞ {view.linf:.4f}, L2 {view.l2:.4f}"
            self.w_image.value = self._view_png(view)
            how = f"{'from cache (took' if cached else 'in'} {1000 * view.seconds:.0f} ms" + \
                (")" if cached else "")
            self.w_status.value = html.escape(f"{view.attack}, ε {view.epsilon:g}: {how}")
        except Exception as exc:  # noqa: BLE001 - shown in the widget, the cell stays alive
            self._error(self.w_status, exc)

    def _on_norm(self, change: dict[str, Any]) -> None:
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
        except Exception as exc:  # noqa: BLE001
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
            first = examples_png(result, self.class_names)
            self.w_first.value = first or b""
            self.w_curve_status.value = html.escape(
                f"{result.curves[0].label} on {result.n_examples} examples in "
                f"{time.perf_counter() - t0:.1f} s; clean {100 * result.clean_accuracy:.1f}%")
        except Exception as exc:  # noqa: BLE001
            self._error(self.w_curve_status, exc)
