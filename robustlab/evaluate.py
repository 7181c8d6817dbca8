"""Robustness evaluation: clean accuracy, robust accuracy per attack per ε, and the
per-example worst case over attacks, with 95% Wilson confidence intervals.

The result is a small frozen dataclass (:class:`~robustlab.results.EvaluationResult`) with
``to_dict()`` for JSON and ``_repr_html_`` for Jupyter; reports are rendered from it alone.
Strings from notebooks and the CLI are parsed here, once; the attacks then run on validated
arrays and typed specs (:meth:`~robustlab.attacks.AttackSpec.run`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from robustlab import distribute
from robustlab._env import default_jit_compile, determinism_info, device_info, package_versions
from robustlab._validate import (
    check_int,
    check_optional_int,
    check_seed,
    parse_epsilons,
    validate_arrays,
)
from robustlab.attacks import AttackSpec, fitting, parse_attacks
from robustlab.checks import run_checks
from robustlab.data import Dataset
from robustlab.errors import InputTypeError, RobustlabError, RobustlabWarning, ValidationError
from robustlab.inference import (
    batched_logits,
    check_input_shape,
    num_outputs,
    resolve_batch_size,
    softmax,
    weights_sha256,
)
from robustlab.results import (
    AttackCurve,
    ClassAccuracy,
    Comparison,
    CurvePoint,
    EvaluationResult,
    Example,
    FeatureShift,
    PrivacyResult,
    Status,
)
from robustlab.stats import perturbation_norms, wilson_interval
from robustlab.types import (
    Constraints,
    Norm,
    ThreatModel,
    feature_labels,
    is_image_shape,
    parse_norm,
)

__all__ = ["evaluate", "compare", "EvaluationResult", "Comparison"]

log = logging.getLogger(__name__)

# Tolerance of the re-check that every adversarial example respects the threat model.
_BUDGET_TOL = 1e-5


def _model_info(model: Any) -> dict[str, Any]:
    return {"name": str(getattr(model, "name", type(model).__name__)),
            "class": type(model).__name__,
            "parameters": int(model.count_params()) if hasattr(model, "count_params") else None,
            "input_shape": list(getattr(model, "input_shape", None) or [])[1:],
            "num_classes": num_outputs(model)}


def _check_budget(x_adv: np.ndarray, x: np.ndarray, threat: ThreatModel, label: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Re-check the threat model on an attack's output (:meth:`ThreatModel.violation
    <robustlab.types.ThreatModel.violation>`): no attack reports outside the budget (with
    constraints also: immutable features untouched, per-feature bounds, whole integers,
    valid one-hot groups). Returns the per-example ``(L∞, L2)`` norms of the change (with
    constraints, in units of the features' scale)."""
    problem = threat.violation(x_adv, x, tol=_BUDGET_TOL)
    if problem:
        raise RobustlabError(f"{label} returned examples outside the threat model ({problem})")
    c = threat.constraints
    if c is not None:
        return c.distance(x_adv, x, Norm.LINF), c.distance(x_adv, x, Norm.L2)
    return perturbation_norms(x_adv, x)


