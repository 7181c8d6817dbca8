"""The attack explorer driven without a browser: set widget values, click buttons, and check
that images, labels and norms change as they should; and its session on its own, without
ipywidgets."""

import sys

import numpy as np
import pytest

from robustlab.errors import ValidationError
from robustlab.widgets import Explorer, ExplorerSession, ExplorerSettings, view_png


@pytest.fixture()
def explorer(digits_model, digits):
    ex = Explorer(digits_model, digits, attack="pgd", epsilon=0.05, steps=10,
                  curve_examples=40)
    ex.widget  # noqa: B018 - builds the widgets and runs the first attack
    return ex


def _first_fooled_at(ex, eps):
    for i in range(len(ex.x)):
        view = ex.attack(i, attack="pgd", epsilon=eps, steps=10)
        if not ex.attack(i, attack="pgd", epsilon=0.0, steps=10).fooled and view.fooled:
            return i
    raise AssertionError("no example fooled")


def test_epsilon_slider_changes_prediction_norms_and_image(explorer):
    ex = explorer
    i = _first_fooled_at(ex, 0.3)
    ex.w_index.value = i
    ex.w_eps.value = 0.0
    assert "fooled" not in ex.w_adv.value and ex.w_norms.value == "L∞ 0.0000, L2 0.0000"
    clean_text, image0 = ex.w_adv.value, ex.w_image.value
    ex.w_eps.value = 0.3
    assert ex.w_adv.value != clean_text and ex.w_adv.value.endswith("— fooled")
    linf = float(ex.w_norms.value.split(",")[0].split()[1])
    assert 0.0 < linf <= 0.3 + 1e-6
    assert ex.w_image.value != image0 and ex.w_image.value[:4] == b"\x89PNG"
    assert "error" not in ex.w_status.value


def test_returning_to_a_setting_comes_from_the_cache(explorer):
    ex = explorer
    ex.w_eps.value = 0.2
    first = ex.w_status.value
    assert "from cache" not in first
    ex.w_eps.value = 0.1
    ex.w_eps.value = 0.2
    assert ex.w_status.value.startswith("PGD-10, ε 0.2: from cache")
    assert ex.is_cached(0, attack="pgd", epsilon=0.2, steps=10)


def test_attack_steps_and_norm_controls(explorer):
    ex = explorer
    ex.w_attack.value = "fgsm"
    assert ex.w_status.value.startswith("FGSM, ε 0.05")
    ex.w_norm.value = "l2"
    assert ex.w_eps.max == ex.max_epsilon("l2") == 2.0
    assert ex.w_eps.value == pytest.approx(0.05 / 0.5 * 2.0)
    l2 = float(ex.w_norms.value.split("L2 ")[1])
    assert l2 <= ex.w_eps.value + 1e-5
    ex.w_attack.value = "pgd"
    ex.w_steps.value = 5
    assert ex.w_status.value.startswith("PGD-5, ε 0.2")


def test_next_fooled_jumps_to_an_example_the_attack_breaks(explorer):
    ex = explorer
    ex.w_eps.value = 0.15
    ex.w_index.value = 0
    ex.w_next.click()
    i = ex.w_index.value
    assert i > 0
    view = ex.attack(i, attack="pgd", epsilon=0.15, steps=10)
    assert view.fooled or view.clean_pred != view.label
    # the widget shows the example it jumped to ...
    assert ex.w_adv.value.endswith("— fooled") == view.fooled
    assert ex.w_clean.value.endswith(f"label {ex.class_names[view.label]}")
    assert "error" not in ex.w_status.value
    # ... and it is the first one after the start: none in between is clean-wrong or fooled
    for j in range(1, i):
        skipped = ex.attack(j, attack="pgd", epsilon=0.15, steps=10)
        assert skipped.clean_pred == skipped.label and not skipped.fooled, j


def test_errors_are_shown_in_the_widget(explorer, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("<b>device lost</b>")

    monkeypatch.setattr(explorer, "attack", boom)
    explorer.w_eps.value = 0.25
    assert "error: RuntimeError: &lt;b&gt;device lost&lt;/b&gt;" in explorer.w_status.value


def test_curve_tab_progress_plot_and_first_broken(explorer):
    ex = explorer
    ex.w_n.value = 40
    ex.w_curve_run.click()
    assert ex.w_progress.value == ex.w_progress.max == 8
    assert ex.w_curve.value[:4] == b"\x89PNG" and ex.w_first.value[:4] == b"\x89PNG"
    assert ex.w_curve_status.value.startswith("PGD-10 on 40 examples")
    result = ex.curve(40, attack="pgd", steps=10)
    accs = [p.accuracy for p in result.curves[0].points]
    assert accs[0] > 0.9 and accs[-1] < 0.1 and accs == sorted(accs, reverse=True)


def test_static_summary_and_bad_input(explorer, digits_model, digits):
    image = explorer.static_summary(indices=[0, 1], n_curve=30)
    assert image.data[:4] == b"\x89PNG"
    last = len(explorer.x) - 1
    with pytest.raises(ValueError, match=f"expected index <= {last}, got {last + 1}"):
        explorer.attack(last + 1)
    with pytest.raises(ValueError, match="expected attack to be one of"):
        Explorer(digits_model, digits, attack="nope")
    with pytest.raises(ValueError, match="expected epsilon >= 0"):
        explorer.attack(0, epsilon=-1)
    assert np.isfinite(explorer.attack(0, attack="square", epsilon=0.1, steps=50).linf)


def test_session_caches_views_without_ipywidgets(digits_model, digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # any import of it now fails
    session = ExplorerSession(digits_model, digits,
                              settings=ExplorerSettings(attack="FGSM", norm="inf"), seed=3)
    assert session.settings == ExplorerSettings(attack="fgsm", norm="linf")
    assert not session.is_cached(2, attack="fgsm", epsilon=0.1)
    view = session.attack(2, attack="fgsm", epsilon=0.1)
    assert session.is_cached(2, attack="fgsm", epsilon=0.1)
    # the same setting, however spelled, is the same object; FGSM ignores the steps slider
    assert session.attack(2, attack="FGSM", epsilon="0.1", norm="inf", steps=7) is view
    assert session.attack(2, attack="fgsm", epsilon=0.2) is not view
    assert view.index == 2 and view.label == digits.y_test[2] and view.attack == "FGSM"
    assert 0.0 < view.linf <= 0.1 + 1e-6
    assert np.array_equal(view.x, digits.x_test[2])
    assert view_png(view, session.class_names, session.bounds)[:4] == b"\x89PNG"
    assert session.max_epsilon("linf") == 0.5 and session.max_epsilon("l2") == 2.0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("attack", "nope", "expected attack to be one of .*, got 'nope'"),
    ("epsilon", -0.5, "expected epsilon >= 0, got -0.5"),
    ("epsilon", "a lot", "expected epsilon to be a number such as 0.3 or 8/255, got 'a lot'"),
    ("norm", "l3", "expected norm to be one of 'linf', 'l2', got 'l3'"),
    ("steps", 0, "expected steps >= 1, got 0"),
    ("curve_examples", "0", "expected curve_examples >= 1, got 0"),
])
def test_bad_settings_name_the_parameter(field, value, message):
    with pytest.raises(ValidationError, match=message):
        ExplorerSettings(**{field: value})
    with pytest.raises(ValidationError, match=message):
        ExplorerSettings().replace(**{field: value})


