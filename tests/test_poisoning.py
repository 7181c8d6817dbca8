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

    model, poisoned = backdoored
    inspection = inspect_training_set(model, poisoned.data, detector=detector, seed=0)
    metrics = inspection.metrics(poisoned.poison)
    assert metrics["auroc"] >= min_auc and metrics["n_poison"] == 14
    if detector == "spectre":  # the class is flagged and (nearly) only the poison removed
        assert inspection.flagged_classes == (0,)
        assert metrics["precision"] >= 0.9 and metrics["recall"] >= 0.9
        assert inspection.class_p_values[0] < 1e-8
        evidence = inspection.class_evidence
        assert evidence[0] > 7 and max(v for c, v in evidence.items() if c != 0) < 7
        assert np.array_equal(inspection.suspicious(), inspection.flagged)
        top = inspection.suspicious(fraction=0.15)  # Tran et al.'s rule: the top 1.5 × 10%
        assert len(top) == round(0.15 * np.sum(poisoned.data.y_train == 0))


def test_a_clean_training_set_flags_no_class(digits, digits_model):
    from robustlab.poisoning import inspect_training_set

    inspection = inspect_training_set(digits_model, digits, seed=0)
    assert inspection.flagged_classes == () and inspection.n_flagged == 0
    assert len(inspection.class_p_values) == digits.num_classes
    # a p-value threshold loose enough to let clean classes through would flag some
    assert max(inspection.class_evidence.values()) < 7  # EVIDENCE_Z
    # the scan alone would call some clean class significant: evidence of a trigger decides
    loose = inspect_training_set(digits_model, digits, significance=0.5, seed=0)
    assert loose.flagged_classes == ()


def test_label_disagreement_counts_neighbours_of_another_label():
    from robustlab.poisoning import label_disagreement

    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [0.15]], np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])  # the last one sits among the zeros
    out = label_disagreement(x, y, np.array([0, 3, 5]), neighbours=2)
    assert out.tolist() == [0.5, 0.5, 1.0]  # 0: 0.1 and 0.15; 3: 5.1 and 0.2; 5: two zeros


def test_trigger_coherence_tells_a_shared_pattern_from_unrelated_differences():
    """Residuals (an input minus the mean of its nearest inputs) of triggered examples share
    the trigger's direction; natural look-alikes differ in unrelated directions."""
    from robustlab.poisoning import _coherence, _coherence_z, _residuals

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, (300, 64)).astype(np.float32)
    x = np.repeat(base, 2, axis=0) + rng.normal(0, 0.05, (600, 64)).astype(np.float32)
    pattern = np.zeros(64, np.float32)
    pattern[-4:] = 1.0
    triggered = np.arange(0, 40, 2)  # each has its untouched twin at index + 1
    x[triggered] += pattern
    near = (triggered + 1)[:, None]
    shared = _residuals(x, triggered, near)
    assert _coherence(shared) > 0.5
    plain = _residuals(x, np.arange(100, 140, 2), np.arange(101, 141, 2)[:, None])
    assert _coherence(plain) < 0.3
    others = {1: plain, 2: _residuals(x, np.arange(200, 260, 2), np.arange(201, 261, 2)[:, None])}
    z = _coherence_z({0: shared, **others}, draws=50, seed=0)
    assert z[0] > 10 and abs(z[1]) < 5
    assert _coherence_z({0: shared[:2], **others}, draws=5, seed=0)[0] == 0.0  # too few


def test_art_detectors_run_as_peers_on_the_same_model(backdoored):
    from robustlab.poisoning import inspect_training_set

    model, poisoned = backdoored
    for name in ("art-activation", "art-spectral"):
        inspection = inspect_training_set(model, poisoned.data, detector=name)
        assert inspection.detector == name
        assert set(np.unique(inspection.scores)) <= {0.0, 1.0}
        assert np.array_equal(np.flatnonzero(inspection.scores), inspection.flagged)
        # ART flags in every class (the smaller cluster / top 1.5ε of each): many false alarms
        assert len(inspection.flagged_classes) > 1
        assert inspection.metrics(poisoned.poison)["precision"] < 0.5


