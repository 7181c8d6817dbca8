"""The wider catalogue through ART behind the same interface, and the DLR / margin losses."""

import numpy as np
import pytest
from conftest import accuracy, predictions

from robustlab.attacks import AttackSpec, parse_attacks, pgd
from robustlab.errors import ValidationError
from robustlab.types import Loss, ThreatModel


def test_aliases_labels_and_shared_defaults():
    specs = parse_attacks("fgsm, pgd-margin, apgd-dlr, square, cw, deepfool, autoattack",
                          steps=20, restarts=2, backend="native")
    assert [s.label for s in specs] == ["FGSM", "PGD-20×2 (margin)", "APGD-DLR-20×2",
                                        "Square-1000", "CW-L2", "DeepFool", "APGD-CE-100",
                                        "APGD-T-100", "Square-5000"]
    assert specs[1].name == "pgd" and specs[1].loss is Loss.MARGIN
    assert specs[2].backend.value == "native"  # APGD is native now; ART's is the cross-check
    assert all(s.backend.value == "art" for s in specs[4:6])
    assert [s.label for s in parse_attacks("apgd-dlr, autoattack", backend="art")] == \
        ["APGD-DLR-100 [art]", "AutoAttack"]
    assert specs[3].to_dict() == {"name": "square", "steps": 1000, "restarts": 1,
                                  "label": "Square-1000", "backend": "native"}
    assert AttackSpec("pgd-dlr").label == "PGD-40 (dlr)"


@pytest.mark.parametrize(("value", "match"), [
    ({"name": "square", "rel_step_size": 0.1}, "expected no rel_step_size for attack 'square'"),
    ({"name": "square", "backend": "cleverhans"}, "backend to be one of"),
    ({"name": "pgd", "loss": "margin", "backend": "art"}, "only the native backend"),
    ({"name": "apgd", "loss": "margin"}, "expected loss to be one of"),
    ({"name": "pgd-margin", "loss": "dlr"}, "expected loss 'margin' for attack"),
    ({"name": "autoattack", "steps": 5}, "expected no steps"),
    ({"name": "boom"}, "expected attack to be one of"),
])
def test_bad_specs_name_the_problem(value, match):
    with pytest.raises(ValidationError, match=match):
        AttackSpec.parse(value)


def test_dlr_is_scale_invariant(digits_model, digits):
    import keras

    inputs = keras.Input(digits_model.input_shape[1:])
    scaled = keras.Model(inputs, keras.layers.Rescaling(1000.0)(digits_model(inputs)))
    x, y = digits.x_test[:64], digits.y_test[:64]
    a = pgd(digits_model, x, y, epsilon=0.1, steps=10, loss="dlr", seed=0)
    b = pgd(scaled, x, y, epsilon=0.1, steps=10, loss="dlr", seed=0)
    pa = predictions(digits_model, a)
    pb = predictions(digits_model, b)
    assert np.mean(pa == pb) >= 0.95
    ce = pgd(scaled, x, y, epsilon=0.1, steps=10, loss="ce", seed=0)
    # CE on saturated logits barely moves: DLR fools 20 points more
    assert accuracy(digits_model, b, y) < accuracy(digits_model, ce, y) - 0.2


def test_dlr_needs_three_classes():
    from robustlab.models import build_small_cnn

    model = build_small_cnn((8, 8, 1), 2, seed=0)
    with pytest.raises(ValidationError, match="at least 3 classes for loss='dlr'"):
        pgd(model, np.zeros((2, 8, 8, 1), np.float32), [0, 1], epsilon=0.1, loss="dlr")


def _run(spec, model, x, y, eps, norm):
    """The registry's inner path (as evaluate calls it): validated arrays, a ThreatModel."""
    return spec.run(model, x, y, threat=ThreatModel.parse(eps, norm), seed=0, batch_size=64,
                    jit=False, ids=np.arange(len(x)))


@pytest.mark.slow
@pytest.mark.parametrize("spec", [
    {"name": "apgd-ce", "steps": 20}, {"name": "apgd-dlr", "steps": 20},
    {"name": "square", "steps": 200}, {"name": "cw", "steps": 5},
    {"name": "deepfool", "steps": 20}])
def test_catalogue_attacks_respect_the_threat_model_and_break_examples(digits_model, digits,
                                                                        spec):
    x, y = digits.x_test[:40], digits.y_test[:40]
    norm = "l2" if spec["name"] in ("cw", "deepfool") else "linf"
    eps = 1.5 if norm == "l2" else 0.15
    s = AttackSpec.parse(spec)
    x_adv = _run(s, digits_model, x, y, eps, norm)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-5) and x_adv.min() >= 0 and x_adv.max() <= 1
    clean, adv = accuracy(digits_model, x, y), accuracy(digits_model, x_adv, y)
    assert adv < clean - 0.2, (s.label, clean, adv)
    again = _run(s, digits_model, x, y, eps, norm)
    np.testing.assert_allclose(again, x_adv, atol=1e-6)  # seeded


@pytest.mark.slow
def test_art_autoattack_runs_behind_the_interface(digits_model, digits):
    x, y = digits.x_test[:8], digits.y_test[:8]
    x_adv = _run(AttackSpec("autoattack"), digits_model, x, y, 0.2, "linf")
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6
    assert accuracy(digits_model, x_adv, y) <= 0.5
