"""Reports: ``report.json`` and a self-contained ``report.html`` rendered from an
:class:`~robustlab.evaluate.EvaluationResult` through an autoescaped Jinja2 template.

Images are shown as images; other inputs (feature tables, any rank) as the features the
attack changed in the broken examples and how often each feature was moved, under the
threat model's own sentences (:meth:`~robustlab.types.Constraints.describe`). A
:class:`~robustlab.results.CrossValidationResult` has its own page (:func:`write_crossval`)
or a section appended to a report (``write_report(..., crossval=cv)``); so does a
:class:`~robustlab.results.PrivacyResult` (``write_report(..., privacy=p)``: the DP training
record, the membership audit's numbers and ROC curve, and a verdict in plain words), and a
:class:`~robustlab.results.PoisoningResult` (its own page, :func:`write_poisoning`, or
``write_report(..., poisoning=r)``: which classes look poisoned, every detector side by
side, the models before and after sanitising, per-class score histograms and the most
suspicious training examples), and a :class:`~robustlab.results.MonitorEvaluation` (its own
page, :func:`write_monitoring`, or ``write_report(..., monitoring=m)``: every detector's
claim against attacks and shifts, always beside what the adaptive attacker left of it, the
robust accuracy of the model with and without each detector, the drift test's firing rates
and score histograms).

The HTML has no JavaScript and no external URL: plots are PNG data URIs, the style sheet is
inline and allowed by its hash in a Content-Security-Policy that forbids everything else.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from robustlab import crypto
from robustlab._display import register_html
from robustlab.distribute import is_chief
from robustlab.errors import InputTypeError, ValidationError
from robustlab.manifest import update_manifest
from robustlab.report.plots import (
    broken_count,
    comparison_png,
    convergence_png,
    crossval_png,
    curves_png,
    epsilon_units,
    examples_png,
    feature_shifts_png,
    gained_png,
    monitor_score_histograms_png,
    poison_score_histograms_png,
    ranked_shifts,
    roc_png,
    suspects_png,
    visible_text,
)
from robustlab.results import (
    Check,
    Comparison,
    CrossValidationResult,
    EvaluationResult,
    ModelOutcome,
    MonitorEvaluation,
    PoisoningResult,
    PrivacyResult,
    Status,
)
from robustlab.stats import wilson_interval

log = logging.getLogger(__name__)

__all__ = ["render_html", "render_summary_html", "write_report", "render_comparison_html",
           "render_comparison_summary_html", "write_comparison", "render_crossval_html",
           "render_crossval_summary_html", "write_crossval", "crossval_sentences", "breaks_table",
           "suite_sentences", "privacy_sentences", "render_privacy_summary_html",
           "poisoning_sentences", "render_poisoning_html", "render_poisoning_summary_html",
           "write_poisoning", "monitoring_sentences", "render_monitoring_html",
           "render_monitoring_summary_html", "write_monitoring", "CSS"]

CSS = (resources.files(__package__) / "templates" / "report.css").read_text("utf-8")


def _finalize(value: Any) -> Any:
    """Jinja2's ``finalize``: every ``{{ expression }}`` of every template passes through it
    before autoescaping. Names come from users, models and datasets, and a RIGHT-TO-LEFT
    OVERRIDE, NUL or zero-width space in them would reverse or hide text on the page; they
    are shown as ``\\u202e`` etc. instead (see :func:`robustlab.report.plots.visible_text`).
    Markup (the style sheet, the CSP) is robustlab's own and passes untouched; other values
    (lists, dicts) are shown as their ``str()``, escaped the same way."""
    if hasattr(value, "__html__"):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return visible_text(value if isinstance(value, str) else str(value))


def _output_dir(out_dir: Any, files: tuple[str, str]) -> Path:
    """Check that ``out_dir`` names a directory (existing, or to be created) and create it.

    The writers take a folder, not a file: ``write_report(result, "out/report.html")`` used
    to create a *directory* named ``report.html``, and an existing file gave a bare
    ``FileExistsError``. Each misuse is refused before anything is rendered or created, with
    a message that names ``out_dir``, what was expected and what was given.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InputTypeError(f"expected out_dir to be a directory path (str or os.PathLike), "
                             f"got {type(out_dir).__name__} {out_dir!r}")
    if isinstance(out_dir, str) and not out_dir.strip():
        raise ValidationError(f"expected out_dir to be a directory path, got {out_dir!r}")
    out = Path(out_dir)
    if out.is_dir():
        return out
    if os.path.lexists(out):
        what = "file" if out.exists() else "broken symbolic link"
        raise ValidationError(f"expected out_dir to be a directory, got the existing {what} "
                              f"'{out}'")
    if out.suffix.lower() in (".html", ".htm", ".json"):
        raise ValidationError(
            f"expected out_dir to be a directory to write {files[0]} and {files[1]} into, got "
            f"'{out}' (a file name); pass its folder '{out.parent}'")
    above = next((p for p in out.parents if os.path.lexists(p)), None)
    if above is not None and not above.is_dir():
        raise ValidationError(f"expected out_dir to be a directory, got '{out}' inside the "
                              f"existing file '{above}'")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("robustlab.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, finalize=_finalize)
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f}"
    env.filters["num"] = lambda v: f"{float(v):.4g}"
    env.filters["signed"] = lambda v: f"{float(v):+.4g}"
    return env


def _data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; img-src data:; style-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def _page() -> dict[str, Any]:
    # CSS and CSP are robustlab's own constants (no user data), so they go in unescaped.
    return {"css": Markup(CSS), "csp": Markup(_csp())}  # noqa: S704  # nosec B704


def _class_names(result: Any) -> list[str]:
    return result.dataset.get("class_names") or [
        str(i) for i in range(result.model["num_classes"])]


# Non-image results: broken examples shown as feature tables, changed features listed per
# table (largest change in scale units first), features in the per-feature table, bars in
# its plot.
_TABLE_EXAMPLES = 5
_TABLE_ROWS = 20
_SHIFT_ROWS = 50
_SHIFT_BARS = 20


def _context(result: Any) -> dict[str, Any]:
    constraints = result.constraints
    return {"r": result, "class_names": _class_names(result), **_page(),
            "params": sorted(result.parameters.items()),
            "versions": sorted(result.versions.items()),
            "units": epsilon_units(result), "standalone": False,
            "threat_lines": [] if constraints is None else constraints.describe(result.norm),
            "top_moved": [s for s in ranked_shifts(result, 5) if s.moved > 0],
            "breaks": breaks_table(result), "suite_lines": suite_sentences(result)}


# ------------------------------------------------------------------ which attack broke what

# How a suite (AttackSpec.suite) is named on the page; others by their own name.
_SUITE_TITLES = {"autoattack": "AutoAttack (Croce & Hein 2020)",
                 "autoattack-fast": "AutoAttack, fast version (Croce & Hein 2020)"}


