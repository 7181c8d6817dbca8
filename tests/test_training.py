"""Adversarial training inside Keras fit: the crafted batches respect the threat model, the
methods harden a model, the guard catches collapse, and an interrupted run resumes."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import ROOT, accuracy

from robustlab.attacks import pgd
from robustlab.errors import CheckpointError, RobustlabWarning, ValidationError
from robustlab.stats import perturbation_norms
from robustlab.training import (
    AdversarialModel,
    Checkpoint,
    OverfitGuard,
    TrainingConfig,
    train_adversarial,
)


def fresh_model(seed=0):
    from robustlab.models import build_small_cnn

    return build_small_cnn((8, 8, 1), 10, seed=seed)


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.2), ("l2", 1.0)])
def test_crafted_batches_stay_in_the_threat_model(digits_model, digits, method, norm, eps):
    import tensorflow as tf

    trainer = AdversarialModel(digits_model, TrainingConfig(method, epsilon=eps, norm=norm,
                                                            steps=3))
    x, y = digits.x_test[:64], digits.y_test[:64]
    x_adv = trainer.craft(tf.constant(x), tf.constant(y.astype(np.int64))).numpy()
    linf, l2 = perturbation_norms(x_adv, x)
    used = linf if norm == "linf" else l2
    assert used.max() <= eps * (1 + 1e-5) + 1e-6 and used.max() > 0.3 * eps
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    if method != "trades":  # the CE attacks fool the standard model on many examples
        assert accuracy(digits_model, x_adv, y) < accuracy(digits_model, x, y) - 0.1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "mart"}, "expected method to be one of"),
    ({"epsilon": 0}, "epsilon > 0"),
    ({"epsilon": -1}, "expected epsilon >= 0"),
    ({"steps": 0}, "expected steps >= 1"),
    ({"clean_fraction": 1.0}, "clean_fraction"),
    ({"method": "trades", "clean_fraction": 0.5}, "clean_fraction=0"),
    ({"ramp_epochs": -1}, "ramp_epochs"),
    ({"norm": "l7"}, "expected norm"),
])
def test_bad_config_names_the_parameter(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        TrainingConfig(**kwargs)


def test_config_defaults_and_ramp():
    assert TrainingConfig("fgsm_rs", epsilon=0.3).step_size == pytest.approx(0.375)
    assert TrainingConfig("pgd", epsilon=0.3, steps=10).step_size == pytest.approx(0.075)
    assert TrainingConfig("pgd", epsilon="8/255").epsilon == pytest.approx(8 / 255)
    ramp = TrainingConfig("pgd", epsilon=0.3, ramp_epochs=3)
    assert [ramp.epsilon_at(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert TrainingConfig("standard", epsilon=0).epsilon == 0


@pytest.mark.slow
def test_pgd_training_hardens_the_model(digits):
    import keras

    keras.utils.set_random_seed(0)
    base, _ = train_adversarial(fresh_model(), digits, method="standard", epochs=12,
                                batch_size=64, seed=0)
    hard, info = train_adversarial(fresh_model(), digits, method="pgd", epsilon=0.2, steps=5,
                                   ramp_epochs=3, epochs=12, batch_size=64, seed=0)
    x, y = digits.x_test[:200], digits.y_test[:200]
    assert set(info.history) >= {"loss", "clean_accuracy", "adv_accuracy"}
    assert len(info.history["loss"]) == 12 and info.seconds > 0
    assert accuracy(hard, x, y) > 0.85
    robust = {name: accuracy(m, pgd(m, x, y, epsilon=0.2, steps=20, seed=1), y)
              for name, m in (("base", base), ("hard", hard))}
    assert robust["hard"] > robust["base"] + 0.3, robust


@pytest.mark.parametrize("method", ["fgsm_rs", "trades"])
def test_other_methods_train(digits, method):
    model, info = train_adversarial(fresh_model(), digits, method=method, epsilon=0.1,
                                    steps=2, epochs=2, batch_size=128, guard=False)
    assert all(np.isfinite(info.history["loss"]))
    assert info.history["clean_accuracy"][-1] > info.history["clean_accuracy"][0]


def test_guard_restores_the_best_weights_on_collapse(digits_model, digits):
    import keras

    model = keras.models.clone_model(digits_model)
    model.set_weights(digits_model.get_weights())
    guard = OverfitGuard(digits.x_test[:100], digits.y_test[:100], epsilon=0.05, steps=5,
                         drop=0.2)
    guard.set_model(model)
    logs = {}
    guard.on_epoch_end(0, logs)
    good = [np.array(w) for w in model.get_weights()]
    assert logs["guard_pgd_accuracy"] > 0.5
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.5, w.shape) for w in good])  # a collapse
    with pytest.warns(RobustlabWarning, match="catastrophic overfitting"):
        guard.on_epoch_end(1, logs)
    assert guard.collapsed_epoch == 1 and model.stop_training
    for a, b in zip(model.get_weights(), good, strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_from_other_settings_is_refused(digits, tmp_path):
    small = digits.subset(n_train=200, n_test=50, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a run that stops by itself keeps no checkpoint; fake an interrupted one
        trainer = AdversarialModel(fresh_model(), TrainingConfig("pgd", epsilon=0.1))
        trainer.compile()
        trainer.fit(small.x_train, small.y_train, epochs=1, batch_size=100, verbose=0,
                    callbacks=[Checkpoint(tmp_path, {"epsilon": 0.1})])
    assert json.loads((tmp_path / "checkpoint.json").read_text())["completed_epochs"] == 1
    with pytest.raises(ValidationError, match="same training settings"):
        train_adversarial(fresh_model(), small, method="pgd", epsilon=0.2, epochs=2,
                          checkpoint_dir=tmp_path)


SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras, numpy as np
    from robustlab import load
    from robustlab.models import build_small_cnn
    from robustlab.training import train_adversarial

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == int(os.environ.get("KILL_AFTER", "0")):
                os._exit(17)  # like a crash: no cleanup, no final save

    out = sys.argv[1]
    data = load("digits")
    model, info = train_adversarial(
        build_small_cnn((8, 8, 1), 10, seed=0), data, method="pgd", epsilon=0.15, steps=3,
        epochs=5, batch_size=64, seed=0, checkpoint_dir=out + "/ckpt",
        save_to=out + "/model.keras", callbacks=[Kill()])
    acc = float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), 1) == data.y_test))
    print(json.dumps({"initial_epoch": info.initial_epoch, "ran": len(info.history["loss"]),
                      "accuracy": acc}))
""")