def test_session_rejects_bad_data_and_seed(digits_model, digits):
    with pytest.raises(ValidationError, match="expected data to be a Dataset or an \\(x, y\\) "
                                              "pair, got int"):
        ExplorerSession(digits_model, 3)
    with pytest.raises(ValidationError, match="expected seed >= 0, got -1"):
        ExplorerSession(digits_model, digits, seed=-1)
    with pytest.raises(ValidationError, match="expected top_k >= 1, got 0"):
        Explorer(digits_model, digits, top_k=0)


# ------------------------------------------------------------------ tabular data

HOSTILE = "<script>alert(1)</script>"
FEATURES = ("age", "income", "debt", HOSTILE, "a", "b")


@pytest.fixture(scope="module")
def tabular():
    """A seeded MLP on 6 synthetic features and a Dataset whose constraints make "age"
    immutable and name one feature with markup."""
    import keras

    from robustlab.data import Dataset
    from robustlab.types import Constraints

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, 1] + x[:, 2] - x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=10, verbose=0)
    constraints = Constraints.build((6,), bounds=(-5, 5), scale=x.std(0), immutable=["age"],
                                    names=FEATURES)
    data = Dataset("synthetic", x[:240], y[:240], x[240:], y[240:], ("no", "yes"),
                   constraints=constraints)
    return model, data


def test_tabular_explorer_shows_a_feature_table(tabular):
    model, data = tabular
    ex = Explorer(model, data, attack="pgd", epsilon=1.0, steps=10, curve_examples=30)
    assert not ex.is_image and ex.constraints is not None
    ex.widget  # noqa: B018 - builds the widgets and runs the first attack
    table = ex.w_features.value
    assert "error" not in ex.w_status.value and ex.w_image.value == b""
    assert "<table" in table and "clean prediction" in table and "adversarial prediction" in table
    assert "<script>" not in table
    view = ex.attack(0, attack="pgd", epsilon=1.0, steps=10)
    changed = np.flatnonzero(view.x_adv != view.x)
    assert len(changed) and 0 not in changed
    for i in changed:  # each changed feature, by name (escaped), with its values
        name = FEATURES[i].replace("<", "&lt;").replace(">", "&gt;")
        assert f">{name}</td><td>{float(view.x[i]):.4g}</td><td>{float(view.x_adv[i]):.4g}" \
               f"</td><td>{float(view.x_adv[i]) - float(view.x[i]):+.4g}</td>" in table
    assert ">age<" not in table
    ex.w_curve_run.click()
    assert "error" not in ex.w_curve_status.value
    assert "<table" in ex.w_shifts.value and ex.w_first.value == b""
    result = ex.curve(30, attack="pgd", steps=10)
    assert result.constraints == data.constraints and not result.is_image
    summary = ex.static_summary(indices=[0, 1], n_curve=30)
    assert "example #1" in summary.data and "data:image/png;base64," in summary.data


def test_tabular_attacks_keep_immutable_features(tabular):
    model, data = tabular
    session = ExplorerSession(model, data)
    assert session.feature_names == FEATURES and session.bounds == (-5.0, 5.0)
    scale = data.constraints.scale
    for attack in ("fgsm", "pgd"):
        for i in range(5):
            view = session.attack(i, attack=attack, epsilon=1.5, steps=10)
            assert view.x_adv[0] == view.x[0]  # age is immutable: bit-identical
            assert np.all(np.abs(view.x_adv - view.x) / scale <= 1.5 + 1e-4)
            assert view.linf <= 1.5 + 1e-4  # measured in units of each feature's scale
    assert session.max_epsilon("linf") > 1.0
    # without the dataset's constraints the same attack moves age too
    plain = ExplorerSession(model, (data.x_test, data.y_test),
                            constraints=data.constraints.replace(immutable=None))
    assert plain.attack(0, attack="fgsm", epsilon=1.5).x_adv[0] != data.x_test[0, 0]
