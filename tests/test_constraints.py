"""Per-feature threat models (issue 14): bounds and scale per feature, immutable, integer and
one-hot features, enforced by the one projection every attack's output goes through and
re-checked by the evaluation. Property tests (hypothesis) draw random constraints and
inputs; agreement tests compare native FGSM/PGD with ART given the same mask, per-feature
clip values and per-feature ε."""

import json

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustlab as rl
from robustlab.attacks import enforce_threat_model, fgsm, pgd, random_start
from robustlab.errors import ValidationError
from robustlab.types import Constraints, Norm, ThreatModel

F = 8  # features: 0-3 continuous, 4 integer (a count), 5-7 one categorical column
NAMES = ("age", "income", "debt", "score", "children", "region=n", "region=s", "region=w")
HIGH = np.array([100, 10, 10, 5, 8, 1, 1, 1], np.float32)


def make_table(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.empty((n, F), np.float32)
    x[:, :4] = rng.uniform(0, 1, (n, 4)) * HIGH[:4]
    x[:, 4] = rng.integers(0, 9, n)
    x[:, 5:] = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    y = ((x[:, 1] - x[:, 2] + 0.3 * x[:, 4] + 2 * x[:, 6]) > 1.5).astype(np.int64)
    return x, y


def full_constraints(**changes):
    base = dict(bounds=(0.0, HIGH), scale=[20, 2, 2, 1, 2, 1, 1, 1], immutable=["age"],
                integer=["children"], categorical=[["region=n", "region=s", "region=w"]],
                names=NAMES)
    return Constraints.build((F,), **{**base, **changes})


@pytest.fixture(scope="module")
def table():
    return make_table(600)


@pytest.fixture(scope="module")
def table_model(table):
    x, y = table
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((F,)),
                              keras.layers.Normalization(mean=x.mean(0), variance=x.var(0)),
                              keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:400], y[:400], epochs=30, batch_size=64, verbose=0)
    return model


def test_the_table_model_learns(table_model, table):
    x, y = table
    pred = np.asarray(table_model(x[400:])).argmax(1)
    assert (pred == y[400:]).mean() > 0.85


# -- building constraints ---------------------------------------------------------------------


def test_build_accepts_masks_indices_and_names():
    by_name = full_constraints()
    by_index = full_constraints(immutable=[0], integer=[4], categorical=[[5, 6, 7]])
    mask = np.zeros(F, bool)
    mask[0] = True
    by_mask = full_constraints(immutable=mask, integer=[4], categorical=[[5, 6, 7]])
    assert by_name == by_index == by_mask
    assert hash(by_name) == hash(by_index)
    assert by_name != full_constraints(immutable=["income"])
    assert by_name.weight.tolist() == [0, 2, 2, 1, 2, 1, 1, 1]
    assert by_name.discrete and by_name.bounds == (0.0, 100.0)


@pytest.mark.parametrize("changes, match", [
    ({"immutable": ["height"]}, "unknown feature 'height'"),
    ({"integer": [8]}, r"feature indices in \[0, 8\)"),
    ({"bounds": (0.0, np.zeros(F))}, "low < high"),
    ({"scale": [1, 1, 0, 1, 1, 1, 1, 1]}, "scale > 0"),
    ({"scale": [1, 2]}, "scale to broadcast"),
    ({"categorical": [["region=n"]]}, "at least 2 distinct"),
    ({"categorical": [[5, 6], [6, 7]]}, "disjoint"),
    ({"immutable": ["region=n"]}, "wholly mutable or wholly immutable"),
    ({"names": NAMES[:3]}, "one name per feature"),
])
def test_build_refuses_bad_constraints_naming_them(changes, match):
    with pytest.raises(ValidationError, match=match):
        full_constraints(**changes)


def test_clean_inputs_must_satisfy_the_feature_types(table):
    x, _ = table
    c = full_constraints()
    c.check_inputs(x)
    bad = x.copy()
    bad[3, 4] = 2.5
    with pytest.raises(ValidationError, match="integer feature 'children' = 2.5"):
        c.check_inputs(bad)
    bad = x.copy()
    bad[7, 5:] = [1, 1, 0]
    with pytest.raises(ValidationError, match="not one-hot"):
        c.check_inputs(bad)
    bad = x.copy()
    bad[2, 1] = 11
    with pytest.raises(ValidationError, match="'income' = 11 outside"):
        c.check_inputs(bad)