@pytest.mark.slow
def test_killed_training_resumes_where_it_stopped(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)

    def run(out, kill=0):
        env = {**os.environ, "KILL_AFTER": str(kill)}
        return subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=600)

    killed = run(tmp_path / "a", kill=3)
    assert killed.returncode == 17, killed.stderr[-2000:]
    record = json.loads((tmp_path / "a" / "ckpt" / "checkpoint.json").read_text())
    assert record["completed_epochs"] == 3
    assert not (tmp_path / "a" / "model.keras").exists()
    resumed = run(tmp_path / "a")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert got["initial_epoch"] == 3 and got["ran"] == 2  # epochs 4 and 5 only
    assert (tmp_path / "a" / "model.keras").is_file()
    assert not (tmp_path / "a" / "ckpt").exists()  # removed once training completed
    whole = run(tmp_path / "b")
    ref = json.loads(whole.stdout.strip().splitlines()[-1])
    assert ref["ran"] == 5 and got["accuracy"] == ref["accuracy"], (got, ref)
    # killed and resumed in a new process, or run in one go: the same weights, bit for bit
    from robustlab.models import load_model

    resumed_model, whole_model = (load_model(tmp_path / name / "model.keras") for name in "ab")
    assert all(np.array_equal(a, b) for a, b in zip(resumed_model.get_weights(),
                                                    whole_model.get_weights(), strict=True))


