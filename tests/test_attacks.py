import numpy as np
import pytest
from conftest import accuracy, predictions

from robustlab.attacks import AttackSpec, fgsm, parse_attacks, pgd
from robustlab.errors import InputTypeError, ValidationError
from robustlab.stats import perturbation_norms

ATTACKS = {"fgsm": lambda m, x, y, **kw: fgsm(m, x, y, **kw),
           "pgd": lambda m, x, y, **kw: pgd(m, x, y, steps=5, **kw)}


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_epsilon_zero_is_identity(tiny_model, batch, name, norm):
    x, y = batch
    np.testing.assert_array_equal(ATTACKS[name](tiny_model, x, y, epsilon=0.0, norm=norm), x)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_output_in_ball_and_bounds(digits_model, batch, name, norm, eps):
    x, y = batch
    x_adv = ATTACKS[name](digits_model, x, y, epsilon=eps, norm=norm)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    linf, l2 = perturbation_norms(x_adv, x)
    used = linf if norm == "linf" else l2
    assert used.max() <= eps * (1 + 1e-6) + 1e-6
    assert used.max() > 0.5 * eps  # the attack actually moved
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_attacks_reduce_accuracy(digits_model, digits):
    x, y = digits.x_test[:200], digits.y_test[:200]
    clean = accuracy(digits_model, x, y)
    acc_fgsm = accuracy(digits_model, fgsm(digits_model, x, y, epsilon=0.2), y)
    acc_pgd = accuracy(digits_model, pgd(digits_model, x, y, epsilon=0.2, steps=20), y)
    assert clean > 0.95
    assert acc_pgd <= acc_fgsm < clean
    assert accuracy(digits_model, pgd(digits_model, x, y, epsilon=0.3, steps=40), y) < 0.05


def test_same_seed_same_output(digits_model, batch):
    x, y = batch
    a = pgd(digits_model, x, y, epsilon=0.1, steps=3, seed=7)
    b = pgd(digits_model, x, y, epsilon=0.1, steps=3, seed=7)
    c = pgd(digits_model, x, y, epsilon=0.1, steps=3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_results_do_not_depend_on_batch_size(digits_model, batch):
    x, y = batch
    a = pgd(digits_model, x, y, epsilon=0.1, steps=3, random_start=False, batch_size=32)
    b = pgd(digits_model, x, y, epsilon=0.1, steps=3, random_start=False, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_restarts_never_weaker_per_example(digits_model, digits):
    x, y = digits.x_test[:120], digits.y_test[:120]
    single = pgd(digits_model, x, y, epsilon=0.12, steps=5, seed=3)
    multi = pgd(digits_model, x, y, epsilon=0.12, steps=5, restarts=4, seed=3)
    wrong = lambda xa: predictions(digits_model, xa) != y  # noqa: E731
    # restart 0 of the multi-restart run is the single run: keep-best can only add successes
    assert np.all(wrong(multi) >= wrong(single))
    assert wrong(multi).sum() >= wrong(single).sum()


def test_targeted_moves_towards_target(digits_model, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    target = (y + 1) % 10
    x_adv = pgd(digits_model, x, target, epsilon=0.3, steps=40, targeted=True)
    hit = np.mean(predictions(digits_model, x_adv) == target)
    assert hit > 0.9


def test_margin_loss_attack(digits_model, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    x_adv = pgd(digits_model, x, y, epsilon=0.3, steps=40, loss="margin")
    assert accuracy(digits_model, x_adv, y) < 0.05


def test_default_labels_are_predictions(digits_model, batch):
    x, y = batch
    pred = predictions(digits_model, x)
    np.testing.assert_array_equal(fgsm(digits_model, x, epsilon=0.1),
                                  fgsm(digits_model, x, pred, epsilon=0.1))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"epsilon": -0.1}, ValidationError, r"expected epsilon >= 0, got -0.1"),
    ({"epsilon": float("nan")}, ValidationError, "epsilon to be a finite"),
    ({"epsilon": 0.1, "steps": 0}, ValidationError, "expected steps >= 1"),
    ({"epsilon": 0.1, "step_size": 0.5}, ValidationError, r"step_size <= epsilon"),
    ({"epsilon": 0.1, "norm": "l3"}, ValidationError, "expected norm to be one of"),
    ({"epsilon": 0.1, "backend": "foolbox"}, ValidationError, "expected backend"),
    ({"epsilon": 0.1, "loss": "hinge"}, ValidationError, "expected loss"),
    ({"epsilon": 0.1, "restarts": 3, "random_start": False}, ValidationError,
     "random_start=True"),
    ({"epsilon": 0.1, "loss": "margin", "backend": "cleverhans"}, ValidationError,
     "only the native"),
    ({"epsilon": "lots"}, ValidationError, "epsilon to be a number"),
    ({"epsilon": 0.1, "seed": -1}, ValidationError, "expected seed >= 0"),
    ({"epsilon": 0.1, "bounds": (1, 0)}, ValidationError, "bounds"),
])
def test_bad_arguments_name_the_parameter(tiny_model, batch, kwargs, error, match):
    x, y = batch
    with pytest.raises(error, match=match):
        pgd(tiny_model, x, y, **kwargs)


def test_bad_inputs(tiny_model, batch):
    x, y = batch
    with pytest.raises(ValidationError, match="targeted"):
        pgd(tiny_model, x, None, epsilon=0.1, targeted=True)
    with pytest.raises(ValidationError, match=r"input shape \(8, 8, 1\)"):
        fgsm(tiny_model, np.zeros((2, 9, 9, 1), np.float32), [0, 1], epsilon=0.1)
    with pytest.raises(ValidationError, match="within bounds"):
        fgsm(tiny_model, x + 2.0, y, epsilon=0.1)
    with pytest.raises(ValidationError, match="one label per example"):
        fgsm(tiny_model, x, y[:3], epsilon=0.1)
    with pytest.raises(InputTypeError, match="model"):
        fgsm("not a model", x, y, epsilon=0.1)


def test_attack_spec_parsing():
    specs = parse_attacks("fgsm, pgd", steps=10, restarts=2)
    assert [s.label for s in specs] == ["FGSM", "PGD-10×2"]
    assert "steps" not in specs[0].to_dict() and specs[1].to_dict()["restarts"] == 2
    assert AttackSpec.parse({"name": "pgd", "backend": "art"}).label == "PGD-40 [art]"
    with pytest.raises(ValidationError, match="expected attack to be one of fgsm, pgd, apgd"):
        parse_attacks("pgd, deepfol")
    with pytest.raises(ValidationError, match="each attack once"):
        parse_attacks("pgd, PGD")
