import json

import numpy as np
import pytest
from conftest import predictions

from robustlab.attacks import AttackSpec
from robustlab.errors import RobustlabError, ValidationError
from robustlab.evaluate import evaluate
from robustlab.stats import wilson_interval


def test_result_numbers_are_consistent(digits_result):
    assert digits_result.n_examples == 120 and digits_result.epsilons == (0.0, 0.1, 0.3)
    assert digits_result.clean_accuracy > 0.95
    fgsm_curve, pgd_curve = digits_result.curves
    assert [c.label for c in digits_result.curves] == ["FGSM", "PGD-40"]
    for curve in (*digits_result.curves, digits_result.worst_case):
        assert curve.points[0].accuracy == pytest.approx(digits_result.clean_accuracy)
        accs = [p.accuracy for p in curve.points]
        assert all(a <= digits_result.clean_accuracy for a in accs)
        for p in curve.points:
            assert p.ci_low <= p.accuracy <= p.ci_high
            assert p.n_correct == round(p.accuracy * 120)
    for eps in digits_result.epsilons:
        assert digits_result.worst_case.accuracy_at(eps) <= min(
            c.accuracy_at(eps) for c in digits_result.curves)
    assert pgd_curve.accuracy_at(0.3) < 0.05
    assert pgd_curve.points[1].max_linf <= 0.1 + 1e-6
    assert pgd_curve.points[2].mean_linf > 0.1


def test_result_serialises(digits_result):
    data = json.loads(json.dumps(digits_result.to_dict(), allow_nan=False))
    assert data["parameters"] == {"note": "test"}
    assert data["versions"]["tensorflow"].startswith("2.")
    assert data["device"]["type"] in ("CPU", "GPU")
    assert "example_images" not in data and len(data["examples"]) == 8
    assert digits_result.example_images["clean"].shape == (8, 8, 8, 1)


def test_worst_case_is_per_example(digits_model, digits):
    from robustlab.attacks import fgsm, pgd

    x, y = digits.x_test[:60], digits.y_test[:60]
    res = evaluate(digits_model, (x, y), [AttackSpec("fgsm"), AttackSpec("pgd", steps=5)],
                   [0.0, 0.12], seed=1, checks=False)

    def correct(xa):
        return predictions(digits_model, xa) == y

    both = correct(x) & correct(fgsm(digits_model, x, y, epsilon=0.12)) & correct(
        pgd(digits_model, x, y, epsilon=0.12, steps=5, seed=1))
    assert res.worst_case.points[1].n_correct == int(both.sum())


def test_budget_violations_are_caught(digits_model, digits, monkeypatch):
    def cheat(self, model, x, y, **kw):
        return np.clip(x + 0.5, 0, 1)

    monkeypatch.setattr(AttackSpec, "run", cheat)
    with pytest.raises(RobustlabError, match="outside the threat model"):
        evaluate(digits_model, digits, "pgd", [0.1], n=10)


def test_bad_arguments(digits_model, digits):
    with pytest.raises(ValidationError, match="epsilons"):
        evaluate(digits_model, digits, "pgd", "0.1, -1")
    with pytest.raises(ValidationError, match="expected n >= 1"):
        evaluate(digits_model, digits, "pgd", [0.1], n=0)
    with pytest.raises(ValidationError, match="data to be a Dataset"):
        evaluate(digits_model, 42, "pgd", [0.1])


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)