def test_sanitize_removes_exactly_the_flagged_examples(backdoored):
    from robustlab.poisoning import inspect_training_set, sanitize

    model, poisoned = backdoored
    inspection = inspect_training_set(model, poisoned.data, seed=0)
    clean = sanitize(poisoned.data, inspection)
    assert len(clean.x_train) == len(poisoned.data.x_train) - inspection.n_flagged
    keep = np.setdiff1d(np.arange(len(poisoned.data.x_train)), inspection.flagged)
    assert np.array_equal(clean.x_train, poisoned.data.x_train[keep])
    assert np.array_equal(clean.x_test, poisoned.data.x_test)
    assert len(sanitize(poisoned.data, [0, 1]).x_train) == len(keep) + inspection.n_flagged - 2
    with pytest.raises(ValidationError, match="flagged indices"):
        sanitize(poisoned.data, [len(poisoned.data.x_train)])


def test_our_backdoor_equals_arts_with_the_same_trigger(digits):
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd

    from robustlab.poisoning import TriggerKind

    shape = digits.input_shape
    mask = (add_pattern_bd(np.zeros((1, *shape), np.float32), distance=2,
                           pixel_value=1)[0] != 0).astype(np.float32)
    trigger = Trigger(TriggerKind.PATCH, np.ones(shape, np.float32), mask)
    poisoned = backdoor(digits, trigger=trigger, target=3, rate=0.2, seed=1)
    art = PoisoningAttackBackdoor(lambda x: add_pattern_bd(x, distance=2, pixel_value=1))
    x_art, y_art = art.poison(digits.x_train[poisoned.poison],
                              y=np.eye(10)[np.full(len(poisoned.poison), 3)])
    assert mask.sum() == 4
    assert np.array_equal(poisoned.data.x_train[poisoned.poison], x_art)
    assert np.array_equal(poisoned.data.y_train[poisoned.poison], y_art.argmax(1))


def test_clean_label_poisons_only_the_target_class_and_keeps_labels(digits, digits_model):
    from robustlab.poisoning import clean_label

    poisoned = clean_label(digits, digits_model, target=2, rate=0.3, epsilon=0.2, steps=5,
                           seed=0)
    assert np.array_equal(poisoned.data.y_train, digits.y_train)  # every label is right
    assert (digits.y_train[poisoned.poison] == 2).all()
    assert len(poisoned.poison) == round(0.3 * np.sum(digits.y_train == 2))
    before, after = digits.x_train[poisoned.poison], poisoned.data.x_train[poisoned.poison]
    assert (after[:, -2:, -2:, :] == 1.0).all()  # the trigger
    body = np.abs(after - before)[:, :-2, :-2, :]
    assert body.max() <= 0.2 + 1e-6 and body.max() > 0.1  # a PGD perturbation within ε
    clean = ~poisoned.is_poison
    assert np.array_equal(poisoned.data.x_train[clean], digits.x_train[clean])
    x_trig, y_true = poisoned.triggered_test()
    assert (y_true != 2).all() and len(x_trig) == int(np.sum(digits.y_test != 2))
    with pytest.raises(ValidationError, match="epsilon"):
        clean_label(digits, digits_model, epsilon=-1)


def test_inspection_arguments_are_named(backdoored):
    from robustlab.poisoning import inspect_training_set

    model, poisoned = backdoored
    with pytest.raises(ValidationError, match="detector"):
        inspect_training_set(model, poisoned.data, detector="pca")
    with pytest.raises(ValidationError, match="expected_rate"):
        inspect_training_set(model, poisoned.data, expected_rate=0.9)
    with pytest.raises(ValidationError, match="significance"):
        inspect_training_set(model, poisoned.data, significance=0)
    with pytest.raises(ValidationError, match="neighbours"):
        inspect_training_set(model, poisoned.data, neighbours=0)


@pytest.mark.slow
def test_poisoning_study_closes_the_loop(digits, tmp_path):
    """Poison, train, inspect, sanitise, retrain: the backdoor is gone and the page written."""
    from robustlab.workflow import poisoning_study

    result = poisoning_study(digits, attack="patch", rate=0.1, detectors="spectre",
                             epochs=20, suspects=8, output_dir=tmp_path)
    poisoned, sanitised = result.model("poisoned"), result.model("sanitised")
    clean = result.model("clean")
    assert poisoned.attack_success > 0.5 and sanitised.attack_success < 0.05
    assert abs(sanitised.clean_accuracy - clean.clean_accuracy) < 0.02
    assert sanitised.n_train == poisoned.n_train - len(result.removed)
    assert result.metrics()["spectre"]["recall"] >= 0.9
    assert len(result.suspects) == 8 and result.suspect_inputs.shape == (8, 8, 8, 1)
    assert np.isin(result.suspects[:5], result.poison).all()  # flagged class first
    html = (tmp_path / "poisoning.html").read_text(encoding="utf-8")
    assert "evidence z" in html and "backdoor evidence z = " in html
    assert (tmp_path / "poisoning.json").exists()
    with pytest.raises(ValidationError, match="attack"):
        poisoning_study(digits, attack="trojan")