def _and(items: list[str]) -> str:
    """``["a", "b", "c"]`` as ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _clean_correct(result: Any) -> int:
    """How many examples ``result`` classified correctly without attack."""
    return int(round(result.clean_accuracy * result.n_examples))


def breaks_table(result: Any, epsilons: list[float] | None = None) -> dict[str, Any] | None:
    """Which attack broke what (from ``result.breaks``): per attack label, in the
    evaluation's order, how many correctly classified examples it was the first to break at
    each ε > 0 (or at ``epsilons``), with their share of the clean-correct examples; and the
    examples still robust to every attack (the worst case). None if the result has no
    ``breaks`` (made before they were recorded).

    Returns ``{"epsilons": [ε, ...], "n_clean": int, "rows": [{"label": str, "cells":
    [(count, share), ...]}, ...], "robust": [(count, share), ...]}``; shares in 0..1.

    Example:
        >>> breaks_table(result)["rows"][0]["cells"][0]
        (57, 0.53)
    """
    if not result.breaks:
        return None
    wanted = [e for e in result.epsilons if e > 0] if epsilons is None else list(epsilons)
    cols = [next(j for j, e in enumerate(result.epsilons)
                 if math.isclose(e, w, rel_tol=1e-9, abs_tol=1e-12)) for w in wanted]
    n_clean = _clean_correct(result)

    def cell(count: int) -> tuple[int, float]:
        return int(count), (count / n_clean if n_clean else 0.0)

    rows = [{"label": label, "cells": [cell(counts[j]) for j in cols]}
            for label, counts in result.breaks.items()]
    robust = [cell(result.worst_case.points[j].n_correct) for j in cols]
    return {"epsilons": [result.epsilons[j] for j in cols], "n_clean": n_clean, "rows": rows,
            "robust": robust}


def suite_sentences(result: Any) -> list[str]:
    """One sentence per attack suite among the result's attacks (by the curves'
    ``spec.suite``): what ran and whether as a cascade.

    Example:
        "AutoAttack (Croce & Hein 2020): APGD-CE-100, APGD-T-100 and Square-5000 run as a
        cascade; each attack only ran on the examples the ones before it left."
    """
    members: dict[str, list[str]] = {}
    for curve in result.curves:
        if curve.spec is not None and curve.spec.suite:
            members.setdefault(curve.spec.suite, []).append(curve.label)
    lines = []
    for suite, labels in members.items():
        title = _SUITE_TITLES.get(suite, suite)
        if result.cascade:
            lines.append(f"{title}: {_and(labels)} run as a cascade; each attack only ran on "
                         f"the examples the ones before it left.")
        else:
            lines.append(f"{title}: {_and(labels)} each ran on every example (no cascade); "
                         f"an example counts for the first of them that broke it.")
    return lines


def _verdict(result: Any) -> dict[str, Any]:
    """A result's checks verdict for a comparison: its trust status, the failing and warning
    checks (failing first) and a short line such as ``2 checks failed, 1 warned``."""
    bad = [c for status in (Status.FAIL, Status.WARN) for c in result.checks
           if c.status is status]
    n_fail = sum(c.status is Status.FAIL for c in bad)
    n_warn = len(bad) - n_fail
    checks = lambda n: f"{n} check{'s' if n != 1 else ''}"  # noqa: E731
    parts = [f"{checks(n_fail)} failed"] if n_fail else []
    if n_warn:
        parts.append(f"{n_warn} warned" if parts else f"{checks(n_warn)} warned")
    return {"status": result.trust.value, "bad": bad, "line": ", ".join(parts),
            "ran": bool(result.checks)}


def _example_tables(result: Any) -> list[dict[str, Any]]:
    """One table per broken example shown (at most ``_TABLE_EXAMPLES``): the features the
    attack changed, largest change in units of the feature's scale first (at most
    ``_TABLE_ROWS``), with clean value, adversarial value and change in input units."""
    images = result.example_images
    if "clean" not in images or "adversarial" not in images or not result.examples:
        return []
    clean = np.asarray(images["clean"], np.float64).reshape(len(images["clean"]), -1)
    adv = np.asarray(images["adversarial"], np.float64).reshape(len(clean), -1)
    names = result.feature_names
    scale = (np.ones(clean.shape[1]) if result.constraints is None
             else result.constraints.scale.ravel().astype(np.float64))
    tables: list[dict[str, Any]] = []
    for j, ex in enumerate(result.examples[:len(clean)]):
        if ex.adv_pred == ex.label:
            continue
        delta = adv[j] - clean[j]
        changed = np.flatnonzero(delta != 0)
        order = changed[np.argsort(-np.abs(delta[changed]) / scale[changed], kind="stable")]
        rows = [{"name": names[i] if i < len(names) else f"feature {i}",
                 "clean": float(clean[j, i]), "adv": float(adv[j, i]),
                 "change": float(delta[i]), "scaled": float(delta[i] / scale[i])}
                for i in order[:_TABLE_ROWS].tolist()]
        tables.append({"ex": ex, "rows": rows, "n_changed": len(changed),
                       "more": len(changed) - len(rows)})
        if len(tables) == _TABLE_EXAMPLES:
            break
    return tables


def _result_context(result: Any) -> dict[str, Any]:
    ctx = _context(result)
    ctx["curves_uri"] = _data_uri(curves_png(result))
    ctx["convergence_uri"] = _data_uri(convergence_png(result))
    if result.is_image:
        ctx["examples_uri"] = _data_uri(examples_png(result, ctx["class_names"]))
        return ctx
    shifts = ranked_shifts(result)
    ctx.update(examples_uri=None, example_tables=_example_tables(result),
               shifts=shifts[:_SHIFT_ROWS], shifts_more=max(len(shifts) - _SHIFT_ROWS, 0),
               shifts_uri=_data_uri(feature_shifts_png(result, _SHIFT_BARS)),
               n_broken=broken_count(result),
               shift_attack=result.curves[-1].label if result.curves else "")
    return ctx


def render_html(result: Any, *, crossval: CrossValidationResult | None = None,
                privacy: PrivacyResult | None = None,
                poisoning: PoisoningResult | None = None,
                monitoring: MonitorEvaluation | None = None) -> str:
    """The full, self-contained report page of ``result`` as a string: an
    :class:`~robustlab.results.EvaluationResult` (with ``crossval``, its cross-validation
    section appended; with ``privacy``, its Privacy section; with ``poisoning``, its
    Poisoning section; with ``monitoring``, its Monitoring section), a
    :class:`~robustlab.results.CrossValidationResult`, a
    :class:`~robustlab.results.Comparison` (without its example images), a
    :class:`~robustlab.results.PoisoningResult` or a
    :class:`~robustlab.results.MonitorEvaluation` (its own page) or a
    :class:`~robustlab.results.PrivacyResult` (its section alone, for Jupyter)."""
    _check_sections(crossval, privacy, poisoning, monitoring)
    sections = any(s is not None for s in (crossval, privacy, poisoning, monitoring))
    for kind in type(result).__mro__:
        if kind in _PAGES:
            if sections and kind is not EvaluationResult:
                raise ValidationError(f"expected crossval, privacy, poisoning and monitoring "
                                      f"only with an EvaluationResult, got "
                                      f"{type(result).__name__}")
            if kind is EvaluationResult:
                return _render_result_page(result, crossval, privacy, poisoning, monitoring)
            return _PAGES[kind](result, None)
    raise InputTypeError(f"expected result to be an EvaluationResult, CrossValidationResult, "
                         f"Comparison, PrivacyResult, PoisoningResult or MonitorEvaluation, "
                         f"got {type(result).__name__}")


def _check_sections(crossval: Any, privacy: Any, poisoning: Any = None,
                    monitoring: Any = None) -> None:
    if crossval is not None and not isinstance(crossval, CrossValidationResult):
        raise InputTypeError(f"expected crossval to be a CrossValidationResult or None, got "
                             f"{type(crossval).__name__}")
    if privacy is not None and not isinstance(privacy, PrivacyResult):
        raise InputTypeError(f"expected privacy to be a PrivacyResult or None, got "
                             f"{type(privacy).__name__}")
    if poisoning is not None and not isinstance(poisoning, PoisoningResult):
        raise InputTypeError(f"expected poisoning to be a PoisoningResult or None, got "
                             f"{type(poisoning).__name__}")
    if monitoring is not None and not isinstance(monitoring, MonitorEvaluation):
        raise InputTypeError(f"expected monitoring to be a MonitorEvaluation or None, got "
                             f"{type(monitoring).__name__}")


def _render_result_page(result: Any, crossval: CrossValidationResult | None,
                        privacy: PrivacyResult | None = None,
                        poisoning: PoisoningResult | None = None,
                        monitoring: MonitorEvaluation | None = None) -> str:
    ctx = _result_context(result)
    ctx["crossval"] = None if crossval is None else _crossval_context(crossval)
    ctx["privacy"] = None if privacy is None else _privacy_context(privacy)
    ctx["poisoning"] = None if poisoning is None else _poisoning_context(poisoning)
    ctx["monitoring"] = None if monitoring is None else _monitoring_context(monitoring)
    return _environment().get_template("report.html.j2").render(**ctx)


def render_summary_html(result: Any) -> str:
    """A compact HTML table of the result, for Jupyter's rich display."""
    ctx = {**_context(result), "standalone": True}
    return _environment().get_template("summary.html.j2").render(**ctx)