def test_per_feature_bounds_become_constraints_and_broadcast():
    threat = ThreatModel.parse(0.1, "linf", (np.zeros(3), np.array([1.0, 2.0, 3.0])))
    assert threat.bounds == (0.0, 3.0) and threat.constraints is not None
    wide = threat.fit((4, 3))  # per-channel bounds for (H, C) examples
    assert wide.constraints.shape == (4, 3)
    assert wide.constraints.high[2].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValidationError, match="built for one example's shape"):
        threat.fit((5,))


def test_box_size_counts_mutable_features_in_scale_units():
    c = Constraints.build((3,), bounds=(0.0, [1.0, 4.0, 9.0]), scale=[1.0, 2.0, 3.0],
                          immutable=[2])
    assert ThreatModel(1.0, Norm.LINF, c.bounds, c).box_size((3,)) == pytest.approx(2.0)
    assert ThreatModel(1.0, Norm.L2, c.bounds, c).box_size((3,)) == pytest.approx(5 ** 0.5)


# -- the projection: properties over random constraints ----------------------------------------


@st.composite
def constrained_case(draw):
    n_feat = draw(st.integers(3, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    low = np.round(rng.uniform(-3, 0, n_feat)).astype(np.float32)
    high = low + np.round(rng.uniform(1, 6, n_feat)).astype(np.float32)
    scale = rng.uniform(0.2, 3.0, n_feat).astype(np.float32)
    kinds = rng.integers(0, 3, n_feat)  # 0 continuous, 1 integer, 2 candidate one-hot column
    group = [int(i) for i in np.flatnonzero(kinds == 2)]
    group = group if len(group) >= 2 else []
    integer = [int(i) for i in np.flatnonzero(kinds == 1)]
    if group:
        low[group], high[group] = 0.0, 1.0
    immutable = [int(i) for i in rng.permutation(n_feat)[:draw(st.integers(0, n_feat - 1))]
                 if i not in group]
    c = Constraints.build((n_feat,), bounds=(low, high), scale=scale, immutable=immutable,
                          integer=integer, categorical=[group] if group else None)
    n = 16
    x = rng.uniform(low, high, (n, n_feat)).astype(np.float32)
    x[:, integer] = np.clip(np.round(x[:, integer]), np.ceil(low[integer]),
                            np.floor(high[integer]))
    if group:
        x[:, group] = np.eye(len(group), dtype=np.float32)[rng.integers(0, len(group), n)]
    x_adv = (x + rng.normal(0, 3, x.shape)).astype(np.float32)  # anything at all
    eps = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0]))
    norm = draw(st.sampled_from([Norm.LINF, Norm.L2]))
    return c, x, x_adv, ThreatModel(eps, norm, c.bounds, c)


def assert_feasible(out, x, threat):
    c = threat.constraints
    assert out.dtype == np.float32 and out.shape == x.shape
    assert threat.violation(out, x) is None
    fixed = ~c.mutable
    assert np.array_equal(out[:, fixed].view(np.uint32), x[:, fixed].view(np.uint32))
    assert (out >= c.low).all() and (out <= c.high).all()
    ints = out[:, c.integer]
    assert np.array_equal(ints, np.round(ints))
    for group in c.onehot:
        block = out[:, list(group)]
        assert np.isin(block, (0.0, 1.0)).all() and (block.sum(1) == 1).all()


@settings(max_examples=200, deadline=None)
@given(constrained_case())
def test_projection_always_lands_in_the_feasible_set(case):
    _, x, x_adv, threat = case
    assert_feasible(enforce_threat_model(x_adv, x, threat), x, threat)


@settings(max_examples=100, deadline=None)
@given(constrained_case(), st.integers(0, 10))
def test_random_starts_respect_bounds_ball_and_immutables(case, seed):
    c, x, _, threat = case
    start = random_start(x, threat, seed=seed)
    assert np.array_equal(start[:, ~c.mutable], x[:, ~c.mutable])
    assert (start >= c.low).all() and (start <= c.high).all()
    assert c.distance(start, x, threat.norm).max() <= threat.epsilon * (1 + 1e-5) + 1e-6


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_attacks_never_leave_the_feasible_set(table_model, table, data):
    x, y = table[0][:48], table[1][:48]
    immutable = data.draw(st.lists(st.sampled_from(NAMES[:5]), max_size=3, unique=True))
    c = full_constraints(immutable=immutable)
    eps = data.draw(st.sampled_from([0.2, 1.0, 4.0]))
    norm = data.draw(st.sampled_from(["linf", "l2"]))
    attack = data.draw(st.sampled_from(["fgsm", "pgd"]))
    kwargs = dict(epsilon=eps, norm=norm, constraints=c)
    out = fgsm(table_model, x, y, **kwargs) if attack == "fgsm" else \
        pgd(table_model, x, y, steps=5, restarts=2, seed=data.draw(st.integers(0, 99)),
            **kwargs)
    assert_feasible(out, x, ThreatModel.parse(eps, norm, None, c))