def test_progress_bar_per_epoch_and_one_log_line(digits, capsys, caplog, monkeypatch):
    import logging

    monkeypatch.setenv("ROBUSTLAB_PROGRESS", "1")
    small = digits.subset(n_train=256, n_test=32, seed=0)
    with caplog.at_level(logging.INFO, logger="robustlab.training"):
        train_adversarial(fresh_model(), small, method="standard", epochs=2, batch_size=64)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "batch" in err  # the tqdm bars
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and "clean_accuracy" in lines[0]


def test_time_budget_stops_training(digits):
    model, info = train_adversarial(fresh_model(), digits, method="standard", epochs=50,
                                    batch_size=64, max_seconds=0.01)
    assert len(info.history["loss"]) == 1


def test_trains_under_a_distribution_strategy(digits):
    import tensorflow as tf

    small = digits.subset(n_train=256, n_test=32, seed=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        trainer = AdversarialModel(fresh_model(), TrainingConfig("pgd", epsilon=0.1, steps=2))
        trainer.compile(optimizer="adam")
    history = trainer.fit(small.x_train, small.y_train, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert set(history.history) == {"loss", "clean_accuracy", "adv_accuracy"}


# ------------------------------------------------------- checkpoints: exact resume and refusals

# A small PGD run (dropout, random starts and an ε ramp across the resume point): a few seconds.
RESUME = {"method": "pgd", "epsilon": 0.15, "steps": 2, "ramp_epochs": 2, "batch_size": 64,
          "seed": 0, "guard": False}


class _CrashError(RuntimeError):
    pass


def _train(data, checkpoint_dir, epochs, *, crash_at=None, model=None, **kwargs):
    """``train_adversarial`` with RESUME's settings; ``crash_at``: raise at the start of that
    (0-based) epoch, like a process that dies there."""
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == crash_at:
                raise _CrashError(f"simulated crash at the start of epoch {epoch + 1}")

    return train_adversarial(model or fresh_model(), data, epochs=epochs,
                             checkpoint_dir=checkpoint_dir, callbacks=[Crash()],
                             **{**RESUME, **kwargs})


def _same_weights(model, weights):
    got = model.get_weights()
    return len(got) == len(weights) and all(np.array_equal(a, b)
                                            for a, b in zip(got, weights, strict=True))


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(n_train=320, n_test=32, seed=0)


@pytest.fixture(scope="module")
def uninterrupted(small):
    """The weights after 4 epochs in one go (no checkpoint)."""
    model, info = train_adversarial(fresh_model(), small, epochs=4, **RESUME)
    assert len(info.history["loss"]) == 4
    return [np.array(w) for w in model.get_weights()]


@pytest.fixture(scope="module")
def interrupted(small, tmp_path_factory):
    """A checkpoint of a 2-epoch run that crashed at the start of epoch 2 (copy it to use)."""
    directory = tmp_path_factory.mktemp("interrupted") / "ckpt"
    with pytest.raises(_CrashError):
        _train(small, directory, 2, crash_at=1)
    assert json.loads((directory / "checkpoint.json").read_text())["completed_epochs"] == 1
    return directory


def _copy(checkpoint, tmp_path):
    return shutil.copytree(checkpoint, tmp_path / "ckpt")


@pytest.mark.parametrize("crash_at", [1, 2])
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(small, uninterrupted, tmp_path,
                                                               crash_at):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(_CrashError):
        _train(small, ckpt, 4, crash_at=crash_at)
    model, info = _train(small, ckpt, 4)  # the same call again
    assert info.initial_epoch == crash_at and len(info.history["loss"]) == 4 - crash_at
    assert _same_weights(model, uninterrupted)


def test_rerun_with_more_epochs_continues_the_run(small, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    _, first = _train(small, ckpt, 2)  # finished, and no save_to: the checkpoint stays
    assert first.initial_epoch == 0 and len(first.history["loss"]) == 2
    model, info = _train(small, ckpt, 4)
    assert info.initial_epoch == 2 and len(info.history["loss"]) == 2
    assert _same_weights(model, uninterrupted)  # as if it had been one 4-epoch run
    with pytest.raises(CheckpointError, match=r"expected epochs >= 4.*got epochs=3"):
        _train(small, ckpt, 3)


def test_final_checkpoint_is_kept_until_the_model_is_saved(small, tmp_path):
    ckpt = tmp_path / "ckpt"
    model, _ = _train(small, ckpt, 2)
    assert json.loads((ckpt / "checkpoint.json").read_text())["completed_epochs"] == 2
    # e.g. the caller crashed before saving the model: the same call gives it back
    again, info = _train(small, ckpt, 2)
    assert info.initial_epoch == 2 and info.history == {}
    assert _same_weights(again, model.get_weights())
    _, info = _train(small, ckpt, 2, save_to=tmp_path / "model.keras")
    assert info.model_path and (tmp_path / "model.keras").is_file()
    assert not ckpt.exists()  # saved: nothing left to resume


def test_checkpoint_of_other_data_of_the_same_size_is_refused(small, digits, interrupted,
                                                              tmp_path):
    ckpt = _copy(interrupted, tmp_path)
    other = digits.subset(n_train=320, n_test=32, seed=1)
    assert other.x_train.shape == small.x_train.shape
    with pytest.raises(CheckpointError, match=r"data_sha256: '[0-9a-f]{64}' in the "
                                              r"checkpoint, '[0-9a-f]{64}' now"):
        _train(other, ckpt, 2)


def test_settings_mismatch_names_the_settings_that_differ(small, interrupted, tmp_path):
    ckpt = _copy(interrupted, tmp_path)
    with pytest.raises(CheckpointError, match="same training settings") as caught:
        _train(small, ckpt, 2, epsilon=0.2, batch_size=32)
    message = str(caught.value)
    assert "epsilon: 0.15 in the checkpoint, 0.2 now" in message
    assert "batch_size: 64 in the checkpoint, 32 now" in message
    assert "learning_rate" not in message and "data_sha256" not in message
    assert "{" not in message and "delete the directory" in message


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "match"), [
    ("architecture", r"model: '.*parameters.*' in the checkpoint, '.*' now"),
    ("truncated weights", r"epoch-1\.weights\.h5.*damaged"),
    ("truncated record", r"checkpoint\.json.*unreadable"),
    ("missing weights", r"epoch-1\.weights\.h5.*is missing"),
])
def test_damaged_or_foreign_checkpoint_gets_a_named_error(small, interrupted, tmp_path, damage,
                                                          match):
    import keras

    ckpt = _copy(interrupted, tmp_path)
    model = None
    if damage == "architecture":
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(10)])
    elif damage == "truncated weights":
        _cut(ckpt / "epoch-1.weights.h5")
    elif damage == "truncated record":
        _cut(ckpt / "checkpoint.json")
    else:
        (ckpt / "epoch-1.weights.h5").unlink()
    with pytest.raises(CheckpointError, match=match) as caught:
        _train(small, ckpt, 2, model=model)
    assert "delete the directory" in str(caught.value) and str(ckpt) in str(caught.value)


