"""Cross-validated robustness: how much a robustness number depends on the split.

:func:`cross_validate` pools a dataset's train and test splits, cuts them into ``k``
stratified folds (seeded), trains a fresh model on every ``k - 1`` folds (plainly or
adversarially) and evaluates it on the remaining one. The result
(:class:`~robustlab.results.CrossValidationResult`) holds each fold's clean and worst-case
robust accuracy with its Wilson interval, and their mean ± standard deviation across folds;
a spread across folds larger than the Wilson half-width means the split moves the number
more than sampling the test examples does.

Stratified k-fold cross-validation: Kohavi 1995, "A study of cross-validation and bootstrap
for accuracy estimation and model selection", https://dl.acm.org/doi/10.5555/1643031.1643047.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from robustlab._env import seeded_globals
from robustlab._validate import (
    check_int,
    check_optional_int,
    check_seed,
    parse_enum,
    parse_epsilons,
)
from robustlab.attacks import parse_attacks
from robustlab.data import Dataset, require_dataset
from robustlab.errors import InputTypeError, ValidationError
from robustlab.evaluate import evaluate
from robustlab.inference import num_outputs
from robustlab.models import build_model
from robustlab.results import CrossValidationResult, FoldResult
from robustlab.training import Method, TrainingConfig, train_adversarial
from robustlab.training import train as train_plain  # ``train`` is a parameter here
from robustlab.types import parse_norm

__all__ = ["cross_validate", "fold_indices"]

log = logging.getLogger(__name__)

Builder = Callable[[tuple[int, ...], int], Any]

# train_adversarial options that cross_validate sets per fold (or that would clash between
# folds): refused in a ``train`` dict
_SET_PER_FOLD = frozenset({"model", "data", "seed", "save_to", "checkpoint_dir"})
# evaluate options that cross_validate sets itself
_EVALUATE_OWN = frozenset({"model", "data", "attacks", "epsilons", "norm", "seed", "checks",
                           "progress", "n"})


def fold_indices(y: np.ndarray, k: int, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(train_indices, test_indices)`` of ``k`` stratified folds of labels ``y``
    (``StratifiedKFold(k, shuffle=True, random_state=seed)``): every example is in exactly
    one test fold, and each fold holds each class in about its overall proportion."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.asarray(tr, np.int64), np.asarray(te, np.int64))
            for tr, te in splitter.split(np.zeros(len(y)), y)]


def _fold_seed(seed: int, fold: int) -> int:
    """A seed for fold ``fold``'s model and training, derived from ``(seed, fold)``."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def _check_k(k: Any, y: np.ndarray, class_names: tuple[str, ...]) -> int:
    """``k`` as an int between 2 and the size of the smallest class present in ``y``."""
    k = check_int("k", k, low=2)
    counts = np.bincount(y, minlength=len(class_names))
    present = np.flatnonzero(counts)
    smallest = int(present[np.argmin(counts[present])])
    if k > counts[smallest]:
        raise ValidationError(f"expected k <= {int(counts[smallest])} (every fold needs an "
                              f"example of each class, and class {class_names[smallest]!r} "
                              f"has {int(counts[smallest])} examples), got k={k}")
    return k


def _parse_train(train_opt: Any, epsilons: tuple[float, ...]) -> tuple[Method | None,
                                                                        dict[str, Any]]:
    """``train`` as ``(method, train_adversarial options)``; method None: plain Keras fit
    (:func:`~robustlab.training.train`)."""
    if isinstance(train_opt, Mapping):
        options = {str(key): value for key, value in train_opt.items()}
        accepted = set(inspect.signature(train_adversarial).parameters) - _SET_PER_FOLD
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValidationError(f"expected train's keys to be options of train_adversarial "
                                  f"({', '.join(sorted(accepted))}), got {unknown}")
        method = parse_enum("train['method']", options.pop("method", Method.PGD), Method)
    elif isinstance(train_opt, (str, Method)):
        method, options = parse_enum("train", train_opt, Method), {}
        if method is Method.STANDARD:
            return None, {}
    else:
        raise InputTypeError(f"expected train to be a training method name ('standard', "
                             f"'pgd', 'trades', 'fgsm_rs') or a dict of train_adversarial "
                             f"options, got {type(train_opt).__name__} {train_opt!r}")
    if method is not Method.STANDARD and "epsilon" not in options:
        options["epsilon"] = max(epsilons)  # train at the largest budget evaluated
    # check the method's settings now, not after the first fold's model is built
    fields = {f.name for f in dataclasses.fields(TrainingConfig)} - {"method", "bounds", "seed"}
    TrainingConfig(method=method, **{key: options[key] for key in fields & set(options)})
    return method, options