# -- the feasible map in detail -----------------------------------------------------------------


def test_integers_round_inside_the_ball_and_categories_switch_only_when_affordable():
    c = Constraints.build((4,), bounds=(0.0, [9.0, 1.0, 1.0, 1.0]), scale=[2.0, 1, 1, 1],
                          integer=[0], categorical=[[1, 2, 3]])
    x = np.array([[3, 1, 0, 0]], np.float32)
    relaxed = np.array([[4.4, 0.2, 0.9, 0.1]], np.float32)
    small = enforce_threat_model(relaxed, x, ThreatModel(0.7, Norm.LINF, c.bounds, c))
    assert small.tolist() == [[4, 1, 0, 0]]  # +1.4 allowed, rounds to 4; no switch (0.7 < 1)
    big = enforce_threat_model(relaxed, x, ThreatModel(1.0, Norm.LINF, c.bounds, c))
    assert big.tolist() == [[4, 0, 1, 0]]  # reach 2 per coordinate: the switch fits


def test_l2_falls_back_to_the_clean_category_when_the_switch_leaves_the_ball():
    c = Constraints.build((4,), bounds=(0.0, [9.0, 1.0, 1.0, 1.0]), integer=[0],
                          categorical=[[1, 2, 3]])
    x = np.array([[3, 1, 0, 0]], np.float32)
    relaxed = np.array([[3.6, 0.4, 0.6, 0.0]], np.float32)  # |δ| = 0.85 < 1
    threat = ThreatModel(1.0, Norm.L2, c.bounds, c)
    out = enforce_threat_model(relaxed, x, threat)
    # rounding (4, switch) would cost sqrt(1 + 2) > 1: back to the clean category, the
    # integer rounds towards the clean value
    assert out.tolist() == [[3, 1, 0, 0]]
    wide = enforce_threat_model(relaxed, x, ThreatModel(2.0, Norm.L2, c.bounds, c))
    assert wide.tolist() == [[4, 0, 1, 0]]  # sqrt(3) <= 2: the rounded point is kept


def test_without_constraints_the_math_is_unchanged(table_model, table):
    x, y = table[0][:64], table[1][:64]
    plain = Constraints.build((F,), bounds=(0.0, 100.0))  # unit scale, nothing fixed
    for norm in ("linf", "l2"):
        a = pgd(table_model, x, y, epsilon=0.5, norm=norm, bounds=(0.0, 100.0), steps=10)
        b = pgd(table_model, x, y, epsilon=0.5, norm=norm, constraints=plain, steps=10)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_immutable_features_come_back_bit_identical_even_from_peers(table_model, table):
    x, y = table[0][:64], table[1][:64]
    c = full_constraints(immutable=["income", "debt"])
    for backend in ("native", "art"):
        out = pgd(table_model, x, y, epsilon=2.0, constraints=c, steps=10, backend=backend)
        assert np.array_equal(out[:, [1, 2]], x[:, [1, 2]]), backend


def test_cleverhans_refuses_feature_constraints(table_model, table):
    x, y = table[0][:8], table[1][:8]
    with pytest.raises(ValidationError, match="no feature constraints with backend='cleverhans'"):
        fgsm(table_model, x, y, epsilon=0.1, constraints=full_constraints(), backend="cleverhans")


# -- agreement with ART given the same mask, clip values and per-feature ε ----------------------


@pytest.mark.parametrize("eps", [0.2, 0.5])
def test_native_fgsm_and_pgd_agree_with_art_under_a_mask(table_model, table, eps):
    x, y = table[0][400:], table[1][400:]
    # continuous features only: ART has no integer or one-hot map (the engine applies ours
    # to both, but the comparison is of the attacks themselves)
    c = Constraints.build((F,), bounds=(0.0, HIGH), scale=[20, 2, 2, 1, 2, 1, 1, 1],
                          immutable=["age", "children"], names=NAMES)
    # the image agreement tests' tolerances, in units of each feature's scale
    native = fgsm(table_model, x, y, epsilon=eps, constraints=c)
    peer = fgsm(table_model, x, y, epsilon=eps, constraints=c, backend="art")
    assert np.mean(np.abs(native - peer) / c.scale <= 1e-5) >= 0.999
    kwargs = dict(epsilon=eps, steps=20, step_size=eps / 8, random_start=False, constraints=c)
    native = pgd(table_model, x, y, keep_best=False, **kwargs)
    peer = pgd(table_model, x, y, backend="art", **kwargs)
    assert np.mean(np.abs(native - peer) / c.scale <= 1e-4) >= 0.999
    agree = np.asarray(table_model(native)).argmax(1) == np.asarray(table_model(peer)).argmax(1)
    assert agree.mean() >= 0.995