def test_stale_temporary_files_are_removed_when_a_run_starts(small, interrupted, tmp_path):
    from robustlab._io import atomic_path

    ckpt = _copy(interrupted, tmp_path)
    # writes that never finished (a crash): atomic_path's own temporary files stay behind
    writes = [atomic_path(ckpt / "checkpoint.json"),
              atomic_path(ckpt / "epoch-2.weights.h5", suffix=".weights.h5")]
    stale = [write.__enter__() for write in writes]
    others = [ckpt / "notes.txt", ckpt / ".notes.txt.abc.tmp", ckpt / ".checkpoint.json.swp"]
    for path in [*stale, *others]:
        path.write_bytes(b"x")
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in stale)
    _, info = _train(small, ckpt, 2)
    assert info.initial_epoch == 1
    assert not [p for p in stale if p.exists()], "temporary files of a crashed write left"
    assert all(p.exists() for p in others)  # only the checkpoint's own kind are removed


def test_encrypted_checkpoint_resumes_exactly_and_needs_its_key(small, uninterrupted, tmp_path,
                                                                monkeypatch):
    """With a key configured the checkpoint's weights and record are ciphertext on disk (no
    HDF5 or JSON to read), a resume needs the key, and it is still bit-identical."""
    from robustlab import crypto
    from robustlab.errors import KeyRequiredError

    key = crypto.write_key_file(tmp_path / "kek")
    monkeypatch.setenv("ROBUSTLAB_KEY_FILE", str(tmp_path / "kek"))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(_CrashError):
        _train(small, ckpt, 4, crash_at=2)
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == ["checkpoint.json", "epoch-2.weights.h5"]
    for name in files:
        blob = (ckpt / name).read_bytes()
        assert crypto.looks_encrypted(blob) and b"HDF" not in blob[:64] and b"{" not in blob[:8]
    monkeypatch.delenv("ROBUSTLAB_KEY_FILE")
    with pytest.raises(KeyRequiredError):
        _train(small, ckpt, 4)
    monkeypatch.setenv("ROBUSTLAB_KEY_FILE", str(tmp_path / "kek"))
    model, info = _train(small, ckpt, 4)
    assert info.initial_epoch == 2 and _same_weights(model, uninterrupted)
    assert key.key_id.startswith("local:")