def write_report(result: Any, out_dir: str | Path, *, key: crypto.Key | None = None,
                 crossval: CrossValidationResult | None = None,
                 privacy: PrivacyResult | None = None,
                 poisoning: PoisoningResult | None = None,
                 monitoring: MonitorEvaluation | None = None) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into the directory ``out_dir`` (created if
    missing; atomically) and update its ``manifest.json`` (see :mod:`robustlab.manifest`).
    A file, or a file name such as ``"out/report.html"``, is refused with a
    :class:`~robustlab.errors.ValidationError`. With a key (``key``, or the configured one:
    :mod:`robustlab.crypto`) both files are encrypted; ``manifest.json`` stays plaintext.

    With ``crossval`` (a :class:`~robustlab.results.CrossValidationResult`), its section is
    appended to ``report.html`` and its record written to ``crossval.json``; ``report.json``
    is the same as without. With ``privacy`` (a :class:`~robustlab.results.PrivacyResult`),
    the Privacy section is appended and its record written to ``privacy.json``; with
    ``poisoning`` (a :class:`~robustlab.results.PoisoningResult`), the Poisoning section and
    ``poisoning.json``; with ``monitoring`` (a :class:`~robustlab.results.MonitorEvaluation`),
    the Monitoring section and ``monitoring.json``.

    Returns ``{"json": path, "html": path, "manifest": path}`` (and ``"crossval"``,
    ``"privacy"``, ``"poisoning"``, ``"monitoring"``). On a worker of a ``TF_CONFIG``
    cluster that is not the chief (:func:`robustlab.distribute.is_chief`; every worker holds
    the same result) nothing is written: the chief writes, and the paths say where.
    """
    _check_sections(crossval, privacy, poisoning, monitoring)
    if not is_chief():
        return _not_the_chief(out_dir, "report")
    out = _output_dir(out_dir, ("report.html", "report.json"))
    provider = crypto.resolve_key(key)
    paths = {"json": crypto.write_json(out / "report.json", result.to_dict(), provider),
             "html": crypto.write_text(out / "report.html",
                                       render_html(result, crossval=crossval, privacy=privacy,
                                                   poisoning=poisoning, monitoring=monitoring),
                                       provider)}
    if crossval is not None:
        paths["crossval"] = crypto.write_json(out / "crossval.json", crossval.to_dict(),
                                              provider)
    if privacy is not None:
        paths["privacy"] = crypto.write_json(out / "privacy.json", privacy.to_dict(),
                                             provider)
    if poisoning is not None:
        paths["poisoning"] = crypto.write_json(out / "poisoning.json", poisoning.to_dict(),
                                               provider)
    if monitoring is not None:
        paths["monitoring"] = crypto.write_json(out / "monitoring.json",
                                                monitoring.to_dict(), provider)
    paths["manifest"] = update_manifest(out, parameters=result.parameters, seed=result.seed)
    return paths


# ------------------------------------------------------------------ privacy

def _rate(value: float) -> str:
    """A rate in percent with the precision small rates need (0.1%, 0.05%, 12.5%)."""
    return f"{100 * value:.2g}" if value < 0.01 else f"{100 * value:.1f}"


def privacy_sentences(privacy: PrivacyResult) -> list[str]:
    """The Privacy section's verdict in plain words: the guarantee (or its absence), what the
    strongest audit attack found at 0.1% false positives, whether that is evidence of
    leakage, and whether it is consistent with the guarantee."""
    lines = []
    t, eps, delta = privacy.training, privacy.epsilon, privacy.delta
    bound = privacy.bound()
    if t is None:
        lines.append("Trained without differential privacy: no guarantee bounds what the "
                     "model reveals about its training examples; the audit below is the "
                     "only evidence.")
    elif eps is None:
        lines.append("Trained with DP-SGD's clipping but without noise (noise multiplier "
                     "0): no privacy guarantee.")
    else:
        assert delta is not None and bound is not None
        lines.append(
            f"Trained with DP-SGD: ({eps:.3g}, {delta:g})-differentially private "
            f"({str(t.get('accountant', '')).upper()} accountant, {t.get('sampling')} "
            f"sampling). For any single training record, no test of whether it was in the "
            f"training set can, over the randomness of training, exceed {_rate(bound)}% "
            f"true positives at 0.1% false positives (chance: 0.1%) — against an attacker "
            f"who does not know the training seed (recorded here for reproducibility: keep "
            f"it secret to keep the guarantee).")
    attack = privacy.strongest()
    if attack is None or privacy.audit is None:
        return lines
    point = attack.at(0.001)
    lo, hi = point.tpr_interval
    where = (f"with no false positive among {privacy.audit.n_nonmembers} non-members "
             f"(an FPR below {_rate(privacy.audit.fpr_resolution)}% cannot be measured "
             f"with so few)" if point.below_resolution else
             f"at {_rate(point.fpr)}% false positives")
    lines.append(f"The strongest audit attack ({attack.name}) finds {_rate(point.tpr)}% "
                 f"[{_rate(lo)}, {_rate(hi)}] of the training examples {where}; its AUC is "
                 f"{attack.auc:.3f} [{attack.auc_interval[0]:.3f}, "
                 f"{attack.auc_interval[1]:.3f}] (0.5 = guessing).")
    # any attack at any operating point is evidence (not only the strongest at 0.1%)
    found = [a.name for a in privacy.audit.attacks
             if a.auc_interval[0] > 0.5 or any(p.tpr_interval[0] > p.fpr_interval[1]
                                               for p in a.points)]
    backwards = [a.name for a in privacy.audit.attacks if a.auc_interval[1] < 0.5]
    if found:
        lines.append(f"Verdict: the model leaks membership — an attacker can tell, better than "
                     f"chance, whether a record was in its training set (shown by "
                     f"{', '.join(found)}).")
    else:
        lines.append("Verdict: no evidence of leakage at this audit's size (which cannot "
                     "exclude a leak smaller than its intervals).")
    if backwards:
        lines.append(f"Caution: {', '.join(backwards)} scores members below non-members "
                     f"beyond its interval, which no real leak does: that attack is "
                     f"miscalibrated here (for LiRA: shadow models not trained like the "
                     f"target), so read its numbers as unreliable.")
    consistent = privacy.consistent()
    if consistent is True:
        lines.append(f"The measurements are consistent with ε = {eps:.3g}: no attack exceeds "
                     f"the bound.")
    elif consistent is False:
        lines.append(f"An attack exceeds the bound that ε = {eps:.3g} implies (at 95% "
                     f"confidence per operating point, several points tested). Possible "
                     f"causes: a flaw in the training or its accounting, or the audit's "
                     f"assumptions failing — its members must be exactly the training set, "
                     f"its non-members from the same distribution, and nothing else trained "
                     f"on them.")
    return lines


def _privacy_context(privacy: PrivacyResult) -> dict[str, Any]:
    audit = privacy.audit
    uri = None if audit is None else _data_uri(roc_png(audit, epsilon=privacy.epsilon,
                                                       delta=privacy.delta))
    return {"p": privacy, "sentences": privacy_sentences(privacy), "uri": uri,
            "bound": privacy.bound()}


def render_privacy_summary_html(privacy: PrivacyResult) -> str:
    """The Privacy section alone (Jupyter's rich display of a PrivacyResult)."""
    return _environment().get_template("privacy_summary.html.j2").render(
        privacy=_privacy_context(privacy))


def _render_privacy_page(privacy: Any, crossval: None) -> str:
    return render_privacy_summary_html(privacy)


# ------------------------------------------------------------------ poisoning

# Feature rows of suspects: at most this many columns (those furthest from their median over
# the rows shown).
_SUSPECT_FEATURES = 12


def _class_name(names: tuple[str, ...] | list[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else str(c)


def _p_value(p: float) -> str:
    """A p-value as the page words it (two significant digits: 0.031, 4.2e-07)."""
    return f"{p:.2g}"


def _finite(value: Any) -> float | None:
    """``value`` as a float, None when NaN (the templates show "—")."""
    value = float(value)
    return None if math.isnan(value) else value


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])


def _compared(a: ModelOutcome, b: ModelOutcome, attack: bool) -> str:
    """Whether the 95% intervals of ``a`` and ``b`` (attack success or clean accuracy) keep
    their difference within sampling noise."""
    left = a.attack_interval if attack else a.clean_interval
    right = b.attack_interval if attack else b.clean_interval
    return ("within their 95% intervals" if _overlap(left, right) else
            "beyond their 95% intervals")


def _attack_line(result: PoisoningResult) -> str:
    """What was done to the training set, in one sentence."""
    a = result.attack
    if a is None:
        return (f"No known poison: the detectors inspected the {result.n_train} training "
                f"examples of {result.dataset} as given, so precision and recall cannot be "
                f"measured.")
    names = result.class_names
    how = [f"{a.get('attack')} attack"]
    trigger = a.get("trigger")
    if isinstance(trigger, dict) and trigger.get("kind"):
        how.append(f"with a {trigger['kind']} trigger")
    if a.get("source") is not None:
        how.append(f"on class {_class_name(names, int(a['source']))}")
    if a.get("target") is not None:
        how.append(f"to class {_class_name(names, int(a['target']))}")
    n_poison, n_train = a.get("n_poison"), a.get("n_train", result.n_train)
    share = (f" ({_rate(n_poison / n_train)}%)" if isinstance(n_poison, int) and n_train
             else "")
    return (f"The training set of {result.dataset} was poisoned for this study: "
            f"{' '.join(how)}, {n_poison} of {n_train} training examples{share}, "
            f"seed {a.get('seed')}.")


def poisoning_sentences(result: PoisoningResult) -> list[str]:
    """The Poisoning section's verdict in plain words: which classes the primary detector
    flags (with their p-values) and how many examples it would remove, or that no class
    looks poisoned and what that does not prove; with the ground truth, how much of the
    poison it found and how much of what it flagged was poison; with the models, attack
    success and clean accuracy before and after sanitising, in points.

    Example:
        "The spectre detector flags class 7 (p = 3.1e-05, backdoor evidence z = 9.2) as
        poisoned: it would remove 21 of the 1437 training examples (1.5%)."
    """
    lines = []
    names, primary = result.class_names, result.primary
    det = primary.detector
    flagged = list(primary.flagged_classes)
    p_values = primary.class_p_values
    if flagged:
        def why(c: int) -> str:
            facts = ([] if math.isnan(p_values.get(c, math.nan)) else
                     [f"p = {_p_value(p_values[c])}"])
            if c in primary.class_evidence:
                facts.append(f"backdoor evidence z = {primary.class_evidence[c]:.1f}")
            return f" ({', '.join(facts)})" if facts else ""

        parts = [_class_name(names, c) + why(c) for c in flagged]
        lines.append(f"The {det} detector flags class{'es' if len(flagged) > 1 else ''} "
                     f"{_and(parts)} as poisoned: it would remove {primary.n_flagged} of the "
                     f"{result.n_train} training examples "
                     f"({_rate(primary.n_flagged / max(result.n_train, 1))}%).")
        if result.model("sanitised") is not None and len(result.removed) != primary.n_flagged:
            lines.append(f"The sanitised model was trained without {len(result.removed)} "
                         f"examples (the most suspicious of the flagged classes).")
    else:
        tested = {c: p for c, p in p_values.items() if not math.isnan(p)}
        lowest = ""
        if tested:
            c = min(tested, key=lambda k: tested[k])
            lowest = (f"; the smallest p-value is {_p_value(tested[c])}, for class "
                      f"{_class_name(names, c)}")
            if primary.class_evidence:
                e = max(primary.class_evidence, key=lambda k: primary.class_evidence[k])
                lowest += (f", and the strongest backdoor evidence z = "
                           f"{primary.class_evidence[e]:.1f} (class {_class_name(names, e)}; "
                           f"a class is flagged above 7)")
        lines.append(f"No class looks poisoned to the {det} detector (it flags none{lowest}). "
                     f"That does not prove the training set is clean: a detector like this "
                     f"can miss clean-label attacks (poison that keeps a correct label) and "
                     f"poison rates too low to stand out within a class.")
    others = result.inspections[1:]
    if others:
        if all(set(i.flagged_classes) == set(flagged) for i in others):
            lines.append(f"The other detectors ({_and([i.detector for i in others])}) flag "
                         f"the same classes.")
        else:
            said = [f"{i.detector} flags " + (_and([_class_name(names, c)
                                                    for c in i.flagged_classes])
                                               if i.flagged_classes else "none")
                    for i in others]
            lines.append(f"The other detectors differ: {'; '.join(said)}.")
    if result.poison is not None:
        lines.append(_truth_sentence(result, result.poison))
    lines += _model_sentences(result)
    return lines


def _truth_sentence(result: PoisoningResult, poison: np.ndarray) -> str:
    """How much of the known ``poison`` the primary detector found, and how much of what it
    flags is poison (and which other detector ranks the poison best, if one does better)."""
    primary = result.primary
    det = primary.detector
    m = primary.metrics(poison)
    n_poison, n_flagged = int(m["n_poison"]), int(m["n_flagged"])
    if n_poison == 0:
        return (f"The training set holds no poisoned example, so the {n_flagged} examples "
                f"{det} flags are all false alarms." if n_flagged else
                f"The training set holds no poisoned example and {det} rightly flags none.")
    auroc = _finite(m["auroc"])
    ranking = ("" if auroc is None else
               f"; its scores rank the poison above the other examples with AUROC "
               f"{auroc:.3f} (1 = perfect, 0.5 = chance), and a threshold on them finds "
               f"{_rate(m['recall_at_80pct_precision'])}% of the poison at 80% precision")
    if n_flagged == 0:
        found = (f"Against the known poison ({n_poison} examples), {det} finds none of it "
                 f"(it flags nothing)")
    else:
        hits = int(round(m["recall"] * n_poison))
        found = (f"Against the known poison ({n_poison} examples), {det} finds {hits} of them "
                 f"(recall {_rate(m['recall'])}%), and {hits} of the {n_flagged} examples "
                 f"it flags are poison (precision {_rate(m['precision'])}%)")
    better = [(i.detector, _finite(i.metrics(poison)["auroc"]))
              for i in result.inspections[1:]]
    best = max(((d, a) for d, a in better if a is not None), key=lambda t: t[1],
               default=None)
    tail = ("" if best is None or auroc is None or best[1] <= auroc else
            f" Of the other detectors, {best[0]} ranks the poison best (AUROC "
            f"{best[1]:.3f}).")
    return found + ranking + "." + tail


def _model_sentences(result: PoisoningResult) -> list[str]:
    lines = []
    pois, san, clean = (result.model(n) for n in ("poisoned", "sanitised", "clean"))
    if (pois is not None and san is not None and pois.attack_success is not None
            and san.attack_success is not None):
        diff = san.attack_success - pois.attack_success
        verb = "lowered" if diff < 0 else "raised" if diff > 0 else "left"
        change = (f"left the attack success at {_points(pois.attack_success)}%" if diff == 0
                  else f"{verb} the attack success from {_points(pois.attack_success)}% to "
                       f"{_points(san.attack_success)}% ({100 * diff:+.1f} points, "
                       f"{_compared(pois, san, True)})")
        base = ("" if clean is None or clean.attack_success is None else
                f"; a model trained on clean data scores {_points(clean.attack_success)}% "
                f"(triggered inputs classified as the target without any backdoor)")
        lines.append(f"Sanitising {change}{base}.")
    if san is not None and clean is not None:
        diff = san.clean_accuracy - clean.clean_accuracy
        where = ("the same as" if diff == 0 else
                 f"{_points(abs(diff))} points {'below' if diff < 0 else 'above'}")
        before = ("" if pois is None else
                  f"; the poisoned model's is {_points(pois.clean_accuracy)}%")
        lines.append(f"The sanitised model's clean accuracy is {_points(san.clean_accuracy)}%, "
                     f"{where} the model trained on clean data "
                     f"({_points(clean.clean_accuracy)}%, {_compared(san, clean, False)})"
                     f"{before}.")
    elif san is not None and pois is not None:
        diff = san.clean_accuracy - pois.clean_accuracy
        lines.append(f"The sanitised model's clean accuracy is {_points(san.clean_accuracy)}% "
                     f"against the poisoned model's {_points(pois.clean_accuracy)}% "
                     f"({100 * diff:+.1f} points, {_compared(san, pois, False)}).")
    return lines


def _suspect_context(result: PoisoningResult) -> dict[str, Any]:
    """The most suspicious training examples of the primary detector: as an image grid
    (``uri``) or, for feature rows, a table of at most ``_SUSPECT_FEATURES`` columns (those
    furthest from their median over the rows shown); rows of index, label, score and (with
    the ground truth) whether each is poison."""
    primary, names = result.primary, result.class_names
    idx = np.asarray(result.suspects, np.int64).ravel()
    inputs = np.asarray(result.suspect_inputs)
    truth = (None if result.poison is None
             else set(np.asarray(result.poison, np.int64).ravel().tolist()))
    labels = np.asarray(primary.labels)[idx] if len(idx) else np.empty(0, np.int64)
    rows = [{"index": int(i), "label": _class_name(names, int(labels[j])),
             "score": float(primary.scores[i]),
             "poison": None if truth is None else int(i) in truth}
            for j, i in enumerate(idx.tolist())]
    ctx: dict[str, Any] = {"rows": rows, "uri": None, "columns": None, "n_features": 0}
    if not len(idx) or len(inputs) != len(idx):
        return ctx
    if inputs.ndim in (3, 4):
        ctx["uri"] = _data_uri(suspects_png(inputs, labels, names, idx, poison=result.poison))
        return ctx
    values = inputs.reshape(len(inputs), -1).astype(np.float64)
    n_features = values.shape[1]
    feature_names = list(result.feature_names or ())
    if n_features > _SUSPECT_FEATURES:
        deviation = np.nanmax(np.abs(values - np.nanmedian(values, axis=0)), axis=0)
        cols = np.argsort(-np.nan_to_num(deviation, nan=-1.0), kind="stable")
        cols = cols[:_SUSPECT_FEATURES]
    else:
        cols = np.arange(n_features)
    ctx["columns"] = [feature_names[c] if c < len(feature_names) else f"feature {c}"
                      for c in cols.tolist()]
    ctx["n_features"] = n_features
    for row, vals in zip(rows, values[:, cols].tolist(), strict=True):
        row["values"] = vals
    return ctx


def _poisoning_context(result: PoisoningResult, *, compact: bool = False) -> dict[str, Any]:
    names, primary = result.class_names, result.primary
    truth = result.poison is not None
    detectors = []
    for inspection in result.inspections:
        metrics = (None if result.poison is None else
                   {k: _finite(v) for k, v in inspection.metrics(result.poison).items()})
        flagged = [_class_name(names, c) for c in inspection.flagged_classes]
        detectors.append({"name": inspection.detector, "flagged": ", ".join(flagged) or "none",
                          "n_flagged": inspection.n_flagged, "metrics": metrics,
                          "seconds": inspection.seconds})
    p_values = [{"name": _class_name(names, c),
                 "p": None if math.isnan(p) else _p_value(p),
                 "evidence": (f"{primary.class_evidence[c]:.1f}"
                              if c in primary.class_evidence else None),
                 "flagged": c in primary.flagged_classes}
                for c, p in sorted(primary.class_p_values.items())]
    if all(p["p"] is None for p in p_values):
        p_values = []
    ctx: dict[str, Any] = {
        "r": result, "sentences": poisoning_sentences(result),
        "attack_line": _attack_line(result), "truth": truth, "detectors": detectors,
        "p_values": p_values, "models": list(result.models), "compact": compact,
        "hist_uri": None, "suspects": None,
        "asr": any(m.attack_success is not None for m in result.models)}
    if not compact:
        ctx["hist_uri"] = _data_uri(poison_score_histograms_png(primary, names,
                                                                result.poison))
        ctx["suspects"] = _suspect_context(result)
    return ctx


def render_poisoning_html(result: PoisoningResult) -> str:
    """The self-contained poisoning page: the verdict in plain words, every detector side by
    side (with precision, recall and AUROC against the known poison), the models before and
    after sanitising, the primary detector's per-class p-values and score histograms, and
    its most suspicious training examples."""
    if not isinstance(result, PoisoningResult):
        raise InputTypeError(f"expected result to be a PoisoningResult, got "
                             f"{type(result).__name__}")
    return _environment().get_template("poisoning.html.j2").render(
        poisoning=_poisoning_context(result),
        attack_items=sorted((result.attack or {}).items()),
        params=sorted(result.parameters.items()), **_page())


def render_poisoning_summary_html(result: PoisoningResult) -> str:
    """The poisoning verdict, detectors and models tables without figures (Jupyter's rich
    display of a PoisoningResult)."""
    return _environment().get_template("poisoning_summary.html.j2").render(
        poisoning=_poisoning_context(result, compact=True))


def _render_poisoning_page(result: Any, crossval: None) -> str:
    return render_poisoning_html(result)


def write_poisoning(result: PoisoningResult, out_dir: str | Path, *,
                    key: crypto.Key | None = None) -> dict[str, Path]:
    """Write ``poisoning.json`` and ``poisoning.html`` into the directory ``out_dir``
    (created if missing; atomically) and update its ``manifest.json``; refuses a file as
    :func:`write_report` does, and encrypts both with a key the same way.

    Returns ``{"json": path, "html": path, "manifest": path}``.

    Example:
        >>> paths = write_poisoning(study, "out")
        >>> paths["html"].name
        'poisoning.html'
    """
    if not isinstance(result, PoisoningResult):
        raise InputTypeError(f"expected result to be a PoisoningResult, got "
                             f"{type(result).__name__}")
    return _write_page(out_dir, "poisoning", result.to_dict(), render_poisoning_html(result),
                       key, parameters=dict(result.parameters), seed=result.seed)


# ------------------------------------------------------------------ monitoring

# The confidence baselines of robustlab.monitor (named here: importing that module would
# pull TensorFlow into the presentation layer).
_BASELINES = ("msp", "energy")
# The order of badness of a claim check: a detector's status over several budgets is its
# worst one.
_SEVERITY = {Status.FAIL: 0, Status.WARN: 1, Status.PASS: 2, Status.SKIP: 3}
# How the page words a claim check's status (the badge of a detector's rows).
_CLAIM_LABELS = {Status.PASS: "survives", Status.WARN: "weakened", Status.FAIL: "collapses",
                 Status.SKIP: "no claim"}
_UNTESTED = {"status": "skip", "label": "untested"}
_ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "adaptive": "adaptive PGD"}


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _detection(ev: MonitorEvaluation, condition: str, detector: str,
               epsilon: float | None) -> Any:
    """The :class:`~robustlab.results.Detection` of ``detector`` on ``condition`` at
    ``epsilon``, or None."""
    return next((d for d in ev.detections if d.condition == condition
                 and d.detector == detector and _same(d.epsilon, epsilon)), None)


