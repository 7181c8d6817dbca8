"""DP-SGD: the accountant against published settings, per-example clipping against a slow
reference loop, the noise scale, Poisson sampling, and DP training inside Keras fit (with
adversarial training, checkpoints and the ε log)."""

import math
import shutil

import numpy as np
import pytest

from robustlab.errors import RobustlabWarning, ValidationError
from robustlab.privacy import (
    DPConfig,
    default_delta,
    epsilon_spent,
    ghost_supported,
    noise_multiplier_for,
    plan_dp,
    poisson_batches,
    private_gradients,
)
from robustlab.training import AdversarialModel, TrainingConfig, train_adversarial

# ------------------------------------------------------------------------------ the accountant


def test_accountant_matches_the_published_mnist_setting():
    """Abadi et al.'s widely quoted MNIST setting (n = 60,000, batch 256, σ = 1.1, 60 epochs,
    δ = 1e-5): ε ≈ 3 under RDP (TensorFlow Privacy's tutorial prints 2.92 with its coarser
    orders; dp-accounting's finer orders give 2.60), and PLD is tighter still."""
    steps = 60 * math.ceil(60_000 / 256)
    rdp = epsilon_spent(1.1, 256 / 60_000, steps, 1e-5, accountant="rdp")
    pld = epsilon_spent(1.1, 256 / 60_000, steps, 1e-5, accountant="pld")
    assert rdp == pytest.approx(2.60, abs=0.03)
    assert 2.0 < pld < rdp


def test_epsilon_grows_with_steps_and_falls_with_noise():
    q, delta = 0.01, 1e-5
    assert epsilon_spent(1.0, q, 0, delta) == 0
    assert epsilon_spent(0.0, q, 10, delta) == math.inf
    assert epsilon_spent(1.0, q, 100, delta) < epsilon_spent(1.0, q, 1000, delta)
    assert epsilon_spent(2.0, q, 1000, delta) < epsilon_spent(1.0, q, 1000, delta)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibrated_noise_spends_the_target_and_no_more(accountant):
    q, steps, delta = 64 / 1437, 23 * 15, 1e-4
    sigma = noise_multiplier_for(2.0, delta, q, steps, accountant=accountant)
    spent = epsilon_spent(sigma, q, steps, delta, accountant=accountant)
    assert spent <= 2.0
    assert spent == pytest.approx(2.0, rel=0.01)  # not needlessly noisy


def test_default_delta_is_well_below_one_over_n():
    for n in (10, 999, 1000, 1437, 8000, 60_000, 100_000):
        assert default_delta(n) <= 0.1 / n
        assert default_delta(n) > 0.01 / n  # the largest such power of ten
    assert default_delta(8_000) == pytest.approx(1e-5)
    assert default_delta(60_000) == pytest.approx(1e-6)


def test_a_delta_of_one_over_n_or_more_warns():
    with pytest.warns(RobustlabWarning, match="1/n"):
        plan_dp(DPConfig(noise_multiplier=1.0, delta=1e-2), n=100, batch_size=10, epochs=1)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "noise_multiplier or target_epsilon"),
    ({"noise_multiplier": -1}, "noise_multiplier"),
    ({"noise_multiplier": 1, "l2_clip": 0}, "l2_clip"),
    ({"noise_multiplier": 1, "l2_clip": math.inf}, "finite l2_clip"),
    ({"target_epsilon": 0}, "target_epsilon"),
    ({"noise_multiplier": 1, "delta": 1.5}, "delta"),
    ({"noise_multiplier": 1, "accountant": "moments"}, "accountant"),
    ({"noise_multiplier": 1, "clipping": "fast"}, "clipping"),
])
def test_bad_dp_settings_name_the_parameter(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        DPConfig(**kwargs)


# --------------------------------------------------------------------------- Poisson sampling


def test_poisson_batches_include_each_example_with_probability_q():
    n, q, steps = 500, 0.05, 400
    batches = poisson_batches(n, q, steps, seed=3, epoch=0)
    sizes = np.array([len(b) for b in batches])
    assert sizes.mean() == pytest.approx(n * q, rel=0.05)
    assert sizes.std() == pytest.approx(math.sqrt(n * q * (1 - q)), rel=0.15)  # Binomial
    counts = np.bincount(np.concatenate(batches), minlength=n)
    assert counts.mean() / steps == pytest.approx(q, rel=0.05)
    assert all(len(np.unique(b)) == len(b) for b in batches)  # no example twice in a batch
    again = poisson_batches(n, q, steps, seed=3, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = poisson_batches(n, q, steps, seed=3, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))


# ----------------------------------------------------------------------- per-example clipping


def _ce(forward, x, y):
    import tensorflow as tf

    logits = forward(x)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits), logits


