"""The attack explorer driven without a browser: set widget values, click buttons, and check
that images, labels and norms change as they should."""

import numpy as np
import pytest

from robustlab.widgets import Explorer


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
    assert ex.w_adv.value.endswith("— fooled") or "fooled" not in ex.w_adv.value


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