@pytest.mark.parametrize("attack", [AttackSpec("pgd", steps=10, restarts=2), "fgsm"])
def test_curve_reuse_is_never_weaker_than_independent_runs(digits_model, digits, attack):
    kwargs = dict(attacks=[attack], epsilons="0, 0.05, 0.1, 0.15, 0.3", n=200, seed=4)
    fast = evaluate(digits_model, digits, checks=False, **kwargs)
    slow = evaluate(digits_model, digits, reuse=False, checks=False, **kwargs)
    for a, b in zip(fast.curves[0].points, slow.curves[0].points, strict=True):
        assert a.accuracy <= b.accuracy  # reuse only adds successes found at smaller eps
        assert a.max_linf <= a.epsilon + 1e-6
    # the same random starts per example: the runs agree wherever reuse did not decide
    assert abs(fast.curves[0].accuracy_at(0.05) - slow.curves[0].accuracy_at(0.05)) <= 0.005
    attacked = [p.n_attacked for p in fast.curves[0].points]
    assert attacked[0] == 0 and attacked[1] == int(round(fast.clean_accuracy * 200))
    assert all(later <= earlier for earlier, later in zip(attacked[1:], attacked[2:], strict=False))
    assert sum(attacked) < sum(p.n_attacked for p in slow.curves[0].points)
    for a, b in zip(fast.curves[0].points[1:], fast.curves[0].points[2:], strict=False):
        assert b.n_attacked == a.n_correct  # only survivors are attacked again


def test_bounds_given_to_evaluate_are_the_ones_used(digits_model, digits):
    """Regression: evaluate(..., bounds=(-1, 1)) on arrays recorded no bounds, so the checks
    attacked in [0, 1] (and refused the data) and the report showed [0, 1]."""
    from robustlab.report import render_html

    x, y = digits.x_test[:60] * 2.0 - 1.0, digits.y_test[:60]
    res = evaluate(digits_model, (x, y), "fgsm, pgd", "0, 0.2", bounds=(-1, 1), n_check=20,
                   seed=0)
    assert res.bounds == (-1.0, 1.0) and res.dataset["bounds"] == [-1.0, 1.0]
    assert res.to_dict()["dataset"]["bounds"] == [-1.0, 1.0]
    large = next(c for c in res.checks if c.name == "large_budget")
    assert large.values["epsilon"] == pytest.approx(1.0)  # half of the [-1, 1] box
    assert "bounds [-1.0, 1.0]" in render_html(res)


def test_input_shape_mismatch_is_a_named_error(digits_model, digits):
    y = digits.y_test[:4]
    for shape in ((4, 28, 28, 1), (4, 8, 8, 3)):
        with pytest.raises(ValidationError, match=r"expected x with input shape \(8, 8, 1\)"):
            evaluate(digits_model, (np.zeros(shape, np.float32), y), "fgsm", "0, 0.1",
                     checks=False)


def test_epsilon_beyond_the_box_warns_once(digits_model, digits):
    from robustlab.attacks import fgsm
    from robustlab.errors import RobustlabWarning

    x, y = digits.x_test[:20], digits.y_test[:20]
    with pytest.warns(RobustlabWarning) as record:
        res = evaluate(digits_model, (x, y), "fgsm, pgd", "0, 0.1, 5, 7", checks=False)
    capped = [str(w.message) for w in record if "exceed the input box" in str(w.message)]
    assert len(capped) == 1 and "[5.0, 7.0]" in capped[0] and "epsilon 1" in capped[0]
    assert res.epsilons == (0.0, 0.1, 5.0, 7.0)  # reported as asked
    with pytest.warns(RobustlabWarning, match="exceeds the input box"):
        out = fgsm(digits_model, x, y, epsilon=5.0)
    assert np.abs(out - x).max() <= 1.0


def test_repr_is_a_few_lines(digits_result):
    text = repr(digits_result)
    lines = text.splitlines()
    assert len(lines) <= 3 + len(digits_result.epsilons) + 1
    assert lines[0].startswith("EvaluationResult(small_cnn on digits, 120 examples, linf")
    assert "clean" in lines[0] and lines[-1].startswith("  trust: ")
    assert f"{100 * digits_result.worst_case.accuracy_at(0.3):5.1f}%" in text


def test_dlr_on_two_classes_is_refused_before_any_attack(tiny_model):
    """The engine's inner path does not re-check options; evaluate's boundary does."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    x, y = np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValidationError, match="at least 3 classes for loss='dlr'"):
        evaluate(model, (x, y), "fgsm, pgd-dlr", "0, 0.1", checks=False)
