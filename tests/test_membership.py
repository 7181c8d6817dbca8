"""Membership-inference audit (robustlab.membership) and its ROC helpers (robustlab.stats)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from robustlab import stats
from robustlab.errors import InputTypeError, ValidationError
from robustlab.membership import (
    lira_scores,
    logit_confidence,
    loss_scores,
    membership_audit,
    score_attack,
    shadow_split,
)
from robustlab.results import MembershipAudit

# ---------------------------------------------------------------------------------------------
# ROC helpers against scikit-learn


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(seed, ties):
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(0.5, 1, 300), rng.normal(0, 1, 200)
    if ties:  # few distinct values: ties within and across the classes
        pos, neg = np.round(pos), np.round(neg)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scores = np.r_[pos, neg]
    fpr, tpr, thr = stats.roc_curve(pos, neg)
    sk_fpr, sk_tpr, sk_thr = sk_roc(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert stats.roc_auc(pos, neg) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_tpr_at_fpr_never_exceeds_the_fpr():
    rng = np.random.default_rng(3)
    for n_neg in (7, 100, 999, 1000, 2500):
        pos, neg = rng.normal(1, 1, 500), np.round(rng.normal(0, 1, n_neg), 1)  # with ties
        for target in (0.0, 0.001, 0.01, 0.05, 0.3, 1.0):
            tpr, achieved, threshold, hits = stats.tpr_at_fpr(pos, neg, target)
            assert achieved <= target + 1e-12
            assert achieved == np.mean(neg > threshold)
            assert tpr == np.mean(pos > threshold) == hits / len(pos)
    # below the resolution 1/N: the threshold is the largest non-member score, FPR 0
    neg = np.arange(100.0)
    tpr, achieved, threshold, _ = stats.tpr_at_fpr(np.array([99.5, 50.0]), neg, 0.001)
    assert (achieved, threshold, tpr) == (0.0, 99.0, 0.5)


def test_advantage_interval_and_downsampled_roc():
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(1, 1, 3000), rng.normal(0, 1, 3000)
    fpr, tpr, _ = stats.roc_curve(pos, neg)
    assert stats.membership_advantage(fpr, tpr) == pytest.approx(np.max(tpr - fpr))
    # two unit Gaussians one apart: AUC = Φ(1/√2) ≈ 0.760, advantage ≈ 2Φ(0.5) − 1 ≈ 0.383
    auc = stats.roc_auc(pos, neg)
    low, high = stats.hanley_mcneil_interval(auc, len(pos), len(neg))
    assert low < 0.760 < high and high - low < 0.05
    assert stats.membership_advantage(fpr, tpr) == pytest.approx(0.383, abs=0.04)
    f, t = stats.downsample_roc(fpr, tpr, 200)
    assert len(f) <= 200 and f[0] == 0 and f[-1] == 1 and t[-1] == 1
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0)
    # dense at the low-FPR end: most of the 30 FPR levels below 1% (k/3000) are kept
    assert np.sum((f > 0) & (f < 0.01)) >= 25
    assert set(zip(f, t, strict=True)) <= set(zip(fpr, tpr, strict=True))  # points of the curve
    assert stats.hanley_mcneil_interval(1.0, 10, 10) == (1.0, 1.0)


def test_roc_helpers_refuse_bad_scores():
    with pytest.raises(ValidationError, match="expected negatives to hold at least one"):
        stats.roc_curve(np.ones(3), np.array([]))
    with pytest.raises(ValidationError, match="expected positives to be finite"):
        stats.roc_auc(np.array([1.0, np.nan]), np.ones(3))
    with pytest.raises(ValidationError, match=r"expected fpr in \[0, 1\]"):
        stats.tpr_at_fpr(np.ones(3), np.ones(3), 1.5)


# ---------------------------------------------------------------------------------------------
# the statistics


def test_scores_from_logits_are_exact_and_stable():
    logits = np.array([[2.0, 0.0, -1.0], [100.0, -100.0, 0.0]], np.float32)
    y = np.array([0, 0])
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    assert loss_scores(logits, y)[0] == pytest.approx(np.log(p[0]))
    assert logit_confidence(logits, y)[0] == pytest.approx(np.log(p[0]) - np.log(1 - p[0]))
    # p_y rounds to 1: φ stays finite, z_y − logsumexp(others) = 100 − (0 + log(1 + e^-100))
    assert logit_confidence(logits, y)[1] == pytest.approx(100.0)


def test_shadow_split_puts_every_example_in_about_half():
    keep = shadow_split(101, 5, seed=0)
    assert keep.shape == (5, 101) and keep.dtype == bool
    assert set(keep.sum(axis=0)) <= {2, 3}
    assert np.array_equal(keep, shadow_split(101, 5, seed=0))
    assert not np.array_equal(keep, shadow_split(101, 5, seed=1))


def test_lira_scores_separate_in_from_out_and_fall_back():
    rng = np.random.default_rng(0)
    n, s = 400, 16
    keep = shadow_split(n, s, seed=0)
    base = rng.normal(0, 2, n)  # per-example difficulty
    shadow = base + 1.5 * keep + rng.normal(0, 0.5, (s, n))  # IN raises φ by 1.5
    member = rng.random(n) < 0.5
    target = base + 1.5 * member + rng.normal(0, 0.5, n)
    scores = lira_scores(target, shadow, keep)
    assert stats.roc_auc(scores[member], scores[~member]) > 0.9
    # the per-example means remove the difficulty: the plain φ is a much weaker attack
    assert stats.roc_auc(target[member], target[~member]) < 0.75
    # an example never IN (or never OUT) gets the mean gap: finite, same scale
    keep[:, 0], keep[:, 1] = False, True
    fallback = lira_scores(target, shadow, keep)
    assert np.all(np.isfinite(fallback))
    # 64 shadows and more: per-example variances; an example whose IN spread is tiny scores
    # a φ far from its IN mean very low
    keep = shadow_split(n, 64, seed=1)
    shadow = base + 1.5 * keep + rng.normal(0, 0.5, (64, n))
    shadow[keep[:, 2], 2] = base[2] + 1.5  # no IN spread for example 2
    scores = lira_scores(target, shadow, keep)
    assert np.all(np.isfinite(scores))
    assert stats.roc_auc(scores[member], scores[~member]) > 0.9
    with pytest.raises(ValidationError, match="expected shadow and keep of shape"):
        lira_scores(target, shadow, keep[:, :10])


# ---------------------------------------------------------------------------------------------
# the audit on an overfit model and on an unseen control


@pytest.fixture(scope="module")
def overfit(digits):
    """An MLP trained 100 epochs on 200 digits (training loss ~0.03, test accuracy ~92%)
    and a dataset with its 200 members and 200 non-members."""
    from robustlab.models import build_mlp
    from robustlab.training import train

    data = dataclasses.replace(digits, x_train=digits.x_train[:200],
                               y_train=digits.y_train[:200], x_test=digits.x_test[:200],
                               y_test=digits.y_test[:200])
    model = build_mlp(data.input_shape, data.num_classes, hidden=(128,), seed=0)
    train(model, data, epochs=100, seed=0)
    return model, data


@pytest.fixture(scope="module")
def overfit_audit(overfit):
    model, data = overfit
    return membership_audit(model, data, shadows=4, shadow_epochs=100, seed=0,
                            progress=False)


def test_overfit_model_is_detected_by_loss_and_lira(overfit_audit):
    audit = overfit_audit
    assert [a.name for a in audit.attacks] == ["loss", "lira", "art-blackbox"]
    assert (audit.n_members, audit.n_nonmembers, audit.shadows) == (200, 200, 4)
    assert audit.fpr_resolution == pytest.approx(1 / 200)
    for name in ("loss", "lira"):
        attack = audit.attack(name)
        assert attack.auc_interval[0] > 0.55, attack
        assert attack.advantage > 0.1
        assert attack.at(0.01).fpr <= 0.01 and attack.at(0.001).fpr <= 0.001
        assert attack.at(0.001).below_resolution and not attack.at(0.01).below_resolution
        low, high = attack.at(0.01).fpr_interval
        assert low <= attack.at(0.01).fpr <= high
        assert len(attack.roc_fpr) <= 200
    # LiRA's per-example calibration makes it stronger than the global loss threshold
    assert audit.attack("lira").auc > audit.attack("loss").auc
    assert any("below the resolution" in note for note in audit.notes)
    json.dumps(audit.to_dict(), allow_nan=False)
    assert "lira" in repr(audit)


def test_art_blackbox_runs_on_held_out_halves(overfit_audit):
    art = overfit_audit.attack("art-blackbox")
    assert 0.0 <= art.auc <= 1.0 and math.isfinite(art.auc)
    assert (art.n_members, art.n_nonmembers) == (100, 100)
    assert "held-out halves" in art.notes


def test_model_that_never_saw_its_members_is_at_chance(overfit, digits):
    model, _ = overfit
    # members and non-members both unseen by the model (it trained on x_train[:200])
    unseen = dataclasses.replace(digits, x_train=digits.x_train[200:400],
                                 y_train=digits.y_train[200:400], x_test=digits.x_test[200:],
                                 y_test=digits.y_test[200:])
    audit = membership_audit(model, unseen, shadows=4, shadow_epochs=40, seed=0, art=False,
                             progress=False)
    for attack in audit.attacks:
        low, high = attack.auc_interval
        assert low < 0.5 < high, attack
        assert abs(attack.auc - 0.5) < 0.1
        # a few members flagged at empirical FPR 0 must not "disprove" DP: the FPR's upper
        # Wilson end (0/160 -> 2.3%) enters the bound
        assert attack.at(0.001).fpr_interval[1] > 0.01
    assert audit.consistent_with(1.0, 1e-5)


def test_lira_with_the_same_seed_repeats(overfit):
    model, data = overfit
    kwargs = dict(shadows=2, shadow_epochs=3, attacks="lira", art=False, max_examples=40,
                  progress=False)
    first = membership_audit(model, data, seed=5, **kwargs)
    second = membership_audit(model, data, seed=5, **kwargs)
    other = membership_audit(model, data, seed=6, **kwargs)
    assert first.attacks[0].roc_tpr == second.attacks[0].roc_tpr
    assert first.attacks[0].auc == second.attacks[0].auc
    assert first.attacks[0].auc != other.attacks[0].auc
    assert (first.n_members, first.n_nonmembers) == (40, 40)


def test_default_shadows_are_fresh_seeded_clones(overfit):
    from robustlab.membership import _fresh_clone

    model, _ = overfit

    def weights(m):
        return np.concatenate([w.numpy().ravel() for w in m.trainable_weights])

    a, b, again = _fresh_clone(model, 1), _fresh_clone(model, 2), _fresh_clone(model, 1)
    assert not np.allclose(weights(a), weights(model))  # re-initialised, not copied
    assert not np.allclose(weights(a), weights(b))
    np.testing.assert_array_equal(weights(a), weights(again))


def test_custom_shadow_trainer_is_called_with_halves(overfit):
    model, data = overfit
    calls = []

    def trainer(x, y, seed):
        calls.append((len(x), seed))
        return model  # the target itself: every shadow identical

    audit = membership_audit(model, data, shadows=3, train_shadow=trainer, attacks=["lira"],
                             art=False, max_examples=30, seed=0, progress=False)
    assert len(calls) == 3 and len({s for _, s in calls}) == 3
    assert all(20 <= n <= 40 for n, _ in calls)  # about half of the 60 pooled examples
    assert math.isfinite(audit.attack("lira").auc)


def test_bad_arguments_raise(overfit):
    model, data = overfit
    with pytest.raises(ValidationError, match="expected shadows >= 2, got 1"):
        membership_audit(model, data, shadows=1)
    with pytest.raises(ValidationError, match="expected attacks to be one of 'loss', 'lira'"):
        membership_audit(model, data, attacks="loss, lirra")
    with pytest.raises(InputTypeError, match="expected data to be a robustlab Dataset"):
        membership_audit(model, (data.x_train, data.y_train))
    with pytest.raises(ValidationError, match="expected seed >= 0"):
        membership_audit(model, data, seed=-1)
    with pytest.raises(ValidationError, match="expected max_examples >= 2"):
        membership_audit(model, data, max_examples=1)
    with pytest.raises(InputTypeError, match="expected train_shadow to be a function"):
        membership_audit(model, data, train_shadow=3)
    with pytest.raises(ValidationError, match="expected at least one attack"):
        membership_audit(model, data, attacks=(), art=False)


# ---------------------------------------------------------------------------------------------
# the differential-privacy bound


def _audit_with_tpr_low(low: float) -> MembershipAudit:
    rng = np.random.default_rng(0)
    attack = score_attack("loss", rng.normal(1, 1, 50), rng.normal(0, 1, 50))
    point = dataclasses.replace(attack.points[0], fpr=0.01, tpr_interval=(low, 0.9),
                                fpr_interval=(0.005, 0.02))
    attack = dataclasses.replace(attack, points=(point,))
    return MembershipAudit(attacks=(attack,), shadows=2, seed=0, fpr_resolution=0.02,
                           seconds=0.0, model="m", dataset="d", n_members=50,
                           n_nonmembers=50)


def test_dp_bound_against_hand_computation():
    audit = _audit_with_tpr_low(0.3)
    # e^1 · 0.01 + 1e-5 = 0.0271928… < 1 − e^-1 (1 − 1e-5 − 0.01) = 0.63580…
    assert audit.dp_bound(1.0, 1e-5, fpr=0.01) == pytest.approx(math.e * 0.01 + 1e-5)
    # e^2 · 0.5 > 1; the second bound 1 − e^-2 · 0.5 = 0.93233… is the smaller one
    assert audit.dp_bound(2.0, 0.0, fpr=0.5) == pytest.approx(1 - math.exp(-2) * 0.5)
    assert audit.dp_bound(0.0, 0.0, fpr=0.001) == pytest.approx(0.001)  # ε = 0: TPR ≤ FPR
    # strings as papermill passes them; e^8 · 0.001 = 2.98 > 1 − e^-8 (1 − 1e-5 − 0.001)
    assert audit.dp_bound("8", "1e-5") == pytest.approx(1 - math.exp(-8) * (1 - 1e-5 - 0.001))
    assert audit.dp_bound(50.0, 0.0, fpr=0.5) == pytest.approx(1.0)
    # TPR ≥ 0.3 at FPR ≤ 2% (the FPR interval's upper end) contradicts ε = 1, where the
    # bound is e · 0.02 + 1e-5 = 0.0544, but not ε = 10; TPR ≥ 0.05 is consistent with ε = 1
    assert not audit.consistent_with(1.0, 1e-5)
    assert audit.consistent_with(10.0, 1e-5)
    assert _audit_with_tpr_low(0.05).consistent_with(1.0, 1e-5)
    assert not _audit_with_tpr_low(0.06).consistent_with(1.0, 1e-5)
    with pytest.raises(ValidationError, match="expected epsilon >= 0"):
        audit.dp_bound(-1.0, 1e-5)
    with pytest.raises(ValidationError, match="expected delta <= 1"):
        audit.dp_bound(1.0, 2.0)


def test_shadow_split_gives_shadows_the_targets_share_of_the_pool():
    from robustlab.membership import shadow_split

    keep = shadow_split(1000, 8, seed=0, fraction=0.8)
    counts = keep.sum(axis=0)
    assert set(np.unique(counts)) <= {6, 7} and counts.mean() == pytest.approx(6.4, abs=0.1)
    assert keep.sum(axis=1).mean() == pytest.approx(800, rel=0.02)  # the target's size
    tiny = shadow_split(50, 2, seed=0, fraction=0.9)  # never without an OUT shadow
    assert (tiny.sum(axis=0) == 1).all()


@pytest.mark.parametrize("offset", [-1.0, 0.0, 1.0])
def test_lira_with_few_shadows_survives_a_target_off_the_shadows_scale(offset):
    """A real leak, 4 shadows, and a target whose φ is shifted (another training-set size
    or noise): one shared σ keeps members above non-members (unequal σ_in, σ_out gave an
    AUC of 0.41 at offset +1)."""
    from robustlab.membership import lira_scores, shadow_split
    from robustlab.stats import roc_auc

    rng = np.random.default_rng(5)
    n, shadows = 600, 4
    level = rng.normal(0, 1, n)
    keep = shadow_split(n, shadows, seed=1)
    shadow = level + 0.6 * keep + rng.normal(0, 0.5, (shadows, n)) * (1 + 0.5 * keep)
    member = np.arange(n) < n // 2
    target = level + 0.6 * member + rng.normal(0, 0.5, n) + offset
    scores = lira_scores(target, shadow, keep)
    assert roc_auc(scores[member], scores[~member]) > 0.55
