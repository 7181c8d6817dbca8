"""End to end on real MNIST: first 8,000 test-split images to train, last 2,000 to test."""

import pytest

from robustlab.data import load
from robustlab.evaluate import evaluate
from robustlab.workflow import load_or_train


@pytest.mark.slow
def test_mnist_8k_end_to_end(mnist_dir):
    data = load(f"idx:{mnist_dir}", split=8000)
    assert data.x_train.shape == (8000, 28, 28, 1) and data.x_test.shape == (2000, 28, 28, 1)
    assert list(data.y_train[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    model, _ = load_or_train("", data, seed=0)
    result = evaluate(model, data, "fgsm, pgd", "0, 0.1, 0.3", n=500, seed=0, checks=False)
    assert result.clean_accuracy >= 0.95
    pgd = result.curves[1]
    assert pgd.accuracy_at(0.3) <= 0.05
    assert pgd.accuracy_at(0.1) <= result.curves[0].accuracy_at(0.1)