def test_a_run_stopped_by_its_time_budget_keeps_its_checkpoint(small, uninterrupted, tmp_path):
    """max_seconds with save_to used to save the model and delete the checkpoint, so every
    rerun started again from epoch 0: now the rerun continues (each call gets a budget)."""
    ckpt, saved = tmp_path / "ckpt", tmp_path / "model.keras"
    _, first = _train(small, ckpt, 4, max_seconds=1e-9, save_to=saved)
    assert len(first.history["loss"]) == 1 and saved.is_file() and ckpt.is_dir()
    model, second = _train(small, ckpt, 4, save_to=saved)  # no budget: runs to the end
    assert second.initial_epoch == 1 and len(second.history["loss"]) == 3
    assert _same_weights(model, uninterrupted) and not ckpt.exists()


# ------------------------------------------- inputs of any rank and per-feature threat models

F = 8
TAB_LOW = np.array([-5, -2, 0, 0, 10, -1, 0, 0], np.float32)
TAB_HIGH = np.array([5, 2, 10, 40, 20, 1, 1, 1], np.float32)
TAB_SCALE = np.array([2, 1, 3, 8, 2, 0.5, 1, 1], np.float32)
IMMUTABLE = [1, 4]


def tabular_constraints(**changes):
    from robustlab.types import Constraints

    kwargs = {"bounds": (TAB_LOW, TAB_HIGH), "scale": TAB_SCALE, "immutable": IMMUTABLE,
              "integer": [2], "categorical": [[6, 7]], **changes}
    return Constraints.build((F,), **kwargs)


def tabular_data(n=256, seed=0, **changes):
    """A seeded (N, 8) table in raw units: continuous, an integer count (2), two immutable
    features (1, 4) and a one-hot pair (6, 7); the label depends on features 0 and 3."""
    from robustlab.data import Dataset

    rng = np.random.default_rng(seed)
    x = (TAB_LOW + rng.uniform(size=(n, F)) * (TAB_HIGH - TAB_LOW)).astype(np.float32)
    x[:, 2] = np.round(x[:, 2])
    cat = rng.integers(0, 2, n)
    x[:, 6], x[:, 7] = cat == 0, cat == 1
    y = (x[:, 0] / 2 + (x[:, 3] - 20) / 8 > 0).astype(np.int64)
    half = n * 3 // 4
    return Dataset("table", x[:half], y[:half], x[half:], y[half:], ("no", "yes"),
                   bounds=(float(TAB_LOW.min()), float(TAB_HIGH.max())),
                   constraints=tabular_constraints(**changes))