def _no_dropout(model):
    import keras

    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return model


def _models():
    import keras

    from robustlab.models import build_mlp, build_small_cnn

    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="valid", name="c")(inputs)
    h = keras.layers.Flatten()(keras.layers.LayerNormalization(name="ln")(h))
    layer_norm = keras.Model(inputs, keras.layers.Dense(10)(h), name="layer_norm")
    seq = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, dilation_rate=2),
                            keras.layers.Flatten(), keras.layers.Dense(10)], name="sequential")
    return {"cnn": _no_dropout(build_small_cnn((8, 8, 1), 10, seed=0)),
            "mlp": build_mlp((8, 8, 1), 10, seed=0), "layer_norm": layer_norm,
            "sequential": seq}


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("name", ["cnn", "mlp", "sequential", "layer_norm"])
@pytest.mark.parametrize("method", ["auto", "ghost", "vectorized"])
def test_clipped_sums_equal_a_slow_per_example_loop(models, digits, name, method):
    import tensorflow as tf

    model = models[name]
    if method == "ghost" and not ghost_supported(model):
        with pytest.raises(ValidationError, match="vectorized"):
            private_gradients(model, _ce, (digits.x_test[:4], digits.y_test[:4]), l2_clip=1.0,
                              method=method)
        return
    x, y = digits.x_test[:24], digits.y_test[:24]
    clip = 0.3
    reference = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    norms = []
    for i in range(len(x)):  # the definition: one example at a time
        with tf.GradientTape() as tape:
            loss = _ce(lambda v: model(v, training=True), x[i:i + 1], y[i:i + 1])[0][0]
        grads = tape.gradient(loss, model.trainable_variables)
        norm = math.sqrt(sum(float(tf.reduce_sum(tf.square(g))) for g in grads))
        norms.append(norm)
        reference = [r + min(1.0, clip / norm) * g.numpy() for r, g in zip(reference, grads,
                                                                            strict=True)]
    sums, got_norms, losses, _ = tf.function(lambda x, y: private_gradients(
        model, _ce, (x, y), l2_clip=clip, method=method))(tf.constant(x), tf.constant(y))
    assert np.allclose(got_norms.numpy(), norms, rtol=1e-4)
    assert max(norms) > clip > min(norms) * 0  # some examples are clipped
    for got, want in zip(sums, reference, strict=True):
        assert np.allclose(got.numpy(), want, atol=2e-5), name


def test_auto_picks_ghost_where_it_can(models):
    assert ghost_supported(models["cnn"]) and ghost_supported(models["mlp"])
    assert ghost_supported(models["sequential"])
    assert not ghost_supported(models["layer_norm"])  # LayerNormalization's own weights