def _defended(ev: MonitorEvaluation, detector: str, attack: str, epsilon: float) -> Any:
    return next((d for d in ev.defended if d.detector == detector and d.attack == attack
                 and _same(d.epsilon, epsilon)), None)


def _claim_checks(ev: MonitorEvaluation) -> dict[str, dict[float, Check]]:
    """Per detector, its adaptive-attack claim check per budget ε."""
    out: dict[str, dict[float, Check]] = {}
    for c in ev.checks:
        eps = c.values.get("epsilon")
        if not c.name.startswith("adaptive-") or eps is None:
            continue
        detector = str(c.values.get("detector") or c.name[len("adaptive-"):])
        out.setdefault(detector, {})[float(eps)] = c
    return out


def _worst(checks: dict[float, Check]) -> Check | None:
    """The worst of a detector's claim checks (the largest budget among equals)."""
    return min(checks.values(), default=None,
               key=lambda c: (_SEVERITY[c.status], -float(c.values.get("epsilon", 0.0))))


def _badge(check: Check | None) -> dict[str, str]:
    return _UNTESTED if check is None else {"status": check.status.value,
                                            "label": _CLAIM_LABELS[check.status]}


def _headline(ev: MonitorEvaluation) -> tuple[str, float] | None:
    """The attack and budget a detector's claim is stated at: PGD at its largest ε (else the
    strongest other attack that ran, at its largest ε); None when no attack ran."""
    attacks = [(d.condition, float(d.epsilon)) for d in ev.detections
               if d.kind == "attack" and d.epsilon is not None]
    pgd = [a for a in attacks if a[0] == "pgd"]
    return max(pgd or attacks, key=lambda a: a[1], default=None)