def evaluate(model: Any, data: Dataset | tuple[Any, Any], attacks: Any = ("fgsm", "pgd"),
             epsilons: Any = (0.0, 0.05, 0.1, 0.2, 0.3), *, norm: Any = "linf",
             n: int | None = None, seed: int = 0, batch_size: int | None = None,
             bounds: tuple[float, float] | None = None, n_show: int = 8,
             jit_compile: bool | None = None, progress: bool | None = None,
             parameters: dict[str, Any] | None = None, reuse: bool = True,
             cascade: bool | None = None, checks: bool = True, n_check: int = 200,
             callback: Callable[[int, int], None] | None = None,
             constraints: Constraints | None = None, strategy: Any = None
             ) -> EvaluationResult:
    """Measure clean and robust accuracy of ``model`` on the test split of ``data``.

    An example counts as robust at ε if it is classified correctly, clean and after the
    attack (against its true label). The worst case at ε counts an example as robust only if
    *every* attack failed on it.

    The curve reuses work (``reuse``): ε runs in increasing order, and an example already
    misclassified (clean, or by an adversarial example found at a smaller ε, which lies
    inside every larger ball) is not attacked again. Every other example is attacked exactly
    as an independent run at that ε would attack it (the same random starts, see ``ids`` in
    :func:`~robustlab.attacks.pgd`), so the reported accuracy is never higher than that of
    independent runs; it only skips work whose outcome is known.

    With ``cascade`` the attacks also share work: each runs only on the examples that every
    attack before it left standing (as AutoAttack does), so put cheap attacks first and
    expensive ones (CW, Square, APGD) last. The worst case is the same as without it; each
    curve then reads "robust to this attack and the ones before it". ``cascade=None`` (the
    default) cascades when the attacks include a suite (``"autoattack"``).

    Which attack broke each example is recorded (``result.breaks``: per attack, in order, how
    many examples it was the first to break at each ε).

    With ``checks`` the sanity checks of :mod:`robustlab.checks` run afterwards (on at most
    ``n_check`` examples) and their verdicts go into the result and the report.

    Args:
        model: Keras model returning logits, ``(N, ...) -> (N, K)`` (images, tables, any
            rank).
        data: a :class:`~robustlab.data.Dataset` (its test split is used; its feature
            constraints apply) or ``(x, y)``.
        attacks: names (``"fgsm, pgd"``), dicts or :class:`~robustlab.attacks.AttackSpec`.
        epsilons: budgets in pixel units, e.g. ``"0, 0.1, 0.3"`` or ``[0, 8/255]``.
        norm: ``"linf"`` or ``"l2"`` (one threat model for the whole evaluation).
        n: evaluate the first ``n`` test examples (None: all).
        seed: seeds the attacks' random starts.
        batch_size: examples per attack batch (None: sized from available memory).
        bounds: input range (default: the dataset's, else ``(0, 1)``): numbers, or per-feature
            arrays.
        n_show: number of examples kept for the report's grid.
        jit_compile: XLA on/off; None chooses per device.
        progress: show a tqdm progress bar (None: unless ``ROBUSTLAB_PROGRESS=0``).
        parameters: free-form run parameters recorded in the result.
        reuse: skip examples already fooled at a smaller ε (False: attack all at every ε).
        cascade: attack only the examples the earlier attacks left standing (None: when a
            suite such as AutoAttack is among the attacks).
        checks: run the sanity checks (gradient masking, convergence, ...).
        n_check: examples the attacking checks use at most.
        constraints: the per-feature threat model (:class:`~robustlab.types.Constraints`;
            default: the dataset's): ε in units of each feature's scale, immutable features
            left bit-identical, integer and one-hot features kept valid; recorded in the
            result and re-checked on every attack's output.
        callback: called as ``callback(done, total)`` after each (attack, ε), e.g. to
            drive a progress widget.
        strategy: spread the attacks' and predictions' batches over the replicas of a
            ``tf.distribute`` strategy (a strategy, or ``"auto"``, ``"mirrored"``,
            ``"multiworker"``: :func:`robustlab.distribute.make_strategy`). Every example
            gets exactly the result one device gives it (its own random starts, its batch);
            with ``MultiWorkerMirroredStrategy`` every worker runs this same call and gets
            the whole result, and only the chief should write it (the report writers
            do so). None: the strategy of the current
            :func:`robustlab.distribute.across` block, else the one
            :func:`robustlab.distribute.use_strategy` set, else one device.

    Returns:
        :class:`EvaluationResult`.

    Example:
        >>> result = evaluate(model, load("digits"), "fgsm, pgd", "0, 0.1, 0.3")
        >>> result.worst_case.accuracy_at(0.3) <= result.clean_accuracy
        True
    """
    scope = distribute.across(strategy) if strategy is not None else \
        contextlib.nullcontext(distribute.current())
    with scope as replicas:
        _check_same_model(replicas, model)
        result = _evaluate(model, data, attacks, epsilons, norm=norm, n=n, seed=seed,
                           batch_size=batch_size, bounds=bounds, n_show=n_show,
                           jit_compile=jit_compile, progress=progress, parameters=parameters,
                           reuse=reuse, cascade=cascade, checks=checks, n_check=n_check,
                           callback=callback, constraints=constraints)
    if replicas.strategy is None:
        return result
    return dataclasses.replace(result, device={**result.device, **replicas.describe()})