def _stats(data: Dataset) -> dict[str, Any]:
    """``mean``/``std`` for :func:`~robustlab.models.build_model` from ``data``'s training
    split when it is not images (tabular models standardise; images take pixels as they
    are, and the CNN builders refuse statistics)."""
    if data.is_image or len(data.input_shape) == 3:
        return {}
    mean, std = data.feature_stats()
    return {"mean": mean, "std": std}


def cross_validate(build: Builder | None, data: Dataset, k: int = 5, *,
                   attacks: Any = ("fgsm", "pgd"), epsilons: Any = (0.0, 0.05, 0.1),
                   norm: Any = "linf", train: str | Mapping[str, Any] = "standard",
                   epochs: int | None = None, batch_size: int | None = None, seed: int = 0,
                   n: int | None = None, checks: bool = False, progress: bool | None = None,
                   **evaluate_kwargs: Any) -> CrossValidationResult:
    """Cross-validated clean and robust accuracy: ``k`` models, each trained on ``k - 1``
    stratified folds of ``data``'s pooled train and test splits and evaluated on the fold
    left out.

    Args:
        build: ``build(input_shape, num_classes) -> Keras model`` returning logits (compiled
            or not; it is built under global seeds derived from ``(seed, fold)``), or None for
            :func:`~robustlab.models.build_model` (tabular data standardised with each fold's
            own training statistics, :meth:`Dataset.feature_stats
            <robustlab.data.Dataset.feature_stats>`).
        data: a :class:`~robustlab.data.Dataset`; its train and test splits are pooled (in
            that order) and re-split. Bounds, constraints and class names carry over: the
            threat model (ε's unit, the per-feature scale, which features are fixed) is the
            dataset's and the same for every fold, so the folds' numbers are comparable;
            only the model (and its standardisation) is fitted per fold. For breast_cancer
            and ``csv:`` tables that scale was fitted on the original training split, whose
            rows are test rows of some folds: it defines the attacker's unit, it does not
            inform the model.
        k: number of folds, from 2 to the size of the smallest class.
        attacks, epsilons, norm: as for :func:`~robustlab.evaluate.evaluate` (each fold is
            evaluated with the same attacks at the same ε, in pixel / feature-scale units).
        train: ``"standard"`` (plain Keras fit, :func:`~robustlab.training.train`), an
            adversarial method (``"pgd"``, ``"trades"``, ``"fgsm_rs"``:
            :func:`~robustlab.training.train_adversarial` at ε = the largest of
            ``epsilons``), or a dict of :func:`~robustlab.training.train_adversarial` options
            (``method`` defaults to ``"pgd"``, ``epsilon`` to the largest of ``epsilons``);
            ``seed``, ``save_to`` and ``checkpoint_dir`` are set per fold and refused.
        epochs, batch_size: training epochs and batch size (None: the training function's
            default; plain training picks its epochs from the training split's size).
        seed: seeds the folds, each fold's model, training and attacks.
        n: evaluate at most ``n`` examples of each test fold (a seeded random subset; None:
            all, so every pooled example is evaluated exactly once).
        checks: run the evaluation's sanity checks on every fold (``trust`` per fold).
        progress: a tqdm bar over the folds (None: unless ``ROBUSTLAB_PROGRESS=0``).
        **evaluate_kwargs: more :func:`~robustlab.evaluate.evaluate` options (``cascade``,
            ``n_check``, ``reuse``, ``jit_compile``, ...); ``batch_size`` above is
            training's, the attacks size their batches from memory.

    Returns:
        :class:`~robustlab.results.CrossValidationResult`.

    Raises:
        ValidationError: ``k`` outside ``[2, smallest class]``, bad attacks, ε, norm,
            training method or options, or a model with the wrong number of outputs.
        InputTypeError: ``build`` neither callable nor None, ``data`` not a Dataset.

    Example:
        >>> cv = cross_validate(None, load("digits"), k=5, attacks="fgsm, pgd", epochs=5)
        >>> cv.robust_mean(0.1), cv.robust_sd(0.1), cv.spread_exceeds_sampling(0.1)
    """
    start_time = time.perf_counter()
    if build is not None and not callable(build):
        raise InputTypeError(f"expected build to be a callable (input_shape, num_classes) -> "
                             f"Keras model, or None (robustlab's build_model), got "
                             f"{type(build).__name__}")
    require_dataset(data)
    seed = check_seed(seed)
    eps_list = parse_epsilons(epsilons)
    norm_enum = parse_norm(norm)
    specs = parse_attacks(attacks)
    n = check_optional_int("n", n, low=1)
    epochs = check_optional_int("epochs", epochs, low=1)
    batch_size = check_optional_int("batch_size", batch_size, low=1)
    method, options = _parse_train(train, eps_list)
    clash = sorted(set(evaluate_kwargs) & _EVALUATE_OWN)
    unknown = sorted(set(evaluate_kwargs) - set(inspect.signature(evaluate).parameters))
    if clash or unknown:
        raise ValidationError(f"expected evaluate_kwargs to be options of evaluate other than "
                              f"{sorted(_EVALUATE_OWN)}, got {clash + unknown}")
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    k = _check_k(k, y, data.class_names)
    if progress is None:
        progress = os.environ.get("ROBUSTLAB_PROGRESS", "1") != "0"
    fit: dict[str, Any] = {key: value for key, value in
                           (("epochs", epochs), ("batch_size", batch_size)) if value is not None}
    training = {"function": "train" if method is None else "train_adversarial",
                "method": "standard" if method is None else method.value,
                "epochs": epochs, "batch_size": batch_size, **options}
    log.info("cross-validating %s: %d folds of %d examples, %s training", data.name, k,
             len(y), "standard" if method is None else method.value)

    folds = []
    splits = fold_indices(y, k, seed=seed)
    for fold, (train_idx, test_idx) in enumerate(tqdm(splits, desc="folds",
                                                      disable=not progress, leave=False)):
        t0 = time.perf_counter()
        fold_seed = _fold_seed(seed, fold)
        # a seeded order of the test fold, so that a cap ``n`` keeps a random subset
        test_idx = np.random.default_rng([seed, fold]).permutation(test_idx)[:n]
        fold_data = dataclasses.replace(data, x_train=x[train_idx], y_train=y[train_idx],
                                        x_test=x[test_idx], y_test=y[test_idx])
        with seeded_globals(fold_seed, tensorflow=True):
            model = (build_model(fold_data.input_shape, fold_data.num_classes,
                                 seed=fold_seed, **_stats(fold_data)) if build is None
                     else build(fold_data.input_shape, fold_data.num_classes))
        outputs = num_outputs(model)
        if outputs != data.num_classes:
            raise ValidationError(f"expected build to return a model with "
                                  f"{data.num_classes} outputs, got {outputs}")
        if method is None:
            train_plain(model, fold_data, seed=fold_seed, **fit)
        else:
            model, _ = train_adversarial(model, fold_data, method=method, seed=fold_seed,
                                         **{**options, **fit})
        result = evaluate(model, fold_data, specs, eps_list, norm=norm_enum, seed=seed,
                          checks=checks, progress=False, **evaluate_kwargs)
        folds.append(FoldResult(
            fold=fold, n_train=len(train_idx), n_test=len(test_idx),
            clean_accuracy=result.clean_accuracy, clean_ci=result.clean_ci,
            worst_case=result.worst_case.points, seconds=time.perf_counter() - t0,
            trust=result.trust, test_indices=tuple(int(i) for i in test_idx)))
        log.info("fold %d/%d: clean %.4f, worst case at eps %g %.4f (%d train, %d test, "
                 "%.1f s)", fold + 1, k, result.clean_accuracy, eps_list[-1],
                 result.worst_case.points[-1].accuracy, len(train_idx), len(test_idx),
                 folds[-1].seconds)
    return CrossValidationResult(
        k=k, seed=seed, method="standard" if method is None else method.value,
        norm=norm_enum, epsilons=eps_list, attacks=tuple(s.label for s in specs),
        dataset=data.describe(), folds=tuple(folds), seconds=time.perf_counter() - start_time,
        training=training)