def _attack_name(condition: str) -> str:
    return _ATTACK_NAMES.get(condition, condition)


def _auroc_text(d: Any) -> str:
    lo, hi = d.auroc_interval
    return f"AUROC {d.auroc:.2f} [{lo:.2f}, {hi:.2f}]"


def _measured(d: Any) -> bool:
    return d is not None and math.isfinite(d.auroc)


def _kept(check: Check) -> float:
    """The share (%) of its robust-accuracy gain a detector kept under the adaptive attack."""
    gain = float(check.values.get("gain", math.nan))
    left = float(check.values.get("gain_adaptive", math.nan))
    return 100.0 * left / gain if gain else math.nan


def _claims(names: list[str]) -> str:
    return f"the claim{'s' if len(names) > 1 else ''} of {_and(names)}"


def _adaptive_summary(ev: MonitorEvaluation, checks: dict[str, dict[float, Check]]) -> str:
    """Which detectors' claims survive the adaptive attacker and which collapse (or that
    none was tested)."""
    if not checks:
        why = ("the evaluation ran without it" if ev.parameters.get("adaptive") is False
               else "no adaptive attack was recorded")
        return (f"No claim in this report was tested against an adaptive attacker ({why}): "
                f"every detection rate and robust accuracy below holds only against attacks "
                f"that ignore the detectors, and an attacker who knows a detector can often "
                f"evade it (Carlini & Wagner 2017).")
    by_status: dict[Status, list[str]] = {}
    untested = []
    for d in ev.detectors:
        worst = _worst(checks.get(d, {}))
        if worst is None:
            untested.append(d)
        else:
            by_status.setdefault(worst.status, []).append(d)
    parts = []
    if by_status.get(Status.PASS):
        names = by_status[Status.PASS]
        parts.append(f"{_claims(names)} survive{'s' if len(names) == 1 else ''}")
    if by_status.get(Status.WARN):
        names = by_status[Status.WARN]
        parts.append(f"{_claims(names)} {'is' if len(names) == 1 else 'are'} weakened")
    if by_status.get(Status.FAIL):
        names = by_status[Status.FAIL]
        one = len(names) == 1
        parts.append(f"{_claims(names)} collapse{'s' if one else ''} — do not rely on "
                     f"{'it' if one else 'them'} against a white-box attacker")
    if by_status.get(Status.SKIP):
        names = by_status[Status.SKIP]
        parts.append(f"{_and(names)} add{'s' if len(names) == 1 else ''} no robustness "
                     f"against PGD to begin with")
    if untested:
        parts.append(f"{_and(untested)} {'was' if len(untested) == 1 else 'were'} not "
                     f"attacked adaptively")
    budgets = sorted({e for per in checks.values() for e in per})
    line = (f"Against the adaptive attacker (PGD on the model + detector at ε = "
            f"{_and([f'{e:g}' for e in budgets])}), {'; '.join(parts)}.")
    own = _worst(checks.get(ev.detector, {}))
    if own is not None and own.status is Status.FAIL:
        line += (f" The monitor's own flag comes from {ev.detector}, one of those that "
                 f"collapse: against an attacker who knows the monitor it does not protect "
                 f"the model.")
    elif own is not None and own.status is Status.WARN:
        line += (f" The monitor's own flag comes from {ev.detector}, whose claim is weakened "
                 f"under the adaptive attack.")
    return line