def _check_same_model(replicas: distribute.Replicas, model: Any) -> None:
    """Refuse to evaluate when the workers hold different weights (a model trained on each
    worker apart, nondeterministically): each worker's batches would be judged by another
    model. One all-gather of a digest of the weights; nothing without several workers."""
    if replicas.placement.workers == 1:
        return
    digest = int(weights_sha256(model)[:15], 16)
    seen = set(distribute.worker_values(replicas.strategy, digest))
    if len(seen) > 1:
        raise ValidationError(f"expected every worker to hold the same model, but their "
                              f"weights differ ({len(seen)} different digests): load one "
                              f"saved model on every worker, or train it under the strategy")


def _evaluate(model: Any, data: Dataset | tuple[Any, Any], attacks: Any, epsilons: Any, *,
              norm: Any, n: int | None, seed: int, batch_size: int | None,
              bounds: tuple[float, float] | None, n_show: int, jit_compile: bool | None,
              progress: bool | None, parameters: dict[str, Any] | None, reuse: bool,
              cascade: bool | None, checks: bool, n_check: int,
              callback: Callable[[int, int], None] | None,
              constraints: Constraints | None) -> EvaluationResult:
    """:func:`evaluate` on the current replicas."""
    start_time = time.perf_counter()
    seed = check_seed(seed)
    eps_list = parse_epsilons(epsilons)
    norm_enum = parse_norm(norm)
    specs = parse_attacks(attacks)
    n = check_optional_int("n", n, low=1)
    n_check = check_int("n_check", n_check, low=1)
    if isinstance(data, Dataset):
        x, y = data.x_test, data.y_test
        given = data.constraints if constraints is None else constraints
        base = ThreatModel.parse(0.0, norm_enum, bounds if bounds is not None else
                                 (None if given is not None else data.bounds), given)
        dataset_info = data.describe()
        class_names = list(data.class_names)
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValidationError("expected data to be a Dataset or an (x, y) pair") from None
        base = ThreatModel.parse(0.0, norm_enum, bounds, constraints)
        dataset_info = {"name": "arrays"}
        class_names = None
    num_classes = num_outputs(model)
    specs, left_out = fitting(specs, num_classes)
    if left_out:
        log.warning("a %d-class model: %s left out of the suite (too few classes)",
                    num_classes, ", ".join(left_out))
    if cascade is None:
        cascade = any(spec.suite for spec in specs)
    x, y = validate_arrays(x, y, num_classes=num_classes, bounds=base.bounds, name="x",
                           label_name="y")
    base = base.fit(x.shape[1:])
    if base.constraints is not None:
        base.constraints.check_inputs(x)
    check_input_shape(model, x)
    if n is not None:
        x, y = x[:n], y[:n]
    too_big = [e for e in eps_list if e > base.box_size(x.shape[1:])]
    if too_big:  # once for the whole evaluation; each attack then uses the capped budget
        warnings.warn(f"epsilons {too_big} ({norm_enum.value}) exceed the input box "
                      f"{base.bounds} itself; attacks there use epsilon "
                      f"{base.box_size(x.shape[1:]):g}, which already allows every input in "
                      f"the box", RobustlabWarning, stacklevel=2)
    batch_size = resolve_batch_size(batch_size, model, x.shape[1:])
    jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
    log.info("attack batch size %d", batch_size)
    # the bounds the evaluation used, whatever the dataset said (the checks and the report
    # read them from here)
    dataset_info = {**dataset_info, "n_evaluated": len(x), "bounds": list(base.bounds)}
    if class_names is not None:
        dataset_info["class_names"] = class_names

    clean_logits = batched_logits(model, x, batch_size)
    clean_pred = clean_logits.argmax(axis=1)
    clean_correct = clean_pred == y
    n_total = len(x)
    n_clean = int(clean_correct.sum())
    log.info("clean accuracy %.4f on %d examples", n_clean / n_total, n_total)

    robust: dict[AttackSpec, dict[float, np.ndarray]] = {spec: {} for spec in specs}
    stats: dict[AttackSpec, dict[float, dict[str, Any]]] = {spec: {} for spec in specs}
    if progress is None:
        progress = os.environ.get("ROBUSTLAB_PROGRESS", "1") != "0"
    bar = tqdm(total=len(specs) * len(eps_list), desc="attacks", disable=not progress,
               leave=False)
    shown: tuple[float, np.ndarray, np.ndarray] | None = None  # (eps, rows, x_adv[rows])
    shifts: tuple[FeatureShift, ...] = ()
    names = _feature_names(x.shape[1:], base)
    standing = {eps: clean_correct.copy() for eps in eps_list}  # survived every attack so far
    done = 0
    for spec in specs:
        x_adv, pred = x.copy(), clean_pred.copy()
        linf, l2 = np.zeros(n_total), np.zeros(n_total)  # norms of x_adv - x, per example
        alive = clean_correct.copy()  # not yet fooled at any smaller epsilon
        for eps in eps_list:  # ascending (parse_epsilons sorts)
            bar.set_postfix_str(f"{spec.label} eps={eps:g}")
            t0 = time.perf_counter()
            todo = alive if reuse else np.ones(n_total, bool)
            rows = np.flatnonzero(todo & standing[eps] if cascade else todo)
            if eps > 0 and len(rows):
                threat = base.with_epsilon(eps)
                found = spec.run(model, x[rows], y[rows], threat=threat, seed=seed,
                                 batch_size=batch_size, jit=jit, ids=rows)
                linf[rows], l2[rows] = _check_budget(found, x[rows], threat, spec.label)
                x_adv[rows] = found
                pred[rows] = batched_logits(model, found, batch_size).argmax(axis=1)
            alive = clean_correct & (pred == y)
            if cascade:
                alive &= standing[eps]
            standing[eps] = standing[eps] & alive
            robust[spec][eps] = alive
            stats[spec][eps] = dict(mean_linf=float(linf.mean()), max_linf=float(linf.max()),
                                    mean_l2=float(l2.mean()), max_l2=float(l2.max()),
                                    seconds=time.perf_counter() - t0,
                                    n_attacked=int(len(rows)) if eps > 0 else 0)
            if spec is specs[-1] and shown is None and eps > 0:
                idx = _pick_examples(clean_correct, alive, n_show, last=eps == eps_list[-1])
                if idx is not None:
                    shown = (eps, idx, x_adv[idx].copy())
                    # broken by this attack (under cascade, not those an earlier one took)
                    broken = np.flatnonzero(clean_correct & (pred != y))
                    shifts = _feature_shifts(x[broken], x_adv[broken], base, names)
            bar.update(1)
            done += 1
            if callback is not None:
                callback(done, len(specs) * len(eps_list))
    bar.close()

    def make_point(eps: float, correct: np.ndarray, extra: dict[str, Any] | None) -> CurvePoint:
        k = int(correct.sum())
        lo, hi = wilson_interval(k, n_total)
        return CurvePoint(epsilon=eps, accuracy=k / n_total, ci_low=lo, ci_high=hi,
                          n_correct=k, **(extra or {}))

    curves = tuple(
        AttackCurve(spec.label,
                    tuple(make_point(e, robust[spec][e], stats[spec][e]) for e in eps_list),
                    spec=spec)
        for spec in specs)
    worst_points = []
    mask = np.zeros((n_total, len(eps_list)), bool)
    for j, eps in enumerate(eps_list):
        correct = clean_correct.copy()
        for spec in specs:
            correct &= robust[spec][eps]
        mask[:, j] = correct
        worst_points.append(make_point(eps, correct, None))
    worst = AttackCurve("worst case over attacks", tuple(worst_points),
                        attacks=tuple(s.label for s in specs))

    attack_masks = {spec.label: np.stack([robust[spec][e] for e in eps_list], axis=1)
                    for spec in specs}
    first = _first_breaks(clean_correct, [attack_masks[s.label] for s in specs])
    breaks = {s.label: tuple(int(c) for c in (first == i).sum(axis=0))
              for i, s in enumerate(specs)}
    examples, images = _examples(model, x, y, clean_logits, shown, specs[-1].label,
                                 batch_size)
    result = EvaluationResult(
        dataset=dataset_info, model=_model_info(model), norm=norm_enum, bounds=base.bounds,
        epsilons=eps_list, n_examples=n_total, clean_accuracy=n_clean / n_total,
        clean_ci=wilson_interval(n_clean, n_total), curves=curves, worst_case=worst,
        seed=seed, versions=package_versions(), device=dict(device_info()),
        seconds=time.perf_counter() - start_time, parameters=dict(parameters or {}),
        examples=examples, example_images=images, robust_mask=mask,
        attack_masks=attack_masks, cascade=bool(cascade), determinism=determinism_info(),
        per_class=_per_class(y, clean_correct, mask, class_names, num_classes),
        constraints=base.constraints, feature_shifts=shifts, breaks=breaks,
        first_break=first,
        shift_epsilon=shown[0] if shifts and shown is not None else None)
    if checks:
        verdicts, convergence = run_checks(model, x, y, result, n_check=n_check, seed=seed,
                                           batch_size=batch_size, jit_compile=jit,
                                           clean_correct=clean_correct)
        for check in verdicts:
            log.log(logging.WARNING if check.status in (Status.FAIL, Status.WARN)
                    else logging.INFO, "check %s: %s - %s", check.name, check.status.value,
                    check.evidence)
        result = dataclasses.replace(result, checks=verdicts, convergence=convergence,
                                     seconds=time.perf_counter() - start_time)
    log.info("evaluation done in %.1f s", result.seconds)
    return result


