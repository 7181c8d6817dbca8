"""Cross-validated robustness (robustlab.crossval, CrossValidationResult)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import without_seconds

from robustlab.crossval import cross_validate, fold_indices
from robustlab.errors import InputTypeError, ValidationError
from robustlab.results import CrossValidationResult, CurvePoint, FoldResult, Status
from robustlab.types import Norm

EPS = (0.0, 0.1)


@pytest.fixture(scope="module")
def small_digits(digits):
    """300 digits examples (200 train + 100 test) pooled by cross_validate."""
    return digits.subset(n_train=200, n_test=100, seed=0)


@pytest.fixture(scope="module")
def cv(small_digits):
    return cross_validate(None, small_digits, k=3, attacks="fgsm", epsilons=EPS, epochs=1,
                          seed=0)


def _pooled_labels(data):
    return np.concatenate([data.y_train, data.y_test])


def test_three_folds_partition_the_pooled_data(cv, small_digits):
    pooled = len(_pooled_labels(small_digits))
    assert cv.k == 3 and len(cv.folds) == 3
    assert [f.fold for f in cv.folds] == [0, 1, 2]
    tested = np.sort(np.concatenate([f.test_indices for f in cv.folds]))
    np.testing.assert_array_equal(tested, np.arange(pooled))  # each example tested once
    for fold in cv.folds:
        assert fold.n_train + fold.n_test == pooled
        assert fold.n_test == len(fold.test_indices)
        assert fold.trust is Status.SKIP  # checks off by default
        assert [p.epsilon for p in fold.worst_case] == list(EPS)
    assert cv.method == "standard" and cv.norm is Norm.LINF and cv.attacks == ("FGSM",)
    assert cv.dataset["n_train"] + cv.dataset["n_test"] == pooled


def test_folds_are_stratified(cv, small_digits):
    y = _pooled_labels(small_digits)
    expected = np.bincount(y, minlength=10) / cv.k
    for fold in cv.folds:
        counts = np.bincount(y[list(fold.test_indices)], minlength=10)
        assert np.all(np.abs(counts - expected) <= 1), (counts, expected)


def test_fold_indices_depend_on_the_seed(small_digits):
    y = _pooled_labels(small_digits)
    a, again, b = (fold_indices(y, 3, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, again, strict=True))
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, b, strict=True))


def test_robust_at_most_clean_per_fold(cv):
    for fold in cv.folds:
        accuracies = [p.accuracy for p in fold.worst_case]
        assert accuracies[0] == pytest.approx(fold.clean_accuracy)  # ε = 0 is clean
        assert all(a <= fold.clean_accuracy + 1e-12 for a in accuracies)
        assert all(later <= earlier + 1e-12
                   for earlier, later in zip(accuracies, accuracies[1:], strict=False))
        assert fold.clean_ci[0] <= fold.clean_accuracy <= fold.clean_ci[1]


def test_mean_and_sd_match_numpy(cv):
    clean = [f.clean_accuracy for f in cv.folds]
    assert cv.clean_mean == pytest.approx(np.mean(clean))
    assert cv.clean_sd == pytest.approx(np.std(clean, ddof=1))
    for eps in EPS:
        robust = [next(p.accuracy for p in f.worst_case if p.epsilon == eps) for f in cv.folds]
        assert cv.robust_at(eps) == tuple(robust)
        assert cv.robust_mean(eps) == pytest.approx(np.mean(robust))
        assert cv.robust_sd(eps) == pytest.approx(np.std(robust, ddof=1))
        half = [(p.ci_high - p.ci_low) / 2 for f in cv.folds for p in f.worst_case
                if p.epsilon == eps]
        assert cv.sampling_halfwidth(eps) == pytest.approx(np.mean(half))
    rows = cv.summary()
    assert [r["epsilon"] for r in rows] == list(EPS)
    assert set(rows[0]) == {"epsilon", "mean", "sd", "min", "max", "halfwidth",
                            "spread_exceeds_sampling"}
    assert rows[1]["min"] == min(cv.robust_at(0.1)) and rows[1]["max"] == max(cv.robust_at(0.1))
    with pytest.raises(ValidationError, match="epsilon"):
        cv.robust_at(0.2)


def test_same_seed_same_result(cv, small_digits):
    again = cross_validate(None, small_digits, k=3, attacks="fgsm", epsilons=EPS, epochs=1,
                           seed=0)
    assert without_seconds(again.to_dict()) == without_seconds(cv.to_dict())
    assert [f.test_indices for f in again.folds] == [f.test_indices for f in cv.folds]


def test_to_dict_is_json_and_repr_is_short(cv):
    out = json.loads(json.dumps(cv.to_dict(), allow_nan=False))
    assert out["k"] == 3 and len(out["folds"]) == 3 and len(out["summary"]) == len(EPS)
    assert out["folds"][0]["trust"] == "skip" and "test_indices" not in out["folds"][0]
    assert out["training"]["function"] == "train" and out["training"]["epochs"] == 1
    text = repr(cv)
    assert text.startswith("CrossValidationResult(digits, 3 folds, standard training")
    assert len(text.splitlines()) == 2 + len(EPS)
    html = cv._repr_html_()
    assert html is None or isinstance(html, str)


def _point(eps: float, acc: float, half: float) -> CurvePoint:
    return CurvePoint(epsilon=eps, accuracy=acc, ci_low=acc - half, ci_high=acc + half,
                      n_correct=int(acc * 100))


def _hand_built(accuracies: list[float], half: float) -> CrossValidationResult:
    folds = tuple(FoldResult(fold=i, n_train=200, n_test=100, clean_accuracy=0.9,
                             clean_ci=(0.85, 0.95),
                             worst_case=(_point(0.0, 0.9, 0.05), _point(0.1, acc, half)),
                             seconds=1.0, trust=Status.PASS)
                  for i, acc in enumerate(accuracies))
    return CrossValidationResult(k=len(folds), seed=0, method="pgd", norm=Norm.LINF,
                                 epsilons=(0.0, 0.1), attacks=("PGD-40",),
                                 dataset={"name": "hand"}, folds=folds, seconds=3.0)


def test_spread_exceeds_sampling():
    wide = _hand_built([0.2, 0.5, 0.8], half=0.05)  # sd 0.3 > half-width 0.05
    assert wide.robust_sd(0.1) == pytest.approx(0.3)
    assert wide.spread_exceeds_sampling(0.1)
    assert wide.summary()[1]["spread_exceeds_sampling"] is True
    assert not wide.spread_exceeds_sampling(0.0)  # identical folds: sd 0
    narrow = _hand_built([0.49, 0.5, 0.51], half=0.05)  # sd 0.01 < 0.05
    assert narrow.sampling_halfwidth(0.1) == pytest.approx(0.05)
    assert not narrow.spread_exceeds_sampling(0.1)
    assert "(spread > sampling)" in repr(wide) and "(spread > sampling)" not in repr(narrow)
    json.dumps(wide.to_dict(), allow_nan=False)


def test_hand_built_result_is_checked():
    good = _hand_built([0.5, 0.6], half=0.05)
    with pytest.raises(ValidationError, match="k >= 2"):
        CrossValidationResult(k=1, seed=0, method="pgd", norm=Norm.LINF, epsilons=(0.0, 0.1),
                              attacks=(), dataset={}, folds=good.folds[:1], seconds=0.0)
    with pytest.raises(ValidationError, match="k=3 folds"):
        CrossValidationResult(k=3, seed=0, method="pgd", norm=Norm.LINF, epsilons=(0.0, 0.1),
                              attacks=(), dataset={}, folds=good.folds, seconds=0.0)
    with pytest.raises(ValidationError, match="epsilons"):
        CrossValidationResult(k=2, seed=0, method="pgd", norm=Norm.LINF, epsilons=(0.0, 0.2),
                              attacks=(), dataset={}, folds=good.folds, seconds=0.0)


@pytest.mark.parametrize("k, match", [(1, "k >= 2"), (0, "k >= 2"), ("two", "k"),
                                      (50, r"k <= \d+ .*got k=50")])
def test_bad_k_raises(small_digits, k, match):
    with pytest.raises(ValidationError, match=match):
        cross_validate(None, small_digits, k=k, attacks="fgsm", epsilons=EPS, epochs=1)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"build": "cnn"}, InputTypeError, "build"),
    ({"train": "madry"}, ValidationError, "train"),
    ({"train": 3}, InputTypeError, "train"),
    ({"train": {"method": "pgd", "save_to": "x.keras"}}, ValidationError, "save_to"),
    ({"train": {"method": "pgd", "seed": 1}}, ValidationError, "train's keys"),
    ({"epsilons": "0, -0.1"}, ValidationError, "epsilons"),
    ({"attacks": "nope"}, ValidationError, "nope"),
    ({"reuse_all": True}, ValidationError, "evaluate_kwargs"),
    ({"n": 0}, ValidationError, "n"),
    ({"train": "pgd", "epsilons": 0}, ValidationError, "epsilon > 0"),
    ({"train": {"method": "trades", "steps": 0}}, ValidationError, "steps"),
])
def test_bad_arguments_raise_before_training(small_digits, kwargs, error, match):
    args = {"build": None, "attacks": "fgsm", "epsilons": EPS, "epochs": 1, **kwargs}
    build = args.pop("build")
    with pytest.raises(error, match=match):
        cross_validate(build, small_digits, 3, **args)


def test_breast_cancer_adversarial_training_with_a_custom_builder():
    """Tabular data, PGD training (ε defaults to the largest evaluated), a builder of one's
    own (called once per fold) and a cap on the test examples per fold."""
    from robustlab.data import load
    from robustlab.models import build_mlp

    data = load("breast_cancer")
    calls = []

    def build(shape, classes):
        calls.append((shape, classes))
        mean, std = data.feature_stats()
        return build_mlp(shape, classes, hidden=(16,), mean=mean, std=std)

    cv = cross_validate(build, data, k=2, attacks="fgsm", epsilons=EPS,
                        train={"method": "pgd", "steps": 3}, epochs=1, batch_size=64, n=40)
    assert calls == [((30,), 2)] * 2
    assert cv.method == "pgd" and cv.training["epsilon"] == 0.1
    assert cv.training["function"] == "train_adversarial"
    assert [f.n_test for f in cv.folds] == [40, 40]
    assert not set(cv.folds[0].test_indices) & set(cv.folds[1].test_indices)
    for fold in cv.folds:
        assert fold.worst_case[-1].accuracy <= fold.clean_accuracy
    json.dumps(cv.to_dict(), allow_nan=False)


def test_wrong_number_of_outputs_is_refused(small_digits):
    from robustlab.models import build_mlp

    with pytest.raises(ValidationError, match="10 outputs"):
        cross_validate(lambda shape, _: build_mlp(shape, 3, hidden=(4,)), small_digits, 2,
                       attacks="fgsm", epsilons=EPS, epochs=1)


def test_exported_from_the_package():
    import robustlab as rl

    assert rl.cross_validate is cross_validate
    assert rl.CrossValidationResult is CrossValidationResult