def _claim_sentence(ev: MonitorEvaluation, detector: str, head: tuple[str, float],
                    checks: dict[float, Check]) -> str:
    """One detector's claim against the headline attack, always with what the adaptive
    attacker left of it (or the statement that it was not tested)."""
    condition, eps = head
    name = _attack_name(condition)
    det = _detection(ev, condition, detector, eps)
    where = f"{detector} against {name} at ε = {eps:g}"
    if det is None:
        claim = f"{where}: not evaluated"
    elif not _measured(det):
        claim = (f"{where}: not measurable ({name} fooled the model on none of the inputs, "
                 f"so there was nothing to detect)")
    else:
        claim = (f"{where}: {_auroc_text(det)}, {_points(det.detected)}% of the "
                 f"{det.positives} successful adversarial examples flagged at its threshold")
    check = checks.get(eps)
    if check is None:
        plain = _defended(ev, detector, "pgd", eps) if condition == "pgd" else None
        acc = ("" if plain is None else
               f"; robust accuracy with it {_points(plain.defended_accuracy)}% against PGD "
               f"(model alone {_points(plain.model_accuracy)}%)")
        return (f"{claim}{acc} — not tested against an adaptive attacker: this holds only "
                f"against an attacker who ignores the detector.")
    row = _defended(ev, detector, "adaptive", eps)
    via = (f" (attacked through {row.surrogate})"
           if row is not None and row.surrogate and row.surrogate != detector else "")
    after = _detection(ev, "adaptive", detector, eps)
    adapt = (f"against adaptive PGD{via}: " + (
        f"{_auroc_text(after)}, {_points(after.detected)}% flagged" if _measured(after)
        else "no adaptive example fooled the model"))
    v = check.values
    acc = (f"robust accuracy with it {_points(v['defended_accuracy'])}% against PGD, "
           f"{_points(v['defended_accuracy_adaptive'])}% against adaptive PGD (model alone "
           f"{_points(v['model_accuracy'])}%)")
    verdict = {
        Status.PASS: "the claim survives the adaptive attack.",
        Status.WARN: (f"it keeps only {_kept(check):.0f}% of its gain under the adaptive "
                      f"attack: the claim is weakened."),
        Status.FAIL: "the claim collapses: do not rely on it against a white-box attacker.",
        Status.SKIP: "it adds no robustness against PGD to begin with.",
    }[check.status]
    line = f"{claim}; {adapt}; {acc} — {verdict}"
    too = " too" if check.status is Status.FAIL else ""
    for e, other in sorted(checks.items()):
        if _same(e, eps):
            continue
        if other.status is Status.FAIL:
            line += (f" At ε = {e:g} its claim collapses{too} (robust accuracy with it "
                     f"{_points(other.values['defended_accuracy'])}% against PGD, "
                     f"{_points(other.values['defended_accuracy_adaptive'])}% against "
                     f"adaptive PGD).")
        elif other.status is Status.WARN:
            line += (f" At ε = {e:g} it keeps only {_kept(other):.0f}% of its gain under the "
                     f"adaptive attack.")
    return line


def _baseline_sentence(ev: MonitorEvaluation, head: tuple[str, float],
                       checks: dict[str, dict[float, Check]]) -> str | None:
    """Does the best detector beat the confidence baselines against the headline attack?"""
    condition, eps = head
    name = _attack_name(condition)
    baselines = [d for d in ev.detectors if d in _BASELINES]
    others = [d for d in ev.detectors if d not in _BASELINES]
    if not others:
        return None
    if not baselines:
        return ("No confidence baseline (msp or energy) was evaluated, so nothing here shows "
                "that the detectors do better than the model's own confidence.")
    measured = {d: _detection(ev, condition, d, eps) for d in ev.detectors}
    best = max((d for d in others if _measured(measured[d])), default=None,
               key=lambda d: measured[d].auroc)
    ref = max((d for d in baselines if _measured(measured[d])), default=None,
              key=lambda d: measured[d].auroc)
    if best is None or ref is None:
        return None
    b, r = measured[best], measured[ref]
    if b.auroc <= r.auroc:
        return (f"No detector beats the confidence baselines against {name} at ε = {eps:g}: "
                f"the best, {best} ({_auroc_text(b)}), scores no higher than {ref} "
                f"({_auroc_text(r)}), the model's own confidence.")
    if _overlap(b.auroc_interval, r.auroc_interval):
        line = (f"Against {name} at ε = {eps:g} the best detector, {best} ({_auroc_text(b)}), "
                f"scores above the best confidence baseline, {ref} ({_auroc_text(r)}), but "
                f"within their 95% intervals: no clear gain over the model's own confidence")
    else:
        line = (f"Against {name} at ε = {eps:g} the best detector, {best} ({_auroc_text(b)}), "
                f"beats the best confidence baseline, {ref} ({_auroc_text(r)}), beyond their "
                f"95% intervals")
    check = checks.get(best, {}).get(eps)
    tail = {
        None: f"; {best} was not tested against an adaptive attacker.",
        Status.PASS: f"; {best}'s claim survives the adaptive attack.",
        Status.WARN: f"; {best}'s claim is weakened under the adaptive attack.",
        Status.FAIL: (f"; and {best}'s claim collapses under the adaptive attack, so any "
                      f"advantage holds only against an attacker who ignores the detector."),
        Status.SKIP: f"; yet at its threshold {best} adds no robustness against PGD.",
    }[None if check is None else check.status]
    return line + tail


def _clean_sentence(ev: MonitorEvaluation) -> str | None:
    """Each detector's false-positive rate on the clean evaluation inputs against the
    target its threshold was set for."""
    if not ev.clean_flagged or ev.n <= 0:
        return None
    over, under, said = [], [], []
    for d in ev.detectors:
        if d not in ev.clean_flagged:
            continue
        rate = float(ev.clean_flagged[d])
        lo, hi = wilson_interval(int(round(rate * ev.n)), ev.n)
        said.append(f"{d} {_points(rate)}% [{_points(lo)}, {_points(hi)}]")
        if lo > ev.fpr:
            over.append(d)
        elif hi < ev.fpr:
            under.append(d)
    line = (f"On the {ev.n} clean evaluation inputs, with thresholds set for "
            f"{100 * ev.fpr:g}% false positives, the detectors flag: {', '.join(said)}.")
    if over:
        one = len(over) == 1
        line += (f" {_and(over)} flag{'s' if one else ''} more clean inputs than the target "
                 f"beyond sampling noise: the calibration data may not represent these "
                 f"inputs, and {'its' if one else 'their'} detection rates come with more "
                 f"false alarms than intended.")
    if under:
        one = len(under) == 1
        line += (f" {_and(under)} flag{'s' if one else ''} fewer clean inputs than the "
                 f"target beyond sampling noise.")
    if not over and not under:
        line += " All are within sampling noise of the target."
    return line


def _conditions(ev: MonitorEvaluation, kind: str) -> list[str]:
    """The conditions of ``kind`` in the order the evaluation ran them."""
    out: list[str] = []
    for d in ev.detections:
        if d.kind == kind and d.condition not in out:
            out.append(d.condition)
    return out


def _shift_sentence(ev: MonitorEvaluation) -> str | None:
    parts = []
    for condition in _conditions(ev, "shift"):
        rows = [d for d in ev.detections if d.condition == condition and _measured(d)]
        if rows:
            best = max(rows, key=lambda d: d.auroc)
            parts.append(f"{condition}: {best.detector} (AUROC {best.auroc:.2f}, "
                         f"{_points(best.detected)}% flagged)")
    if not parts:
        return None
    return (f"Against the natural shifts (no attacker involved, so no adaptive test applies) "
            f"the best detector per shift is {'; '.join(parts)}.")


def _drift_sentences(ev: MonitorEvaluation) -> list[str]:
    if not ev.drift:
        return ["The batch drift test was not run (no drift batches)."]
    clean = next((r for r in ev.drift if r.condition == "clean"), None)
    others = [r for r in ev.drift if r.condition != "clean" and r.batches]
    sig = ev.parameters.get("significance")
    sig_text = "" if sig is None else f", significance {float(sig):g} after Bonferroni"
    size = ev.drift[0].batch_size
    lines = []
    if clean is not None and clean.batches:
        lo, hi = clean.interval
        line = (f"The batch drift test (batches of {size} inputs{sig_text}) fired on "
                f"{clean.fired} of {clean.batches} clean batches: a false-alarm rate of "
                f"{_points(clean.rate)}% [{_points(lo)}, {_points(hi)}]")
        if sig is not None and lo > float(sig):
            line += (" — more often than its significance level, beyond sampling noise: the "
                     "evaluation data differ from the calibration data.")
        else:
            line += "."
        lines.append(line)
    if others:
        rates = [f"{r.condition} {_points(r.rate)}% [{_points(r.interval[0])}, "
                 f"{_points(r.interval[1])}]" for r in others]
        line = (f"Under the other conditions it fired on this share of the batches: "
                f"{', '.join(rates)}.")
        silent = [r.condition for r in others if r.fired == 0]
        if silent:
            line += (f" It never fired under {_and(silent)}: such inputs would go unnoticed "
                     f"by the drift test at this batch size.")
        lines.append(line)
    return lines


