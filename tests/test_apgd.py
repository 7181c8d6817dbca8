"""Native APGD (CE, DLR, APGD-T) and the native AutoAttack suite (issue 15): the algorithm's
schedule, the threat model, seeding, strength against ART's APGD and against PGD, and the
suite's cascade with its record of which attack broke what."""

import numpy as np
import pytest
from conftest import accuracy

from robustlab.attacks import SUITES, AttackSpec, apgd, parse_attacks, pgd
from robustlab.attacks.apgd import checkpoints
from robustlab.errors import ValidationError
from robustlab.evaluate import evaluate


@pytest.fixture(scope="module")
def xy(digits):
    return digits.x_test[:200], digits.y_test[:200]


def test_checkpoints_follow_the_reference_schedule():
    # checkpoints at iterations 22, 41, 57, 70, 80, 87, 93, 99 of 100 (Croce & Hein 2020)
    assert checkpoints(100) == [22, 19, 16, 13, 10, 7, 6, 6, 1]
    assert np.cumsum(checkpoints(100))[:-1].tolist() == [22, 41, 57, 70, 80, 87, 93, 99]
    assert sum(checkpoints(37)) == 37 and checkpoints(1) == [1]


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("kwargs", [{"loss": "ce"}, {"loss": "dlr"},
                                    {"loss": "dlr", "targets": 3}])
def test_apgd_stays_in_the_ball_and_bounds(digits_model, xy, norm, eps, kwargs):
    x, y = xy[0][:64], xy[1][:64]
    out = apgd(digits_model, x, y, epsilon=eps, norm=norm, steps=20, **kwargs)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    delta = (out - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta ** 2).sum(1))
    assert size.max() <= eps * (1 + 1e-5) + 1e-6
    assert accuracy(digits_model, out, y) < accuracy(digits_model, x, y)


def test_apgd_is_seeded_and_per_example(digits_model, xy):
    x, y = xy[0][:48], xy[1][:48]
    a = apgd(digits_model, x, y, epsilon=0.08, steps=20, seed=3)
    assert np.array_equal(a, apgd(digits_model, x, y, epsilon=0.08, steps=20, seed=3))
    rows = np.arange(10, 30)
    part = apgd(digits_model, x[rows], y[rows], epsilon=0.08, steps=20, seed=3, ids=rows)
    np.testing.assert_allclose(part, a[rows], atol=1e-6)
    assert np.array_equal(apgd(digits_model, x, y, epsilon=0.0, steps=5), x)


@pytest.mark.parametrize("changes, match", [
    ({"loss": "margin"}, "loss 'ce' or 'dlr' for APGD"),
    ({"loss": "ce", "targets": 3}, "loss='dlr' and backend='native' for APGD-T"),
    ({"loss": "dlr", "targets": 10}, "targets <= 9"),
    ({"backend": "cleverhans"}, "backend 'native' or 'art'"),
])
def test_apgd_refuses_bad_settings(digits_model, xy, changes, match):
    with pytest.raises(ValidationError, match=match):
        apgd(digits_model, xy[0][:4], xy[1][:4], epsilon=0.1, steps=2, **changes)


def test_apgd_t_needs_four_classes():
    import keras

    three = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(size=(4, 6)).astype("float32")
    with pytest.raises(ValidationError, match="at least 4 classes for APGD-T"):
        apgd(three, x, None, epsilon=0.1, loss="dlr", targets=1)
    with pytest.raises(ValidationError, match="at least 4 classes for APGD-T"):
        AttackSpec("apgd-t").check_model(3)


def test_native_apgd_is_never_weaker_than_arts(digits_model, xy):
    # One seed moves robust accuracy by about 1 point on 200 examples for either
    # implementation (each draws its own random start): allow 1.5 points.
    x, y = xy
    for loss in ("ce", "dlr"):
        native = accuracy(digits_model, apgd(digits_model, x, y, epsilon=0.1, loss=loss,
                                             steps=50), y)
        art = accuracy(digits_model, apgd(digits_model, x, y, epsilon=0.1, loss=loss,
                                          steps=50, backend="art"), y)
        assert native <= art + 0.015, (loss, native, art)


def test_apgd_t_is_at_least_as_strong_as_pgd(digits_model, xy):
    x, y = xy
    robust_pgd = accuracy(digits_model, pgd(digits_model, x, y, epsilon=0.1, steps=40,
                                            restarts=2), y)
    robust_t = accuracy(digits_model, apgd(digits_model, x, y, epsilon=0.1, loss="dlr",
                                           targets=9, steps=50), y)
    assert robust_t <= robust_pgd + 0.01


def test_autoattack_is_the_reference_suite():
    specs = parse_attacks("autoattack", steps=40, restarts=3)  # notebook defaults ignored
    assert [s.label for s in specs] == ["APGD-CE-100", "APGD-T-100", "Square-5000"]
    assert {s.suite for s in specs} == {"autoattack"} and specs[1].targets == 9
    assert [s.label for s in parse_attacks("autoattack-fast")] == \
        ["APGD-CE-100", "APGD-T-100 (3 targets)"]
    assert [s.label for s in parse_attacks("autoattack", backend="art")] == ["AutoAttack"]
    assert len(SUITES["autoattack"]) == 3
    with pytest.raises(ValidationError, match="expected no settings for attack 'autoattack'"):
        parse_attacks([{"name": "autoattack", "steps": 5}])
    spec = AttackSpec("apgd-t")
    assert spec.to_dict()["targets"] == 9 and spec.label == "APGD-T-100"


def test_autoattack_runs_as_a_cascade_and_records_who_broke_what(digits_model, xy):
    x, y = xy[0][:80], xy[1][:80]
    result = evaluate(digits_model, (x, y), "autoattack-fast", "0, 0.1", checks=False,
                      progress=False)
    assert result.cascade  # a suite cascades unless told otherwise
    labels = [c.label for c in result.curves]
    assert list(result.breaks) == labels
    clean_correct = int(round(result.clean_accuracy * len(x)))
    robust = result.worst_case.points[-1].n_correct
    assert sum(counts[-1] for counts in result.breaks.values()) == clean_correct - robust
    assert (result.first_break[:, 0] == -1).all()  # ε = 0 breaks nothing
    assert result.to_dict()["breaks"] == {k: list(v) for k, v in result.breaks.items()}