def mlp(shape, classes=2, seed=0):
    import keras

    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="relu", kernel_initializer=init),
                             keras.layers.Dense(classes, kernel_initializer=init)])


@pytest.fixture(scope="module")
def table():
    return tabular_data()


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
def test_adversarial_training_on_a_table(table, method):
    model = mlp((F,))
    before = [np.array(w) for w in model.get_weights()]
    model, info = train_adversarial(model, table, method=method, epsilon=0.3, steps=2,
                                    epochs=2, batch_size=64, guard_size=32, seed=0)
    assert len(info.history["loss"]) == 2 and all(np.isfinite(info.history["loss"]))
    assert info.config["constraints"]["fingerprint"] == table.constraints.fingerprint()
    assert info.config["bounds"] == list(table.constraints.bounds)
    assert not _same_weights(model, before)
    if method == "fgsm_rs":  # the guard ran its PGD under the constraints
        assert "guard_pgd_accuracy" in info.history


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 0.5)])
def test_crafted_table_rows_respect_the_constraints(table, method, norm, eps):
    import tensorflow as tf

    c = table.constraints
    trainer = AdversarialModel(mlp((F,)), TrainingConfig(method, epsilon=eps, norm=norm,
                                                         steps=3, constraints=c))
    x, y = table.x_train[:64], table.y_train[:64]
    x_adv = trainer.craft(tf.constant(x), tf.constant(y)).numpy()
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    np.testing.assert_array_equal(x_adv[:, IMMUTABLE], x[:, IMMUTABLE])  # bit-identical
    assert (x_adv >= c.low).all() and (x_adv <= c.high).all()
    delta = np.abs(x_adv.astype(np.float64) - x)
    if norm == "linf":
        assert (delta <= eps * c.scale * (1 + 1e-5) + 1e-6).all()
    assert c.distance(x_adv, x, trainer.config.norm).max() \
        <= eps * (1 + 1e-5) + 1e-6
    mutable = np.flatnonzero(c.mutable)
    assert (delta[:, mutable] > 0).any(axis=0).all()  # every mutable feature is used


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_leaves_immutable_features_and_fills_the_scaled_ball(table, norm):
    import tensorflow as tf

    c = table.constraints
    cfg = TrainingConfig("pgd", epsilon=0.5, norm=norm, constraints=c)
    trainer = AdversarialModel(mlp((F,)), cfg)
    mid = (c.low + c.high) / 2  # the scaled ball fits in the bounds: nothing is clipped
    x = np.repeat(mid[None], 4000, axis=0)
    low, high = (tf.constant(v) for v in (c.low, c.high))
    start = trainer._random_start(tf.constant(x), tf.constant(0.5), low, high,
                                  tf.constant(c.weight)).numpy()
    np.testing.assert_array_equal(start[:, IMMUTABLE], x[:, IMMUTABLE])
    assert (start >= c.low).all() and (start <= c.high).all()
    size = c.distance(start, x, cfg.norm)
    assert size.max() <= 0.5 * (1 + 1e-5)
    # uniform over the 6 mutable features: P(size <= t) = (t/ε)^6 in the L2 ball and in the
    # L∞ cube alike, so the median is ε·0.5^(1/6) (counting all 8 features: 3% larger)
    assert np.median(size) == pytest.approx(0.5 * 0.5 ** (1 / 6), rel=0.01)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_unit_constraints_craft_what_the_plain_threat_model_crafts(table, norm):
    """Bounds (0, 1), scale 1, nothing immutable: the weighted math is the plain math, bit for
    bit (the same random draws, steps and projection)."""
    import tensorflow as tf

    from robustlab.types import Constraints

    rng = np.random.default_rng(1)
    x = rng.uniform(size=(32, F)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    model = mlp((F,))
    out = []
    for constraints in (None, Constraints.build((F,), bounds=(0.0, 1.0))):
        cfg = TrainingConfig("pgd", epsilon=0.2, norm=norm, steps=3, constraints=constraints)
        out.append(AdversarialModel(model, cfg).craft(tf.constant(x), tf.constant(y)).numpy())
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_rank_3_inputs_train_and_stay_in_the_ball(digits, norm):
    import tensorflow as tf

    from robustlab.data import Dataset

    small = digits.subset(n_train=256, n_test=32, seed=0)
    flat = Dataset("digits-2d", small.x_train[..., 0], small.y_train, small.x_test[..., 0],
                   small.y_test, small.class_names)
    assert flat.x_train.shape[1:] == (8, 8)
    eps = 0.1 if norm == "linf" else 0.5
    model, info = train_adversarial(mlp((8, 8), 10), flat, method="pgd", epsilon=eps,
                                    norm=norm, steps=2, epochs=2, batch_size=64, seed=0)
    assert len(info.history["loss"]) == 2 and all(np.isfinite(info.history["loss"]))
    assert "constraints" not in info.config
    trainer = AdversarialModel(model, TrainingConfig("pgd", epsilon=eps, norm=norm, steps=2))
    x = flat.x_test
    x_adv = trainer.craft(tf.constant(x), tf.constant(flat.y_test)).numpy()
    linf, l2 = perturbation_norms(x_adv, x)
    assert x_adv.shape == x.shape and (linf if norm == "linf" else l2).max() <= eps * 1.00001
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_config_records_constraints_only_when_given(table):
    plain = TrainingConfig("pgd", epsilon=0.3)
    assert list(plain.to_dict()) == ["method", "epsilon", "norm", "steps", "rel_step_size",
                                     "beta", "clean_fraction", "ramp_epochs", "bounds", "seed",
                                     "step_size"]
    assert plain.identity() == plain.to_dict()
    json.dumps(plain.to_dict())
    c = table.constraints
    given = TrainingConfig("pgd", epsilon=0.3, constraints=c)  # bounds: the constraints'
    record = given.to_dict()
    assert record["constraints"] == c.to_dict() and record["bounds"] == [-5.0, 40.0]
    assert given.identity()["constraints"] == c.fingerprint()
    json.dumps(record)
    assert given == TrainingConfig("pgd", epsilon=0.3, constraints=tabular_constraints())
    assert given != TrainingConfig("pgd", epsilon=0.3,
                                   constraints=tabular_constraints(immutable=[1]))


@pytest.mark.parametrize("bad", ["immutable=1", {"immutable": [1]}, (0.0, 1.0)])
def test_constraints_of_the_wrong_type_are_refused(bad):
    from robustlab.errors import InputTypeError

    with pytest.raises(InputTypeError, match="expected constraints to be a robustlab"):
        TrainingConfig("pgd", epsilon=0.3, constraints=bad)
    with pytest.raises(TypeError, match="constraints"):
        OverfitGuard(np.zeros((2, F), np.float32), [0, 1], epsilon=0.1, constraints=bad)


def test_checkpoint_of_other_constraints_is_refused(table, tmp_path):
    ckpt = tmp_path / "ckpt"
    kwargs = {"method": "pgd", "epsilon": 0.3, "steps": 2, "batch_size": 64, "seed": 0,
              "checkpoint_dir": ckpt}
    _, first = train_adversarial(mlp((F,)), table, epochs=1, **kwargs)
    assert first.initial_epoch == 0
    record = json.loads((ckpt / "checkpoint.json").read_text())
    assert record["config"]["constraints"] == table.constraints.fingerprint()
    other = tabular_data(immutable=[1])  # the same rows, one more feature the attacker moves
    np.testing.assert_array_equal(other.x_train, table.x_train)
    with pytest.raises(CheckpointError, match=r"constraints: '[0-9a-f]{64}' in the "
                                              r"checkpoint, '[0-9a-f]{64}' now"):
        train_adversarial(mlp((F,)), other, epochs=2, **kwargs)
    _, resumed = train_adversarial(mlp((F,)), table, epochs=2, **kwargs)
    assert resumed.initial_epoch == 1 and len(resumed.history["loss"]) == 1