def monitoring_sentences(evaluation: MonitorEvaluation) -> list[str]:
    """The Monitoring section's verdict in plain words: what was evaluated; which detectors'
    claims survive the adaptive attacker and which collapse (or that none was tested); per
    detector its claim against PGD at the largest ε (AUROC, detection at its threshold)
    always beside its adaptive outcome or the statement that it was not tested; whether the
    best detector beats the confidence baselines (msp, energy); each detector's
    false-positive rate on the clean inputs against its target; the best detector per shift;
    and the drift test's false-alarm and firing rates.

    Example:
        "mahalanobis against PGD at ε = 0.3: AUROC 0.97 [0.94, 1.00], 92.0% of the 80
        successful adversarial examples flagged at its threshold; against adaptive PGD:
        AUROC 0.41 [0.32, 0.50], 3.0% flagged; robust accuracy with it 85.0% against PGD,
        4.0% against adaptive PGD (model alone 2.0%) — the claim collapses: do not rely on
        it against a white-box attacker."
    """
    ev = _check_evaluation(evaluation)
    of = f" of {ev.dataset}" if ev.dataset else ""
    lines = [f"The monitor was evaluated on {ev.n} held-out inputs{of} (clean accuracy "
             f"{_points(ev.clean_accuracy)}%) with {len(ev.detectors)} "
             f"detector{'s' if len(ev.detectors) != 1 else ''} ({_and(list(ev.detectors))}); "
             f"each flags an input whose score exceeds a threshold set for "
             f"{100 * ev.fpr:g}% false positives on clean calibration data, and "
             f"{ev.detector} decides the monitor's own flag."]
    checks = _claim_checks(ev)
    head = _headline(ev)
    lines.append(_adaptive_summary(ev, checks))
    if head is None:
        lines.append("No attack was run, so no detector makes a claim against attackers.")
    else:
        lines += [_claim_sentence(ev, d, head, checks.get(d, {})) for d in ev.detectors]
        baseline = _baseline_sentence(ev, head, checks)
        if baseline is not None:
            lines.append(baseline)
    for extra in (_clean_sentence(ev), _shift_sentence(ev)):
        if extra is not None:
            lines.append(extra)
    return lines + _drift_sentences(ev)


def _rate_cell(value: float, interval: tuple[float, float]) -> dict[str, float]:
    return {"value": value, "lo": interval[0], "hi": interval[1]}


def _monitoring_context(ev: MonitorEvaluation, *, compact: bool = False) -> dict[str, Any]:
    checks = _claim_checks(ev)
    groups: list[dict[str, Any]] = []
    for title, kind in (("attacks (on the model alone)", "attack"),
                        ("adaptive attacker (on the model + detector)", "adaptive"),
                        ("shifts", "shift")):
        columns: list[tuple[str, float | None]] = []
        for d in ev.detections:
            key = (d.condition, d.epsilon)
            if d.kind == kind and not any(d.condition == c and _same(d.epsilon, e)
                                          for c, e in columns):
                columns.append(key)
        if columns:
            groups.append({"title": title, "kind": kind, "columns": [
                {"condition": c, "epsilon": e,
                 "label": _attack_name(c) if e is None else f"{_attack_name(c)} ε {e:g}"}
                for c, e in columns]})
    rows = []
    for detector in ev.detectors:
        cells = []
        for g in groups:
            for col in g["columns"]:
                det = _detection(ev, col["condition"], detector, col["epsilon"])
                cells.append(None if det is None else {
                    "auroc": _finite(det.auroc), "lo": det.auroc_interval[0],
                    "hi": det.auroc_interval[1], "detected": _finite(det.detected),
                    "tpr": _finite(det.tpr_at_5), "positives": det.positives})
        rows.append({"name": detector, "baseline": detector in _BASELINES,
                     "badge": _badge(_worst(checks.get(detector, {})))})
        rows[-1]["cells"] = cells
    defended = []
    for eps in sorted({d.epsilon for d in ev.defended}):
        for detector in ev.detectors:
            plain = _defended(ev, detector, "pgd", eps)
            adaptive = _defended(ev, detector, "adaptive", eps)
            if plain is None and adaptive is None:
                continue
            check = checks.get(detector, {}).get(eps)
            defended.append({
                "epsilon": eps, "detector": detector, "badge": _badge(check),
                "surrogate": (adaptive.surrogate if adaptive is not None and adaptive.surrogate
                              and adaptive.surrogate != detector else ""),
                "n": (plain or adaptive).n,
                "model": None if plain is None else _rate_cell(plain.model_accuracy,
                                                               plain.model_interval),
                "defended": None if plain is None else _rate_cell(plain.defended_accuracy,
                                                              plain.defended_interval),
                "model_adaptive": None if adaptive is None else _rate_cell(
                    adaptive.model_accuracy, adaptive.model_interval),
                "defended_adaptive": None if adaptive is None else _rate_cell(
                    adaptive.defended_accuracy, adaptive.defended_interval)})
    collapsed = [name for name in ev.detectors
                 if (w := _worst(checks.get(name, {}))) is not None and w.status is Status.FAIL]
    flagged = []
    for name in ev.detectors:
        if name in ev.clean_flagged:
            rate = float(ev.clean_flagged[name])
            interval = wilson_interval(int(round(rate * ev.n)), ev.n) if ev.n else (0.0, 1.0)
            flagged.append({"detector": name,
                            "threshold": _finite(ev.thresholds.get(name, math.nan)),
                            **_rate_cell(rate, interval)})
    ctx: dict[str, Any] = {
        "ev": ev, "sentences": monitoring_sentences(ev), "groups": groups, "rows": rows,
        "defended": defended, "tested": bool(checks), "collapsed": ", ".join(collapsed),
        "flagged": flagged, "drift": list(ev.drift), "checks": list(ev.checks),
        "significance": ev.parameters.get("significance"), "compact": compact,
        "hist_uri": None}
    if not compact:
        attacks = [*_conditions(ev, "attack"), *_conditions(ev, "adaptive")]
        ctx["hist_uri"] = _data_uri(monitor_score_histograms_png(
            ev.samples, ev.thresholds, ev.detectors,
            [("attacks at the largest ε", attacks), ("shifts", _conditions(ev, "shift"))]))
    return ctx


def _check_evaluation(evaluation: Any) -> MonitorEvaluation:
    if not isinstance(evaluation, MonitorEvaluation):
        raise InputTypeError(f"expected evaluation to be a MonitorEvaluation, got "
                             f"{type(evaluation).__name__}")
    return evaluation


def render_monitoring_html(evaluation: MonitorEvaluation) -> str:
    """The self-contained monitoring page: the verdict in plain words, every detector
    against every attack, adaptive attack and shift side by side (a detector whose claim
    collapsed marked in each of its rows), the robust accuracy of the model with and
    without each detector, the clean false-positive rates, the drift test's firing rates,
    the sanity checks and per-detector score histograms."""
    ev = _check_evaluation(evaluation)
    return _environment().get_template("monitoring.html.j2").render(
        monitoring=_monitoring_context(ev), params=sorted(ev.parameters.items()), **_page())


def render_monitoring_summary_html(evaluation: MonitorEvaluation) -> str:
    """The monitoring verdict and tables without figures (Jupyter's rich display of a
    MonitorEvaluation)."""
    ev = _check_evaluation(evaluation)
    return _environment().get_template("monitoring_summary.html.j2").render(
        monitoring=_monitoring_context(ev, compact=True))


def _render_monitoring_page(evaluation: Any, crossval: None) -> str:
    return render_monitoring_html(evaluation)


def write_monitoring(evaluation: MonitorEvaluation, out_dir: str | Path, *,
                     key: crypto.Key | None = None) -> dict[str, Path]:
    """Write ``monitoring.json`` and ``monitoring.html`` into the directory ``out_dir``
    (created if missing; atomically) and update its ``manifest.json``; refuses a file as
    :func:`write_report` does, and encrypts both with a key the same way. NaN numbers (an
    AUROC with nothing to detect) are written as null.

    Returns ``{"json": path, "html": path, "manifest": path}``.

    Example:
        >>> paths = write_monitoring(evaluation, "out")
        >>> paths["html"].name
        'monitoring.html'
    """
    ev = _check_evaluation(evaluation)
    return _write_page(out_dir, "monitoring", ev.to_dict(),
                       render_monitoring_html(ev), key, parameters=dict(ev.parameters),
                       seed=ev.seed)