def test_recall_at_precision_never_splits_tied_scores():
    from robustlab.results import _recall_at_precision

    truth = np.array([True] * 8 + [False] * 2 + [True] * 2 + [False] * 8)
    flags = np.array([1.0] * 10 + [0.0] * 10)  # a 0/1 detector: 8 of its 10 flags are poison
    assert _recall_at_precision(flags, truth, 0.8) == pytest.approx(0.8)
    assert _recall_at_precision(flags, truth, 0.9) == 0.0  # no threshold inside the tie
    ranked = np.arange(20, 0, -1).astype(float)  # distinct scores: the first 8 are all poison
    assert _recall_at_precision(ranked, truth, 1.0) == pytest.approx(0.8)


def test_scan_and_outliers():
    from robustlab.poisoning import _outliers, _scan

    head = np.array([True] * 6 + [False] * 30)
    p, k = _scan(head, 0.05)
    assert k == 6 and p == pytest.approx(0.05 ** 6)
    p_late, _ = _scan(np.array([False] * 30 + [True] * 6), 0.05)
    assert p_late > 1e-3  # the same count spread late is far less surprising
    z = _outliers({0: 40.0, 1: 1.0, 2: 2.0, 3: 1.5, 4: 1.0})
    assert z[0] > 20 and abs(z[2]) < 2
    assert _outliers({0: 5.0, 1: 0.0, 2: 0.0, 3: 0.0})[0] == pytest.approx(10.0)  # MAD 0: floor
    assert _outliers({0: 9.0, 1: 0.0}) == {0: 0.0, 1: 0.0}  # too few classes to compare


def test_spectre_scores_put_a_planted_cluster_on_top():
    from robustlab.poisoning import spectral_scores, spectre_scores
    from robustlab.stats import roc_auc

    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, (300, 40)) * np.linspace(3, 0.5, 40)  # anisotropic clean class
    cluster = rng.normal(0, 0.3, (20, 40)) + 8.0 * np.eye(40)[-1]  # along a low-variance axis
    feats = np.concatenate([clean, cluster])
    truth = np.arange(len(feats)) >= 300
    robust = spectre_scores(feats, seed=0)
    assert roc_auc(robust[truth], robust[~truth]) > 0.99
    assert np.array_equal(robust, spectre_scores(feats, seed=0))  # seeded
    plain = spectral_scores(feats)  # the top singular direction is the clean spread
    assert roc_auc(plain[truth], plain[~truth]) < roc_auc(robust[truth], robust[~truth])


def test_inspection_is_seeded_and_handles_tiny_classes(backdoored, digits):
    import dataclasses

    from robustlab.poisoning import inspect_training_set

    model, poisoned = backdoored
    a = inspect_training_set(model, poisoned.data, seed=3)
    b = inspect_training_set(model, poisoned.data, seed=3)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.flagged, b.flagged)
    art_a = inspect_training_set(model, poisoned.data, detector="art-activation", seed=3)
    art_b = inspect_training_set(model, poisoned.data, detector="art-activation", seed=3)
    assert np.array_equal(art_a.flagged, art_b.flagged)  # ART's k-means seeded too
    few = np.concatenate([np.flatnonzero(digits.y_train == c)[:5] for c in range(10)])
    tiny = dataclasses.replace(digits, x_train=digits.x_train[few], y_train=digits.y_train[few])
    inspection = inspect_training_set(model, tiny)  # every class under 8 examples
    assert inspection.flagged_classes == () and inspection.class_p_values == {}


def test_inspection_runs_on_a_two_class_table():
    """Tables: neighbours in standard deviations of each feature; two classes leave nothing
    to compare a class with, and a clean table flags nothing."""
    import robustlab as rl
    from robustlab.models import build_model
    from robustlab.poisoning import inspect_training_set
    from robustlab.training import train

    data = rl.load("breast_cancer")
    mean, std = data.feature_stats()
    model = build_model(data.input_shape, data.num_classes, seed=0, mean=mean, std=std)
    train(model, data, epochs=5, seed=0)
    inspection = inspect_training_set(model, data, seed=0)
    assert set(inspection.class_p_values) == {0, 1} and inspection.flagged_classes == ()
    assert np.isfinite(inspection.scores).all()
