from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")
# The audit trail (robustlab.audit) goes to a temporary file for the whole session, never into
# the home directory or a log named in the environment; subprocesses inherit it. Tests that
# read a log point ROBUSTLAB_AUDIT_LOG at their own (monkeypatch.setenv).
_AUDIT_DIR = tempfile.mkdtemp(prefix="robustlab-test-audit-")
atexit.register(shutil.rmtree, _AUDIT_DIR, True)
os.environ["ROBUSTLAB_AUDIT_LOG"] = os.path.join(_AUDIT_DIR, "audit.jsonl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist-t10k"


@pytest.fixture(scope="session")
def digits():
    from robustlab.data import load

    return load("digits")


@pytest.fixture(scope="session")
def digits_model(digits):
    """The default CNN trained on digits (seeded): about 98-99% test accuracy."""
    from robustlab.models import build_model
    from robustlab.training import train

    model = build_model(digits.input_shape, digits.num_classes, seed=0)
    info = train(model, digits, seed=0)
    assert info["test_accuracy"] > 0.96
    return model


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained, seeded CNN for 8x8 greyscale images (10 classes)."""
    from robustlab.models import build_small_cnn

    return build_small_cnn((8, 8, 1), 10, seed=1)


@pytest.fixture()
def batch(digits):
    return digits.x_test[:32].copy(), digits.y_test[:32].copy()


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test split not found at {MNIST_DIR} (see datasets/README.md)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def digits_result(digits_model, digits):
    """One evaluation with the sanity checks, shared by the tests that read a result (numbers,
    serialisation, repr, report, manifest): FGSM and PGD-40 at ε 0, 0.1, 0.3 on the first 120
    digits test images."""
    from robustlab.evaluate import evaluate

    return evaluate(digits_model, digits, "fgsm, pgd", "0, 0.1, 0.3", n=120, seed=0,
                    parameters={"note": "test"})


def predictions(model, x):
    """The class ``model`` predicts for each image of ``x`` (inference mode)."""
    return np.argmax(np.asarray(model(x, training=False)), axis=1)


def accuracy(model, x, y):
    """Share of the images of ``x`` that ``model`` classifies as ``y``."""
    return float(np.mean(predictions(model, x) == y))


def without_seconds(node):
    """A report's JSON with every wall-clock ``seconds`` field left out (they differ per run)."""
    if isinstance(node, dict):
        return {k: without_seconds(v) for k, v in node.items() if k != "seconds"}
    if isinstance(node, list):
        return [without_seconds(v) for v in node]
    return node
