"""A model's name is only a label: names TensorFlow refuses as graph name scopes ("my model",
"modèle", "cnn(1)") must not break attacks, evaluation or adversarial training, and must
still read as given afterwards."""

import numpy as np
import pytest

from robustlab.attacks import fgsm, pgd
from robustlab.inference import GraphSafeNames, graph_scope_name

NAMES = ["my model", "modèle", "cnn(1)"]
EPS = 0.1


def linf(x_adv, x):
    return float(np.abs(x_adv.astype(np.float64) - x).max())


def named_model(name, kind, layer_name=None):
    """A tiny untrained classifier of 8x8x1 images called ``name`` (built fresh: Keras keeps a
    failed name scope on its stack, so a model that failed once would hide the bug)."""
    import keras

    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(10, name=layer_name)
    if kind == "sequential":
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), dense],
                                name=name)
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name=name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["sequential", "functional"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_work_whatever_the_model_name(batch, name, kind, attack):
    model = named_model(name, kind)
    x, y = batch  # digits: 8x8x1 images
    run = fgsm if attack == "fgsm" else (lambda *a, **k: pgd(*a, steps=3, **k))
    x_adv = run(model, x, y, epsilon=EPS)
    assert x_adv.shape == x.shape
    assert 0 < linf(x_adv, x) <= EPS * (1 + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert model.name == name  # still the user's label, for reports


def test_layer_names_inside_the_model_too(batch):
    model = named_model("outer model", "functional", layer_name="last layer (logits)")
    x, y = batch
    x_adv = pgd(model, x, y, epsilon=EPS, steps=2)
    assert 0 < linf(x_adv, x) <= EPS * (1 + 1e-6)
    assert [layer.name for layer in model.layers][-1] == "last layer (logits)"


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_whatever_the_model_name(batch, name):
    from robustlab.evaluate import evaluate

    model = named_model(name, "functional")
    result = evaluate(model, batch, "fgsm, pgd", "0, 0.1", checks=False)
    assert model.name == name and result.model["name"] == name  # the report shows it as given
    for curve in result.curves:
        assert curve.points[0].accuracy == pytest.approx(result.clean_accuracy)
        assert curve.points[1].max_linf <= EPS + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_adversarial_training_whatever_the_model_name(digits, name):
    from robustlab.training import AdversarialModel, TrainingConfig

    model = named_model(name, "sequential")
    trainer = AdversarialModel(model, TrainingConfig("pgd", epsilon=EPS, steps=2))
    trainer.compile(optimizer="adam", jit_compile=False)
    history = trainer.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, batch_size=32,
                          verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    trainer.evaluate(digits.x_test[:32], digits.y_test[:32], verbose=0)
    assert trainer.predict(digits.x_test[:32], verbose=0).shape == (32, 10)
    assert model.name == name


@pytest.mark.parametrize(("name", "expected"), [
    ("my model", "my_model"), ("modèle", "mod_le"), ("cnn(1)", "cnn_1_"),
    ("_private", "x_private"), ("conv2d_1", "conv2d_1"), ("", "")])
def test_graph_scope_name(name, expected):
    assert graph_scope_name(name) == expected


def test_names_come_back_after_an_error():
    model = named_model("my model", "functional", layer_name="my dense")
    with pytest.raises(RuntimeError), GraphSafeNames(model):
        assert model.name == "my_model"
        raise RuntimeError("boom")
    assert model.name == "my model" and model.layers[-1].name == "my dense"


@pytest.mark.parametrize("backend", ["cleverhans", "art"])
def test_peer_backends_and_plain_training_whatever_the_model_name(batch, digits, backend):
    from robustlab.training import train

    model = named_model("my model", "functional")
    x, y = batch
    for attack in (fgsm, lambda *a, **k: pgd(*a, steps=2, **k)):
        x_adv = attack(model, x, y, epsilon=EPS, backend=backend)
        assert 0 < linf(x_adv, x) <= EPS * (1 + 1e-6)
    info = train(model, digits.subset(n_train=64, n_test=16), epochs=1, seed=0)
    assert len(info["history"]["loss"]) == 1 and model.name == "my model"
