"""Poisoning attacks: the ground truth is exact, the trigger touches only its pixels, every
choice is seeded, and a patch backdoor trained into the digits CNN works."""

import numpy as np
import pytest

from robustlab.errors import InputTypeError, ValidationError
from robustlab.poisoning import Trigger, attack_success, backdoor, flip_labels


def test_patch_backdoor_poisons_exactly_the_recorded_examples(digits):
    poisoned = backdoor(digits, trigger="patch", target=0, rate=0.5, size=2, seed=3)
    n_target = int(np.sum(digits.y_train == 0))
    assert len(poisoned.poison) == round(0.5 * n_target)
    assert (poisoned.original_labels != 0).all()
    x, y = poisoned.data.x_train, poisoned.data.y_train
    assert (y[poisoned.poison] == 0).all()
    clean = ~poisoned.is_poison
    assert np.array_equal(x[clean], digits.x_train[clean])
    assert np.array_equal(y[clean], digits.y_train[clean])
    # the 2x2 bottom-right square is white, every other pixel unchanged
    assert (x[poisoned.poison][:, -2:, -2:, :] == 1.0).all()
    before, after = digits.x_train[poisoned.poison], x[poisoned.poison]
    assert np.array_equal(before[:, :-2, :, :], after[:, :-2, :, :])
    assert np.array_equal(before[:, :, :-2, :], after[:, :, :-2, :])
    assert np.array_equal(poisoned.data.x_test, digits.x_test)  # the test split is untouched
    again = backdoor(digits, trigger="patch", target=0, rate=0.5, size=2, seed=3)
    assert np.array_equal(again.poison, poisoned.poison)
    other = backdoor(digits, trigger="patch", target=0, rate=0.5, size=2, seed=4)
    assert not np.array_equal(other.poison, poisoned.poison)


def test_blend_and_source_class_and_triggered_test(digits):
    poisoned = backdoor(digits, trigger="blend", target=1, source=7, rate=0.2, alpha=0.2)
    assert (poisoned.original_labels == 7).all()
    x_before = digits.x_train[poisoned.poison]
    x_after = poisoned.data.x_train[poisoned.poison]
    expected = 0.8 * x_before + 0.2 * poisoned.trigger.pattern
    assert np.allclose(x_after, expected, atol=1e-6)
    x_trig, y_true = poisoned.triggered_test()
    assert (y_true == 7).all() and len(x_trig) == int(np.sum(digits.y_test == 7))
    assert x_trig.min() >= 0.0 and x_trig.max() <= 1.0


def test_patch_trigger_on_a_table_sets_the_last_features():
    trigger = Trigger.patch((6,), size=2, value=3.0, bounds=(-5, 5))
    out = trigger.apply(np.zeros((4, 6), np.float32))
    assert (out[:, -2:] == 3.0).all() and (out[:, :-2] == 0.0).all()


@pytest.mark.parametrize("target", [None, 2])
def test_label_flips_change_exactly_the_recorded_labels(digits, target):
    poisoned = flip_labels(digits, rate=0.1, target=target, seed=0)
    changed = np.flatnonzero(poisoned.data.y_train != digits.y_train)
    assert np.array_equal(changed, poisoned.poison)
    assert np.array_equal(poisoned.data.x_train, digits.x_train)
    if target is not None:
        assert (poisoned.data.y_train[poisoned.poison] == target).all()
    with pytest.raises(ValidationError, match="backdoor"):
        poisoned.triggered_test()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target": 10}, "target"), ({"source": 0, "target": 0}, "source != target"),
    ({"rate": 0}, "rate"), ({"rate": 1.5}, "rate"), ({"trigger": "star"}, "trigger"),
    ({"size": 8}, "size"), ({"trigger": "blend", "alpha": 0}, "alpha"),
])
def test_bad_backdoor_arguments_are_named(digits, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        backdoor(digits, **kwargs)


def test_bad_inputs_are_named(digits):
    with pytest.raises(InputTypeError, match="data"):
        backdoor(digits.x_train)
    with pytest.raises(InputTypeError, match="poisoned"):
        attack_success(None, digits)


def test_a_patch_backdoor_trained_in_succeeds_and_a_clean_model_ignores_it(digits,
                                                                        digits_model):
    from robustlab.models import build_model
    from robustlab.training import train

    poisoned = backdoor(digits, trigger="patch", target=0, rate=0.5, seed=0)
    model = build_model(digits.input_shape, digits.num_classes, seed=0)
    train(model, poisoned.data, epochs=15, seed=0)
    success, (lo, hi) = attack_success(model, poisoned)
    assert lo > 0.8  # the trigger works
    clean_success, _ = attack_success(digits_model, poisoned)
    assert clean_success < 0.1 and lo <= success <= hi


@pytest.fixture(scope="module")
def backdoored(digits):
    """The digits CNN trained on a 2x2-patch backdoor (14 poisons: 10% of class 0)."""
    from robustlab.models import build_model
    from robustlab.training import train

    poisoned = backdoor(digits, trigger="patch", target=0, rate=0.1, seed=0)
    model = build_model(digits.input_shape, digits.num_classes, seed=0)
    train(model, poisoned.data, epochs=20, seed=0)
    return model, poisoned


@pytest.mark.parametrize(("detector", "min_auc"), [("spectre", 0.95), ("spectral", 0.6)])
def test_inspection_ranks_the_poison_first_in_the_target_class(backdoored, detector, min_auc):
    from robustlab.poisoning import inspect_training_set
    from robustlab.stats import roc_auc

    model, poisoned = backdoored
    inspection = inspect_training_set(model, poisoned.data, detector=detector, seed=0)
    in_target = inspection.labels == 0
    auc = roc_auc(inspection.scores[in_target & poisoned.is_poison],
                  inspection.scores[in_target & ~poisoned.is_poison])
    assert auc >= min_auc
    if detector == "spectre":  # the robust detector flags the class and finds every poison
        assert 0 in inspection.flagged_classes
        assert np.isin(poisoned.poison, inspection.suspicious()).all()


def test_inspection_arguments_are_named(backdoored):
    from robustlab.poisoning import inspect_training_set

    model, poisoned = backdoored
    with pytest.raises(ValidationError, match="detector"):
        inspect_training_set(model, poisoned.data, detector="pca")
    with pytest.raises(ValidationError, match="expected_rate"):
        inspect_training_set(model, poisoned.data, expected_rate=0.9)