# -- the evaluation re-checks and records the constraints ---------------------------------------


def test_evaluate_records_constraints_and_summarises_moved_features(table_model, table):
    x, y = table[0][400:], table[1][400:]
    c = full_constraints()
    result = rl.evaluate(table_model, (x, y), "fgsm, pgd", "0, 0.5, 2", constraints=c,
                         checks=False, progress=False)
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["constraints"]["immutable"] == ["age"]
    assert record["constraints"]["integer"] == ["children"]
    assert any("cannot be changed" in line for line in record["constraints"]["description"])
    assert not result.is_image and result.feature_names == NAMES
    shifts = {s.name: s for s in result.feature_shifts}
    assert shifts["age"].moved == 0.0 and shifts["age"].max_change == 0.0
    assert max(s.moved for s in result.feature_shifts) > 0
    assert result.threat(0.5).constraints == c
    robust = [p.accuracy for p in result.worst_case.points]
    assert robust == sorted(robust, reverse=True) and robust[-1] <= result.clean_accuracy


def test_immutability_costs_the_attacker(table_model, table):
    x, y = table[0][400:], table[1][400:]
    free = rl.evaluate(table_model, (x, y), "pgd", "1", constraints=full_constraints(
        immutable=None), checks=False, progress=False)
    fixed = rl.evaluate(table_model, (x, y), "pgd", "1", constraints=full_constraints(
        immutable=["income", "debt", "children"]), checks=False, progress=False)
    assert fixed.worst_case.points[-1].accuracy > free.worst_case.points[-1].accuracy


def test_evaluate_refuses_an_attack_that_moves_an_immutable_feature(table_model, table,
                                                                     monkeypatch):
    from robustlab.attacks import spec as spec_module

    real_run = spec_module.AttackSpec.run

    def leaky(self, model, x, y, *, threat, **kwargs):
        out = real_run(self, model, x, y, threat=threat, **kwargs)
        out[:, 0] += 1.0  # "age" moves
        return out

    monkeypatch.setattr(spec_module.AttackSpec, "run", leaky)
    x, y = table[0][400:430], table[1][400:430]
    with pytest.raises(rl.RobustlabError, match="immutable feature 'age' changed"):
        rl.evaluate(table_model, (x, y), "fgsm", "0.5", constraints=full_constraints(),
                    checks=False, progress=False)


def test_evaluate_refuses_inputs_that_break_the_feature_types(table_model, table):
    x, y = table[0][:10].copy(), table[1][:10]
    x[0, 4] = 0.5
    with pytest.raises(ValidationError, match="integer feature 'children'"):
        rl.evaluate(table_model, (x, y), "fgsm", "0.1", constraints=full_constraints(),
                    checks=False, progress=False)


def test_pgd_judges_success_on_the_feasible_point(table_model, table):
    # A relaxed iterate that crosses the decision boundary can fall back when its integer and
    # one-hot features are rounded; PGD that stopped there was weaker than FGSM here (the
    # single-vs-iterative check failed). Scoring the feasible point after every chunk fixes it.
    x, y = table[0][400:], table[1][400:]
    result = rl.evaluate(table_model, (x, y), "fgsm, pgd, square", "0.5, 1",
                         constraints=full_constraints(), checks=False, progress=False)
    fgsm_curve, pgd_curve, square_curve = result.curves
    for f, p, s in zip(fgsm_curve.points, pgd_curve.points, square_curve.points, strict=True):
        assert p.accuracy <= f.accuracy + 0.01 and p.accuracy <= s.accuracy + 0.02
    only_fgsm = ~result.attack_masks[fgsm_curve.label] & result.attack_masks[pgd_curve.label]
    assert only_fgsm.sum(axis=0).max() <= 0.03 * len(y)  # before the fix: a third of them


# -- any rank: the classic Flatten(input_shape=(28, 28)) model fed (N, 28, 28) arrays ----------