def test_batch_normalization_is_refused():
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3)(keras.layers.BatchNormalization(name="bn")(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValidationError, match="BatchNormalization.*'bn'"):
        private_gradients(model, _ce, (np.zeros((2, 4), np.float32), np.zeros(2, np.int32)),
                          l2_clip=1.0)


# ------------------------------------------------------------------ the update and its noise


def _trainer(method="standard", *, dp=None, seed=0, lr=0.1):
    import keras

    from robustlab.models import build_small_cnn

    model = _no_dropout(build_small_cnn((8, 8, 1), 10, seed=seed))
    trainer = AdversarialModel(model, TrainingConfig(method, epsilon=0.1, steps=2), dp=dp)
    trainer.compile(optimizer=keras.optimizers.SGD(lr))
    trainer.optimizer.build(model.trainable_variables)
    return trainer


def _plan(sigma, clip, batch, n=1000, clipping="auto"):
    return plan_dp(DPConfig(noise_multiplier=sigma, l2_clip=clip, clipping=clipping), n=n,
                   batch_size=batch, epochs=1)


@pytest.mark.parametrize("method", ["standard", "pgd", "trades"])
@pytest.mark.parametrize("clipping", ["ghost", "vectorized"])
def test_without_noise_or_clipping_the_update_is_the_ordinary_one(digits, method, clipping):
    x, y = digits.x_train[:32], digits.y_train[:32]
    plain, private = _trainer(method), _trainer(method, dp=_plan(0.0, math.inf, 32,
                                                                    clipping=clipping))
    plain.train_on_batch(x, y)
    private.train_on_batch(x, y, sample_weight=np.ones(32, np.float32))
    for a, b in zip(plain.model.get_weights(), private.model.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-6)
    assert not np.allclose(plain.model.get_weights()[0], _trainer().model.get_weights()[0])


def test_noise_has_the_std_of_sigma_times_clip_over_the_expected_batch(digits):
    """All rows weighted 0: the update is the noise alone, N(0, (σC)²) / B per weight."""
    sigma, clip, batch = 3.0, 2.0, 16
    trainer = _trainer(dp=_plan(sigma, clip, batch), lr=1.0)
    before = np.concatenate([w.reshape(-1) for w in trainer.model.get_weights()])
    trainer.train_on_batch(digits.x_train[:batch], digits.y_train[:batch],
                           sample_weight=np.zeros(batch, np.float32))
    after = np.concatenate([w.reshape(-1) for w in trainer.model.get_weights()])
    step = after - before  # SGD with lr 1: minus the noisy mean gradient
    expected = sigma * clip / batch
    assert step.size > 20_000
    assert step.std() == pytest.approx(expected, rel=0.03)
    assert abs(step.mean()) < 4 * expected / math.sqrt(step.size)
    # Gaussian tails: about 0.27 % beyond 3 standard deviations
    assert np.mean(np.abs(step) > 3 * expected) == pytest.approx(0.0027, abs=0.0015)


# ----------------------------------------------------------------- DP training inside Keras fit


def _fresh():
    from robustlab.models import build_small_cnn

    return build_small_cnn((8, 8, 1), 10, seed=0)


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(n_train=320, n_test=64, seed=0)


def test_dp_training_logs_epsilon_every_epoch_and_learns(digits):
    dp = DPConfig(noise_multiplier=1.0, l2_clip=1.0)
    model, info = train_adversarial(_fresh(), digits, method="standard", epochs=6,
                                    batch_size=64, learning_rate=3e-3, dp=dp)
    eps = info.history["epsilon"]
    assert len(eps) == 6 and all(a < b for a, b in zip(eps, eps[1:], strict=False))
    plan = plan_dp(dp, n=len(digits.x_train), batch_size=64, epochs=6)
    assert eps[-1] == pytest.approx(plan.epsilon_after(6))
    assert info.privacy["epsilon"] == pytest.approx(eps[-1])
    assert info.privacy["sampling"] == "poisson" and info.privacy["delta"] < 1 / 1437
    assert info.privacy["epochs_trained"] == 6
    from conftest import accuracy

    assert accuracy(model, digits.x_test, digits.y_test) > 0.6  # learns through the noise


def test_target_epsilon_calibrates_the_noise(small):
    _, info = train_adversarial(_fresh(), small, method="standard", epochs=3, batch_size=32,
                                dp=DPConfig(target_epsilon=2.0))
    assert info.privacy["epsilon"] == pytest.approx(2.0, rel=0.01)
    assert info.privacy["epsilon"] <= 2.0


def test_a_fixed_noise_with_a_budget_stops_within_it(small):
    dp = DPConfig(noise_multiplier=1.5, target_epsilon=2.0)
    plan = plan_dp(dp, n=len(small.x_train), batch_size=32, epochs=50)
    within = max(e for e in range(1, 51) if plan.epsilon_after(e) <= 2.0)
    assert within < 50
    _, info = train_adversarial(_fresh(), small, method="standard", epochs=50, batch_size=32,
                                dp=dp)
    assert info.privacy["epochs_trained"] == within
    assert info.privacy["epsilon"] <= 2.0 < plan.epsilon_after(within + 1)
    with pytest.raises(ValidationError, match="one epoch"):
        train_adversarial(_fresh(), small, epochs=2, batch_size=32,
                          dp=DPConfig(noise_multiplier=0.3, target_epsilon=0.1))


def test_dp_with_pgd_adversarial_training(small):
    _, info = train_adversarial(_fresh(), small, method="pgd", epsilon=0.1, steps=2, epochs=2,
                                batch_size=32, dp=DPConfig(noise_multiplier=1.0))
    assert set(info.history) >= {"loss", "clean_accuracy", "adv_accuracy", "epsilon"}
    assert info.privacy["epsilon"] > 0


def test_an_interrupted_dp_run_resumes_bit_identically(small, tmp_path):
    import keras

    dp = DPConfig(noise_multiplier=1.0, l2_clip=0.5)
    settings = {"method": "standard", "batch_size": 32, "seed": 1, "dp": dp}
    whole, info = train_adversarial(_fresh(), small, epochs=3, **settings)

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adversarial(_fresh(), small, epochs=3, checkpoint_dir=tmp_path / "c",
                          callbacks=[Crash()], **settings)
    resumed, again = train_adversarial(_fresh(), small, epochs=3, checkpoint_dir=tmp_path / "c",
                                       **settings)
    assert again.initial_epoch == 2
    assert again.privacy["epsilon"] == pytest.approx(info.privacy["epsilon"])
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        assert np.array_equal(a, b)
    shutil.rmtree(tmp_path / "c", ignore_errors=True)


def test_clean_fraction_and_fixed_batches_are_refused_with_dp(digits):
    """Both would let one example's presence change another's contribution."""
    import keras

    from robustlab.models import build_small_cnn

    plan = _plan(1.0, 1.0, 16)
    with pytest.raises(ValidationError, match="clean_fraction=0 with DP-SGD"):
        AdversarialModel(build_small_cnn((8, 8, 1), 10), TrainingConfig(
            "pgd", epsilon=0.1, clean_fraction=0.5), dp=plan)
    trainer = AdversarialModel(build_small_cnn((8, 8, 1), 10), dp=plan)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValidationError, match="Poisson-sampled batches"):
        trainer.train_on_batch(digits.x_train[:16], digits.y_train[:16])


def test_frozen_layers_do_not_count_in_the_ghost_norms(digits):
    import tensorflow as tf

    from robustlab.models import build_small_cnn

    model = _no_dropout(build_small_cnn((8, 8, 1), 10, seed=1))
    model.get_layer("conv1").trainable = False
    x, y = tf.constant(digits.x_test[:8]), tf.constant(digits.y_test[:8])
    ghost = private_gradients(model, _ce, (x, y), l2_clip=0.1, method="ghost")
    vectorized = private_gradients(model, _ce, (x, y), l2_clip=0.1, method="vectorized")
    assert len(ghost[0]) == len(model.trainable_variables) < len(model.variables)
    assert np.allclose(ghost[1].numpy(), vectorized[1].numpy(), rtol=1e-4)
    for a, b in zip(ghost[0], vectorized[0], strict=True):
        assert np.allclose(a.numpy(), b.numpy(), atol=2e-6)
