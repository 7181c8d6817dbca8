"""The fast engine changes no result: early stop, batch compaction, restarts on survivors,
subsets with ids, XLA bucket padding and the out-of-memory fallback all reproduce the plain
computation."""

import numpy as np
import pytest
from conftest import accuracy, predictions

from robustlab import inference
from robustlab.attacks import pgd, random_start
from robustlab.attacks._runner import padded_size
from robustlab.attacks.pgd import native_pgd
from robustlab.errors import ValidationError
from robustlab.types import Backend, ThreatModel


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_early_stop_changes_nothing(digits_model, digits, norm, eps):
    x, y = digits.x_test[:150], digits.y_test[:150]
    kwargs = dict(epsilon=eps, norm=norm, steps=20, seed=2, batch_size=64)
    fast = pgd(digits_model, x, y, **kwargs)
    full = pgd(digits_model, x, y, early_stop=False, **kwargs)
    np.testing.assert_allclose(fast, full, atol=1e-6)
    assert 0 < (predictions(digits_model, fast) != y).mean() < 1  # some stopped early, some ran on


def test_subset_with_ids_reproduces_the_whole_set(digits_model, digits):
    x, y = digits.x_test[:120], digits.y_test[:120]
    kwargs = dict(epsilon=0.1, steps=10, seed=5, restarts=2)
    whole = pgd(digits_model, x, y, **kwargs)
    rows = np.arange(7, 120, 3)
    part = pgd(digits_model, x[rows], y[rows], ids=rows, **kwargs)
    np.testing.assert_allclose(part, whole[rows], atol=1e-5)
    other = pgd(digits_model, x[rows], y[rows], **kwargs)  # ids 0..n-1: other starts
    assert not np.allclose(other, whole[rows], atol=1e-3)


def test_random_start_depends_on_id_only(digits):
    x = digits.x_test[:200]
    threat = ThreatModel(0.1)
    all_starts = random_start(x, threat, seed=1, restart=2)
    rows = np.array([150, 3, 64, 65])
    np.testing.assert_array_equal(random_start(x[rows], threat, seed=1, restart=2, ids=rows),
                                  all_starts[rows])
    assert not np.array_equal(random_start(x, threat, seed=1, restart=3), all_starts)
    assert np.abs(all_starts - x).max() <= 0.1 + 1e-7


def test_restarts_run_only_on_survivors(digits_model, digits, monkeypatch):
    x, y = digits.x_test[:100], digits.y_test[:100]
    sizes = []

    def counting(*args, **kwargs):
        sizes.append(len(args[1]))
        return native_pgd(*args, **kwargs)

    monkeypatch.setitem(__import__("robustlab.attacks.pgd", fromlist=["x"]).PGD_BACKENDS,
                        Backend.NATIVE, counting)
    out = pgd(digits_model, x, y, epsilon=0.15, steps=10, restarts=3, batch_size=1000)
    survivors = int((predictions(digits_model, out) == y).sum())
    assert sizes[0] == 100 and all(s < 100 for s in sizes[1:])
    assert sizes[-1] >= survivors


def test_xla_padding_path_matches(digits_model, digits):
    x, y = digits.x_test[:90], digits.y_test[:90]
    kwargs = dict(epsilon=0.12, steps=16, seed=1, batch_size=90)
    plain = pgd(digits_model, x, y, jit_compile=False, **kwargs)
    xla = pgd(digits_model, x, y, jit_compile=True, **kwargs)
    fooled_plain, fooled_xla = (predictions(digits_model, z) != y for z in (plain, xla))
    assert np.mean(fooled_plain == fooled_xla) >= 0.98
    assert np.mean(np.abs(plain - xla) < 1e-4) > 0.98


@pytest.mark.parametrize("m,n,expected", [(500, 500, 500), (250, 500, 256), (251, 500, 500),
                                          (100, 500, 128), (3, 500, 8), (1, 10, 8)])
def test_bucket_sizes(m, n, expected):
    assert padded_size(m, n) == expected


def test_out_of_memory_halves_the_batch(digits_model, digits, monkeypatch):
    import tensorflow as tf

    x, y = digits.x_test[:40], digits.y_test[:40]
    seen = []

    def picky(*args, **kwargs):
        seen.append(len(args[1]))
        if len(args[1]) > 10:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM")
        return native_pgd(*args, **kwargs)

    monkeypatch.setitem(__import__("robustlab.attacks.pgd", fromlist=["x"]).PGD_BACKENDS,
                        Backend.NATIVE, picky)
    out = pgd(digits_model, x, y, epsilon=0.1, steps=4, random_start=False, batch_size=40)
    ref = native_pgd(digits_model, x, y, threat=ThreatModel(0.1), targeted=False, loss="ce",
                     seed=0, restart=0, ids=np.arange(40), random_start=False, jit=False,
                     step_size=0.1 * 2.5 / 4, steps=4)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert seen[:3] == [40, 20, 10] and max(seen[3:]) <= 10


def test_auto_batch_size_fits_the_budget(digits_model, monkeypatch):
    monkeypatch.delenv("ROBUSTLAB_BATCH_SIZE", raising=False)
    per = inference.bytes_per_example(digits_model, (8, 8, 1))
    assert per is not None and per > 4 * 8 * 8
    size = inference.auto_batch_size(digits_model, (8, 8, 1))
    assert 1 <= size <= 4096 and size * per <= inference._CPU_BUDGET
    monkeypatch.setattr(inference, "_available_memory", lambda: 64 * per)
    assert inference.auto_batch_size(digits_model, (8, 8, 1)) == 8
    monkeypatch.setenv("ROBUSTLAB_BATCH_SIZE", "77")
    assert inference.auto_batch_size(digits_model, (8, 8, 1)) == 77
    monkeypatch.setenv("ROBUSTLAB_BATCH_SIZE", "lots")
    with pytest.raises(ValidationError, match="ROBUSTLAB_BATCH_SIZE"):
        inference.auto_batch_size(digits_model, (8, 8, 1))


def test_bad_ids_are_refused(tiny_model, batch):
    x, y = batch
    with pytest.raises(ValidationError, match="expected ids"):
        pgd(tiny_model, x, y, epsilon=0.1, ids=np.arange(3))
    with pytest.raises(ValidationError, match="expected ids"):
        pgd(tiny_model, x, y, epsilon=0.1, ids=-np.arange(len(x)))


def test_mixed_precision_model_is_attacked_in_float32(digits):
    import keras

    from robustlab.models import build_small_cnn

    model = build_small_cnn((8, 8, 1), 10, seed=0, mixed_precision=True)
    assert model.layers[1].compute_dtype == "float16"
    x, y = digits.x_test[:64], digits.y_test[:64]
    out = pgd(model, x, y, epsilon=0.1, steps=5, seed=0)
    assert out.dtype == np.float32 and np.abs(out - x).max() <= 0.1 + 1e-6
    assert np.abs(out - x).max() > 0.05
    assert keras.config.dtype_policy().name == "float32"  # no global policy change
    assert accuracy(model, out, y) <= accuracy(model, x, y)