def test_a_flatten_model_on_rank_3_arrays_gets_a_full_report(digits, tmp_path):
    x_train, x_test = digits.x_train[..., 0], digits.x_test[:120, ..., 0]  # (N, 8, 8)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, digits.y_train, epochs=5, verbose=0)
    result = rl.evaluate(model, (x_test, digits.y_test[:120]), "fgsm, pgd, square",
                         "0, 0.1, 0.2", n_check=60, progress=False)
    assert result.is_image and result.input_shape == (8, 8)
    assert result.example_images["adversarial"].shape[1:] == (8, 8)
    assert len(result.checks) >= 9 and result.convergence is not None  # every check ran
    paths = rl.write_report(result, tmp_path / "flat")
    assert "<img" in paths["html"].read_text(encoding="utf-8")
    x_adv = rl.pgd(model, x_test, digits.y_test[:120], epsilon=0.1, norm="l2", restarts=2)
    assert x_adv.shape == x_test.shape
    assert np.sqrt(((x_adv - x_test) ** 2).sum(axis=(1, 2))).max() <= 0.1 + 1e-5


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_a_count_may_move_by_exactly_its_budget(norm):
    c = Constraints.build((3,), bounds=(0.0, [9.0, 1.0, 1.0]), integer=[0],
                          categorical=[[1, 2]])
    x = np.array([[3, 1, 0]], np.float32)
    out = enforce_threat_model(np.array([[4, 1, 0]], np.float32), x,
                               ThreatModel(1.0, norm, c.bounds, c))
    assert out.tolist() == [[4, 1, 0]]


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_float32_spacing_of_large_values_never_carries_a_feature_out_of_the_ball(norm):
    # a timestamp near 1.7e9 is representable only in steps of 128 in float32: a budget of
    # 100 cannot move it, and the projection must not round it 128 away
    c = Constraints.build((2,), bounds=([1.6e9, 0.0], [1.8e9, 1.0]), scale=[1e4, 1.0],
                          integer=[0])
    x = np.array([[1.7e9, 0.5]], np.float32)
    threat = ThreatModel(0.01, norm, c.bounds, c)
    out = enforce_threat_model(x + np.array([[100.0, 0.01]], np.float32), x, threat)
    assert threat.violation(out, x) is None and out[0, 0] == x[0, 0]


def test_catalogue_attacks_take_constraints_and_stay_feasible(table_model, table):
    from robustlab.attacks import apgd, auto_attack, deepfool, square

    x, y = table[0][:40], table[1][:40]
    c = full_constraints(immutable=["income"])
    threat = ThreatModel.parse(1.0, "linf", None, c)
    broke = {}
    for attack, kwargs in ((apgd, {"steps": 10}), (square, {"steps": 20}),
                           (deepfool, {"norm": "linf"})):
        out = attack(table_model, x, y, epsilon=1.0, constraints=c, **kwargs)
        assert threat.violation(out, x) is None, attack.__name__
        assert np.array_equal(out[:, 1], x[:, 1])
        broke[attack.__name__] = float(np.mean(np.asarray(table_model(out)).argmax(1) != y))
    assert max(broke.values()) > 0.2, broke  # they attack, through the padded image view
    with pytest.raises(ValidationError, match="at least 3 classes for auto_attack"):
        auto_attack(table_model, x, y, epsilon=1.0, constraints=c)
    with pytest.raises(ValidationError, match="at least 3 classes for attack 'autoattack'"):
        rl.AttackSpec("autoattack").check_model(2)


def test_bounds_given_with_constraints_only_narrow_them():
    c = full_constraints()
    narrowed = ThreatModel.parse(0.1, "linf", (np.full(F, -5.0), np.full(F, 50.0)), c)
    assert narrowed.constraints.low.tolist() == c.low.tolist()  # -5 would widen: ignored
    assert narrowed.constraints.high[0] == 50 and narrowed.constraints.high[1] == 10
    assert ThreatModel.parse(0.1, "linf", (0.0, 5.0), c).constraints.high.max() == 5


def test_compare_refuses_results_made_under_different_threat_models(table_model, table):
    x, y = table[0][400:440], table[1][400:440]
    kwargs = dict(checks=False, progress=False)
    free = rl.evaluate(table_model, (x, y), "fgsm", "0, 1", constraints=full_constraints(
        immutable=None), **kwargs)
    fixed = rl.evaluate(table_model, (x, y), "fgsm", "0, 1", constraints=full_constraints(),
                        **kwargs)
    with pytest.raises(ValidationError, match="share constraints"):
        rl.compare({"free": free, "fixed": fixed})
    assert rl.compare({"a": fixed, "b": fixed}).names == ("a", "b")