# ------------------------------------------------------------------ cross-validation

def _points(value: float) -> str:
    return f"{100 * value:.1f}"


def crossval_sentences(cv: CrossValidationResult) -> list[str]:
    """One sentence for the clean accuracy and one per ε > 0: is the spread across folds
    (standard deviation) larger than the sampling interval (mean Wilson half-width)?

    Example:
        "At ε = 0.1 the folds differ more than sampling alone explains (sd 4.1 points >
        half-width 2.3 points): the number depends on the split."
    """
    def sentence(where: str, sd: float, half: float) -> str:
        if sd > half:
            return (f"{where} the folds differ more than sampling alone explains (sd "
                    f"{_points(sd)} points > half-width {_points(half)} points): the number "
                    f"depends on the split.")
        return (f"{where} the spread across folds is within what sampling explains (sd "
                f"{_points(sd)} points ≤ half-width {_points(half)} points).")

    lines = [sentence("For clean accuracy", cv.clean_sd, cv.clean_halfwidth)]
    lines += [sentence(f"At ε = {row['epsilon']:.4g}", row["sd"], row["halfwidth"])
              for row in cv.summary() if row["epsilon"] > 0]  # at ε = 0: the clean line
    return lines


def _crossval_context(cv: CrossValidationResult) -> dict[str, Any]:
    return {"cv": cv, "summary": cv.summary(), "sentences": crossval_sentences(cv),
            "uri": _data_uri(crossval_png(cv)), "attacks": ", ".join(map(str, cv.attacks))}


def _render_crossval_page(cv: Any, crossval: None) -> str:
    return render_crossval_html(cv)


def render_crossval_html(cv: CrossValidationResult) -> str:
    """The self-contained cross-validation page: per-fold plot and table, mean ± sd, and
    whether the spread across folds exceeds what sampling explains."""
    return _environment().get_template("crossval.html.j2").render(
        crossval=_crossval_context(cv), **_page())


def render_crossval_summary_html(cv: CrossValidationResult) -> str:
    """The cross-validation's mean ± sd table and sentences, for Jupyter's rich display."""
    return _environment().get_template("crossval_summary.html.j2").render(
        cv=cv, summary=cv.summary(), sentences=crossval_sentences(cv),
        attacks=", ".join(map(str, cv.attacks)))


def write_crossval(cv: CrossValidationResult, out_dir: str | Path, *,
                   key: crypto.Key | None = None) -> dict[str, Path]:
    """Write ``crossval.json`` and ``crossval.html`` into the directory ``out_dir`` (created
    if missing; atomically) and update its ``manifest.json``; refuses a file as
    :func:`write_report` does, and encrypts both with a key the same way.

    Returns ``{"json": path, "html": path, "manifest": path}``.
    """
    if not isinstance(cv, CrossValidationResult):
        raise InputTypeError(f"expected cv to be a CrossValidationResult, got "
                             f"{type(cv).__name__}")
    return _write_page(out_dir, "crossval", cv.to_dict(), render_crossval_html(cv), key,
                       parameters=dict(cv.training), seed=cv.seed)


def _not_the_chief(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Where the chief writes ``<stem>.json`` / ``.html``, said in the log, written by none."""
    log.warning("not the chief of the TF_CONFIG cluster: %s.html is not written here (the "
                "chief writes it in %s)", stem, out_dir)
    out = Path(out_dir)
    return {"json": out / f"{stem}.json", "html": out / f"{stem}.html",
            "manifest": out / "manifest.json"}


def _write_page(out_dir: str | Path, stem: str, record: dict[str, Any], html: str,
                key: crypto.Key | None, *, parameters: dict[str, Any], seed: int
                ) -> dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.html`` into ``out_dir`` (refusing a file, as
    :func:`write_report` does; encrypted with a key) and update its ``manifest.json``; the
    chief alone writes (see :func:`write_report`)."""
    if not is_chief():
        return _not_the_chief(out_dir, stem)
    out = _output_dir(out_dir, (f"{stem}.html", f"{stem}.json"))
    provider = crypto.resolve_key(key)
    paths = {"json": crypto.write_json(out / f"{stem}.json", record, provider),
             "html": crypto.write_text(out / f"{stem}.html", html, provider)}
    paths["manifest"] = update_manifest(out, parameters=parameters, seed=seed)
    return paths


def _comparison_context(comparison: Any) -> dict[str, Any]:
    """What both comparison templates show besides the numbers: each model's checks verdict
    (``verdicts``, in the models' order) and which attack broke how many examples at the
    focus ε (``focus_breaks``: the attack labels and one row per model; None when no result
    recorded ``breaks``)."""
    verdicts = [_verdict(r) for r in comparison.results]
    tables = [breaks_table(r, [comparison.focus_epsilon]) for r in comparison.results]
    labels: list[str] = []
    for table in tables:
        for row in table["rows"] if table else ():
            if row["label"] not in labels:
                labels.append(row["label"])
    focus = None
    if labels:
        rows = []
        for name, table in zip(comparison.names, tables, strict=True):
            cells = {} if table is None else {row["label"]: row["cells"][0]
                                               for row in table["rows"]}
            rows.append({"name": name, "n_clean": None if table is None else table["n_clean"],
                         "cells": [cells.get(label) for label in labels],
                         "robust": None if table is None else table["robust"][0]})
        focus = {"labels": labels, "rows": rows}
    unchecked = [n for n, v in zip(comparison.names, verdicts, strict=True) if not v["ran"]]
    return {"c": comparison, "verdicts": verdicts, "focus_breaks": focus,
            "unchecked": unchecked, "suite_lines": suite_sentences(comparison.results[0])}


def render_comparison_summary_html(comparison: Any) -> str:
    """The comparison's table with each model's checks verdict, for Jupyter's rich
    display."""
    return _environment().get_template("compare_summary.html.j2").render(
        **_comparison_context(comparison))


def render_comparison_html(comparison: Any, x: Any = None, y: Any = None) -> str:
    """The self-contained comparison page: per model its worst-case numbers, its checks
    verdict (a failing check named next to its numbers: a hardened model is where gradient
    masking hides) and which attack broke how many examples at the focus ε; ``x``, ``y``
    (the evaluated test examples) add the images of what hardening bought."""
    import numpy as np

    gained, rows = None, None
    first = comparison.results[0]
    if x is not None and y is not None:
        y_arr = np.asarray(y)
        if first.is_image:
            gained = gained_png(comparison, np.asarray(x), y_arr, _class_names(first))
        else:  # tables: which examples, with their labels (the values are in the data)
            names = _class_names(first)
            rows = [(name, [(int(i), names[int(y_arr[i])] if int(y_arr[i]) < len(names)
                             else str(int(y_arr[i]))) for i in idx])
                    for name, idx in comparison.gained.items() if idx]
    return _environment().get_template("compare.html.j2").render(
        **_comparison_context(comparison), curves_uri=_data_uri(comparison_png(comparison)),
        gained_uri=_data_uri(gained), gained_rows=rows, units=epsilon_units(first),
        privacy_sections=[(name, _privacy_context(p)) for name, p in
                          zip(comparison.names, comparison.privacy, strict=True)
                          if p is not None] if comparison.privacy else [],
        **_page())


def write_comparison(comparison: Any, out_dir: str | Path, x: Any = None, y: Any = None, *,
                     key: crypto.Key | None = None) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.html`` into the directory ``out_dir``
    (created if missing; atomically) and update its ``manifest.json``. A file, or a file
    name such as ``"out/comparison.html"``, is refused with a
    :class:`~robustlab.errors.ValidationError`. With a key (``key``, or the configured one)
    both files are encrypted, as in :func:`write_report`.

    Returns ``{"json": path, "html": path, "manifest": path}``.
    """
    first = comparison.results[0]
    return _write_page(out_dir, "comparison", comparison.to_dict(),
                       render_comparison_html(comparison, x, y), key,
                       parameters=first.parameters, seed=first.seed)


def _render_comparison_page(comparison: Any, crossval: None) -> str:
    return render_comparison_html(comparison)


# render_html's page per result type (the first match along the type's MRO).
_PAGES: dict[type, Callable[[Any, Any], str]] = {
    EvaluationResult: _render_result_page,
    CrossValidationResult: _render_crossval_page,
    Comparison: _render_comparison_page,
    PrivacyResult: _render_privacy_page,
    PoisoningResult: _render_poisoning_page,
    MonitorEvaluation: _render_monitoring_page,
}

# Jupyter shows results through these (robustlab.results asks robustlab._display).
register_html(EvaluationResult, render_summary_html)
register_html(Comparison, render_comparison_summary_html)
register_html(CrossValidationResult, render_crossval_summary_html)
register_html(PrivacyResult, render_privacy_summary_html)
register_html(PoisoningResult, render_poisoning_summary_html)
register_html(MonitorEvaluation, render_monitoring_summary_html)