def _feature_names(shape: tuple[int, ...], threat: ThreatModel) -> tuple[str, ...] | None:
    """Feature names for the per-feature summary, or None for data shown as images."""
    c = threat.constraints
    if is_image_shape(shape, () if c is None else c.names):
        return None
    return feature_labels(shape, c)


def _feature_shifts(x: np.ndarray, x_adv: np.ndarray, threat: ThreatModel,
                    names: tuple[str, ...] | None) -> tuple[FeatureShift, ...]:
    """Per feature, over the broken examples ``x`` / ``x_adv`` ``(B, ...)``: how often and
    how far the attack moved it (input units, and units of the feature's scale); empty
    for images or when nothing was broken."""
    if names is None or not len(x):
        return ()
    delta = np.abs(x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    scale = np.ones(delta.shape[1]) if threat.constraints is None else \
        threat.constraints.scale.ravel().astype(np.float64)
    moved = delta > 0
    out = []
    for j, name in enumerate(names):
        hit = moved[:, j]
        k = int(hit.sum())
        out.append(FeatureShift(
            index=j, name=name, moved=k / len(x),
            mean_change=float(delta[hit, j].mean()) if k else 0.0,
            max_change=float(delta[:, j].max()),
            mean_scaled=float(delta[hit, j].mean() / scale[j]) if k else 0.0))
    return tuple(out)


def _per_class(y: np.ndarray, clean_correct: np.ndarray, mask: np.ndarray,
               class_names: list[str] | None, num_classes: int) -> tuple[ClassAccuracy, ...]:
    rows = []
    for k in range(num_classes):
        sel = y == k
        n = int(sel.sum())
        if n == 0:
            continue
        robust = mask[sel].sum(axis=0)
        rows.append(ClassAccuracy(
            label=k, n=n,
            name=str(class_names[k]) if class_names and k < len(class_names) else str(k),
            clean=float(clean_correct[sel].mean()),
            clean_ci=wilson_interval(int(clean_correct[sel].sum()), n),
            robust=tuple(float(r / n) for r in robust),
            robust_ci=tuple(wilson_interval(int(r), n) for r in robust)))
    return tuple(rows)


def _pick_examples(clean_correct: np.ndarray, robust: np.ndarray, n_show: int, *,
                   last: bool) -> np.ndarray | None:
    """Rows for the report grid at this ε: the examples the attack broke first, then others;
    None while fewer than ``n_show`` are broken and a larger ε is still to come."""
    if n_show <= 0:
        return None
    broken = np.flatnonzero(clean_correct & ~robust)
    if len(broken) < n_show and not last:
        return None
    rest = np.flatnonzero(~(clean_correct & ~robust))
    return np.concatenate([broken, rest])[:n_show]


def _first_breaks(clean_correct: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """``(n_examples, n_eps)`` int: the index of the first attack (in order) that broke each
    correctly classified example at each ε, -1 where none did (or the example was wrong
    clean). ``masks`` are the attacks' robust masks, ``(n_examples, n_eps)`` each."""
    first = np.full(masks[0].shape, -1, np.int64)
    for i, robust in enumerate(masks):
        first[(first < 0) & ~robust & clean_correct[:, None]] = i
    return first


def _examples(model: Any, x: np.ndarray, y: np.ndarray, clean_logits: np.ndarray,
              shown: tuple[float, np.ndarray, np.ndarray] | None, attack: str,
              batch_size: int) -> tuple[tuple[Example, ...], dict[str, np.ndarray]]:
    """The grid's :class:`Example` records and images: at the smallest ε > 0 where the last
    attack broke at least ``n_show`` correctly classified examples (else the largest ε)."""
    if shown is None:
        return (), {}
    eps, idx, x_adv = shown
    adv_prob = softmax(batched_logits(model, x_adv, batch_size))
    clean_prob = softmax(clean_logits[idx])
    examples = tuple(Example(
        index=int(i), label=int(y[i]), clean_pred=int(clean_prob[j].argmax()),
        clean_confidence=float(clean_prob[j].max()), adv_pred=int(adv_prob[j].argmax()),
        adv_confidence=float(adv_prob[j].max()), epsilon=float(eps), attack=attack)
        for j, i in enumerate(idx))
    return examples, {"clean": x[idx], "adversarial": x_adv}


def _fingerprint(result: EvaluationResult) -> str:
    """The constraints' fingerprint (short), or ``none``, for comparing threat models."""
    return "none" if result.constraints is None else result.constraints.fingerprint()[:12]


def compare(results: dict[str, EvaluationResult], *,
            training_seconds: dict[str, float | None] | None = None,
            n_show: int = 8, privacy: dict[str, PrivacyResult | None] | None = None
            ) -> Comparison:
    """Put evaluations of several models side by side (the first is the baseline).

    ``privacy`` maps model names to their :class:`~robustlab.results.PrivacyResult` (DP
    training record and membership audit): the comparison then shows each model's ε, audit
    AUC and TPR at 0.1% FPR next to its accuracy and robustness.

    Raises :class:`ValidationError` unless all were made on the same examples, norm, ε list,
    attacks and threat model (bounds and feature constraints: ε in the same units, the same
    features fixed), otherwise their numbers are not comparable.
    """
    if len(results) < 2:
        raise ValidationError(f"expected at least two results to compare, got {len(results)}")
    names, items = tuple(results), tuple(results.values())
    ref = items[0]
    for name, res in zip(names[1:], items[1:], strict=True):
        for what, a, b in (("epsilons", ref.epsilons, res.epsilons), ("norm", ref.norm, res.norm),
                           ("n_examples", ref.n_examples, res.n_examples),
                           ("dataset", ref.dataset.get("name"), res.dataset.get("name")),
                           ("attacks", [c.label for c in ref.curves],
                            [c.label for c in res.curves]),
                           ("bounds", ref.bounds, res.bounds),
                           ("constraints", _fingerprint(ref), _fingerprint(res))):
            if a != b:
                raise ValidationError(f"expected every result to share {what} with "
                                      f"{names[0]!r} ({a}), got {b} for {name!r}")
    positive = [j for j, e in enumerate(ref.epsilons) if e > 0] or [len(ref.epsilons) - 1]
    gain = [max(r.worst_case.points[j].accuracy for r in items[1:])
            - ref.worst_case.points[j].accuracy for j in positive]
    focus = positive[int(np.argmax(gain))]
    gained: dict[str, tuple[int, ...]] = {}
    if ref.robust_mask is not None:
        for name, res in zip(names[1:], items[1:], strict=True):
            if res.robust_mask is not None:
                idx = np.flatnonzero(~ref.robust_mask[:, focus] & res.robust_mask[:, focus])
                gained[name] = tuple(int(i) for i in idx[:n_show])
    seconds = tuple((training_seconds or {}).get(n) for n in names)
    private: tuple[PrivacyResult | None, ...] = ()
    if privacy:
        unknown = sorted(set(privacy) - set(names))
        if unknown:
            raise ValidationError(f"expected privacy to name compared models {list(names)}, "
                                  f"got {unknown}")
        for name, value in privacy.items():
            if value is not None and not isinstance(value, PrivacyResult):
                raise InputTypeError(f"expected privacy[{name!r}] to be a PrivacyResult or "
                                     f"None, got {type(value).__name__}")
        private = tuple(privacy.get(n) for n in names)
    return Comparison(names=names, results=items, training_seconds=seconds,
                      focus_epsilon=float(ref.epsilons[focus]), gained=gained,
                      privacy=private)
